"""Sticky, deterministic assignment: a visitor's bucket is a hash of the visitor id and the
experiment id, so every gateway process gives the same answer without storing anything, and
a visitor's bucket in one experiment says nothing about its bucket in another."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from journeygate.experiments.config import HOLDOUT_ARM, Experiment

SCALE = float(1 << 64)


def bucket(*parts: str) -> float:
    """A uniform number in [0, 1) from the first 64 bits of SHA-256 of ``parts``."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / SCALE


def in_traffic(experiment: Experiment, visitor_id: str) -> bool:
    """Whether the visitor takes part (``traffic`` share of all visitors)."""
    return bucket(experiment.id, "traffic", visitor_id) < experiment.traffic


def pick(shares: Mapping[str, float], point: float) -> str:
    """The arm whose slice of [0, 1) holds ``point``; slices in the order of ``shares``."""
    total = sum(shares.values())
    edge = 0.0
    last = ""
    for name, share in shares.items():
        edge += share / total
        last = name
        if point < edge:
            return name
    return last  # rounding at the top edge


def fixed_arm(experiment: Experiment, visitor_id: str) -> str:
    """The visitor's arm under a fixed split (its holdout arm included)."""
    return pick(experiment.shares, bucket(experiment.id, "arm", visitor_id))


def in_holdout(experiment: Experiment, visitor_id: str) -> bool:
    """Whether a bandit experiment keeps this visitor on default content (sticky)."""
    return (
        experiment.holdout > 0
        and pick(experiment.shares, bucket(experiment.id, "arm", visitor_id)) == HOLDOUT_ARM
    )
