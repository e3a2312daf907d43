"""Applying events to profiles and sessions: identity merges (with the plugins' decayed
scores, ``journeygate_merge_scores``), redirects to merged profiles, and the observer hooks
(``journeygate_observe_event`` per applied event, ``journeygate_observe_events`` per batch).
Used by the worker and, without Redis, by the gateway itself."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pluggy

from journeygate.config import AppConfig
from journeygate.events.schema import Event
from journeygate.experiments.attribution import Attribution
from journeygate.hookspecs import RetryBatch
from journeygate.metrics import Metrics
from journeygate.store import DecayedScore, EventsRejected, ProfileStore, StoreUnavailable

log = logging.getLogger(__name__)

MERGE_KINDS = frozenset({"identify", "alias"})
MAX_REDIRECTS = 4
OBSERVE_HOOK = "journeygate_observe_event"
OBSERVE_BATCH_HOOK = "journeygate_observe_events"
MERGE_SCORES_HOOK = "journeygate_merge_scores"


class BatchNotObserved(RetryBatch):
    """The events were applied (``applied`` of them now) but a batch observer raised
    :class:`RetryBatch`: the caller must not acknowledge them, so that they come again."""

    def __init__(self, message: str, applied: int) -> None:
        super().__init__(message)
        self.applied = applied


class Applier:
    """Applies batches of events (internal shape, see ``journeygate.events.schema``)."""

    def __init__(
        self,
        store: ProfileStore,
        config: AppConfig,
        pm: pluggy.PluginManager | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.pm = pm
        self.metrics = metrics
        self.attribution = Attribution.for_store(store, config)
        self._budgets: dict[str, float] = {}  # per plugin: _call runs per event and observer

    async def apply(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Apply ``events``, let the per-event observers see those applied now and the batch
        observers those applied now or by an earlier call (a redelivery), and return how many
        were applied now. Safe to call again with the same events: nothing is applied twice.
        Raises ``BatchNotObserved`` when a batch observer asked for the batch again, else
        ``EventsRejected`` when the store rejected some visitor's events, in both cases after
        the others were applied and observed."""
        for event in events:
            anonymous, user = event.get("a"), event.get("u")
            if event["k"] in MERGE_KINDS and anonymous and user and anonymous != user:
                await self.merge(anonymous, user, event["r"])
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for event in events:
            groups.setdefault(event["v"], []).append(event)
        batches = [(visitor_id, sorted(group, key=_time)) for visitor_id, group in groups.items()]
        rejected: list[str] = []
        known = await self._apply(batches, rejected)
        applied = [(event, into) for event, into, now in known if now]
        if applied and self.attribution is not None:
            await self._attribute([event for event, _ in applied])
        if known and self.pm is not None:
            # observers see the events in the order they came (per visitor, by event time)
            position = {id(event): index for index, event in enumerate(events)}
            known.sort(key=lambda found: position[id(found[0])])
            if applied and self._observers(OBSERVE_HOOK):
                await self.observe(
                    [Event.from_internal(event, into) for event, into, now in known if now]
                )
            if self._observers(OBSERVE_BATCH_HOOK):
                retry = await self.observe_batch(
                    [Event.from_internal(event, into) for event, into, _ in known]
                )
                if retry:
                    raise BatchNotObserved("; ".join(retry), len(applied))
        if rejected:
            raise EventsRejected("; ".join(rejected), len(applied))
        return len(applied)

    async def _apply(
        self, batches: list[tuple[str, list[Mapping[str, Any]]]], rejected: list[str] | None = None
    ) -> list[tuple[Mapping[str, Any], str, bool]]:
        """Apply, following redirects to merged profiles: (event, profile it was applied to,
        whether it was applied now) for every event applied now or by an earlier call; why a
        visitor's events were rejected goes to ``rejected`` (or raises ``EventsRejected``
        without a list)."""
        applied: list[tuple[Mapping[str, Any], str, bool]] = []
        for _ in range(MAX_REDIRECTS + 1):
            if not batches:
                return applied
            redirected = []
            for (_, group), result in zip(
                batches, await self.store.apply_events(batches), strict=True
            ):
                if result.redirect is not None:
                    redirected.append((result.redirect, group))
                    continue
                if result.error is not None:
                    if rejected is None:
                        raise EventsRejected(f"{result.visitor_id}: {result.error}")
                    rejected.append(f"{result.visitor_id}: {result.error}")
                    continue
                applied += [
                    (event, result.visitor_id, flag)
                    for event, flag, duplicate in zip(
                        group, result.flags, result.duplicates, strict=True
                    )
                    if flag or duplicate
                ]
            batches = redirected
        log.error(
            "events for %s not applied: the chain of merged ids is longer than %d",
            ", ".join(visitor_id for visitor_id, _ in batches),
            MAX_REDIRECTS,
        )
        return applied

    async def _attribute(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Credit clicks and orders to experiment arms; the events stay applied when the
        experiment storage fails (their credit is lost, and logged)."""
        assert self.attribution is not None
        try:
            await self.attribution.attribute(events)
        except StoreUnavailable as exc:
            log.warning("experiment attribution failed for %d events: %s", len(events), exc)

    def _observers(self, hook: str) -> list[Any]:
        assert self.pm is not None
        return list(reversed(getattr(self.pm.hook, hook).get_hookimpls()))

    async def merge(self, anonymous_id: str, user_id: str, received: float) -> None:
        """Merge an anonymous visitor into a customer: claim it, replay its logged events
        into the customer (already-applied message ids are skipped, so a retry after a crash
        counts nothing twice), then link it, blending the plugins' decayed scores found in its
        profile into the customer's (once), and drop the anonymous copy. Each step touches one
        visitor's keys only (one Redis Cluster slot) and is idempotent. An identify
        ``received`` before either id was erased merges nothing (see the store's
        ``begin_merge``)."""
        start = await self.store.begin_merge(anonymous_id, user_id, received)
        if start.erased:
            log.info("%s was erased after this identify; not merging it", anonymous_id)
            return
        if start.merged_into is not None:
            log.info(
                "%s is already merged into %s; not merging it into %s",
                anonymous_id,
                start.merged_into,
                user_id,
            )
            return
        if start.events:
            replay: list[Mapping[str, Any]] = sorted(
                (dict(event, u=user_id) for event in start.events), key=_time
            )
            await self._apply([(user_id, replay)])
        scores = await self._merge_scores(anonymous_id)
        await self.store.finish_merge(anonymous_id, user_id, received, scores)

    async def _merge_scores(self, anonymous_id: str) -> list[DecayedScore]:
        """The decayed scores plugins find in the anonymous visitor's profile (read only
        when a plugin implements ``journeygate_merge_scores``)."""
        impls = self._observers(MERGE_SCORES_HOOK) if self.pm is not None else []
        profile = await self.store.get_profile(anonymous_id) if impls else None
        if profile is None:
            return []
        scores: list[DecayedScore] = []
        for impl in impls:
            scores += await self._call(impl, MERGE_SCORES_HOOK, {"profile": profile}) or ()
        return scores

    async def _call(self, impl: Any, hook: str, kwargs: Mapping[str, Any]) -> Any:
        """One plugin's implementation of ``hook``, under its plugin's budget: its result, or
        None when it failed or ran past the budget (logged)."""
        budget = self._budgets.get(impl.plugin_name)
        if budget is None:
            budget = self._budgets[impl.plugin_name] = self.config.budget_s(impl.plugin_name)
        try:
            result = impl.function(*(kwargs[name] for name in impl.argnames))
            if inspect.isawaitable(result):
                async with asyncio.timeout(budget):
                    return await result
            return result
        except TimeoutError:
            log.warning(
                "plugin %s exceeded its %.0f ms budget in %s",
                impl.plugin_name,
                budget * 1000,
                hook,
            )
        except Exception:
            log.exception("plugin %s raised in %s", impl.plugin_name, hook)
        return None

    async def observe(self, events: Sequence[Event]) -> None:
        """Call every ``journeygate_observe_event`` implementation for each event, under its
        plugin's budget; a failing observer is logged and never stops the others."""
        impls = self._observers(OBSERVE_HOOK)
        for event in events:
            for impl in impls:
                await self._call(impl, OBSERVE_HOOK, {"event": event})

    async def observe_batch(self, events: Sequence[Event]) -> list[str]:
        """Call every ``journeygate_observe_events`` implementation once with the batch,
        each under its plugin's batch budget; returns why those that raised ``RetryBatch``
        need the batch again. Any other failure, a timeout included, is logged and counted,
        and does not stop the others."""
        retry: list[str] = []
        for impl in self._observers(OBSERVE_BATCH_HOOK):
            plugin = impl.plugin_name
            budget = self.config.batch_budget_s(plugin)
            started = time.perf_counter()
            reason = None
            try:
                result = impl.function(*({"events": events}[name] for name in impl.argnames))
                if inspect.isawaitable(result):
                    async with asyncio.timeout(budget):
                        await result
            except TimeoutError:
                reason = "timeout"
                log.error(
                    "plugin %s exceeded its %.0f ms batch budget in %s: %d events acknowledged"
                    " without it",
                    plugin,
                    budget * 1000,
                    OBSERVE_BATCH_HOOK,
                    len(events),
                )
            except RetryBatch as exc:
                reason = "retry"
                retry.append(f"{plugin}: {exc}")
                log.warning(
                    "plugin %s needs a batch of %d events again: %s", plugin, len(events), exc
                )
            except Exception:
                reason = "error"
                log.exception("plugin %s raised in %s", plugin, OBSERVE_BATCH_HOOK)
            if self.metrics is not None:
                elapsed = time.perf_counter() - started
                self.metrics.plugin_seconds.labels(plugin, OBSERVE_BATCH_HOOK).observe(elapsed)
                if reason is not None:
                    self.metrics.plugin_failures.labels(plugin, OBSERVE_BATCH_HOOK, reason).inc()
        return retry


def _time(event: Mapping[str, Any]) -> float:
    return float(event["t"])
