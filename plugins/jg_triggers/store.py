"""What the trigger engine stores, behind one protocol with two implementations: Redis
(:mod:`jg_triggers.redis_store`, shared by every worker and gateway) and in process
(:mod:`jg_triggers.memory_store`, for the embedded gateway). Key names and bounds are in
``journeygate.store.keys``.

Three kinds of state:

* per visitor: its trigger state (a hash of JSON fields, see :mod:`jg_triggers.rules`,
  written with a version check so that two workers never lose each other's update), the
  guardrail memory (recent fires: caps, debounce, and which occurrences were already let
  through), the ids of its timers and of its log entries (for an erasure);
* timers, sharded by visitor: a zset of due times and a hash of what each timer carries;
  claiming moves a due timer to the end of its lease, so a scheduler that dies holding it
  gives it back when the lease runs out, and two schedulers never hold it at once;
* the log: every fired trigger and what became of it, trimmed to ``log_maxlen``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

# What the guard answers: let it through, it was let through before (a retry of the same
# occurrence: send again, the outbox drops the duplicate), or suppressed.
GUARD_OK = "ok"
GUARD_REPLAY = "replay"
GUARD_DEBOUNCE = "debounce"
GUARD_CAP = "cap"


def shard_of(visitor_id: str, shards: int) -> int:
    """The timer shard of a visitor (stable across processes and restarts)."""
    return zlib.crc32(visitor_id.encode()) % shards


@dataclass(frozen=True, slots=True)
class VisitorState:
    """A visitor's trigger state as read, with the version a write must still find."""

    fields: Mapping[str, Any] = field(default_factory=dict)
    version: int = 0


@dataclass(frozen=True, slots=True)
class StateWrite:
    """Fields to set and delete in a visitor's state, if it is still at ``version``."""

    visitor: str
    version: int
    fields: Mapping[str, Any]
    delete: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class TimerEntry:
    """A timer of one visitor: trigger ``trigger`` comes due at ``due`` for occurrence key
    ``key`` (empty: the one timer of this trigger that events keep moving)."""

    visitor: str
    trigger: str
    key: str
    due: float
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Unique per shard: visitor ids and trigger names never contain ``|``."""
        return f"{self.visitor}|{self.trigger}|{self.key}"

    def encode(self) -> bytes:
        return orjson.dumps(
            {"v": self.visitor, "t": self.trigger, "k": self.key, "due": self.due, "d": self.data}
        )

    @classmethod
    def decode(cls, raw: str | bytes) -> TimerEntry:
        fields = orjson.loads(raw)
        return cls(fields["v"], fields["t"], fields["k"], float(fields["due"]), fields["d"])


@dataclass(frozen=True, slots=True)
class Claimed:
    """A timer this scheduler holds until ``lease`` (the score it was claimed with)."""

    timer: TimerEntry
    lease: float


@dataclass(frozen=True, slots=True)
class GuardCheck:
    """One occurrence about to be sent, and the guardrails that apply to it."""

    visitor: str
    occurrence: str
    trigger: str
    action: str
    now: float
    debounce_s: float
    cap_count: int  # 0: no cap on this action type
    cap_window_s: float
    keep_s: float  # how long fires are remembered
    fires_kept: int
    ttl_s: float


@dataclass(frozen=True, slots=True)
class GuardResult:
    """The guard's answer and, for the profile, when each trigger last fired."""

    outcome: str
    last: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One line of the trigger log: a trigger that fired and what became of it."""

    at: float
    trigger: str
    visitor: str
    occurrence: str
    outcome: str  # sent, duplicate, deferred, suppressed:REASON, failed
    action: str
    endpoint: str
    detail: str = ""
    entry_id: str = ""

    def fields(self) -> dict[str, str]:
        return {
            "at": repr(self.at),
            "trigger": self.trigger,
            "visitor": self.visitor,
            "occurrence": self.occurrence,
            "outcome": self.outcome,
            "action": self.action,
            "endpoint": self.endpoint,
            "detail": self.detail,
        }

    @classmethod
    def from_fields(cls, entry_id: str, fields: Mapping[str, str]) -> LogRecord:
        return cls(
            at=float(fields.get("at", 0)),
            trigger=fields.get("trigger", ""),
            visitor=fields.get("visitor", ""),
            occurrence=fields.get("occurrence", ""),
            outcome=fields.get("outcome", ""),
            action=fields.get("action", ""),
            endpoint=fields.get("endpoint", ""),
            detail=fields.get("detail", ""),
            entry_id=entry_id,
        )


class TriggerStore(Protocol):
    """Trigger state, timers, guardrails and the log. Every method is one round trip (for
    any number of visitors or timers) unless it says otherwise; Redis errors surface as
    ``StoreUnavailable``."""

    async def load_states(self, visitor_ids: Sequence[str]) -> list[VisitorState]:
        """Each visitor's trigger state (empty, version 0, when it has none)."""
        ...

    async def save_states(self, writes: Sequence[StateWrite], ttl_s: float) -> list[bool]:
        """Apply each write (set and delete fields, refresh the TTL) only if that visitor's
        state is still at the write's version, then bump it; per write, False when another
        process wrote the visitor's state first (read it again and retry)."""
        ...

    async def update_timers(
        self,
        timers: Sequence[TimerEntry],
        cancel: Sequence[tuple[str, str, str]],
        ttl_s: float,
    ) -> int:
        """Remove the timers in ``cancel`` (visitor, trigger, key), then set (or move)
        ``timers`` and remember their ids per visitor for an erasure; returns how many new
        timers were refused because their shard is full."""
        ...

    async def claim(self, now: float, lease_until: float, limit: int) -> list[Claimed]:
        """Due timers (at most ``limit`` per shard), each now held until ``lease_until``."""
        ...

    async def finish(self, claimed: Sequence[Claimed]) -> None:
        """Remove claimed timers that are still as claimed (not moved since)."""
        ...

    async def guard(self, check: GuardCheck) -> GuardResult:
        """Atomically check debounce and the cap, and record the fire when they pass."""
        ...

    async def log(self, records: Sequence[LogRecord], maxlen: int, ttl_s: float) -> None:
        """Append to the log (two round trips with Redis: the entries, then their ids per
        visitor)."""
        ...

    async def read_log(self, count: int) -> list[LogRecord]:
        """The newest ``count`` records, newest first."""
        ...

    async def forget(self, visitor_ids: Sequence[str]) -> dict[str, int]:
        """Drop the visitors' state, timers and log entries (two round trips with Redis);
        returns counts by kind."""
        ...

    async def close(self) -> None: ...
