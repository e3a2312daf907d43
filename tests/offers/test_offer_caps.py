"""Caps through real decisions and real events: per-visitor frequency caps recorded in the
profile after each response, and budgets counted from redemption events, with Redis and with
the in-process store."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
import redis
from offerkit import Clock, decide, eventkit, plugin_of, start, wait_for_shows

from jg_offers.budget import Redemptions
from jg_offers.plugin import OffersPlugin
from jg_offers.rules import VisitorInputs
from journeygate.events.worker import serve
from journeygate.registry import build_plugin_manager
from journeygate.store import keys
from testkit import settle

CAPPED = """
[[offers]]
id = "capped"
kind = "discount"
title = "Twice an hour"
priority = 10
[offers.caps]
per_visitor = 2
window_hours = 1

[[offers]]
id = "uncapped"
kind = "content"
title = "Always"
"""


@pytest.fixture(params=["memory", "redis"])
def backend(request):
    return request.param


async def test_frequency_cap_across_consecutive_decisions(
    gateway, tmp_path, backend, redis_url, visitor_id
):
    clock = Clock()
    client = await start(gateway, tmp_path, CAPPED, backend, redis_url, clock=clock)
    for shown in (1, 2):
        block = await decide(client, visitor_id)
        assert block["offer"]["id"] == "capped"
        assert f"shown {shown - 1} of 2 times in 1 h" in block["offer"]["reason"]
        await wait_for_shows(client, visitor_id, "capped", shown)
    block = await decide(client, visitor_id, explain=True)
    assert block["offer"]["id"] == "uncapped"
    (entry,) = [c for c in block["_body"]["explain"]["calls"] if "explanations" in c]
    capped = entry["explanations"]["offers"]["considered"][0]
    assert capped["rejected"] == ["frequency cap: shown 2 times in the last 1 h"]
    # another visitor is not capped
    assert (await decide(client, f"{visitor_id}-other"))["offer"]["id"] == "capped"
    # once the window has passed the offer shows again, and old shows are dropped
    clock.now += 3600
    assert (await decide(client, visitor_id))["offer"]["id"] == "capped"
    await wait_for_shows(client, visitor_id, "capped", 1)


MANY_SHOWS = """
[[offers]]
id = "capped"
kind = "discount"
title = "Up to fifty an hour"
[offers.caps]
per_visitor = 50
window_hours = 1
"""


async def test_concurrent_decisions_for_one_visitor_record_every_show(
    gateway, tmp_path, backend, redis_url, visitor_id
):
    client = await start(gateway, tmp_path, MANY_SHOWS, backend, redis_url)
    blocks = await asyncio.gather(*(decide(client, visitor_id) for _ in range(20)))
    assert {block["offer"]["id"] for block in blocks} == {"capped"}
    await wait_for_shows(client, visitor_id, "capped", 20)


BUDGETED = """
[[offers]]
id = "save5"
kind = "discount"
title = "£5 off"
coupon = "SAVE5"
priority = 10
[offers.caps]
budget = 2

[[offers]]
id = "rare"
kind = "discount"
title = "For the first one only"
coupon = "RARE"
priority = 5
[offers.caps]
budget = 1

[[offers]]
id = "plain"
kind = "content"
title = "No coupon"
"""


def order(visitor, order_id, **properties):
    return eventkit.event("Order Completed", visitor, order_id=order_id, revenue=20, **properties)


async def send(client, *events):
    response = await client.post(
        "/v1/events", json={"events": list(events)}, headers=eventkit.basic()
    )
    assert response.status == 200, await response.text()
    await eventkit.apply_pending(client)


def considered(block):
    (entry,) = [c for c in block["_body"]["explain"]["calls"] if "explanations" in c]
    return {e["id"]: e for e in entry["explanations"]["offers"]["considered"]}


async def test_budget_cap_counts_redemptions_from_events(gateway, tmp_path, backend, redis_url):
    url = eventkit.fresh_redis_url(redis_url)
    client = await start(gateway, tmp_path, BUDGETED, backend, url, budget_refresh_s=0.05)
    assert (await decide(client, "v1"))["offer"]["id"] == "save5"
    # the coupon applied, then the order: one redemption (counted by order id)
    await send(
        client,
        eventkit.event("Coupon Applied", "buyer-1", order_id="O-1", coupon_id="save5"),
        order("buyer-1", "O-1", coupon="SAVE5"),
        order("buyer-2", "O-2"),  # no coupon
        eventkit.event("Coupon Denied", "buyer-2", coupon_id="SAVE5"),  # not a redemption
    )
    # the counts are internal: only explain shows them, never the offer's public reason
    block = await decide(client, "v1", explain=True)
    assert block["offer"]["id"] == "save5"
    assert block["offer"]["reason"] == "priority 10 (highest of 3 eligible)"
    assert "budget 1/2 redeemed" in considered(block)["save5"]["matched"]
    assert (await decide(client, "v1"))["offer"]["reason"] == block["offer"]["reason"]
    await send(client, order("buyer-3", "O-3", coupon="save5"))
    block = await decide(client, "v1", explain=True)
    assert block["offer"]["id"] == "rare"
    assert considered(block)["save5"]["rejected"] == ["budget exhausted: 2/2 redeemed"]
    block = await decide(client, "v1", params={"offer_id": "save5"})
    assert block["offer"]["reason"] == (
        "requested offer save5 not eligible (budget exhausted); priority 5 (highest of 2 eligible)"
    )
    if backend == "redis":
        direct = redis.Redis.from_url(url, decode_responses=True)
        key = keys.offer_redemptions("save5")
        assert direct.zrange(key, 0, -1) == ["O-1", "O-3"]
        assert 0 < direct.ttl(key) <= 400 * 86400
        direct.close()


async def test_budget_counts_from_other_processes_are_refreshed_in_the_background(
    gateway, tmp_path, redis_url
):
    url = eventkit.fresh_redis_url(redis_url)
    client = await start(gateway, tmp_path, BUDGETED, "redis", url, budget_refresh_s=0.05)
    assert plugin_of(client).redemptions.count("rare") == 0
    # a worker in another process counts a redemption of "rare"
    worker = Redemptions({"rare": 1}, url, ttl_s=60)
    await worker.record("rare", "O-9", time.time())
    await worker.close()
    deadline = time.monotonic() + 5
    while plugin_of(client).redemptions.count("rare") != 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    block = await decide(client, "v1", params={"offers": ["rare", "plain"]})
    assert block["offer"]["id"] == "plain"


async def test_closing_stops_the_refresher_even_in_the_middle_of_a_refresh(redis_url):
    """A gateway stops whenever it is told to: closing the budget counts while a refresh is
    waiting on Redis stops the refresher (the Redis client may swallow the cancellation)."""
    url = eventkit.fresh_redis_url(redis_url)
    for _ in range(40):
        redemptions = Redemptions({"rare": 1}, url, ttl_s=60)
        await redemptions.start(0)  # refreshing back to back: a close lands mid-refresh
        await asyncio.sleep(random.uniform(0, 0.003))
        closing = asyncio.create_task(redemptions.close())
        done, _ = await asyncio.wait({closing}, timeout=5)
        assert done, "the refresher did not stop"


async def test_only_deciding_processes_refresh_budget_counts(
    gateway, make_config, tmp_path, redis_url
):
    """The event worker counts redemptions (it observes the events) and decides nothing: it
    never reads the counts back, the gateway does."""
    url = eventkit.fresh_redis_url(redis_url)
    client = await start(gateway, tmp_path, BUDGETED, "redis", url, budget_refresh_s=0.05)
    settings = {"catalog": str(tmp_path / "offers.toml"), "budget_refresh_s": 0.05}
    config = make_config(**eventkit.overrides("redis", url), plugin={"offers": settings})
    in_worker = OffersPlugin(Clock())
    pm = build_plugin_manager(config, load_entrypoints=False, extra_plugins=[("offers", in_worker)])
    stop = asyncio.Event()
    running = asyncio.create_task(serve(config, pm, consumer="offers-test", stop=stop))
    try:

        async def started() -> bool:
            return bool(in_worker.catalog.offers)

        await settle(started)
        elsewhere = Redemptions({"rare": 1}, url, ttl_s=60)
        await elsewhere.record("rare", "O-9", time.time())
        await elsewhere.close()

        async def gateway_refreshed() -> bool:
            return plugin_of(client).redemptions.count("rare") == 1

        await settle(gateway_refreshed)
        await asyncio.sleep(0.25)  # five more refresh intervals
        assert in_worker.redemptions.count("rare") == 0
        assert pm.has_plugin("offers")  # started, not disabled
    finally:
        stop.set()
        await running


def test_recent_shows_count_well_formed_times_inside_the_window_only():
    """The shows are read as stored (another writer may have left anything there)."""
    inputs = VisitorInputs(
        now=1000.0,
        hour=-1,
        shows={"a": [990, 500.0, "999", True, None, 999.5, 1000.0], "b": "990"},
    )
    assert inputs.recent_shows("a", 100) == 3  # 990, 999.5 and 1000; 500 is outside
    assert inputs.recent_shows("a", 1000) == 4
    assert inputs.recent_shows("b", 100) == 0
    assert inputs.recent_shows("missing", 100) == 0
