"""Allocation policies: which arm a decision shows, and with what probability (propensity).

* :class:`FixedSplit` gives a visitor the same arm every time (its hash bucket); the
  propensity is the arm's share.
* :class:`ThompsonSampling` is a bandit: each arm's reward rate has a Beta(1 + rewards,
  1 + decisions - rewards) posterior, and a decision shows an arm with the probability that
  the arm is the best one (probability matching, which is what Thompson sampling does). These
  choice probabilities are estimated by Monte Carlo over posterior draws, off the event loop,
  every ``bandit_refresh_s``; a decision only hashes its id into them. Because the decision
  is drawn from exactly the probabilities logged with it, the logged propensities are the
  true ones, which is what an offline (inverse propensity) comparison of policies needs.
  Visitors in the holdout stay there (sticky); the bandit allocates everybody else, per
  decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol

import numpy as np

from journeygate.experiments.assignment import bucket, fixed_arm, in_holdout, pick
from journeygate.experiments.config import HOLDOUT_ARM, Experiment
from journeygate.experiments.storage import ArmCounts


class Policy(Protocol):
    experiment: Experiment

    def choose(self, visitor_id: str, decision_id: str) -> tuple[str, float]:
        """The arm for this decision and the probability it had of being chosen."""
        ...


class FixedSplit:
    """Sticky split by the arms' weights."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment

    def choose(self, visitor_id: str, decision_id: str) -> tuple[str, float]:
        arm = fixed_arm(self.experiment, visitor_id)
        return arm, self.experiment.shares[arm]


def best_arm_probabilities(
    counts: Mapping[str, ArmCounts],
    arms: tuple[str, ...],
    draws: int,
    rng: np.random.Generator,
) -> dict[str, float]:
    """P(arm has the highest reward rate) under Beta posteriors, from ``draws`` samples."""
    successes = np.array([counts[a].rewards if a in counts else 0 for a in arms], dtype=float)
    trials = np.array([counts[a].decisions if a in counts else 0 for a in arms], dtype=float)
    failures = np.maximum(trials - successes, 0.0)
    samples = rng.beta(1.0 + successes, 1.0 + failures, size=(draws, len(arms)))
    wins = np.bincount(samples.argmax(axis=1), minlength=len(arms))
    return {arm: float(wins[index]) / draws for index, arm in enumerate(arms)}


class ThompsonSampling:
    """Thompson sampling over the experiment's arms (the holdout excluded)."""

    def __init__(
        self, experiment: Experiment, draws: int, min_propensity: float, seed: int | None = None
    ) -> None:
        self.experiment = experiment
        self.arms = tuple(arm.name for arm in experiment.arms if arm.name != HOLDOUT_ARM)
        self.draws = draws
        self.min_propensity = min(min_propensity, 1.0 / len(self.arms))
        self.rng = np.random.default_rng(seed)
        uniform = 1.0 / len(self.arms)
        self.probabilities: Mapping[str, float] = MappingProxyType(
            dict.fromkeys(self.arms, uniform)
        )

    def estimate(self, counts: Mapping[str, ArmCounts]) -> dict[str, float]:
        """New choice probabilities from the arms' counters (CPU work: run it in the
        executor), each at least ``min_propensity``."""
        best = best_arm_probabilities(counts, self.arms, self.draws, self.rng)
        floor = self.min_propensity
        spread = 1.0 - floor * len(self.arms)
        return {arm: floor + spread * best[arm] for arm in self.arms}

    def update(self, probabilities: Mapping[str, float]) -> None:
        """Swap in new probabilities (one assignment: decisions never see a half update)."""
        self.probabilities = MappingProxyType(dict(probabilities))

    def choose(self, visitor_id: str, decision_id: str) -> tuple[str, float]:
        experiment = self.experiment
        if in_holdout(experiment, visitor_id):
            return HOLDOUT_ARM, experiment.holdout
        probabilities = self.probabilities
        arm = pick(probabilities, bucket(experiment.id, "decision", decision_id))
        return arm, (1.0 - experiment.holdout) * probabilities[arm]
