"""Triggers end to end: the offers plugin sees fired triggers, the embedded gateway (in-process
store) fires its own timers, erasure through DELETE /v1/profiles reaches timers, logs and
queued webhooks, and without webhook endpoints the plugin stays idle."""

from __future__ import annotations

import asyncio
import logging

import redis
from triggerkit import ADMIN, SECRET, consent, ev, send

from jg_offers.plugin import OffersPlugin
from journeygate import appkeys
from journeygate.webhooks import verify_signature
from testkit import settle

pytest_plugins = ["triggerfixtures"]  # url, receiver, stack

RESCUE_CATALOG = """
[[offers]]
id = "cart-rescue"
kind = "discount"
title = "Still thinking it over? 5% off your basket"
coupon = "COMEBACK5"
priority = 70
[offers.eligibility]
triggers = ["cart_abandonment"]
trigger_window_minutes = 1440
"""


def decide(visitor: str) -> dict:
    return {
        "visitor_id": visitor,
        "context": {"page": {"type": "cart"}, "channel": "web"},
        "slots": [{"id": "hero", "kind": "offer"}],
        "explain": True,
    }


async def test_a_fired_trigger_makes_trigger_offers_eligible(stack, receiver, tmp_path):
    catalog = tmp_path / "offers.toml"
    catalog.write_text(RESCUE_CATALOG)
    deployment = await stack(
        {"cart_abandonment": {"delay_s": 0.2}},
        workers=1,
        gateway_plugins=[("offers", OffersPlugin())],
        worker_plugins=lambda: [("offers", OffersPlugin())],
        sections={"plugin": {"offers": {"catalog": str(catalog), "when_none_eligible": "hidden"}}},
    )
    client = deployment.client
    response = await client.post("/v1/decide", json=decide("hesitant"))
    offer = (await response.json())["blocks"][0]["offer"]
    assert offer["hidden"] is True
    await send(client, consent("hesitant"), ev("Product Added", "hesitant", product_id="P1"))
    await receiver.wait_for(1)
    (request,) = receiver.requests
    assert verify_signature(SECRET, request.headers["Journeygate-Signature"], request.body)

    async def recorded() -> bool:  # the webhook is queued before the profile field is written
        profile = await (await client.get("/v1/profiles/hesitant", headers=ADMIN)).json()
        return "triggers" in profile.get("attributes", {})

    await settle(recorded)
    response = await client.post("/v1/decide", json=decide("hesitant"))
    block = (await response.json())["blocks"][0]
    assert block["offer"]["id"] == "cart-rescue"
    assert "trigger cart_abandonment fired 0 min ago" in block["offer"]["reason"]
    profile = await (await client.get("/v1/profiles/hesitant", headers=ADMIN)).json()
    fired_at = profile["attributes"]["triggers"]["cart_abandonment"]
    assert abs(fired_at - (await deployment.log())[0].at) < 0.01


def trigger_keys(url: str, *visitors: str) -> list[str]:
    """The trigger keys of ``visitors`` (all visitors' without), the timer shards that hold
    a timer, and the webhook outbox when it holds a message."""
    client = redis.Redis.from_url(url, decode_responses=True)
    patterns = [f"jg:{{{v}}}:triggers*" for v in visitors] or ["jg:{*}:triggers*"]
    try:
        found = [k for pattern in patterns for k in client.scan_iter(match=pattern)]
        found += [k for k in client.scan_iter(match="jg:{triggers/*}:*") if client.exists(k)]
        if client.exists("jg:{webhooks/}:outbox") and client.xlen("jg:{webhooks/}:outbox"):
            found.append("jg:{webhooks/}:outbox")
        return sorted(found)
    finally:
        client.close()


async def test_erasure_drops_timers_log_entries_and_queued_webhooks(stack, url):
    deployment = await stack(
        {
            "cart_abandonment": {"delay_s": 30},
            "post_purchase": {"delay_s": 30},
            "search_no_results": {"marketing": False},
        },
        workers=1,
        deliver=False,  # the webhook fails and waits for its retry
        sections={"webhooks": {"backoff_base_ms": 30000, "backoff_max_ms": 60000}},
    )
    anonymous, customer = "anon-9", "cust-9"
    await send(deployment.client, ev("Product Added", anonymous, product_id="P1"))
    # applied before the identify (another stream shard: no order between them otherwise)
    await settle(lambda: _has(url, f"jg:{{{anonymous}}}:triggers"))
    await send(
        deployment.client,
        {**ev("identify", anonymous), "user_id": customer},
        {**ev("Order Completed", anonymous, order_id="O-9", revenue=20.0), "user_id": customer},
        {**ev("Products Searched", anonymous, query="zebra", results=0), "user_id": customer},
    )
    await settle(lambda: _logged(deployment, 1))
    response = await deployment.client.delete(f"/v1/profiles/{customer}", headers=ADMIN)
    assert response.status == 200
    body = await response.json()
    assert body["ids"] == [customer, anonymous]
    assert body["plugins"] == {"triggers": {"timers": 2, "log_entries": 1, "visitors": 2}}
    assert body["webhooks"] == 1
    assert trigger_keys(url, anonymous, customer) == []
    assert await deployment.log() == []


async def test_the_embedded_gateway_fires_and_erases_its_own_timers(stack, receiver):
    deployment = await stack(
        {"cart_abandonment": {"delay_s": 0.3}, "inactivity": {"delay_s": 30, "min_events": 1}},
        backend="memory",
    )
    client = deployment.client
    await send(
        client,
        *[consent(v) for v in ("left", "stays")],
        *[ev("Product Added", v, product_id="P4") for v in ("left", "stays")],
    )
    response = await client.delete("/v1/profiles/stays", headers=ADMIN)
    body = await response.json()
    assert body["plugins"]["triggers"]["timers"] == 2  # its cart and its inactivity timers
    await receiver.wait_for(1)
    await asyncio.sleep(0.4)
    assert [p["visitor_id"] for p in receiver.payloads()] == ["left"]
    plugin = deployment.gateway_plugin()
    assert plugin.scheduler is not None  # embedded: the gateway runs the timers
    assert client.app is not None and client.app[appkeys.CONFIG].store_backend == "memory"


async def test_without_webhook_endpoints_the_triggers_stay_idle(stack, url, caplog):
    caplog.set_level(logging.WARNING, logger="jg_triggers.plugin")
    deployment = await stack({"cart_abandonment": {"delay_s": 0.1}}, workers=1, endpoints=False)
    await send(deployment.client, consent("v"), ev("Product Added", "v", product_id="P1"))
    await asyncio.sleep(0.4)
    assert trigger_keys(url, "v") == []
    inactive = [r.message for r in caplog.records if "triggers inactive" in r.message]
    assert len(inactive) == 2  # once by the gateway, once by the worker
    assert deployment.gateway_plugin().engine is None


async def _has(url: str, key: str) -> bool:
    return key in trigger_keys(url)


async def _logged(deployment, count: int) -> bool:
    return len(await deployment.log()) >= count
