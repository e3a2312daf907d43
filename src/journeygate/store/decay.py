"""Time-decayed scores kept in profile fields (the sentiment plugin's ``sentiment``), and the
rule that blends a new contribution into the stored one.

The store applies the rule itself (:meth:`ProfileStore.blend_score`: a Lua script in Redis,
``BLEND_FUNCTION`` in ``scripts``, which mirrors :func:`blended`), so that two contributions
for one visitor written at the same time both count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

VALUE_DECIMALS = 4
TIME_DECIMALS = 3


@dataclasses.dataclass(frozen=True, slots=True)
class DecayedScore:
    """A contribution to a score stored in the profile fields ``field`` (the value) and
    ``field + "_at"`` (the event time it holds as of, epoch seconds), halved toward 0 for
    every ``half_life_s``. ``details``: profile fields describing the newest contribution
    (a label, themes), kept from whichever of the stored and this one is newer."""

    field: str
    value: float
    at: float
    half_life_s: float
    details: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    @property
    def time_field(self) -> str:
        return f"{self.field}_at"


def decayed(value: float, since: float, now: float, half_life_s: float) -> float:
    """``value`` halved for every ``half_life_s`` between ``since`` and ``now``."""
    return value * float(0.5 ** (max(now - since, 0.0) / half_life_s))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def stored_score(fields: Mapping[str, Any], field: str) -> tuple[float, float] | None:
    """The score kept in ``fields`` under ``field`` and the time it holds as of
    (``field + "_at"``), or None when either is missing or not a number."""
    value, at = _number(fields.get(field)), _number(fields.get(f"{field}_at"))
    return None if value is None or at is None else (value, at)


def blended(stored: Mapping[str, Any], score: DecayedScore) -> dict[str, Any]:
    """The profile fields after blending ``score`` into the ``stored`` profile fields.

    Of the two, the older counts with its decay factor to the newer's time, both in value and
    in weight: one as fresh as the newer is averaged 1:1 with it, one several half-lives
    older barely counts. The order of arrival does not matter: a late contribution (older
    than the stored time) counts as the older one. The result holds as of the newer time."""
    value, at, newest = score.value, score.at, True
    previous_score = stored_score(stored, score.field)
    if previous_score is not None:
        previous, since = previous_score
        newest = at >= since
        old, old_at, new = (previous, since, value) if newest else (value, at, previous)
        at = max(at, since)
        weight = 0.5 ** ((at - old_at) / score.half_life_s)
        value = (weight * decayed(old, old_at, at, score.half_life_s) + new) / (1 + weight)
    fields = {score.field: round(value, VALUE_DECIMALS), score.time_field: round(at, TIME_DECIMALS)}
    return (fields | dict(score.details)) if newest else fields
