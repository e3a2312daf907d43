"""The journey map: how many visitors moved from one journey stage to another over a time
window, counted from the transitions the intent plugin records (``ProfileStore.record_stage``).
Served by ``GET /v1/journey/transitions`` and printed by ``journeygate journey-map``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from journeygate.store import ProfileStore

# "from" of a visitor's first recorded stage
ENTRY = "(new)"


@dataclass(frozen=True, slots=True)
class JourneyMap:
    """Transition counts from -> to, most frequent first."""

    since: float
    until: float
    counts: list[tuple[str | None, str, int]]
    total: int
    truncated: bool  # more transitions in the window than were read

    def as_json(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "total": self.total,
            "truncated": self.truncated,
            "transitions": [
                {"from": source, "to": target, "count": count}
                for source, target, count in self.counts
            ],
        }

    def table(self) -> str:
        lines = [f"{'from':<16} {'to':<16} {'count':>8}"]
        lines += [
            f"{source or ENTRY:<16} {target:<16} {count:>8}"
            for source, target, count in self.counts
        ]
        lines.append(f"{'total':<33} {self.total:>8}" + (" (truncated)" if self.truncated else ""))
        return "\n".join(lines)


async def journey_map(store: ProfileStore, since: float, until: float, limit: int) -> JourneyMap:
    """Count the transitions recorded in the window (at most ``limit`` of them)."""
    transitions = await store.journey_transitions(since, until, limit + 1)
    counter = Counter((t.from_stage, t.to_stage) for t in transitions[:limit])
    counts = sorted(
        ((source, target, count) for (source, target), count in counter.items()),
        key=lambda row: (-row[2], row[0] or "", row[1]),
    )
    return JourneyMap(since, until, counts, min(len(transitions), limit), len(transitions) > limit)
