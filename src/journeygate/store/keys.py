"""Redis key names, built in one place.

Every key of one visitor carries the hash tag ``{visitor_id}`` so that all of them live on
the same Redis Cluster slot and one pipeline or transaction can touch them together.

=================================  =======  ==========================  =====================
key                                type     bound                       TTL
=================================  =======  ==========================  =====================
``jg:{v}:profile``                 hash     fields set by the gateway   ``profile_ttl_s``
``jg:{v}:views``                   list     ``history_max`` entries     ``profile_ttl_s``
``jg:{v}:sessions``                zset     ``history_max`` sessions    ``profile_ttl_s``
``jg:{v}:session:{s}``             hash     3 fields                    ``session_ttl_s``
``jg:{v}:session:{s}:views``       list     ``session_views_max``       ``session_ttl_s``
=================================  =======  ==========================  =====================

Keys written by the event worker (``[events]`` config names the caps and TTLs; ``profile_ttl_s``
is ``[store]``'s). Aggregates (``orders``, ``revenue``, ``first_seen``, ...) are numeric fields
of ``jg:{v}:profile`` so that the decide pipeline reads them with the profile. Plugins add
JSON fields to the same hash with ``store.update_profile`` (a fixed set each, no new keys):
the sentiment plugin writes ``sentiment``, ``sentiment_at``, ``feedback_label`` and
``feedback_themes`` (at most ``max_themes`` names), with ``store.blend_score``. The offers
plugin adds its shows to ``offer_shows`` with ``store.record_times`` (one atomic Lua call: at
most the highest ``per_visitor`` times per offer, none older than the longest cap window).
The triggers plugin merges ``triggers`` (trigger name -> last fire) with
``store.merge_latest`` (one Lua call; one entry per configured trigger).

=================================  =======  ==========================  =====================
key                                type     bound                       TTL
=================================  =======  ==========================  =====================
``jg:{v}:channels``                hash     5 channels                  ``profile_ttl_s``
``jg:{v}:categories``              zset     ``categories_max``          ``profile_ttl_s``
``jg:{v}:purchased``               zset     ``purchased_max``           ``profile_ttl_s``
``jg:{v}:orders``                  zset     ``orders_max`` order ids    ``profile_ttl_s``
``jg:{v}:cart``                    hash     products in the cart        ``profile_ttl_s``
``jg:{v}:consents``                hash     3 consents                  ``profile_ttl_s``
``jg:{v}:esessions``               zset     ``sessions_max``            ``session_retention_s``
``jg:{v}:es:{s}``                  hash     counters of one session     ``session_retention_s``
``jg:{v}:es:{s}:products``         zset     ``session_items_max``       ``session_retention_s``
``jg:{v}:es:{s}:categories``       zset     ``session_items_max``       ``session_retention_s``
``jg:{v}:es:{s}:pages``            zset     ``session_items_max``       ``session_retention_s``
``jg:{v}:es:{s}:searches``         list     ``session_items_max``       ``session_retention_s``
``jg:{v}:seen``                    zset     ``dedupe_max`` message ids  ``dedupe_ttl_s``
``jg:{v}:log``                     list     ``anonymous_log_max``       ``profile_ttl_s``
``jg:{v}:alias``                   string   1 (merged into this id)     ``profile_ttl_s``
``jg:{v}:aliases``                 set      ids merged into this one    ``profile_ttl_s``
``jg:{v}:erased``                  string   1 (erasure time)            ``erasure_ttl_s``
``jg:{v}:stages``                  list     ``stage_history_max``       ``profile_ttl_s``
=================================  =======  ==========================  =====================

``stages`` is the visitor's journey stage history, newest first (JSON: ``from``, ``to``,
``at``, ``decision_id`` and ``entry``, the id of the same transition in
``jg:journey:transitions``, so that an erasure deletes it there too); the current stage is
the profile fields ``stage`` and ``stage_since``. The intent plugin writes them through
``ProfileStore.record_stage``.

``log`` holds an anonymous visitor's events (only events without a user id), so that an
identify/alias can replay them into the customer's profile. The two visitors of a merge live
in different hash slots, so a merge is three single-slot steps, each idempotent: claim the
anonymous id (set ``alias``, read ``log``; events applied to it from then on are redirected),
replay the log into the customer (``seen`` drops what was already applied), then link it
(``aliases``; the first time, the plugins' decayed scores from its profile, the sentiment,
are blended into the customer's in the same script) and clear the anonymous id's data.

Keys written for experiments (``[experiments]`` config names the caps and TTLs; see
``journeygate.experiments.storage`` and ``experiments.lua``):

=================================  =======  ==========================  =====================
key                                type     bound                       TTL
=================================  =======  ==========================  =====================
``jg:{v}:xp``                      hash     one field per experiment,   ``visitor_ttl_s``
                                            ``visitor_decisions_max``
                                            decisions and order ids
``jg:{v}:xp:recent``               list     ``visitor_decisions_max``   ``visitor_ttl_s``
``jg:xp:{exp}:arms``               hash     8 counters per arm          ``results_ttl_s``
``jg:xp:{exp}:decisions``          stream   ``decision_log_max`` (~)    ``results_ttl_s``
=================================  =======  ==========================  =====================

``xp`` holds, per experiment the visitor saw, the arms with first and last exposure time,
whether it converted there and its revenue, and its latest decision; per recent decision the
experiment and arm of each slot (clicks and orders are credited through the decision id);
and the order ids already credited. ``xp:recent`` lists the decision and order fields, newest
first, so the oldest are deleted past the cap. The per-experiment keys have the experiment id
as their hash tag; the decision log holds, per decision, its id, visitor, arm, slot and the
propensity (choice probability) it was made with.

Offer budgets (the ``offers`` plugin) are not per visitor: ``jg:offer:{OFFER_ID}:redemptions``
is a zset of the redemption ids (order id, else message id) of one catalog offer that has a
``budget``, scored by event time, capped at the budget (ZCARD is the count, a redemption seen
twice counts once), with a TTL of ``[plugin.offers] budget_ttl_days`` refreshed by every
redemption. One key per budgeted offer of the catalog.

Event streams are not per visitor: ``jg:events:{shard-K}`` (K = 0 .. ``stream_shards`` - 1)
are Redis Streams, each trimmed to about ``stream_maxlen`` entries. A visitor's events always
go to the shard ``crc32(visitor_id) % stream_shards``, so one visitor's events stay in order
within one stream; each shard has its own hash tag, so on Redis Cluster the shards spread over
the nodes and every stream command touches one slot. One entry holds the events of one
request for that shard (field ``e``: a JSON array). Workers trim the entries every consumer
group has acknowledged, so a stream's length is its backlog (see
``journeygate.events.streams`` for why trimming never drops an unapplied entry).

Keys of no visitor, each its own slot:

=================================  =======  ==========================  =====================
key                                type     bound                       TTL
=================================  =======  ==========================  =====================
``jg:events:{shard-K}``            stream   ``stream_maxlen``           none (trimmed)
``jg:events:{dead-letters}``       stream   ``dead_letter_maxlen``      none (trimmed)
``jg:journey:transitions``         stream   ``transitions_maxlen``      none (trimmed)
=================================  =======  ==========================  =====================

``jg:events:{dead-letters}``: entries the workers gave up on after ``max_deliveries``
deliveries; fields ``stream`` and ``id`` (where it was), ``error``, ``deliveries``,
``consumer``, ``at`` and ``e`` (the original payload). ``journeygate dead-letters`` lists
and requeues them. ``jg:journey:transitions``: one entry per journey stage transition,
fields ``v`` (visitor id), ``from`` (empty: the visitor's first stage), ``to``, ``at`` and
``d`` (decision id); the entry id is the recording time, so a time window is an XRANGE.

Webhook delivery (``[webhooks]`` config names the caps and TTLs; see
``journeygate.webhooks.redis``). Every key carries the one hash tag ``{webhooks/}``, so
enqueueing (dedupe + XADD + index), claiming and completing a delivery are each one Lua
script on one slot:

====================================  =======  ===========================  ==================
key                                   type     bound                        TTL
====================================  =======  ===========================  ==================
``jg:{webhooks/}:outbox``             stream   ``outbox_maxlen``            none (see below)
``jg:{webhooks/}:retries``            zset     ``outbox_maxlen``            none (bounded)
``jg:{webhooks/}:retrying``           hash     as ``retries``               none (bounded)
``jg:{webhooks/}:dedupe:<key>``       string   1 (the delivery id)          ``dedupe_ttl_s``
``jg:{webhooks/}:visitor:<v>``        hash     the visitor's pending ones   index TTL (below)
``jg:{webhooks/}:dead-letters``       stream   ``dead_letter_maxlen`` (~)   none (trimmed)
``jg:{webhooks/}:log``                stream   ``log_maxlen`` (~)           none (trimmed)
====================================  =======  ===========================  ==================

``outbox``: undelivered messages (field ``d``: the delivery as JSON), read by the dispatchers
through the consumer group ``jg-webhooks``; an entry is acknowledged and deleted once its
delivery succeeded, was dead-lettered or moved to ``retries``, so the stream's length is the
backlog, and an enqueue that would take it past ``outbox_maxlen`` is refused (``MAXLEN ~``
on the XADD is only a backstop). ``retries``: delivery ids scored by due time (ms), or by the
end of a dispatcher's lease while one holds it; a move into it past ``outbox_maxlen``
dead-letters the delivery instead. ``retrying``: those deliveries (JSON), removed with them.
``visitor:<v>``: delivery id -> outbox entry id (``r`` while retrying), for erasure; a field
goes when its delivery completes (the key with its last field), and the TTL, refreshed by
every write, is ``dedupe_ttl_s`` plus ``max_attempts`` times ``backoff_max_ms``.
``dead-letters``: fields ``d`` (the delivery), ``error``, ``status``, ``at``, ``v`` (visitor
id, for erasure). ``log``: one entry per attempt outcome, fields ``id`` (delivery), ``endpoint``,
``type``, ``outcome``, ``attempt``, ``status``, ``error``, ``ms``, ``at``; no payload and no
visitor id.

Behavioral triggers (``plugins/jg_triggers``; the trigger file, ``[plugin.triggers] file``,
names the caps and TTLs). Per visitor, under its hash tag, each expiring ``state_ttl_s``
after its last write:

=================================  =======  ==========================  =====================
key                                type     bound                       TTL
=================================  =======  ==========================  =====================
``jg:{v}:triggers``                hash     a fixed set of fields       ``state_ttl_s``
``jg:{v}:triggers:timers``         zset     1000 timer ids              ``state_ttl_s``
``jg:{v}:triggers:log``            list     200 log entry ids           ``state_ttl_s``
=================================  =======  ==========================  =====================

``triggers``: the rules' state (``cart``, ``checkout``, ``views`` of at most 50 products,
``page``, ``due:NAME``; see ``jg_triggers.rules``), ``version`` (every write checks it, so
two workers never lose each other's update), and the guardrails' memory: ``fires`` (the
last ``fires_kept`` fires as [occurrence, trigger, action, time], for caps, debounce and
recognising a retried occurrence) and ``last`` (trigger -> last fire time, also written to
the profile field ``triggers`` that the offers plugin reads). ``triggers:timers`` and
``triggers:log`` index the visitor's timers (by due time; ids of timers due more than a day
ago are dropped) and log entries, so that an erasure finds them.

Timers and the log belong to no visitor. Their hash tags hold a ``/``, which no visitor id
may contain, so they never share a key name with a visitor's keys:

=================================  =======  ==========================  =====================
key                                type     bound                       TTL
=================================  =======  ==========================  =====================
``jg:{triggers/K}:due``            zset     ``max_timers_per_shard``    none (bounded)
``jg:{triggers/K}:timers``         hash     as ``due``                  none (bounded)
``jg:{triggers/log}``              stream   ``log_maxlen`` (~)          none (trimmed)
=================================  =======  ==========================  =====================

``due`` (K = 0 .. ``shards`` - 1, the visitor's shard is ``crc32(visitor id) % shards``):
timer ids (``visitor|trigger|key``) scored by due time, or by the end of a scheduler's lease
while one holds it; ``timers``: what each timer carries (JSON: visitor, trigger, key, due,
data), removed with it. A timer leaves both when it fired (or no longer held), so a shard
holds the timers still to come; a new timer past ``max_timers_per_shard`` is refused and
logged. ``jg:{triggers/log}``: one entry per fired trigger: ``at``, ``trigger``, ``visitor``
(the profile it fired for), ``occurrence``, ``outcome`` (``sent``, ``duplicate``,
``deferred``, ``suppressed:no_consent|cap|debounce``), ``action``, ``endpoint``,
``detail``.

Lua scripts declare every key they touch in KEYS. Session keys are the exception that
proves the rule: their ids are only known inside the script (found in ``esessions`` or
``sessions``), so the scripts declare the session prefix (``jg:{v}:es:``,
``jg:{v}:session:``) and build each session key from it; the prefix carries the visitor's
hash tag, so every such key is in the declared slot.
"""

from __future__ import annotations

from collections.abc import Sequence

PREFIX = "jg"


def visitor_prefix(visitor_id: str) -> str:
    """``jg:{visitor_id}:``: the hash tag keeps a visitor's keys in one slot."""
    return f"{PREFIX}:{{{visitor_id}}}:"


def visitor_key(visitor_id: str, name: str, *parts: str) -> str:
    """``jg:{visitor_id}:name[:part...]``."""
    key = visitor_prefix(visitor_id) + name
    return key + ":" + ":".join(parts) if parts else key


def profile(visitor_id: str) -> str:
    return visitor_key(visitor_id, "profile")


def views(visitor_id: str) -> str:
    return visitor_key(visitor_id, "views")


def sessions(visitor_id: str) -> str:
    return visitor_key(visitor_id, "sessions")


def session(visitor_id: str, session_id: str) -> str:
    return visitor_key(visitor_id, "session", session_id)


def session_views(visitor_id: str, session_id: str) -> str:
    return visitor_key(visitor_id, "session", session_id, "views")


def event_stream(shard: int) -> str:
    return f"{PREFIX}:events:{{shard-{shard}}}"


DEAD_LETTER_STREAM = f"{PREFIX}:events:{{dead-letters}}"
JOURNEY_TRANSITIONS = f"{PREFIX}:journey:transitions"


# The keys of events.lua, in its KEYS order; the per-session prefix (event_session_prefix)
# follows them.
EVENT_SCRIPT_KEYS = (
    "profile",
    "alias",
    "erased",
    "seen",
    "cart",
    "esessions",
    "channels",
    "consents",
    "categories",
    "purchased",
    "orders",
    "log",
)
# The keys of the erase script, in its KEYS order: what the event worker built (dropped by an
# erasure and after a merge), then the gateway's own keys and the erasure tombstone; the two
# per-session prefixes follow them.
ERASE_SCRIPT_KEYS = (
    "profile",
    "channels",
    "categories",
    "purchased",
    "orders",
    "cart",
    "consents",
    "esessions",
    "seen",
    "log",
    "stages",
    "views",
    "sessions",
    "alias",
    "aliases",
    "erased",
)


def visitor_keys(visitor_id: str, names: Sequence[str]) -> list[str]:
    prefix = visitor_prefix(visitor_id)
    return [prefix + name for name in names]


def event_session_prefix(visitor_id: str) -> str:
    """``jg:{v}:es:``: a Lua script that finds session ids itself builds the session keys
    from this prefix, which it declares in KEYS (same hash tag, same slot)."""
    return visitor_key(visitor_id, "es", "")


def session_prefix(visitor_id: str) -> str:
    """``jg:{v}:session:``, the gateway's sessions, like :func:`event_session_prefix`."""
    return visitor_key(visitor_id, "session", "")


def stages(visitor_id: str) -> str:
    return visitor_key(visitor_id, "stages")


def event_session(visitor_id: str, session_id: str, part: str = "") -> str:
    """``jg:{v}:es:{s}`` and its parts (``:products``, ``:categories``, ...)."""
    return visitor_key(visitor_id, "es", session_id) + part


def experiment_visitor(visitor_id: str) -> str:
    """``jg:{v}:xp``: the visitor's exposures, recent decisions and attributed orders."""
    return visitor_key(visitor_id, "xp")


def experiment_visitor_recent(visitor_id: str) -> str:
    """``jg:{v}:xp:recent``: the capped fields of ``jg:{v}:xp``, newest first."""
    return visitor_key(visitor_id, "xp", "recent")


def experiment_arms(experiment_id: str) -> str:
    """``jg:xp:{exp}:arms``: the counters of every arm of one experiment."""
    return f"{PREFIX}:xp:{{{experiment_id}}}:arms"


def experiment_decisions(experiment_id: str) -> str:
    """``jg:xp:{exp}:decisions``: the experiment's decision log (a trimmed stream)."""
    return f"{PREFIX}:xp:{{{experiment_id}}}:decisions"


def offer_redemptions(offer_id: str) -> str:
    """``jg:offer:{offer_id}:redemptions``: the redemptions counted against an offer's budget."""
    return f"{PREFIX}:offer:{{{offer_id}}}:redemptions"


# Webhook delivery (journeygate.webhooks.redis): every key under the one hash tag {webhooks/}
# (the "/" keeps it apart from a visitor named "webhooks": visitor ids cannot contain one),
# so that enqueueing, claiming and completing a delivery are each one atomic script.
WEBHOOKS = f"{PREFIX}:{{webhooks/}}"
WEBHOOK_OUTBOX = f"{WEBHOOKS}:outbox"
WEBHOOK_RETRIES = f"{WEBHOOKS}:retries"
WEBHOOK_RETRYING = f"{WEBHOOKS}:retrying"
WEBHOOK_DEAD_LETTERS = f"{WEBHOOKS}:dead-letters"
WEBHOOK_LOG = f"{WEBHOOKS}:log"


def webhook_dedupe(dedupe_key: str) -> str:
    """``jg:{webhooks/}:dedupe:<key>``: a message's dedupe key, while it counts."""
    return f"{WEBHOOKS}:dedupe:{dedupe_key}"


def webhook_visitor(visitor_id: str) -> str:
    """``jg:{webhooks/}:visitor:<visitor id>``: where the visitor's pending deliveries are."""
    return f"{WEBHOOKS}:visitor:{visitor_id}"


# Behavioral triggers (plugins/jg_triggers): per visitor, the trigger state, the ids of its
# timers and of its log entries; timers in shards and the log in keys whose hash tag holds a
# "/", which no visitor id may contain, so they never meet a visitor's keys.
def trigger_state(visitor_id: str) -> str:
    """``jg:{v}:triggers``: the visitor's trigger state and guardrail memory."""
    return visitor_key(visitor_id, "triggers")


def trigger_timer_ids(visitor_id: str) -> str:
    """``jg:{v}:triggers:timers``: the ids of the visitor's timers, by due time."""
    return visitor_key(visitor_id, "triggers", "timers")


def trigger_log_ids(visitor_id: str) -> str:
    """``jg:{v}:triggers:log``: the ids of the visitor's entries in the trigger log."""
    return visitor_key(visitor_id, "triggers", "log")


def trigger_due(shard: int) -> str:
    """``jg:{triggers/K}:due``: timer ids of shard K by due time (or end of a claim's lease)."""
    return f"{PREFIX}:{{triggers/{shard}}}:due"


def trigger_timers(shard: int) -> str:
    """``jg:{triggers/K}:timers``: what each timer of shard K carries (JSON)."""
    return f"{PREFIX}:{{triggers/{shard}}}:timers"


TRIGGER_LOG = f"{PREFIX}:{{triggers/log}}"
