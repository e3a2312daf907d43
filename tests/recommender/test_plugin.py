"""The recommender plugin in a real gateway: every slot strategy, rules, hot reload."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from jg_recommender.model import HybridRecommender
from jg_recommender.plugin import (
    RANKING_DEPTH,
    RecommenderPlugin,
    RecommenderSettings,
    title_family,
)
from jg_recommender.training import publish
from journeygate.artifacts import latest_artifact


@pytest.fixture
def artifacts(tmp_path: Path, fitted: HybridRecommender) -> Path:
    root = tmp_path / "models"
    publish(fitted, root, None)
    return root


@pytest.fixture
def customer(fitted: HybridRecommender, sample_data) -> str:
    """A real customer of the sample with several purchases."""
    interactions, _ = sample_data
    counts = interactions.groupby("user_id")["item_id"].nunique()
    return str(counts[counts >= 10].index[0])


async def start(gateway, artifacts: Path, **settings):
    plugin = RecommenderPlugin()
    client = await gateway(
        extra_plugins=[("recommender", plugin)],
        plugin={
            "recommender": {
                "artifacts": str(artifacts),
                "reload_interval_s": 0.1,
                **settings,
            }
        },
    )
    return client, plugin


async def decide(client, visitor_id, slot, page=None, cart=(), session_id="s1", explain=False):
    body = {
        "visitor_id": visitor_id,
        "session_id": session_id,
        "context": {
            "page": page or {"type": "home"},
            "cart": {"items": [{"product_id": p, "quantity": 1} for p in cart]},
        },
        "slots": [slot],
        "explain": explain,
    }
    response = await client.post("/v1/decide", json=body)
    assert response.status == 200, await response.text()
    return (await response.json())["blocks"][0]


def ids(block):
    return [item["product_id"] for item in block["items"]]


async def test_similar_items_on_a_product_page(gateway, artifacts, fitted):
    client, _ = await start(gateway, artifacts)
    product = fitted.item_ids[0]
    block = await decide(
        client,
        "v-similar",
        {"id": "pdp", "kind": "recommendations", "strategy": "similar_items", "limit": 6},
        page={"type": "product", "product_id": product},
    )
    assert block["source"] == "recommender"
    assert len(block["items"]) == 6
    assert product not in ids(block)
    assert all(item["reason"] for item in block["items"])
    expected = [item for item, _, _ in fitted.similar_items(product, 30)]
    assert set(ids(block)) <= set(expected)


async def test_first_time_anonymous_visitor_gets_session_neighbours(gateway, artifacts, fitted):
    client, _ = await start(gateway, artifacts)
    viewed = fitted.item_ids[5]
    page = {"type": "product", "product_id": viewed}
    slot = {"id": "fy", "kind": "recommendations", "strategy": "for_you", "limit": 8}
    await decide(client, "anon-1", slot, page=page)
    block = await decide(client, "anon-1", slot)  # next page: the home page
    assert block["source"] == "recommender"
    neighbours = {item for item, _, _ in fitted.recommend_for_items([viewed], 40)}
    assert len(set(ids(block)) & neighbours) >= 6
    popular = {item for item, _, _ in fitted.popular(8)}
    assert set(ids(block)) != popular


async def test_known_customer_gets_personal_items_without_repeats(
    gateway, artifacts, fitted, customer
):
    client, _ = await start(gateway, artifacts)
    slot = {"id": "fy", "kind": "recommendations", "strategy": "for_you", "limit": 10}
    block = await decide(client, customer, slot)
    assert block["source"] == "recommender"
    assert len(block["items"]) == 10
    bought = {item for item, _, _ in fitted.buy_again(customer, 1000)}
    assert not set(ids(block)) & bought
    client_repeats, _ = await start(gateway, artifacts, exclude_purchased=False)
    block = await decide(client_repeats, customer, slot)
    assert set(ids(block)) & bought


async def test_bought_together_uses_the_cart(gateway, artifacts, fitted):
    client, _ = await start(gateway, artifacts)
    cart = [fitted.item_ids[1], fitted.item_ids[2]]
    block = await decide(
        client,
        "v-cart",
        {"id": "cart", "kind": "recommendations", "strategy": "bought_together", "limit": 5},
        page={"type": "cart"},
        cart=cart,
    )
    assert block["source"] == "recommender"
    assert len(block["items"]) == 5 and not set(ids(block)) & set(cart)


async def test_trending_within_a_category(gateway, artifacts, catalog_path):
    client, _ = await start(gateway, artifacts)
    block = await decide(
        client,
        "v-trend",
        {"id": "t", "kind": "recommendations", "strategy": "trending", "limit": 5},
        page={"type": "category", "category": "Kitchen & dining"},
    )
    assert block["source"] == "recommender"
    assert {item["category"] for item in block["items"]} == {"Kitchen & dining"}


async def test_recently_viewed_needs_no_model(gateway, tmp_path):
    client, _ = await start(gateway, tmp_path / "no-models-yet")
    for product in ("22423", "84879", "22423", "47566"):
        await decide(
            client,
            "v-recent",
            {"id": "x", "kind": "offer"},
            page={"type": "product", "product_id": product},
        )
    block = await decide(
        client, "v-recent", {"id": "rv", "kind": "recommendations", "strategy": "recently_viewed"}
    )
    assert block["source"] == "recommender"
    assert ids(block) == ["47566", "22423", "84879"]


async def test_search_embeds_the_query(gateway, artifacts):
    client, plugin = await start(gateway, artifacts)
    block = await decide(
        client,
        "v-search",
        {"id": "s", "kind": "recommendations", "strategy": "search", "limit": 5},
        page={"type": "search", "query": "christmas decorations"},
    )
    assert block["source"] == "recommender"
    titles = " ".join(item["title"].lower() for item in block["items"])
    assert "christmas" in titles
    assert plugin.encoder is not None and plugin.encoder.stats.batches >= 1


async def test_blocks_are_diverse(gateway, artifacts, fitted):
    client, _ = await start(gateway, artifacts, max_per_family=2)
    for product in fitted.item_ids[:20]:
        block = await decide(
            client,
            "v-div",
            {"id": "pdp", "kind": "recommendations", "strategy": "similar_items", "limit": 8},
            page={"type": "product", "product_id": product},
        )
        families = Counter(title_family(item["title"]) for item in block["items"])
        assert max(families.values(), default=0) <= 2


async def test_without_an_artifact_the_fallback_answers_until_one_appears(
    gateway, tmp_path, fitted
):
    root = tmp_path / "models"
    client, plugin = await start(gateway, root)
    slot = {"id": "fy", "kind": "recommendations", "strategy": "for_you"}
    assert (await decide(client, "v1", slot))["source"] == "fallback"
    publish(fitted, root, None)
    for _ in range(50):
        if plugin.model is not None:
            break
        await asyncio.sleep(0.05)
    assert (await decide(client, "v1", slot))["source"] == "recommender"


async def test_hot_reload_under_load_fails_no_request(gateway, artifacts, fitted):
    client, plugin = await start(gateway, artifacts)
    first = plugin.model_path
    slot = {"id": "pdp", "kind": "recommendations", "strategy": "similar_items", "limit": 6}
    page = {"type": "product", "product_id": fitted.item_ids[3]}
    sources: list[str] = []
    swapped = asyncio.Event()

    async def shopper(index: int) -> None:
        # Keep shopping until a while after the new model is being served.
        after_swap = 0
        while after_swap < 10:
            block = await decide(client, f"load-{index}", slot, page=page)
            sources.append(block["source"])
            assert block["source"] == "recommender", block.get("fallback_reason")
            after_swap += swapped.is_set()

    async def retrain() -> None:
        await asyncio.sleep(1.1)  # artifact names carry the second they were published
        await asyncio.to_thread(publish, fitted, artifacts, {"retrained": True})
        while plugin.model_path == first:
            await asyncio.sleep(0.02)
        swapped.set()

    await asyncio.wait_for(asyncio.gather(retrain(), *(shopper(i) for i in range(8))), 30)
    assert plugin.model_path == latest_artifact(artifacts) != first
    assert plugin.model.meta["metrics"] == {"retrained": True}
    assert len(sources) >= 80 and set(sources) == {"recommender"}


async def test_similar_items_of_every_product_are_cached_after_a_load(gateway, artifacts, fitted):
    client, plugin = await start(gateway, artifacts)
    for _ in range(200):
        if len(plugin._cache) >= len(fitted.item_ids):
            break
        await asyncio.sleep(0.05)
    product = fitted.item_ids[7]
    cached = plugin._cache[("similar_items", product, RANKING_DEPTH)]
    assert cached == fitted.similar_items(product, RANKING_DEPTH)
    block = await decide(
        client,
        "v-warm",
        {"id": "pdp", "kind": "recommendations", "strategy": "similar_items", "limit": 4},
        page={"type": "product", "product_id": product},
    )
    assert ids(block) == [item for item, _, _ in cached if item != product][: len(ids(block))]


def test_settings_are_validated():
    assert RecommenderSettings.from_mapping({"reload_interval_s": 1}).reload_interval_s == 1
    with pytest.raises(ValueError, match=r"^plugin\.recommender\.max_per_family"):
        RecommenderSettings.from_mapping({"max_per_family": "two"})
    with pytest.raises(ValueError, match=r"^plugin\.recommender\.colour: unknown"):
        RecommenderSettings.from_mapping({"colour": "red"})


def test_title_family():
    assert title_family("Lunch Bag Red Retrospot") == title_family("Lunch Bag Black Skull.")
    assert title_family("Lunch Bag Red Retrospot") != title_family("Jumbo Bag Red Retrospot")
