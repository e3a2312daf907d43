"""Where dispatchers run: the embedded gateway (in-process store) delivers its own webhooks
and counts them in /metrics; ``journeygate worker`` delivers those queued in Redis beside the
events; erasing a visitor drops its pending webhooks."""

from __future__ import annotations

import asyncio

from hookkit import message

from journeygate import appkeys
from journeygate.events.worker import serve
from journeygate.registry import build_plugin_manager
from journeygate.store import open_store
from journeygate.webhooks import webhook_outbox
from journeygate.webhooks.model import webhook_queue
from testkit import settle

ADMIN = {"X-API-Key": "test-admin-key"}


def hooks(receiver, **extra):
    section = {
        "timeout_ms": 500,
        "backoff_base_ms": 300,
        "backoff_max_ms": 300,
        "lease_ms": 1000,
        "claim_idle_ms": 1000,
        "poll_interval_ms": 10,
        "endpoints": {"crm": {"url": receiver.url("/crm"), "secret": "s"}},
    }
    return section | extra


async def test_the_embedded_gateway_delivers_and_counts(gateway, receiver):
    client = await gateway(webhooks=hooks(receiver))
    outbox = webhook_outbox(client.app[appkeys.STORE], client.app[appkeys.CONFIG])
    assert outbox is client.app[appkeys.WEBHOOKS]  # producers and the dispatcher share it
    await outbox.enqueue([message("a", "v1")])
    await receiver.wait_for(1)
    text = ""

    async def counted() -> bool:
        nonlocal text
        text = await (await client.get("/metrics")).text()
        return (
            'journeygate_webhook_deliveries_total{endpoint="crm",outcome="delivered"} 1.0' in text
        )

    await settle(counted)
    assert 'journeygate_webhook_delivery_duration_seconds_count{endpoint="crm"} 1.0' in text


async def test_erasure_drops_the_visitors_pending_webhooks(gateway, receiver, visitor_id):
    client = await gateway(webhooks=hooks(receiver))
    outbox = client.app[appkeys.WEBHOOKS]
    receiver.script.extend([(503, {}), (503, {})])
    await outbox.enqueue([message("a", visitor_id), message("b", "someone-else")])
    await receiver.wait_for(2)  # both failed once and wait for their retry
    response = await client.delete(f"/v1/profiles/{visitor_id}", headers=ADMIN)
    assert response.status == 200
    await receiver.wait_for(3)
    await asyncio.sleep(0.4)  # past the erased delivery's retry time
    assert sorted(r.json["data"]["key"] for r in receiver.requests) == ["a", "b", "b"]


async def test_no_endpoints_no_webhooks(gateway):
    client = await gateway()
    assert appkeys.WEBHOOKS not in client.app


async def test_the_worker_delivers_webhooks_from_redis(
    make_config, redis_url, clean_webhooks, receiver
):
    config = make_config(
        store={"backend": "redis", "redis_url": redis_url}, webhooks=hooks(receiver)
    )
    store = open_store(config.store, "redis", config.events)
    try:
        assert await webhook_queue(store, config).enqueue([message("a")]) == [True]
        stop = asyncio.Event()
        pm = build_plugin_manager(config, load_entrypoints=False)
        worker = asyncio.create_task(serve(config, pm, consumer="w1", stop=stop))
        await receiver.wait_for(1)
        stop.set()
        assert await worker == 0
        (entry,) = await webhook_queue(store, config).log(10)
        assert (entry.outcome, entry.delivery_id) == ("delivered", receiver.ids()[0])
    finally:
        await store.close()
