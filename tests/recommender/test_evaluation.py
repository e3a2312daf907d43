"""The offline evaluation: metrics against hand-computed values, the temporal split (no
test-window data in any fit), protocol targets, and ranking quality on the real sample."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from jg_recommender import evaluation, training
from jg_recommender.evaluation import (
    HYBRID,
    Targets,
    evaluate_data,
    evaluate_split,
    hit_metrics,
    ranking_metrics,
    score_protocol,
    targets,
    temporal_split,
)
from jg_recommender.model import HybridRecommender, RecommenderParams
from journeygate.catalog import Product
from journeygate.config import AppConfig

Data = tuple[pd.DataFrame, list[Product]]


# -- metrics ---------------------------------------------------------------------------


def test_ranking_metrics_match_hand_computed_values() -> None:
    metrics = ranking_metrics(
        [["a", "b", "c"], ["x", "y"]],  # the second list is short: padded with a miss
        [{"a", "c", "d"}, {"y"}],
        k=3,
    )
    # User 1: hits at ranks 1 and 3 of 3 relevant; user 2: a hit at rank 2 of 1 relevant.
    ndcg_1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    ndcg_2 = (1 / math.log2(3)) / 1
    assert metrics["precision"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert metrics["recall"] == pytest.approx((2 / 3 + 1 / 1) / 2)
    assert metrics["ndcg"] == pytest.approx((ndcg_1 + ndcg_2) / 2)
    assert metrics["map"] == pytest.approx(((1 / 1 + 2 / 3) / 3 + (1 / 2) / 1) / 2)


def test_perfect_and_empty_rankings() -> None:
    perfect = hit_metrics(np.array([[True, True], [True, False]]), np.array([5, 1]))
    # Only min(n_relevant, k) hits are attainable: both users are ranked ideally.
    assert perfect["ndcg"] == pytest.approx(1.0) and perfect["map"] == pytest.approx(1.0)
    assert perfect["precision"] == pytest.approx(0.75)
    assert perfect["recall"] == pytest.approx((2 / 5 + 1) / 2)
    assert hit_metrics(np.zeros((2, 10), dtype=bool), np.array([3, 4])) == {
        "precision": 0.0,
        "recall": 0.0,
        "ndcg": 0.0,
        "map": 0.0,
    }


def test_coverage_cold_hit_rate_and_blocked_items() -> None:
    relevant = np.array([[True, False, False, True], [False, True, False, True]])
    target = Targets(
        rows=np.array([0, 1]),
        relevant=relevant,
        n_relevant=relevant.sum(axis=1),
        blocked=np.array([[True, False, False, False], [False, False, False, False]]),
        cold=np.array([False, False, False, True]),
    )
    scores = np.array([[9.0, 1.0, 0.0, 2.0], [0.0, 3.0, 1.0, 2.0]])
    metrics = score_protocol(scores, target, k=2)
    # Item 0 is blocked for user 0: rankings are [3, 1] and [1, 3].
    assert metrics["precision"] == pytest.approx((1 / 2 + 2 / 2) / 2)
    assert metrics["coverage"] == pytest.approx(2 / 4)
    assert metrics["cold_hit_rate"] == pytest.approx(1.0)  # both cold purchases were hit
    warm = Targets(target.rows, relevant, target.n_relevant, None, np.zeros(4, dtype=bool))
    assert math.isnan(score_protocol(scores, warm, k=2)["cold_hit_rate"])


# -- split and targets -----------------------------------------------------------------


def test_temporal_split_never_leaks_the_test_window(sample_data: Data) -> None:
    interactions = sample_data[0]
    split = temporal_split(interactions, days=30)
    assert split.end == interactions["timestamp"].max()
    assert split.start == split.end - pd.Timedelta(days=30)
    assert split.train["timestamp"].max() < split.start <= split.test["timestamp"].min()
    assert set(split.test["user_id"]) <= set(split.train["user_id"])  # history required
    assert set(split.test["event"]) == {"purchase"}
    newcomers = interactions.loc[
        (interactions["timestamp"] >= split.start)
        & ~interactions["user_id"].isin(split.train["user_id"])
    ]
    assert len(newcomers) > 0 and len(split.train) + len(split.test) + len(newcomers) == len(
        interactions
    )
    validation = temporal_split(split.train, days=30)
    assert validation.end < split.start
    assert validation.train["timestamp"].max() < validation.start


def test_no_fit_sees_the_test_window_and_tuning_sees_only_validation(
    sample_data: Data, sample_embeddings: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Record the last training timestamp of every fit of a tuned evaluation."""
    interactions, products = sample_data
    last_seen: list[pd.Timestamp] = []
    fit = HybridRecommender.fit.__func__  # type: ignore[attr-defined]

    def recording_fit(cls: type[HybridRecommender], data: pd.DataFrame, *args: Any) -> Any:
        last_seen.append(data["timestamp"].max())
        return fit(cls, data, *args)

    monkeypatch.setattr(HybridRecommender, "fit", classmethod(recording_fit))
    monkeypatch.setattr(evaluation, "FACTOR_GRID", {"factors": (16, 32)})
    monkeypatch.setattr(evaluation, "RANDOM_SAMPLES", 3)
    monkeypatch.setattr(evaluation, "WEIGHT_GRID", (0.0, 0.5, 1.0))
    report = evaluate_data(interactions, products, sample_embeddings, tune_params=True)
    test_start = pd.Timestamp(report.test.test_start)
    validation_start = pd.Timestamp(report.validation.test_start)
    validation_end = pd.Timestamp(report.validation.test_end)
    assert validation_end < test_start and validation_start == validation_end - pd.Timedelta(
        30, "D"
    )
    assert all(last < test_start for last in last_seen)
    # Two tuning fits and the validation fit end before the validation window; only the
    # final test-split fit uses the validation month.
    assert sum(last >= validation_start for last in last_seen) == 1
    assert len(last_seen) == 4
    assert report.tuned and report.params.factors in (16, 32)
    assert {trial["stage"] for trial in report.trials} == {"factors", "next", "discovery"}


def test_discovery_targets_exclude_what_was_bought_before(
    sample_data: Data, sample_embeddings: np.ndarray
) -> None:
    interactions, products = sample_data
    split = temporal_split(interactions)
    model = HybridRecommender.fit(split.train, products, RecommenderParams(), sample_embeddings)
    protocol = targets(model, split.test)
    repeats, discovery = protocol["next"], protocol["discovery"]
    assert discovery.blocked is not None and repeats.blocked is None
    assert not (discovery.relevant & discovery.blocked).any()
    bought = model.purchased_mask(discovery.rows)
    assert (discovery.blocked == bought).all()
    assert (repeats.relevant & model.purchased_mask(repeats.rows)).any()  # repeats count
    assert len(discovery.rows) < len(repeats.rows) and discovery.relevant.any(axis=1).all()
    item = pd.Index(model.item_ids)
    for row, user in enumerate(sorted(set(split.test["user_id"]))[:20]):
        wanted = set(split.test.loc[split.test["user_id"] == user, "item_id"])
        assert set(item[repeats.relevant[row]]) == wanted & set(model.item_ids)


# -- quality on real data --------------------------------------------------------------


def test_hybrid_beats_popularity_on_the_real_sample(
    sample_data: Data, sample_embeddings: np.ndarray
) -> None:
    interactions, products = sample_data
    result = evaluate_split(interactions, products, sample_embeddings, RecommenderParams(), "test")
    assert result.users["next"] > 200 and result.users["discovery"] > 200
    for protocol, models in result.results.items():
        hybrid = models[HYBRID]["ndcg"]
        assert hybrid > models["popularity"]["ndcg"] * 1.5, protocol
        assert hybrid > models["trending"]["ndcg"], protocol
    assert result.results["next"][HYBRID]["ndcg"] > result.results["next"]["buy again"]["ndcg"]


def test_evaluate_command_prints_the_table_for_an_artifact(
    sample_slice: Path,
    sample_data: Data,
    sample_embeddings: np.ndarray,
    embedding_cache: Path,
    tmp_path: Path,
    make_config: Callable[..., AppConfig],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    interactions, products = sample_data
    params = RecommenderParams(factors=32)
    HybridRecommender.fit(interactions, products, params, sample_embeddings).save(tmp_path)
    monkeypatch.setattr(training, "EMBEDDING_CACHE", str(embedding_cache))
    parser = argparse.ArgumentParser()
    training.add_arguments_evaluate(parser)
    args = parser.parse_args([str(sample_slice), "--artifact", str(tmp_path)])
    assert training.evaluate_command(args, make_config()) == 0
    table = capsys.readouterr().out
    for heading in ("## Test", "## Validation", "next purchases", "discovery"):
        assert heading in table
    for name in (*evaluation.BASELINES, HYBRID):
        assert table.count(f"| {name} |") + table.count(f"| **{name}** |") == 4
    assert "{'factors': 32}" in table
