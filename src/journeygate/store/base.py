"""The profile store contract and the factory that picks an implementation from config."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from journeygate.config import EventsConfig, StoreConfig
from journeygate.model import StoredVisitor
from journeygate.store.decay import DecayedScore


def floor_ms(at: float) -> float:
    """Epoch seconds to the millisecond, rounded down: a recorded time is never later than
    it was (a window's end stays exact), and fits the 14 digits Redis's cjson writes."""
    return math.floor(at * 1000) / 1000


# Receipt times are rounded to the millisecond (``journeygate.events.ingest``).
RECEIPT_STEP_S = 0.001


def erasure_time() -> float:
    """Now, as an erasure's tombstone records it: on the millisecond grid of events' receipt
    times, rounded up, so that every event received before the erasure has a receipt time
    at or below it and is dropped, even one whose time was rounded up. (Compared unrounded,
    an event received within half a millisecond before an erasure survived it, and one
    received within half a millisecond after it was dropped.)"""
    return math.ceil(time.time() / RECEIPT_STEP_S) * RECEIPT_STEP_S


async def past_erasure(erased_at: float) -> None:
    """Wait until an event received from now on gets a receipt time above ``erased_at``
    (at most a millisecond and a half): a store's erasure returns after it, so that what a
    client sends once the erasure answered is kept."""
    delay = erased_at + 0.6 * RECEIPT_STEP_S - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


class StoreUnavailable(RuntimeError):
    """The backing store could not be reached in time."""


class EventsRejected(ValueError):
    """The store refused events because of what they hold (malformed fields), not because it
    is unavailable: applying them again fails again. ``applied``: how many other events of
    the same call were applied (a retry finds those already applied and counts them no more)."""

    def __init__(self, message: str, applied: int = 0) -> None:
        super().__init__(message)
        self.applied = applied


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome of applying one visitor's events: a flag per event (False: a duplicate
    message id, or received before the visitor was erased), the id the visitor was merged
    into (nothing was applied; apply the events there), or why the events were rejected
    (``error``; nothing was applied). ``duplicates`` tells the two kinds of skipped events
    apart, True for an event an earlier call applied: batch observers see those again (a
    redelivered batch), never the events of an erased visitor."""

    visitor_id: str
    flags: tuple[bool, ...] = ()
    redirect: str | None = None
    error: str | None = None
    duplicates: tuple[bool, ...] = ()


@dataclass(frozen=True, slots=True)
class MergeStart:
    """Claiming an anonymous visitor for a merge: its logged events to replay into the
    customer, or the other customer it was already merged into, or ``erased`` when it was
    erased after the identify was received (in both cases nothing is merged)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    merged_into: str | None = None
    erased: bool = False


@dataclass(frozen=True, slots=True)
class StageTransition:
    """A visitor's journey stage changing (``from_stage`` None: its first stage), at a
    decision."""

    visitor_id: str
    from_stage: str | None
    to_stage: str
    at: float
    decision_id: str


@dataclass(frozen=True, slots=True)
class RawVisitor:
    """What the event worker built for one visitor, as stored; ``journeygate.events.profile``
    turns it into the API's profile. Pairs are (member, score), highest score first."""

    profile: dict[str, Any]
    channels: dict[str, int]
    categories: list[tuple[str, float]]
    purchased: list[tuple[str, float]]
    consents: dict[str, tuple[bool, float]]
    cart: dict[str, tuple[int, float | None]]
    aliases: list[str]
    # id, fields (counters), products, categories, pages [([product_id, path], time)],
    # searches (newest first); newest session first
    sessions: list[dict[str, Any]]


class ProfileStore(Protocol):
    """What the gateway needs from profile storage. Every method is one round trip."""

    backend: str

    async def load_visitor(
        self, visitor_id: str, session_id: str | None, page_view: str | None = None
    ) -> StoredVisitor:
        """Read the profile, view history and session; record ``page_view`` if given.

        The state returned is the state *before* the page view is recorded. Raises
        :class:`StoreUnavailable` when the store cannot answer within its timeout.
        """
        ...

    async def update_profile(self, visitor_id: str, fields: Mapping[str, Any]) -> None:
        """Set profile fields (JSON values) and refresh the profile's TTL."""
        ...

    async def update_profiles(self, updates: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Set profile fields of many visitors (``(visitor_id, fields)`` pairs) in one round
        trip, as :meth:`update_profile` does for one: for bulk writers such as
        ``journeygate segment``, which chunk their updates."""
        ...

    async def blend_score(self, visitor_id: str, score: DecayedScore) -> None:
        """Blend ``score`` into the one stored in the profile (the rule of
        :func:`journeygate.store.decay.blended`) and refresh the profile's TTL, in one atomic
        step, so that of concurrent calls for one visitor (two workers scoring two of its
        feedbacks) every one counts. A visitor merged into another one (identify/alias) is
        not written: the profile it was merged into is, as for its events."""
        ...

    async def record_times(
        self,
        visitor_id: str,
        field: str,
        names: Sequence[str],
        at: float,
        window_s: float,
        keep: int,
    ) -> None:
        """Add ``at`` (:func:`floor_ms`) to the times of each of ``names`` in the profile
        field ``field``, a JSON object ``{name: [epoch seconds, oldest first]}``, in one
        atomic step: a frequency cap must count the shows of concurrent decisions, which a
        read of the profile then :meth:`update_profile` would lose. Times older than
        ``window_s`` before ``at`` are dropped, and names left without any; each name keeps
        its newest ``keep``. Refreshes the profile's TTL."""
        ...

    async def merge_latest(self, visitor_id: str, field: str, times: Mapping[str, float]) -> None:
        """Merge ``times`` into the profile field ``field``, a JSON object ``{name: epoch
        seconds}``, keeping the later time of each name, in one atomic step: two writers (two
        triggers firing for one visitor at once) each add theirs, where a read of the profile
        then :meth:`update_profile` would keep only the last writer's. Refreshes the
        profile's TTL."""
        ...

    async def get_profile(self, visitor_id: str) -> dict[str, Any] | None:
        """The stored profile fields, or None when the visitor is unknown."""
        ...

    async def delete_visitor(self, visitor_id: str) -> bool:
        """Erase everything stored for a visitor and the ids merged into it (profile, history,
        sessions, dedupe keys); events received before the erasure are no longer applied.
        True when there was anything to erase."""
        ...

    async def merged_ids(self, visitor_id: str) -> list[str]:
        """The ids merged into ``visitor_id`` (identify/alias), and those merged into them, in
        the order found; :meth:`delete_visitor` erases them with it. Plugins that keep data
        per visitor id are asked to forget these too."""
        ...

    async def apply_events(
        self, batches: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]
    ) -> list[Applied]:
        """Apply events (``journeygate.events.schema`` shape) to profiles and sessions: per
        visitor, atomically and in the order given (sorted by event time); one round trip.

        A message id already applied to the visitor (within ``events.dedupe_ttl_s``) is
        skipped, so applying the same events again changes nothing; an order id is counted
        once. A visitor merged into another one is not written: the result redirects. A
        visitor's events with malformed fields are not written either: the result carries
        the error, the other visitors' events are applied.
        """
        ...

    async def resolve_visitor(self, visitor_id: str) -> str:
        """The id whose profile holds ``visitor_id``'s history (itself unless merged)."""
        ...

    async def begin_merge(self, anonymous_id: str, user_id: str, received: float) -> MergeStart:
        """First step of merging an anonymous visitor into a customer, on the anonymous
        visitor's keys only: mark it merged (its later events are redirected) and return its
        logged events for replay into ``user_id``. Idempotent. ``received``: when the
        identify was received; an anonymous visitor erased since then is left alone (the
        erasure marker, like its events), so a queued identify links nothing again."""
        ...

    async def finish_merge(
        self,
        anonymous_id: str,
        user_id: str,
        received: float,
        scores: Sequence[DecayedScore] = (),
    ) -> None:
        """Last step, after the replay: record the alias on the customer, then drop what the
        worker had built for the anonymous visitor. Idempotent. When the customer was erased
        after ``received`` (the identify was queued meanwhile), the anonymous id, which the
        identify says is that customer's, is erased instead of linked. ``scores``: the
        anonymous visitor's decayed scores, blended into the customer's profile as
        :meth:`blend_score` does, in the step that records the alias and only when that
        records it (so once, however often the merge is done)."""
        ...

    async def load_events_profile(self, visitor_id: str) -> RawVisitor | None:
        """Everything the event worker built for ``visitor_id`` (not resolved), or None."""
        ...

    async def record_stage(
        self, visitor_id: str, stage: str, at: float, decision_id: str
    ) -> StageTransition | None:
        """Record the visitor's journey stage when it differs from the stored one: profile
        fields ``stage`` and ``stage_since``, the visitor's capped stage history, and the
        global transitions log. A compare-and-set, so decisions racing on one visitor record
        one transition. Returns it, or None when ``stage`` was already stored."""
        ...

    async def journey_transitions(
        self, since: float, until: float, limit: int
    ) -> list[StageTransition]:
        """Transitions recorded from ``since`` to ``until`` (epoch seconds, both included),
        oldest first, at most ``limit`` (the log is trimmed to ``transitions_maxlen``)."""
        ...

    async def ping(self) -> bool:
        """True when the store answers."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def open_store(
    config: StoreConfig, backend: str, events: EventsConfig | None = None
) -> ProfileStore:
    """Create the store named by ``backend`` (``redis`` or ``memory``); ``events`` sets the
    caps and TTLs of what the event worker builds (defaults when not given)."""
    if backend == "redis":
        from journeygate.store.redis import RedisProfileStore

        return RedisProfileStore(config, events)
    from journeygate.store.memory import MemoryProfileStore

    return MemoryProfileStore(config, events=events)
