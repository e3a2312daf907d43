"""The trigger engine: applies the rules to observed events, and fires occurrences through the
guardrails into the webhook outbox.

Firing one occurrence (a timer that came due, or one an event fires at once):

1. :func:`jg_triggers.rules.confirm` with the visitor's trigger state and stored profile
   (of the profile it resolves to): fire, re-arm the timer, or drop it;
2. marketing actions need the visitor's consent (``suppressed:no_consent``) and wait out
   quiet hours (the timer moves to their end: ``deferred``);
3. the guard, atomic on the visitor's keys: debounce per trigger and the frequency cap per
   action type (``suppressed:debounce``, ``suppressed:cap``), recording the fire otherwise;
4. the outbox, with (a digest of) the occurrence id as dedupe key: ``sent``, or
   ``duplicate`` when it was queued before (a retry after a crash or an expired lease);
5. the profile field ``triggers`` (trigger name -> when it last fired, what the offers plugin
   reads; merged by ``ProfileStore.merge_latest``, so triggers firing at once all show), and a
   line in the trigger log.

Exactly once: a timer is held by one scheduler at a time (the claim), an occurrence the
guard let through once is let through again on a retry (never counted twice, never
suppressed by its own earlier pass), and the outbox queues one message per occurrence id.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jg_triggers import rules
from jg_triggers.settings import TriggerSettings, TriggerSpec
from jg_triggers.store import (
    GUARD_CAP,
    GUARD_DEBOUNCE,
    Claimed,
    GuardCheck,
    LogRecord,
    StateWrite,
    TimerEntry,
    TriggerStore,
)
from journeygate.events.profile import iso
from journeygate.events.schema import Event
from journeygate.store import ProfileStore, StoreUnavailable
from journeygate.webhooks import WebhookMessage, WebhookOutbox

log = logging.getLogger(__name__)

# The profile field the offers plugin reads: {trigger name: epoch seconds it last fired}.
TRIGGERS_FIELD = "triggers"
EVENT_TYPE_PREFIX = "trigger."
MAX_WRITE_ATTEMPTS = 5
MIN_FIRES_KEPT_S = 86400.0  # retries of an occurrence are recognised for at least a day
# What a fire may leave in its occurrence's timer (the backup an event's fire sets): a
# deferral to the end of quiet hours, or a later check.
TIMER_OUTCOMES = frozenset({"deferred", "rearmed"})


def dedupe_key(occurrence: str) -> str:
    """The outbox's dedupe key of an occurrence: a digest, so that the key (which outlives
    an erasure by up to ``webhooks.dedupe_ttl_s``) holds no visitor id."""
    return "trigger:" + hashlib.blake2b(occurrence.encode(), digest_size=16).hexdigest()


class TriggerEngine:
    """Rules, guardrails and the outbox for one process."""

    def __init__(
        self,
        settings: TriggerSettings,
        store: TriggerStore,
        profiles: ProfileStore,
        outbox: WebhookOutbox,
        session_gap_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.profiles = profiles
        self.outbox = outbox
        self.session_gap_s = session_gap_s
        self.clock = clock
        self.specs = settings.active
        self.by_name = {spec.name: spec for spec in self.specs}
        self.kinds = rules.watched_kinds(self.specs)
        self.keep_s = max(settings.history_s, MIN_FIRES_KEPT_S)

    # -- events ----------------------------------------------------------------------------

    async def observe(self, events: Sequence[Event]) -> None:
        """Update the trigger state of the events' visitors (each visitor's events in event
        time order, whatever order they came in), set and cancel their timers, and fire what
        the events fire now: up to four round trips for the whole batch (read every state,
        set the timers, write the states, cancel timers), plus the fires.

        Safe to run again with the same events, and that is how a failure is handled: raises
        ``StoreUnavailable`` when the batch was not observed (nothing is lost when the caller
        hands the batch over again). The state write is the commit point: the timers come
        before it (a timer a failed pass left behind is harmless, it is checked again when it
        comes due), and so does a backup timer for each occurrence to fire now, due after a
        scheduler lease, so that a fire cut short after the commit is still sent (the guard
        and the outbox make sure it is sent once). A pass after the commit finds the events'
        message ids in the state and skips them. A state is written only if it is still at
        the version read; a visitor whose state another worker wrote meanwhile (one
        visitor's events may be observed by two workers) is read and planned again."""
        settings = self.settings
        pending: dict[str, list[Event]] = {}
        for event in sorted(events, key=_event_time):  # the rules read events in time order
            if event.kind in self.kinds:
                pending.setdefault(event.profile_id, []).append(event)
        cancel: list[tuple[str, str, str]] = []
        fires: list[tuple[str, rules.Occurrence, dict[str, Any]]] = []
        backups: set[tuple[str, str, str]] = set()  # (visitor, trigger, occurrence key)
        for _ in range(MAX_WRITE_ATTEMPTS):
            if not pending:
                break
            now = self.clock()
            visitors = list(pending)
            states = await self.store.load_states(visitors)
            plans = [
                rules.observe_all(
                    pending[visitor],
                    state.fields,
                    self.specs,
                    now,
                    settings.max_event_age_s,
                    self.session_gap_s,
                )
                for visitor, state in zip(visitors, states, strict=True)
            ]
            retry_at = now + settings.scheduler.lease_s
            timers = [
                TimerEntry(visitor, t.trigger, t.key, t.due, t.data)
                for visitor, plan in zip(visitors, plans, strict=True)
                for t in plan.timers
            ] + [
                TimerEntry(visitor, occurrence.trigger, occurrence.key, retry_at, occurrence.data)
                for visitor, plan in zip(visitors, plans, strict=True)
                for occurrence in plan.fire
            ]
            await self._update_timers(timers)
            backups |= {
                (visitor, occurrence.trigger, occurrence.key)
                for visitor, plan in zip(visitors, plans, strict=True)
                for occurrence in plan.fire
            }
            writes = [
                StateWrite(visitor, state.version, plan.set, plan.delete)
                for visitor, state, plan in zip(visitors, states, plans, strict=True)
                if plan.writes
            ]
            written = iter(await self.store.save_states(writes, settings.state_ttl_s))
            retry: dict[str, list[Event]] = {}
            for visitor, state, plan in zip(visitors, states, plans, strict=True):
                if plan.writes and not next(written):
                    retry[visitor] = pending[visitor]
                    continue
                cancel += [(visitor, name, key) for name, key in plan.cancel]
                fields = {**state.fields, **plan.set}
                for name in plan.delete:
                    fields.pop(name, None)
                fires += [(visitor, occurrence, fields) for occurrence in plan.fire]
            pending = retry
        if pending:
            log.warning(
                "trigger state of %s kept changing: %d events not applied to triggers",
                ", ".join(pending),
                sum(map(len, pending.values())),
            )
        for visitor, occurrence, fields in fires:
            spec = self.by_name[occurrence.trigger]
            backup = (visitor, occurrence.trigger, occurrence.key)
            backups.discard(backup)
            try:
                outcome = await self.fire(visitor, spec, occurrence.key, occurrence.data, fields)
            except StoreUnavailable as exc:
                log.warning(
                    "trigger %s for %s: left to its backup timer (%s)", spec.name, visitor, exc
                )
                continue
            if outcome not in TIMER_OUTCOMES:  # done: its backup timer is not needed
                cancel.append(backup)
        # what is left: backups of plans that lost to another worker's write
        cancel += sorted(backups)
        try:
            await self._update_timers((), cancel)
        except StoreUnavailable as exc:
            # committed all the same: a timer left behind is checked again when it comes due
            log.warning("trigger timers not cancelled (%d): %s", len(cancel), exc)

    async def _update_timers(
        self, timers: Sequence[TimerEntry], cancel: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        refused = await self.store.update_timers(timers, cancel, self.settings.state_ttl_s)
        if refused:
            log.error(
                "%d trigger timers refused: a timer shard holds max_timers_per_shard (%d)",
                refused,
                self.settings.scheduler.max_timers_per_shard,
            )

    # -- firing ----------------------------------------------------------------------------

    async def fire_timer(self, held: Claimed) -> str:
        """Fire a timer that came due (held by this process's scheduler)."""
        timer = held.timer
        spec = self.by_name.get(timer.trigger)
        if spec is None:
            log.info("%s: trigger %s is no longer configured", timer.visitor, timer.trigger)
            return "dropped"
        return await self.fire(timer.visitor, spec, timer.key, timer.data)

    async def fire(
        self,
        visitor: str,
        spec: TriggerSpec,
        key: str,
        data: Mapping[str, Any],
        state: Mapping[str, Any] | None = None,
    ) -> str:
        """Fire occurrence ``key`` of ``spec`` for ``visitor`` if it still holds and the
        guardrails let it through; returns what happened (``sent``, ``duplicate``,
        ``deferred``, ``suppressed:...``, ``rearmed``, ``dropped``). Raises
        ``StoreUnavailable`` when Redis (the trigger store, the profile store or the outbox)
        cannot answer: the caller tries again later."""
        settings = self.settings
        now = self.clock()
        stored = await self.profiles.load_visitor(visitor, None)
        if state is None:
            (loaded,) = await self.store.load_states([visitor])
            state = loaded.fields
        if not state and not stored.profile:
            return "dropped"  # erased (or expired) since the timer was set
        verdict = rules.confirm(spec, key, data, state, stored.profile, now)
        if isinstance(verdict, rules.Rearm):
            await self._update_timers([TimerEntry(visitor, spec.name, key, verdict.due, data)])
            return "rearmed"
        if isinstance(verdict, rules.Drop):
            log.debug("trigger %s for %s not fired: %s", spec.name, visitor, verdict.reason)
            return "dropped"
        target = stored.profile_id or visitor
        occurrence = f"{spec.name}:{target}:{verdict.key}"

        async def record(outcome: str, detail: str = "") -> str:
            line = LogRecord(
                now, spec.name, target, occurrence, outcome, spec.action, spec.endpoint, detail
            )
            await self.store.log([line], settings.log_maxlen, settings.state_ttl_s)
            return outcome

        if spec.marketing and stored.consents.get(spec.consent) is not True:
            return await record("suppressed:no_consent", f"{spec.consent} not granted")
        quiet = settings.quiet_hours
        until = quiet.deferred_until(now) if spec.marketing and quiet is not None else None
        if until is not None:
            await self._update_timers([TimerEntry(visitor, spec.name, key, until, data)])
            return await record("deferred", f"quiet hours, until {iso(until)}")
        cap = settings.caps.get(spec.action)
        guarded = await self.store.guard(
            GuardCheck(
                visitor=target,
                occurrence=occurrence,
                trigger=spec.name,
                action=spec.action,
                now=now,
                debounce_s=spec.debounce_s,
                cap_count=cap.count if cap else 0,
                cap_window_s=cap.window_s if cap else 0.0,
                keep_s=self.keep_s,
                fires_kept=settings.fires_kept,
                ttl_s=settings.state_ttl_s,
            )
        )
        if guarded.outcome == GUARD_DEBOUNCE:
            return await record("suppressed:debounce", f"fired within {spec.debounce_s:g} s")
        if guarded.outcome == GUARD_CAP:
            assert cap is not None
            detail = f"{cap.count} {spec.action} per {cap.window_s:g} s"
            return await record("suppressed:cap", detail)
        message = WebhookMessage(
            endpoint=spec.endpoint,
            event_type=EVENT_TYPE_PREFIX + spec.name,
            payload={
                "trigger": spec.name,
                "type": spec.type,
                "action": spec.action,
                "marketing": spec.marketing,
                "occurrence_id": occurrence,
                "visitor_id": target,
                "fired_at": iso(now),
                "data": dict(verdict.data),
            },
            dedupe_key=dedupe_key(occurrence),
            visitor_id=target,
        )
        (queued,) = await self.outbox.enqueue([message])
        # merged, not replaced: another trigger of this visitor may be firing at the same time
        await self.profiles.merge_latest(target, TRIGGERS_FIELD, guarded.last)
        if queued:
            log.info("trigger %s fired for %s (%s)", spec.name, target, occurrence)
        return await record("sent" if queued else "duplicate")


def _event_time(event: Event) -> float:
    return event.timestamp
