"""The intent scorer through real decisions: stage and intent tier, explained, configurable."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import time
import tomllib
from pathlib import Path

import pytest

from jg_intent.plugin import IntentPlugin
from jg_intent.rules import SIGNALS
from journeygate import appkeys
from journeygate.config import PROJECT_ROOT

# The event tests' helpers (a module of tests/events, on the path only when those tests
# were collected first).
EVENT_TESTS = str(Path(__file__).resolve().parents[1] / "events")
if EVENT_TESTS not in sys.path:
    sys.path.append(EVENT_TESTS)
eventkit = importlib.import_module("eventkit")

HOME = {"page": {"type": "home"}}
CART = {
    "items": [
        {"product_id": "22423", "quantity": 1, "price": 12.75},
        {"product_id": "84879", "quantity": 4, "price": 1.69},
    ]
}


async def start(gateway, redis_url, **settings):
    return await gateway(
        extra_plugins=[("intent", IntentPlugin())],
        store={"redis_url": redis_url},
        plugin={"intent": settings} if settings else {},
    )


async def decide(client, visitor, context, session="s-1"):
    body = {
        "visitor_id": visitor,
        "session_id": session,
        "context": context,
        "slots": [{"id": "offer", "kind": "offer"}],
        "explain": True,
    }
    response = await client.post("/v1/decide", json=body)
    assert response.status == 200, await response.text()
    return await response.json()


def explanation(body):
    (enrich,) = [c for c in body["explain"]["calls"] if "explanations" in c]
    return enrich["explanations"]["intent"]


def assert_explained(body):
    """Every signal is listed and the contributions sum to the score the visitor carries."""
    explain = explanation(body)
    signals = explain["intent"]
    assert [s["signal"] for s in signals] == list(SIGNALS)
    for s in signals:
        assert s["contribution"] == pytest.approx(min(s["value"], s.get("cap", 1e9)) * s["weight"])
    total = sum(s["contribution"] for s in signals)
    assert total == pytest.approx(body["visitor"]["intent_score"])
    assert explain["intent_score"] == body["visitor"]["intent_score"]
    return explain


async def test_new_visitor_on_the_home_page_is_aware_and_browsing(gateway, redis_url, visitor_id):
    client = await start(gateway, redis_url)
    body = await decide(client, visitor_id, HOME)
    visitor = body["visitor"]
    assert (visitor["stage"], visitor["intent"]) == ("awareness", "browsing")
    explain = assert_explained(body)
    assert explain["stage"] == {"rule": "default", "because": "no other rule matched"}
    depth = next(s for s in explain["intent"] if s["signal"] == "session_depth")
    assert depth["value"] == 1 and depth["contribution"] == 0.25


async def test_several_product_views_make_a_comparing_visitor(gateway, redis_url, visitor_id):
    client = await start(gateway, redis_url)
    tiers = []
    for product in ("85123A", "22423", "47566"):
        body = await decide(
            client, visitor_id, {"page": {"type": "product", "product_id": product}}
        )
        tiers.append((body["visitor"]["stage"], body["visitor"]["intent"]))
    # The third product page of the session crosses the comparing threshold (3.0).
    assert tiers == [
        ("awareness", "browsing"),
        ("awareness", "browsing"),
        ("consideration", "comparing"),
    ]
    explain = assert_explained(body)
    views = next(s for s in explain["intent"] if s["signal"] == "product_views")
    assert views["value"] == 3 and views["contribution"] == 3.0
    assert explain["stage"]["rule"] == "comparing"
    # Coming back to a product counts as a repeat view.
    body = await decide(client, visitor_id, {"page": {"type": "product", "product_id": "22423"}})
    repeat = next(s for s in explanation(body)["intent"] if s["signal"] == "repeat_views")
    assert repeat["value"] == 1 and repeat["contribution"] == 1.5


async def test_cart_and_checkout_page_mean_decision_and_ready_to_buy(
    gateway, redis_url, visitor_id
):
    client = await start(gateway, redis_url)
    await decide(client, visitor_id, {"page": {"type": "product", "product_id": "22423"}})
    body = await decide(client, visitor_id, {"page": {"type": "checkout"}, "cart": CART})
    visitor = body["visitor"]
    assert (visitor["stage"], visitor["intent"]) == ("decision", "ready_to_buy")
    explain = assert_explained(body)
    by_signal = {s["signal"]: s for s in explain["intent"]}
    assert by_signal["cart"]["contribution"] == 4.0
    assert by_signal["checkout_page"]["contribution"] == 6.0
    assert by_signal["cart_value"]["value"] == pytest.approx(12.75 + 4 * 1.69)
    assert explain["stage"]["rule"] == "ready_to_buy"
    # A cart on a product page is not yet ready to buy, but the stage is decision.
    body = await decide(
        client, visitor_id, {"page": {"type": "product", "product_id": "85123A"}, "cart": CART}
    )
    assert (body["visitor"]["stage"], body["visitor"]["intent"]) == ("decision", "comparing")
    assert explanation(body)["stage"]["rule"] == "decision_on_cart"


async def test_a_customer_with_ingested_orders_is_retained_then_an_advocate(
    gateway, redis_url, visitor_id
):
    url = eventkit.fresh_redis_url(redis_url)
    client = await gateway(
        extra_plugins=[("intent", IntentPlugin())], **eventkit.overrides("redis", url)
    )
    now = time.time()
    order = {
        **eventkit.event("order", visitor_id, now - 3600, order_id="o-1", revenue=42.5),
        "message_id": "o-1",
    }
    response = await client.post("/v1/events", json={"events": [order]}, headers=eventkit.basic())
    assert response.status == 200 and (await response.json())["rejected"] == []
    assert await eventkit.apply_pending(client) == 1

    # Even at checkout with a cart: a customer who has ordered before is in retention.
    body = await decide(client, visitor_id, {"page": {"type": "checkout"}, "cart": CART})
    assert (body["visitor"]["stage"], body["visitor"]["intent"]) == ("retention", "ready_to_buy")
    assert explanation(body)["stage"] == {
        "rule": "retention_min_orders",
        "because": "1 orders >= 1",
    }

    # Positive sentiment (written by later work into the profile) makes them an advocate.
    store = client.app[appkeys.STORE]
    await store.update_profile(visitor_id, {"sentiment": 0.8})
    body = await decide(client, visitor_id, HOME)
    assert body["visitor"]["stage"] == "advocacy"
    assert explanation(body)["stage"]["rule"] == "advocacy_min_sentiment"


async def test_repeat_customers_are_advocates(gateway, redis_url, visitor_id):
    client = await start(gateway, redis_url, advocacy_min_orders=2)
    store = client.app[appkeys.STORE]
    await store.update_profile(visitor_id, {"orders": 2, "revenue": 80.0})
    body = await decide(client, visitor_id, HOME)
    assert body["visitor"]["stage"] == "advocacy"
    assert explanation(body)["stage"] == {
        "rule": "advocacy_min_orders",
        "because": "2 orders >= 2",
    }


async def test_weights_and_thresholds_come_from_the_config(gateway, redis_url, visitor_id):
    client = await start(
        gateway,
        redis_url,
        weights={"checkout_page": 0, "session_depth": 0},
        caps={"cart_value": 10},
        comparing_threshold=4,
        ready_to_buy_threshold=20,
        decision_on_cart=False,
    )
    body = await decide(client, visitor_id, {"page": {"type": "checkout"}, "cart": CART})
    visitor = body["visitor"]
    # cart 4.0 + capped cart value 10 * 0.02: comparing, and the cart alone is no decision.
    assert visitor["intent_score"] == pytest.approx(4.2)
    assert (visitor["stage"], visitor["intent"]) == ("consideration", "comparing")
    explain = assert_explained(body)
    value = next(s for s in explain["intent"] if s["signal"] == "cart_value")
    assert value["value"] == 10 and value["cap"] == 10
    assert explain["thresholds"] == {"comparing": 4.0, "ready_to_buy": 20.0}


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"wieghts": {}}, "plugin.intent.wieghts: unknown setting"),
        ({"weights": {"cart": "high"}}, "plugin.intent.weights.cart: expected a number"),
        ({"weights": {"basket": 1}}, "plugin.intent.weights.basket: unknown signal"),
        ({"caps": {"cart_value": -1}}, "plugin.intent.caps.cart_value: expected a non-negative"),
        ({"ready_to_buy_threshold": 2}, "plugin.intent.ready_to_buy_threshold: must be above"),
        ({"retention_min_orders": 0}, "plugin.intent.retention_min_orders: expected an integer"),
        ({"decision_on_cart": "yes"}, "plugin.intent.decision_on_cart: expected true or false"),
    ],
)
async def test_a_bad_setting_fails_startup_naming_the_key(gateway, redis_url, settings, key):
    client = await start(gateway, redis_url, **settings)
    response = await client.get("/readyz")
    assert response.status == 503
    failed = (await response.json())["plugins"]["failed"]
    assert key in failed["intent"]
    # The gateway still answers, without the plugin.
    body = await decide(client, "v-bad-intent", HOME)
    assert body["visitor"]["intent"] is None


def test_the_plugin_is_declared_as_an_entry_point():
    # Read from pyproject.toml: a stale journeygate.egg-info in the working directory can
    # shadow the installed metadata that ``entry_points()`` would report.
    with (PROJECT_ROOT / "pyproject.toml").open("rb") as file:
        declared = tomllib.load(file)["project"]["entry-points"]["journeygate"]
    entry = importlib.metadata.EntryPoint("intent", declared["intent"], "journeygate")
    assert entry.load() is IntentPlugin
