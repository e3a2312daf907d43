"""The trigger store in process, for the embedded gateway (in-process profile store): the
same semantics as the Redis store, bounded the same way (visitor states expire and the least
recently used are evicted past ``max_visitors``; timers and the log are capped), and lost
when the process stops, like everything else the embedded gateway keeps."""

from __future__ import annotations

import copy
import dataclasses
import heapq
import itertools
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jg_triggers.store import (
    GUARD_CAP,
    GUARD_DEBOUNCE,
    GUARD_OK,
    GUARD_REPLAY,
    Claimed,
    GuardCheck,
    GuardResult,
    LogRecord,
    StateWrite,
    TimerEntry,
    VisitorState,
)

LOG_IDS_KEPT = 200


@dataclass(slots=True)
class _State:
    fields: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    expires: float = 0.0


class MemoryTriggerStore:
    """See :class:`jg_triggers.store.TriggerStore`."""

    def __init__(
        self,
        max_visitors: int,
        max_timers: int,
        log_maxlen: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_visitors = max_visitors
        self.max_timers = max_timers
        self.log_maxlen = log_maxlen
        self.clock = clock
        self._states: OrderedDict[str, _State] = OrderedDict()
        self._timers: dict[str, tuple[float, TimerEntry]] = {}  # id -> (score, timer)
        self._heap: list[tuple[float, str]] = []  # (score, id); stale pairs are skipped
        self._timer_ids: defaultdict[str, set[str]] = defaultdict(set)
        self._log: OrderedDict[str, LogRecord] = OrderedDict()
        self._log_ids: defaultdict[str, list[str]] = defaultdict(list)
        self._sequence = itertools.count()

    def _state(self, visitor_id: str, create: bool) -> _State | None:
        state = self._states.get(visitor_id)
        if state is not None and state.expires <= self.clock():
            del self._states[visitor_id]
            state = None
        if state is None and create:
            state = self._states[visitor_id] = _State()
            while len(self._states) > self.max_visitors:
                self._states.popitem(last=False)
        if state is not None:
            self._states.move_to_end(visitor_id)
        return state

    async def load_states(self, visitor_ids: Sequence[str]) -> list[VisitorState]:
        states = []
        for visitor_id in visitor_ids:
            state = self._state(visitor_id, create=False)
            if state is None:
                states.append(VisitorState())
            else:
                states.append(VisitorState(copy.deepcopy(state.fields), state.version))
        return states

    async def save_states(self, writes: Sequence[StateWrite], ttl_s: float) -> list[bool]:
        done = []
        for write in writes:
            state = self._state(write.visitor, create=True)
            assert state is not None
            if state.version != write.version:
                done.append(False)
                continue
            state.fields.update(copy.deepcopy(dict(write.fields)))
            for name in write.delete:
                state.fields.pop(name, None)
            state.version += 1
            state.expires = self.clock() + ttl_s
            done.append(True)
        return done

    # -- timers ----------------------------------------------------------------------------

    def _place(self, timer: TimerEntry, score: float) -> None:
        self._timers[timer.id] = (score, timer)
        heapq.heappush(self._heap, (score, timer.id))

    async def update_timers(
        self,
        timers: Sequence[TimerEntry],
        cancel: Sequence[tuple[str, str, str]],
        ttl_s: float,
    ) -> int:
        for visitor_id, trigger, key in cancel:
            self._drop(TimerEntry(visitor_id, trigger, key, 0.0).id)
        refused = 0
        for timer in timers:
            if timer.id not in self._timers and len(self._timers) >= self.max_timers:
                refused += 1
                continue
            self._place(timer, timer.due)
            self._timer_ids[timer.visitor].add(timer.id)
        return refused

    def _drop(self, timer_id: str) -> bool:
        held = self._timers.pop(timer_id, None)
        if held is None:
            return False
        ids = self._timer_ids.get(held[1].visitor)
        if ids is not None:
            ids.discard(timer_id)
            if not ids:
                del self._timer_ids[held[1].visitor]
        return True

    async def claim(self, now: float, lease_until: float, limit: int) -> list[Claimed]:
        claimed: list[Claimed] = []
        while self._heap and self._heap[0][0] <= now and len(claimed) < limit:
            score, timer_id = heapq.heappop(self._heap)
            held = self._timers.get(timer_id)
            if held is None or held[0] != score:
                continue  # moved or removed since this pair was pushed
            self._place(held[1], lease_until)
            claimed.append(Claimed(held[1], lease_until))
        return claimed

    async def finish(self, claimed: Sequence[Claimed]) -> None:
        for held in claimed:
            current = self._timers.get(held.timer.id)
            if current is not None and current[0] == held.lease:
                self._drop(held.timer.id)

    # -- guardrails and the log ------------------------------------------------------------

    async def guard(self, check: GuardCheck) -> GuardResult:
        state = self._state(check.visitor, create=True)
        assert state is not None
        fires: list[list[Any]] = state.fields.get("fires", [])
        last: dict[str, float] = state.fields.get("last", {})
        now = check.now
        if any(fire[0] == check.occurrence for fire in fires):
            return GuardResult(GUARD_REPLAY, dict(last))
        if check.debounce_s > 0 and any(
            fire[1] == check.trigger and now - fire[3] < check.debounce_s for fire in fires
        ):
            return GuardResult(GUARD_DEBOUNCE, dict(last))
        if check.cap_count > 0:
            recent = sum(
                1 for f in fires if f[2] == check.action and now - f[3] < check.cap_window_s
            )
            if recent >= check.cap_count:
                return GuardResult(GUARD_CAP, dict(last))
        kept = [fire for fire in fires if now - fire[3] < check.keep_s]
        kept.append([check.occurrence, check.trigger, check.action, now])
        state.fields["fires"] = kept[-check.fires_kept :]
        state.fields["last"] = {**last, check.trigger: now}
        state.expires = self.clock() + check.ttl_s
        return GuardResult(GUARD_OK, dict(state.fields["last"]))

    async def log(self, records: Sequence[LogRecord], maxlen: int, ttl_s: float) -> None:
        for record in records:
            entry_id = f"{int(record.at * 1000)}-{next(self._sequence)}"
            self._log[entry_id] = dataclasses.replace(record, entry_id=entry_id)
            while len(self._log) > min(maxlen, self.log_maxlen):
                self._log.popitem(last=False)
            ids = self._log_ids[record.visitor]
            ids.insert(0, entry_id)
            del ids[LOG_IDS_KEPT:]

    async def read_log(self, count: int) -> list[LogRecord]:
        return list(itertools.islice(reversed(self._log.values()), count))

    # -- erasure ---------------------------------------------------------------------------

    async def forget(self, visitor_ids: Sequence[str]) -> dict[str, int]:
        timers = log_entries = states = 0
        for visitor_id in visitor_ids:
            for timer_id in list(self._timer_ids.get(visitor_id, ())):
                timers += self._drop(timer_id)
            for entry_id in self._log_ids.pop(visitor_id, []):
                log_entries += self._log.pop(entry_id, None) is not None
            states += self._states.pop(visitor_id, None) is not None
        return {"timers": timers, "log_entries": log_entries, "visitors": states}

    async def close(self) -> None:
        self._states.clear()
        self._timers.clear()
        self._heap.clear()
