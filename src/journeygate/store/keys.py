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
``feedback_themes`` (at most ``max_themes`` names).

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
=================================  =======  ==========================  =====================

``log`` holds an anonymous visitor's events (only events without a user id), so that an
identify/alias can replay them into the customer's profile. The two visitors of a merge live
in different hash slots, so a merge is three single-slot steps, each idempotent: claim the
anonymous id (set ``alias``, read ``log``; events applied to it from then on are redirected),
replay the log into the customer (``seen`` drops what was already applied), then clear the
anonymous id's data.

Event streams are not per visitor: ``jg:events:{shard-K}`` (K = 0 .. ``stream_shards`` - 1)
are Redis Streams, each trimmed to about ``stream_maxlen`` entries. A visitor's events always
go to the shard ``crc32(visitor_id) % stream_shards``, so one visitor's events stay in order
within one stream; each shard has its own hash tag, so on Redis Cluster the shards spread over
the nodes and every stream command touches one slot. One entry holds the events of one
request for that shard (field ``e``: a JSON array).
"""

from __future__ import annotations

PREFIX = "jg"


def visitor_key(visitor_id: str, *parts: str) -> str:
    return ":".join((PREFIX, "{" + visitor_id + "}", *parts))


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


def visitor_prefix(visitor_id: str) -> str:
    """``jg:{visitor_id}:``, the prefix of every key of one visitor (used by Lua scripts)."""
    return visitor_key(visitor_id, "")


def event_stream(shard: int) -> str:
    return f"{PREFIX}:events:{{shard-{shard}}}"


EVENT_KEYS = (
    "channels",
    "categories",
    "purchased",
    "orders",
    "cart",
    "consents",
    "esessions",
    "seen",
    "log",
    "alias",
    "aliases",
)
EVENT_SESSION_KEYS = ("", ":products", ":categories", ":pages", ":searches")


def event_session(visitor_id: str, session_id: str, part: str = "") -> str:
    """``jg:{v}:es:{s}`` and its parts (``:products``, ``:categories``, ...)."""
    return visitor_key(visitor_id, "es", session_id) + part
