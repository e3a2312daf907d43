"""The plugin contract: every hook journeygate calls, in the order a gateway lives through them.

Implement a hook with ``from journeygate import hookimpl``. Hooks are called with keyword
arguments, so an implementation may accept any subset of the arguments listed here.

Any implementation may be ``async def``; the pipeline awaits it (pluggy itself never awaits).
For that reason no hook uses pluggy's ``firstresult``: hooks documented as *first result
wins* are resolved by the pipeline, which awaits implementations in call order and stops at
the first one that returns a usable value. A synchronous implementation that does heavy CPU
work should be decorated with :func:`journeygate.offload` so that it runs in the executor and
never blocks the event loop.

Every decision hook runs under a time budget (``[plugin.NAME] budget_ms`` or
``[plugins] default_budget_ms``). An implementation that exceeds it or raises is skipped for
that request, logged, and counted in ``/metrics``; the slot then falls back to the next plugin
and finally to the built-in fallback, so a request never fails because of a plugin. The
batch observer :func:`journeygate_observe_events` has a budget of its own per batch and is the
one hook that may ask for its work to be done again, by raising :class:`RetryBatch`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from journeygate.catalog import Catalog
    from journeygate.config import AppConfig
    from journeygate.events.schema import Event
    from journeygate.model import Block, Candidate, DecisionContext, Offer, SlotRequest
    from journeygate.render import Renderer
    from journeygate.store import DecayedScore, ProfileStore

PROJECT_NAME = "journeygate"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)

# The least time an erasure hook gets, whatever its plugin's (per-decision) budget: erasing
# takes round trips a decision never makes.
FORGET_MIN_BUDGET_S = 5.0
# The ``role`` passed to journeygate_startup.
ROLE_GATEWAY = "gateway"
ROLE_WORKER = "worker"
ROLE_EMBEDDED = "embedded"


class RetryBatch(Exception):
    """Raised by a :func:`journeygate_observe_events` implementation that could not observe
    the batch now (its own storage is unavailable, say) and needs it again: the batch's stream
    entries are not acknowledged, so they are delivered again after ``events.claim_idle_ms``
    (and dead-lettered after ``events.max_deliveries`` deliveries, from where ``journeygate
    dead-letters --requeue`` brings them back). The message is logged. Any other exception
    is logged and the batch is acknowledged."""


# -- lifecycle ---------------------------------------------------------------------------


@hookspec
def journeygate_startup(
    config: AppConfig, catalog: Catalog, executor: Executor, store: ProfileStore, role: str
) -> Awaitable[None] | None:
    """Prepare the plugin: load models, open connections, read its own settings.

    When: once per gateway process, after the profile store and the catalog are open and
    before the first request is served; and once per ``journeygate worker`` for the plugins
    that observe events or implement :func:`journeygate_merge_scores`. A plugin whose
    startup raises is unregistered for the life of the process, logged, and reported by
    ``/readyz``.

    :param config: the whole application config; a plugin reads its own section with
        ``config.plugin_config("NAME").settings``.
    :param catalog: the product catalog loaded for this process.
    :param executor: the gateway's thread pool for CPU-heavy work (model loading, scoring);
        use it with ``loop.run_in_executor`` so the event loop never blocks.
    :param store: the process's profile store (:class:`~journeygate.store.ProfileStore`),
        already open; a plugin that writes profile fields (``store.update_profile``) from an
        observer hook keeps it. The gateway closes it; a plugin must not.
    :param role: what this process does, for plugins with background work that must run in
        exactly one kind of process: ``"gateway"`` (serves requests; events go to Redis and
        are applied by workers), ``"worker"`` (a ``journeygate worker``: applies events and
        calls :func:`journeygate_observe_event` and :func:`journeygate_observe_events`) or
        ``"embedded"`` (a gateway with the in-process store, which applies and observes
        events itself). A scheduler that acts on observed events runs in ``worker`` and
        ``embedded`` processes, and so does loading a model only observers use (the
        sentiment plugin's: a ``gateway`` reads the stored sentiment without it).
    :returns: nothing. All implementations are called, in call order. May be async.
    """


@hookspec
def journeygate_shutdown() -> Awaitable[None] | None:
    """Release what :func:`journeygate_startup` acquired.

    When: once when the gateway stops, only for plugins whose startup succeeded.

    :returns: nothing. All implementations are called; failures are logged, not raised.
        May be async.
    """


@hookspec
def journeygate_slot_strategies() -> Sequence[str] | None:
    """Declare the recommendation strategies this plugin can answer (``similar_items``, …).

    When: once at startup, before :func:`journeygate_startup`. A slot that asks for a strategy
    no plugin declared is rejected with ``400 unknown_strategy``; a declared strategy whose
    plugin failed to start is answered by the fallback.

    :returns: a list of strategy names, or None. All results are collected. May be async.
    """


@hookspec
def journeygate_register_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add subcommands to the ``journeygate`` command line (``train``, ``worker``, …).

    When: once when the command line is parsed, before any command runs.

    :param subparsers: the ``argparse`` subparsers of ``journeygate``. Add a parser with
        ``subparsers.add_parser(NAME, help=...)`` and set its handler with
        ``parser.set_defaults(handler=FUNCTION)``; the handler is called as
        ``FUNCTION(args, config)`` and returns the exit status.
    :returns: nothing. All implementations are called. Synchronous.
    """


# -- one decision ------------------------------------------------------------------------


@hookspec
def journeygate_enrich_visitor(
    context: DecisionContext,
) -> dict[str, Any] | Awaitable[dict[str, Any] | None] | None:
    """Derive the visitor's state for this decision: journey stage, intent, segment, sentiment.

    When: once per decision, after the stored profile and session were merged with the request
    context and before any slot is answered. All implementations run concurrently.

    :param context: the decision so far (``context.stored`` holds the stored profile and
        session, ``context.request`` the page's real-time context).
    :returns: a mapping with any of ``stage``, ``intent``, ``segment``, ``sentiment`` and any
        other keys (kept as visitor attributes), or None. All results are collected; for a key
        set by several plugins the one called first wins. May be async.
    """


@hookspec
def journeygate_candidates(
    context: DecisionContext, slot: SlotRequest
) -> Sequence[Candidate] | Awaitable[Sequence[Candidate] | None] | None:
    """Propose products for a ``recommendations`` slot.

    When: once per recommendations slot; the slots of one decision are answered concurrently.
    Implementations are tried in call order until one returns a non-empty list; the built-in
    fallback (popular products) is called last.

    :param context: the enriched decision context (``context.visitor`` is filled).
    :param slot: the slot to fill: ``slot.strategy``, ``slot.limit``, ``slot.params``.
    :returns: candidates best first, or None/empty to let the next plugin answer. The
        pipeline drops unknown and unavailable products, the page's own product, cart items
        and products another block of the same page already shows, then cuts to
        ``slot.limit`` — so return more than ``slot.limit`` when you can. A plugin that
        answers from a cache of its own should return the cached *tuple* itself: the pipeline
        then builds that tuple's items once, not on every decision.
        *First non-empty result wins.* May be async.
    """


@hookspec
def journeygate_choose_offer(
    context: DecisionContext, slot: SlotRequest
) -> Offer | Awaitable[Offer | None] | None:
    """Choose the offer or banner for an ``offer`` slot.

    When: once per offer slot, concurrently with the other slots. Implementations are tried in
    call order; the built-in fallback answers with the configured default offer.

    :param context: the enriched decision context.
    :param slot: the offer slot (``slot.params`` may carry an experiment's choices).
    :returns: an :class:`~journeygate.model.Offer`, or None to let the next plugin answer.
        *First non-None result wins.* May be async. ``Offer.nothing(reason)`` answers the
        slot with an empty block (empty HTML, no template rendered, no fallback asked). What
        the offer's ``explain`` mapping holds (the alternatives considered, why each lost) is
        shown in the decision's explain trace when the request asked for it, as
        ``{"hook": "choose_offer", "slot": ..., "explanations": {PLUGIN: explain}}``.
    """


@hookspec
def journeygate_postprocess_block(context: DecisionContext, block: Block) -> Awaitable[None] | None:
    """Adjust an answered block before it is rendered: re-rank, filter, annotate items.

    When: once per block, after candidates or the offer were resolved and before rendering.
    Implementations run one after another in call order and may change ``block.items``
    (a list of JSON-ready dicts) or ``block.offer`` in place. A failing implementation's
    changes are discarded.

    :param context: the enriched decision context.
    :param block: the answered block (``block.source`` names the plugin that answered).
    :returns: nothing. All implementations are called. May be async.
    """


@hookspec
def journeygate_render_block(
    context: DecisionContext, block: Block, renderer: Renderer
) -> str | Awaitable[str | None] | None:
    """Render a block's HTML fragment (for the JSON answer and for ESI includes).

    When: once per block, last. The built-in renderer (called last) uses the Jinja2 template
    of the block's kind, or ``slot.template`` when the page names one.

    :param context: the enriched decision context.
    :param block: the block, post-processed.
    :param renderer: the template environment (autoescaping on); ``renderer.render(name,
        **values)`` renders a template a deployment may override.
    :returns: the HTML as a string, or None. *First non-None result wins.* Anything returned
        is inserted verbatim, so escape data yourself or use the renderer. May be async.
    """


@hookspec
def journeygate_observe_decision(
    context: DecisionContext, blocks: Sequence[Block]
) -> Awaitable[None] | None:
    """Observe a decision that was served: log exposures, update counters, feed experiments.

    When: after the answer was built. Implementations are called one after the other; a
    synchronous one is called before the response is sent, so keep it to bookkeeping and
    return an awaitable for I/O (a store write): that part, and the implementations after
    it, run in a background task the response does not wait for. Each implementation runs
    under its time budget.

    :param context: the decision context the blocks were chosen with.
    :param blocks: the blocks exactly as they were sent.
    :returns: nothing. All implementations are called. May be async.
    """


# -- events ------------------------------------------------------------------------------


@hookspec
def journeygate_observe_event(event: Event) -> Awaitable[None] | None:
    """Observe a touchpoint event that was just applied to a visitor's profile and session.

    When: once per event, after it was applied, by the process that applied it: a
    ``journeygate worker`` (with Redis; the worker calls :func:`journeygate_startup` and
    :func:`journeygate_shutdown` of the plugins that implement this hook,
    :func:`journeygate_observe_events` or :func:`journeygate_merge_scores`, and of no
    others) or the gateway itself (with the in-process store). An event is observed at most
    once: a duplicate message id, or a redelivered event that was already applied, is not
    observed again, so a worker that dies between applying a batch and observing it leaves
    those events unobserved (``event.message_id`` identifies an event); a plugin that must
    see every event implements :func:`journeygate_observe_events` instead. The worker
    acknowledges a batch after its observers returned. Each implementation runs under its
    plugin's budget; failures are logged and never stop the event from being acknowledged.

    :param event: the applied :class:`~journeygate.events.schema.Event`: ``message_id``,
        ``name`` as sent, internal ``kind`` (``product_view``, ``cart_add``, ``order``, ...),
        ``profile_id`` it was applied to (after identity merges), ``user_id``,
        ``anonymous_id``, ``session_id``, ``timestamp`` (event time, epoch seconds),
        ``received_at``, ``channel``, the original ``properties`` and the normalized
        ``fields``.
    :returns: nothing. All implementations are called, in call order. May be async.
    """


@hookspec
def journeygate_observe_events(events: Sequence[Event]) -> Awaitable[None] | None:
    """Observe a batch of applied events at once, at least once: for work that costs round
    trips per call rather than per event (the triggers engine), and that must not miss an
    event when a worker dies.

    When: once per batch a ``journeygate worker`` applies (the entries it read from the
    streams in one go), by the process that applied it, after the per-event
    :func:`journeygate_observe_event` observers and *before* the worker acknowledges the
    batch's stream entries; with the in-process store, once per ingestion request, in the
    gateway. Not called for a batch of which nothing was applied or applied before. A batch
    delivered again (its worker died before acknowledging it, an implementation raised
    :class:`RetryBatch`, or its dead letters were requeued) is observed again with the events
    an earlier delivery applied, so an event may be observed more than once, and an
    implementation must be idempotent per ``event.message_id``. A client sending a message id
    again is such a redelivery too; events the store dropped for an erased visitor never are.

    Each implementation runs under its plugin's batch budget (``[plugin.NAME]
    batch_budget_ms``, else ``[plugins] default_batch_budget_ms``; shorter than
    ``events.claim_idle_ms``, so that no other worker claims a batch that is still being
    observed). One that runs past it is cancelled, logged and counted
    (``journeygate_plugin_failures_total{hook="journeygate_observe_events",
    reason="timeout"}`` where the process serves ``/metrics``) and the batch is acknowledged
    all the same: acknowledging never waits longer than the budget. So is one that raises,
    with ``reason="error"``, except for :class:`RetryBatch` (``reason="retry"``): then the
    batch is not acknowledged and comes back (every implementation sees it again); with the
    in-process store the ingestion request answers 503 and the client sends it again.

    :param events: the applied events of the batch, each an
        :class:`~journeygate.events.schema.Event` as :func:`journeygate_observe_event`
        describes it, in the order per-event observers see them: as they came (the batch's
        stream entries in the order read, each entry's events as sent), so a visitor's late
        event may come after later ones; sort by ``event.timestamp`` where event time
        matters.
    :returns: nothing. All implementations are called, in call order, each once per batch,
        whatever the others did. May be async.
    """


@hookspec
def journeygate_merge_scores(
    profile: Mapping[str, Any],
) -> Sequence[DecayedScore] | Awaitable[Sequence[DecayedScore] | None] | None:
    """Carry the plugin's time-decayed scores (the sentiment plugin's ``sentiment``) from an
    anonymous visitor's profile into the customer's, when an identify/alias merges the two.

    When: at a merge, by the process that applies events (a ``journeygate worker``, or the
    gateway with the in-process store), after the anonymous visitor's events were replayed
    into the customer and before its profile is dropped. The store blends the scores into the
    customer's profile (:func:`journeygate.store.decay.blended`: the older counts with its
    decay weight, the newer's details are kept) in the same atomic step that records the
    merge, so a merge done again (its worker died) blends nothing twice. Each implementation
    runs under its plugin's budget; one that fails or runs past it is logged and the merge
    goes on without its scores.

    :param profile: the anonymous visitor's stored profile fields.
    :returns: the scores found in ``profile`` (:class:`~journeygate.store.DecayedScore`), or
        None. All results are collected, in call order. May be async.
    """


# -- erasure -----------------------------------------------------------------------------


@hookspec
def journeygate_forget_visitor(
    visitor_ids: Sequence[str],
) -> Mapping[str, int] | Awaitable[Mapping[str, int] | None] | None:
    """Erase what the plugin keeps about visitors outside the profile (timers, logs, queued
    messages): the right to be forgotten.

    When: on ``DELETE /v1/profiles/{id}``, in the gateway, before the profile store erases
    the visitor, so that a retry still knows every merged id. An implementation that raises
    or runs past its time (its plugin's budget, at least :data:`FORGET_MIN_BUDGET_S`) makes
    the request answer 503 and the client retries the whole erasure; an implementation must
    therefore be idempotent.

    :param visitor_ids: the id as requested, the profile it resolves to, and every id merged
        into that profile (identify/alias), each once.
    :returns: what was erased, as counts by kind (``{"timers": 2, "log_entries": 5}``), or
        None when the plugin keeps nothing. All implementations are called, in call order;
        the erasure response lists each plugin's counts. May be async.
    """
