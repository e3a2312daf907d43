"""The hybrid recommender on real Online Retail data: interactions, serving methods, fallbacks,
cold-start items by content, artifacts and training runs."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jg_recommender import training
from jg_recommender.interactions import (
    EVENT_WEIGHTS,
    confidence_matrix,
    from_events,
    from_online_retail,
)
from jg_recommender.model import HybridRecommender, RecommenderParams, blend
from journeygate.artifacts import latest_artifact
from journeygate.catalog import Product
from journeygate.config import AppConfig
from journeygate.encoder import encode_texts

Data = tuple[pd.DataFrame, list[Product]]


def ids(ranking: list[tuple[str, float, str]]) -> list[str]:
    return [item for item, _, _ in ranking]


def regular_customer(model: HybridRecommender, interactions: pd.DataFrame) -> str:
    """A customer with a long purchase history (deterministic choice)."""
    counts = interactions.groupby("user_id")["item_id"].nunique()
    return str(counts[counts >= 30].sort_index().index[0])


# -- interactions ------------------------------------------------------------------------


def test_from_online_retail_keeps_customer_purchases_only() -> None:
    frame = pd.DataFrame(
        {
            "InvoiceNo": ["536365", "536365", "C536379", "536380", "536381"],
            "StockCode": ["85123A", "71053", "85123A", "POST", "22423"],
            "Description": ["HEART", "LANTERN", "HEART", "POSTAGE", "CAKESTAND"],
            "Quantity": [6, 2, -1, 1, 3],
            "InvoiceDate": pd.to_datetime(["2011-01-01 10:00"] * 5),
            "UnitPrice": [2.55, 3.39, 2.55, 18.0, 10.95],
            "CustomerID": pd.array([17850, 17850, 17850, 17850, None], dtype="Int64"),
            "Country": ["United Kingdom"] * 5,
        }
    )
    table = from_online_retail(frame)
    assert list(table["item_id"]) == ["85123A", "71053"]  # no return, fee or guest line
    assert set(table["user_id"]) == {"17850"}  # an id, not "17850.0"
    assert set(table["basket_id"]) == {"536365"}
    assert set(table["event"]) == {"purchase"}


def test_confidence_weights_event_quantity_and_recency() -> None:
    now = pd.Timestamp("2011-06-30")
    table = from_events(
        [
            {"user_id": "u", "item_id": "a", "event": "purchase", "quantity": 3, "timestamp": now},
            {"user_id": "u", "item_id": "a", "event": "view", "timestamp": now},
            {
                "user_id": "u",
                "item_id": "b",
                "event": "cart_add",
                "timestamp": now - pd.Timedelta(days=10),
            },
            {"user_id": "v", "item_id": "zzz", "event": "view", "timestamp": now},
        ]
    )
    matrix, users, items = confidence_matrix(table, ["a", "b", "c"], half_life_days=10, now=now)
    assert list(users) == ["u", "v"] and list(items) == ["a", "b", "c"]
    dense = matrix.toarray()
    expected_a = EVENT_WEIGHTS["purchase"] * np.log1p(3) + EVENT_WEIGHTS["view"] * np.log1p(1)
    assert dense[0, 0] == pytest.approx(expected_a, rel=1e-6)
    # One half-life old: half the weight.
    assert dense[0, 1] == pytest.approx(EVENT_WEIGHTS["cart_add"] * np.log1p(1) / 2, rel=1e-6)
    assert dense[0, 2] == 0 and not dense[1].any()  # unknown items are ignored


def test_from_events_rejects_unknown_event_types() -> None:
    with pytest.raises(ValueError, match="unknown event type 'wishlist'"):
        from_events([{"user_id": "u", "item_id": "a", "event": "wishlist", "timestamp": 0}])


# -- serving ---------------------------------------------------------------------------


def test_user_recommendations_are_the_batch_blend(
    fitted: HybridRecommender, sample_data: Data
) -> None:
    """What is served is what the evaluation scores: the per-user path equals the batch one."""
    user = regular_customer(fitted, sample_data[0])
    row = fitted.user_index([user])
    scores = blend(fitted.user_components(row), fitted.params.user_weights())[0]
    expected = [fitted.item_ids[i] for i in np.argsort(-scores, kind="stable")[:10]]
    ranking = fitted.recommend_for_user(user, 10)
    assert ids(ranking) == expected
    assert [s for _, s, _ in ranking] == sorted((s for _, s, _ in ranking), reverse=True)
    assert {reason for _, _, reason in ranking} <= {
        "customers like you",
        "bought together with your items",
        "bought before",
        "trending",
        "popular",
    }


def test_allow_repeats_false_leaves_out_purchases(
    fitted: HybridRecommender, sample_data: Data
) -> None:
    interactions = sample_data[0]
    user = regular_customer(fitted, interactions)
    bought = set(interactions.loc[interactions["user_id"] == user, "item_id"])
    with_repeats = ids(fitted.recommend_for_user(user, 10))
    assert set(with_repeats) & bought  # a re-ordering customer gets repeats by default
    without = ids(fitted.recommend_for_user(user, 10, allow_repeats=False))
    assert len(without) == 10 and not set(without) & bought
    again = fitted.buy_again(user, 10)
    assert set(ids(again)) <= bought and len(again) == 10
    assert all(reason == "bought before" for _, _, reason in again)


def test_session_items_pull_in_their_neighbours(
    fitted: HybridRecommender, sample_data: Data
) -> None:
    interactions = sample_data[0]
    user = regular_customer(fitted, interactions)
    bought = set(interactions.loc[interactions["user_id"] == user, "item_id"])
    viewed = next(i for i in fitted.popular(200) if i[0] not in bought)[0]
    neighbours = set(ids(fitted.recommend_for_items([viewed], 30)))
    for allow_repeats in (True, False):
        plain = ids(fitted.recommend_for_user(user, 10, allow_repeats=allow_repeats))
        session = fitted.recommend_for_user(
            user, 10, session_items=[viewed], allow_repeats=allow_repeats
        )
        assert viewed not in ids(session)  # already on the visitor's screen
        assert len(neighbours & set(ids(session))) > len(neighbours & set(plain))
        assert "related to your session" in {reason for _, _, reason in session}


def test_unknown_visitor_gets_session_then_popularity_fallbacks(
    fitted: HybridRecommender,
) -> None:
    viewed = fitted.item_ids[0]
    by_session = fitted.recommend_for_user("visitor-never-seen", 8, session_items=[viewed])
    assert by_session == fitted.recommend_for_items([viewed], 8)
    assert len(by_session) == 8 and viewed not in ids(by_session)
    assert {reason for _, _, reason in by_session} == {"related to your session"}
    popular = fitted.recommend_for_user("visitor-never-seen", 8, exclude=["85123A"])
    assert popular == fitted.popular(8, exclude=["85123A"])
    assert len(popular) == 8 and "85123A" not in ids(popular)
    assert fitted.recommend_for_items(["no-such-product"], 8) == fitted.popular(8)
    assert not fitted.has_user("visitor-never-seen")


def test_similar_items_of_a_known_item(fitted: HybridRecommender) -> None:
    item = "85123A"  # White Hanging Heart T-Light Holder, the best-seller
    similar = fitted.similar_items(item, 8, exclude=["21733"])
    assert len(similar) == 8
    assert item not in ids(similar) and "21733" not in ids(similar)
    assert fitted.similar_items("no-such-product", 8) == []
    # The blend is closer in content than the catalog average.
    assert fitted.embeddings is not None
    position = fitted.item_ids.index(item)
    content = fitted.embeddings @ fitted.embeddings[position]
    chosen = [fitted.item_ids.index(i) for i in ids(similar)]
    assert content[chosen].mean() > content.mean() + 0.1


def test_cold_start_item_is_served_by_content(
    sample_data: Data, sample_embeddings: np.ndarray
) -> None:
    interactions, products = sample_data
    cold = "22423"  # Regency Cakestand 3 Tier: present in the catalog, interactions removed
    warm = interactions.loc[interactions["item_id"] != cold]
    model = HybridRecommender.fit(warm, products, RecommenderParams(), sample_embeddings)
    assert model.meta["counts"]["items_with_interactions"] == len(products) - 1
    similar = model.similar_items(cold, 8)
    position = model.item_ids.index(cold)
    content = sample_embeddings @ sample_embeddings[position]
    content[position] = -np.inf
    # No interactions, so the CF factors are zero: the ranking is content similarity alone.
    assert ids(similar) == [model.item_ids[i] for i in np.argsort(-content, kind="stable")[:8]]
    titles = {p.product_id: p.title for p in products}
    assert any("Cake" in titles[i] or "Regency" in titles[i] for i in ids(similar))
    assert len(model.recommend_for_items([cold], 8)) == 8
    assert len(model.bought_together([cold], 8)) == 8  # no baskets: similar items instead


def test_bought_together_uses_baskets(fitted: HybridRecommender, sample_data: Data) -> None:
    interactions = sample_data[0]
    item = "85123A"
    baskets = set(interactions.loc[interactions["item_id"] == item, "basket_id"])
    companions = set(interactions.loc[interactions["basket_id"].isin(baskets), "item_id"])
    together = fitted.bought_together([item], 8)
    assert len(together) == 8 and item not in ids(together)
    assert set(ids(together)) <= companions
    assert {reason for _, _, reason in together} == {"bought together"}


def test_trending_by_category_and_search(fitted: HybridRecommender, sample_data: Data) -> None:
    categories = {p.product_id: p.category for p in sample_data[1]}
    christmas = fitted.trending(5, category="Christmas")
    assert len(christmas) == 5 and {categories[i] for i in ids(christmas)} == {"Christmas"}
    assert len(fitted.trending(5, exclude=ids(christmas))) == 5
    titles = {p.product_id: p.title for p in sample_data[1]}
    query = encode_texts(["lunch bag"])[0]
    found = fitted.search(query, 5)
    assert all("Lunch Bag" in titles[i] for i in ids(found))


def test_without_embeddings_content_is_off(sample_data: Data) -> None:
    interactions, products = sample_data
    model = HybridRecommender.fit(interactions, products, RecommenderParams())
    assert not model.has_content
    assert model.search(np.ones(384, dtype=np.float32), 5) == []
    assert len(model.similar_items("85123A", 5)) == 5  # CF similarity still works


def test_bpr_option_fits(sample_data: Data) -> None:
    interactions, products = sample_data
    params = RecommenderParams.for_algorithm("bpr")
    model = HybridRecommender.fit(interactions, products, params)
    assert model.meta["params"]["algorithm"] == "bpr"
    assert len(model.recommend_for_user(regular_customer(model, interactions), 5)) == 5
    with pytest.raises(ValueError, match="algorithm"):
        RecommenderParams(algorithm="svd")


# -- artifacts and training ------------------------------------------------------------


def test_save_load_round_trip_gives_identical_rankings(
    fitted: HybridRecommender, sample_data: Data, tmp_path: Path
) -> None:
    fitted.save(tmp_path / "artifact", metrics={"ndcg@10": 0.3})
    loaded = HybridRecommender.load(tmp_path / "artifact")
    user = regular_customer(fitted, sample_data[0])
    item = "85123A"
    calls = [
        lambda m: m.recommend_for_user(user, 8),
        lambda m: m.recommend_for_user(user, 8, session_items=[item], allow_repeats=False),
        lambda m: m.recommend_for_items([item, "22423"], 8),
        lambda m: m.similar_items(item, 8),
        lambda m: m.bought_together([item], 8),
        lambda m: m.trending(8, category="Christmas"),
        lambda m: m.search(m.embeddings[0], 8),
        lambda m: m.buy_again(user, 8),
    ]
    for call in calls:
        assert call(loaded) == call(fitted)
    assert loaded.item_ids == fitted.item_ids and loaded.params == fitted.params
    meta = json.loads((tmp_path / "artifact" / "meta.json").read_text())
    assert meta["format_version"] == 1 and meta["metrics"] == {"ndcg@10": 0.3}
    assert meta["data_window"]["last"] == sample_data[0]["timestamp"].max().isoformat()
    assert meta["counts"]["users"] == sample_data[0]["user_id"].nunique()


def test_load_refuses_another_format_version(fitted: HybridRecommender, tmp_path: Path) -> None:
    fitted.save(tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ValueError, match="artifact format 99"):
        HybridRecommender.load(tmp_path)


def test_train_publishes_versioned_artifacts(
    sample_slice: Path, embedding_cache: Path, tmp_path: Path, sample_embeddings: np.ndarray
) -> None:
    out = tmp_path / "models"
    assert latest_artifact(out) is None
    first = training.train(sample_slice, out, cache_dir=embedding_cache)
    assert latest_artifact(out) == first
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{8}", first.name)
    second = training.train(
        sample_slice, out, RecommenderParams(factors=32), cache_dir=embedding_cache
    )
    assert second != first and first.is_dir()
    assert (out / "CURRENT").read_text().strip() == second.name
    assert latest_artifact(out) == second
    assert HybridRecommender.load(second).params.factors == 32
    assert sorted(p.name for p in out.iterdir()) == sorted(["CURRENT", first.name, second.name])
    (out / "CURRENT").write_text("gone\n")
    assert latest_artifact(out) is None


def test_publish_names_artifacts_by_content(fitted: HybridRecommender, tmp_path: Path) -> None:
    first = training.publish(fitted, tmp_path, {"run": 1})
    second = training.publish(fitted, tmp_path, {"run": 2})  # same arrays, other metadata
    assert first != second and latest_artifact(tmp_path) == second
    assert HybridRecommender.load(first).meta["metrics"] == {"run": 1}
    again = training.publish(fitted, tmp_path, {"run": 2})  # identical content
    assert again.name.split("-")[1] == second.name.split("-")[1]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing left over


def test_train_command(
    sample_slice: Path,
    embedding_cache: Path,
    tmp_path: Path,
    make_config: Callable[..., AppConfig],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sample_embeddings: np.ndarray,
) -> None:
    monkeypatch.setattr(training, "EMBEDDING_CACHE", str(embedding_cache))
    config = make_config()
    parser = argparse.ArgumentParser()
    training.add_arguments_train(parser)
    out = tmp_path / "models"
    args = parser.parse_args(["--source", str(sample_slice), "--out", str(out), "--evaluate"])
    assert training.train_command(args, config) == 0
    artifact = latest_artifact(out)
    assert artifact is not None and artifact.name in capsys.readouterr().out
    metrics = HybridRecommender.load(artifact).meta["metrics"]
    assert set(metrics["ndcg@10"]) == {"next", "discovery"}
