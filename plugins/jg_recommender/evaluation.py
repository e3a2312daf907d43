"""Offline evaluation on a temporal split of Online Retail-style data (docs/evaluation.md).

Test: each customer's purchases in the last ``days`` of the data, for customers with
history before it; the model is trained on everything before the window. Validation: the
same split applied to that training data (the window before the test window), used for
choosing parameters and blend weights. Two protocols: ``next`` (all purchased items count,
repeats included) and ``discovery`` (only items the customer never bought before count, and
items bought before are left out of every ranking).

Every model in the table is the fitted :class:`HybridRecommender` scored with other weights:
a baseline is one component alone (plus the popularity tie-break that fills and orders what the
component does not score), so baselines and hybrid share one code path with serving.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jg_recommender.interactions import from_online_retail
from jg_recommender.model import (
    HybridRecommender,
    RecommenderParams,
    blend,
    product_embeddings,
    top_indices,
)
from journeygate.catalog import Product, build_catalog
from journeygate.retail_data import read_online_retail

K = 10
PROTOCOLS = ("next", "discovery")
PROTOCOL_TITLES: Mapping[str, str] = {
    "next": "next purchases, repeats included",
    "discovery": "discovery: only items the customer never bought before",
}
# One component each; "buy again" in the discovery protocol has nothing left to rank (every
# item it scores was bought before and is excluded), so it answers with popularity.
BASELINES: Mapping[str, Mapping[str, float]] = {
    "popularity": {"pop": 1.0},
    "trending": {"trend": 1.0},
    "buy again": {"buy_again": 1.0},
    "co-occurrence": {"cooc": 1.0},
    "implicit CF": {"cf": 1.0},
    "content": {"content": 1.0},
}
HYBRID = "hybrid"
METRICS = ("precision", "recall", "ndcg", "map", "coverage", "cold_hit_rate")
# Validation search space (see :func:`tune`).
FACTOR_GRID: Mapping[str, Sequence[float]] = {
    "factors": (32, 64, 128),
    "regularization": (0.1, 1.0, 10.0),
    "alpha": (0.3, 1.0, 3.0),
    "half_life_days": (14.0, 30.0, 90.0),
}
WEIGHT_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)
TUNED_WEIGHTS: Mapping[str, Sequence[str]] = {
    "next": ("w_buy_again", "w_trend", "w_pop", "w_content", "w_cooc"),
    "discovery": (
        "discovery_w_trend",
        "discovery_w_pop",
        "discovery_w_content",
        "discovery_w_cooc",
    ),
}
RANDOM_SAMPLES = 48
COORDINATE_PASSES = 2
Progress = Callable[[str], None]


# -- metrics ----------------------------------------------------------------------------


def hit_metrics(hits: np.ndarray, n_relevant: np.ndarray) -> dict[str, float]:
    """Mean precision, recall, NDCG and MAP at ``k = hits.shape[1]`` over users.

    ``hits[u, r]`` says whether user u's item at rank r is relevant; ``n_relevant[u] > 0`` is
    the size of u's relevant set. NDCG uses binary gains and the ideal DCG of
    ``min(n_relevant, k)`` hits; MAP@k divides the sum of precision at each hit by
    ``min(n_relevant, k)``.
    """
    hits = np.asarray(hits, dtype=np.float64)
    n_relevant = np.asarray(n_relevant)
    k = hits.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    attainable = np.minimum(n_relevant, k)
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    return {
        "precision": float((hits.sum(axis=1) / k).mean()),
        "recall": float((hits.sum(axis=1) / n_relevant).mean()),
        "ndcg": float(((hits @ discounts) / np.cumsum(discounts)[attainable - 1]).mean()),
        "map": float(((precision_at * hits).sum(axis=1) / attainable).mean()),
    }


def ranking_metrics(
    ranked: Sequence[Sequence[str]], relevant: Sequence[Collection[str]], k: int = K
) -> dict[str, float]:
    """:func:`hit_metrics` of ranked id lists (shorter lists are padded with misses)."""
    hits = np.zeros((len(ranked), k), dtype=bool)
    for row, (items, wanted) in enumerate(zip(ranked, relevant, strict=True)):
        for rank, item in enumerate(items[:k]):
            hits[row, rank] = item in wanted
    return hit_metrics(hits, np.asarray([len(r) for r in relevant]))


# -- split and targets ------------------------------------------------------------------


@dataclass(frozen=True)
class TemporalSplit:
    """Training interactions before ``start``; test purchases in ``[start, end]`` of the
    customers who have interactions in training."""

    train: pd.DataFrame
    test: pd.DataFrame
    start: pd.Timestamp
    end: pd.Timestamp


def temporal_split(interactions: pd.DataFrame, days: int = 30) -> TemporalSplit:
    """Split off the last ``days`` of ``interactions`` as the test window."""
    end = interactions["timestamp"].max()
    start = end - pd.Timedelta(days=days)
    before = interactions["timestamp"] < start
    train = interactions.loc[before]
    window = interactions.loc[~before]
    test = window.loc[
        (window["event"] == "purchase") & window["user_id"].isin(pd.Index(train["user_id"]))
    ]
    return TemporalSplit(train=train, test=test, start=start, end=end)


@dataclass(frozen=True)
class Targets:
    """What one protocol asks of a fitted model: the users, their relevant items and the
    items each ranking must leave out."""

    rows: np.ndarray  # model user rows
    relevant: np.ndarray  # bool (users, items)
    n_relevant: np.ndarray  # relevant set sizes, including items outside the catalog
    blocked: np.ndarray | None  # bool (users, items): excluded from rankings
    cold: np.ndarray  # bool (items,): no interaction in training


def targets(model: HybridRecommender, test: pd.DataFrame) -> dict[str, Targets]:
    """Targets of both protocols for the test purchases of users the model knows."""
    test = test.loc[[model.has_user(u) for u in test["user_id"]]]
    users = sorted(pd.unique(test["user_id"]))
    pairs = test[["user_id", "item_id"]].drop_duplicates()
    rows = model.user_index(users)
    user_pos = pd.Index(users).get_indexer(pairs["user_id"])
    item_pos = pd.Index(model.item_ids).get_indexer(pairs["item_id"])
    relevant = np.zeros((len(users), len(model.item_ids)), dtype=bool)
    known = item_pos >= 0
    relevant[user_pos[known], item_pos[known]] = True
    outside = np.bincount(user_pos[~known], minlength=len(users))
    bought = model.purchased_mask(rows)
    cold = model.confidence.getnnz(axis=0) == 0
    new = relevant & ~bought
    keep = new.any(axis=1)
    return {
        "next": Targets(rows, relevant, relevant.sum(axis=1) + outside, None, cold),
        "discovery": Targets(
            rows[keep], new[keep], new[keep].sum(axis=1) + outside[keep], bought[keep], cold
        ),
    }


def score_protocol(scores: np.ndarray, target: Targets, k: int = K) -> dict[str, float]:
    """All metrics of one model's ``(users, items)`` scores under one protocol."""
    if target.blocked is not None:
        scores = np.where(target.blocked, -np.inf, scores)
    top = top_indices(scores, k)
    hits = np.take_along_axis(target.relevant, top, axis=1)
    cold_relevant = target.relevant & target.cold
    cold_total = int(cold_relevant.sum())
    cold_hits = int(np.take_along_axis(cold_relevant, top, axis=1).sum())
    return {
        **hit_metrics(hits, target.n_relevant),
        "coverage": len(np.unique(top)) / scores.shape[1],
        "cold_hit_rate": cold_hits / cold_total if cold_total else math.nan,
    }


def model_weights(params: RecommenderParams, protocol: str) -> dict[str, Mapping[str, float]]:
    """Blend weights of every compared model in ``protocol``, the hybrid last (its discovery
    blend is the one served with ``allow_repeats=False``)."""
    return {**BASELINES, HYBRID: params.user_weights(allow_repeats=protocol == "next")}


class ModelScorer:
    """Scores blends of one fitted model's components under both protocols.

    The components of all test users are computed once, so scoring another set of weights
    (another baseline, or a candidate blend while tuning) costs one blend and one top-k.
    """

    def __init__(
        self,
        model: HybridRecommender,
        test: pd.DataFrame,
        needed: Mapping[str, float] | None = None,
        k: int = K,
    ) -> None:
        self.k = k
        self.targets = targets(model, test)
        rows = self.targets["next"].rows
        self.components = model.user_components(rows, needed)
        self.discovery_rows = np.isin(rows, self.targets["discovery"].rows)
        self.shape = (len(rows), len(model.item_ids))

    @property
    def users(self) -> dict[str, int]:
        return {protocol: len(target.rows) for protocol, target in self.targets.items()}

    def score(self, weights: Mapping[str, float], protocol: str) -> dict[str, float]:
        """Metrics of the blend with these weights under one protocol."""
        scores = np.broadcast_to(blend(self.components, weights), self.shape)
        if protocol == "discovery":
            scores = scores[self.discovery_rows]
        return score_protocol(scores, self.targets[protocol], self.k)

    def score_models(self, params: RecommenderParams) -> dict[str, dict[str, dict[str, float]]]:
        """``{protocol: {model name: metrics}}`` for the baselines and the hybrid."""
        return {
            protocol: {
                name: self.score(weights, protocol)
                for name, weights in model_weights(params, protocol).items()
            }
            for protocol in PROTOCOLS
        }


# -- report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitResult:
    """One fitted model scored on one window."""

    name: str
    train_first: str
    train_last: str
    test_start: str
    test_end: str
    users: Mapping[str, int]  # per protocol
    results: Mapping[str, Mapping[str, Mapping[str, float]]]  # protocol -> model -> metrics
    fit_seconds: float


@dataclass(frozen=True)
class EvaluationReport:
    source: str
    params: RecommenderParams
    validation: SplitResult
    test: SplitResult
    tuned: bool
    trials: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Test-window NDCG@10 per protocol and model, for an artifact's ``meta.json``."""
        return {
            "source": self.source,
            "test_window": [self.test.test_start, self.test.test_end],
            "ndcg@10": {
                protocol: {name: round(m["ndcg"], 4) for name, m in models.items()}
                for protocol, models in self.test.results.items()
            },
        }


def evaluate_split(
    interactions: pd.DataFrame,
    products: Sequence[Product],
    embeddings: np.ndarray | None,
    params: RecommenderParams,
    name: str,
    days: int = 30,
    k: int = K,
) -> SplitResult:
    """Fit on the data before the last ``days`` and score every model on that window."""
    split = temporal_split(interactions, days)
    started = time.perf_counter()
    model = HybridRecommender.fit(split.train, products, params, embeddings)
    fit_seconds = time.perf_counter() - started
    scorer = ModelScorer(model, split.test, k=k)
    return SplitResult(
        name=name,
        train_first=str(split.train["timestamp"].min()),
        train_last=str(split.train["timestamp"].max()),
        test_start=str(split.start),
        test_end=str(split.end),
        users=scorer.users,
        results=scorer.score_models(params),
        fit_seconds=round(fit_seconds, 2),
    )


def tune(
    interactions: pd.DataFrame,
    products: Sequence[Product],
    embeddings: np.ndarray | None,
    base: RecommenderParams | None = None,
    days: int = 30,
    progress: Progress | None = None,
) -> tuple[RecommenderParams, list[dict[str, Any]]]:
    """Choose parameters on the validation window: the last ``days`` of ``interactions``
    (pass the training part of the test split, so the test window is never seen).

    1. Factor model: a coordinate pass over :data:`FACTOR_GRID` from the middle of each
       range, keeping the value with the best geometric mean of the CF baseline's NDCG@10 in
       the two protocols. The CF baseline is this same model, so it is as strong as we can
       make it.
    2. Blends, one per protocol: a seeded random search over :data:`WEIGHT_GRID`, then
       coordinate ascent from its best, maximising the hybrid's NDCG@10 in that protocol
       (``w_cf`` stays 1: only ratios matter).

    The result does not depend on ``base`` except for the fields not searched. Returns the
    chosen parameters and every trial.
    """
    say = progress or (lambda _message: None)
    split = temporal_split(interactions, days)
    trials: list[dict[str, Any]] = []
    fitted: dict[RecommenderParams, tuple[HybridRecommender, float]] = {}
    cf_only = BASELINES["implicit CF"]

    def cf_quality(params: RecommenderParams) -> float:
        if params not in fitted:
            model = HybridRecommender.fit(split.train, products, params, embeddings)
            scorer = ModelScorer(model, split.test, cf_only)
            ndcg = [scorer.score(cf_only, protocol)["ndcg"] for protocol in PROTOCOLS]
            fitted[params] = (model, math.sqrt(ndcg[0] * ndcg[1]))
            values = {key: getattr(params, key) for key in FACTOR_GRID}
            trials.append({"stage": "factors", **values, "cf_ndcg": fitted[params][1]})
            say(f"factors {values}: CF NDCG@10 (geometric mean) {fitted[params][1]:.4f}")
        return fitted[params][1]

    params = _replace(
        base or RecommenderParams(),
        {key: values[len(values) // 2] for key, values in FACTOR_GRID.items()},
    )
    for key, values in FACTOR_GRID.items():
        params = max((_replace(params, {key: v}) for v in values), key=cf_quality)
    scorer = ModelScorer(fitted[params][0], split.test)
    rng = np.random.default_rng(params.seed)
    for protocol, fields in TUNED_WEIGHTS.items():

        def quality(candidate: RecommenderParams, protocol: str = protocol) -> float:
            weights = candidate.user_weights(allow_repeats=protocol == "next")
            ndcg = scorer.score(weights, protocol)["ndcg"]
            trials.append({"stage": protocol, **weights, "ndcg": ndcg})
            return ndcg

        params = _replace(params, dict.fromkeys(fields, 0.0))
        samples = [
            _replace(params, {f: float(rng.choice(WEIGHT_GRID)) for f in fields})
            for _ in range(RANDOM_SAMPLES)
        ]
        best, params = max(((quality(c), c) for c in [params, *samples]), key=lambda s: s[0])
        for _sweep in range(COORDINATE_PASSES):
            for field_name in fields:
                for value in WEIGHT_GRID:
                    candidate = _replace(params, {field_name: value})
                    score = quality(candidate)
                    if score > best:
                        params, best = candidate, score
        say(f"{protocol} blend: hybrid NDCG@10 {best:.4f} on the validation window")
    return params, trials


def _replace(params: RecommenderParams, changes: Mapping[str, Any]) -> RecommenderParams:
    return dataclasses.replace(params, **changes)


def load_interactions(path: Path) -> tuple[pd.DataFrame, list[Product]]:
    """Interactions and the product catalog from an Online Retail-layout file.

    The catalog is built from the whole file: every product that exists by the end of the
    data can be recommended, including ones first sold in the test window (the cold-start
    items). Only titles and categories are used from it, never its popularity counts.
    """
    frame = read_online_retail(path)
    return from_online_retail(frame), build_catalog(frame)


def evaluate_data(
    interactions: pd.DataFrame,
    products: Sequence[Product],
    embeddings: np.ndarray | None,
    params: RecommenderParams | None = None,
    *,
    tune_params: bool = False,
    days: int = 30,
    source: str = "",
    progress: Progress | None = None,
) -> EvaluationReport:
    """Validation and test results for ``params`` (default :class:`RecommenderParams`), or
    for parameters chosen by :func:`tune` on the validation window when ``tune_params``."""
    started = time.perf_counter()
    say = progress or (lambda _message: None)
    before_test = temporal_split(interactions, days).train
    trials: list[dict[str, Any]] = []
    params = params or RecommenderParams()
    if tune_params:
        params, trials = tune(before_test, products, embeddings, params, days, progress)
    say("scoring the validation window")
    validation = evaluate_split(before_test, products, embeddings, params, "validation", days)
    say("scoring the test window")
    test = evaluate_split(interactions, products, embeddings, params, "test", days)
    return EvaluationReport(
        source=source,
        params=params,
        validation=validation,
        test=test,
        tuned=tune_params,
        trials=tuple(trials),
        seconds=round(time.perf_counter() - started, 1),
    )


def evaluate(
    interactions_path: Path,
    params: RecommenderParams | None = None,
    *,
    tune_params: bool = False,
    days: int = 30,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> EvaluationReport:
    """Evaluate on any file in the Online Retail column layout (CSV, CSV.gz, Parquet).

    ``cache_dir`` keeps product embeddings between runs (see ``product_embeddings``).
    """
    started = time.perf_counter()
    say = progress or (lambda _message: None)
    interactions, products = load_interactions(interactions_path)
    say(f"{len(interactions):,} interactions, {len(products):,} products; embedding")
    embeddings = product_embeddings(products, cache_dir)
    report = evaluate_data(
        interactions,
        products,
        embeddings,
        params,
        tune_params=tune_params,
        days=days,
        source=str(interactions_path),
        progress=progress,
    )
    return dataclasses.replace(report, seconds=round(time.perf_counter() - started, 1))


def _cell(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.4f}"


def format_table(report: EvaluationReport) -> str:
    """Markdown tables: test window then validation window, one table per protocol."""
    lines = [f"Source: {report.source}", ""]
    for result in (report.test, report.validation):
        lines.append(
            f"## {result.name.capitalize()}: train {result.train_first} .. {result.train_last}, "
            f"test {result.test_start} .. {result.test_end} (fit {result.fit_seconds:.1f} s)"
        )
        for protocol in PROTOCOLS:
            models = result.results[protocol]
            best_baseline = max(m["ndcg"] for name, m in models.items() if name != HYBRID)
            lines += [
                "",
                f"### {PROTOCOL_TITLES[protocol]} ({result.users[protocol]:,} customers)",
                "",
                "| model | P@10 | R@10 | NDCG@10 | MAP@10 | coverage | cold-start hit rate |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for name, m in models.items():
                label = f"**{name}**" if name == HYBRID else name
                lines.append(
                    f"| {label} | " + " | ".join(_cell(m[metric]) for metric in METRICS) + " |"
                )
            gain = models[HYBRID]["ndcg"] / best_baseline - 1 if best_baseline else math.inf
            lines.append(f"\nHybrid NDCG@10 vs the best baseline: {gain:+.1%}")
        lines.append("")
    changed = {
        key: value
        for key, value in report.params.to_dict().items()
        if value != getattr(RecommenderParams(), key)
    }
    lines.append(
        "Parameters: "
        + ("chosen on the validation window; " if report.tuned else "")
        + (f"differences from the defaults: {changed}" if changed else "the defaults")
    )
    lines.append(f"Total time: {report.seconds:.1f} s")
    return "\n".join(lines)
