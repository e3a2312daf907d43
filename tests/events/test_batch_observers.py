"""The batch observer hook, journeygate_observe_events, through the real worker path (Redis
streams, consumer group, ``serve``) and the embedded gateway: once per batch, after the
per-event observers and before the batch is acknowledged; again, with the events applied the
first time, when an observer raises RetryBatch; cut off at its batch budget without holding
the batch back."""

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from eventkit import ADMIN, basic, event, fresh_redis_url, overrides

from journeygate import RetryBatch, hookimpl
from journeygate.events.worker import serve
from journeygate.registry import build_plugin_manager
from journeygate.store import keys

SHARDS = 4  # eventkit.overrides
GROUP = "jg-workers"


@pytest.fixture
def url(redis_url):
    return fresh_redis_url(redis_url)


class Calls:
    """What the observers saw, in call order: ("event", message id) per event and
    ("batch", message ids, unacknowledged entries, entries in the streams) per batch."""

    def __init__(self, url=None):
        self.log = []
        self.redis = aioredis.Redis.from_url(url) if url else None

    def batches(self):
        return [ids for kind, ids, *_ in self.log if kind == "batch"]

    async def streams(self):
        """(entries read and not acknowledged, entries in the streams)."""
        pending = length = 0
        for shard in range(SHARDS):
            name = keys.event_stream(shard)
            pending += (await self.redis.xpending(name, GROUP))["pending"]
            length += await self.redis.xlen(name)
        return pending, length


class PerEvent:
    def __init__(self, calls):
        self.calls = calls

    @hookimpl
    def journeygate_observe_event(self, event):
        self.calls.log.append(("event", event.message_id))


class Batches:
    """Records each batch; raises RetryBatch for the first ``retries`` of them."""

    def __init__(self, calls, retries=0):
        self.calls = calls
        self.retries = retries

    @hookimpl
    async def journeygate_observe_events(self, events):
        streams = await self.calls.streams() if self.calls.redis else (None, None)
        self.calls.log.append(("batch", [e.message_id for e in events], *streams))
        if self.retries:
            self.retries -= 1
            raise RetryBatch("its store is down")


class Broken:
    @hookimpl
    def journeygate_observe_events(self, events):
        raise RuntimeError("observer bug")


class Slow:
    @hookimpl
    async def journeygate_observe_events(self, events):
        await asyncio.sleep(3600)


async def until(condition, timeout_s=10.0):
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.02)


def worker(config, *plugins):
    pm = build_plugin_manager(config, load_entrypoints=False, extra_plugins=plugins)
    stop = asyncio.Event()
    return stop, asyncio.create_task(serve(config, pm, consumer="batch-test", stop=stop))


async def post(client, *events):
    response = await client.post("/v1/events", json={"events": list(events)}, headers=basic())
    return response.status


async def test_a_batch_is_observed_once_after_its_events_and_before_it_is_acknowledged(
    gateway, make_config, url
):
    client = await gateway(**overrides("redis", url))
    now = time.time()
    assert (
        await post(
            client,
            {**event("Product Viewed", "bo-a", now - 5, product_id="P1"), "message_id": "a1"},
            {**event("Product Viewed", "bo-b", now - 4, product_id="P2"), "message_id": "b1"},
        )
        == 200
    )
    late = {**event("Cart Viewed", "bo-a", now - 10), "message_id": "a0"}  # earlier, sent later
    assert await post(client, late) == 200
    calls = Calls(url)
    config = make_config(**overrides("redis", url), plugin={"slow": {"batch_budget_ms": 100}})
    # call order: the per-event observer, a broken and a slow batch observer, then the recorder
    stop, running = worker(
        config,
        ("per_event", PerEvent(calls)),
        ("broken", Broken()),
        ("slow", Slow()),
        ("batches", Batches(calls)),
    )

    async def acknowledged():
        return bool(calls.batches()) and (await calls.streams())[0] == 0

    await until(acknowledged)
    stop.set()
    assert await running == 0
    assert [kind for kind, *_ in calls.log] == ["event", "event", "event", "batch"]
    ((_, ids, pending, length),) = [call for call in calls.log if call[0] == "batch"]
    assert sorted(ids) == ["a0", "a1", "b1"] and ids.index("a1") < ids.index("a0")  # as read
    assert [message_id for kind, message_id in calls.log[:3]] == ids
    assert pending == length > 0  # every entry read and none acknowledged yet
    await calls.redis.aclose()


async def test_a_batch_asked_for_again_comes_back_with_the_events_applied_the_first_time(
    gateway, make_config, url
):
    sections = overrides("redis", url, claim_idle_ms=300, claim_interval_ms=100)
    client = await gateway(**sections)
    sent = [
        {**event("Product Viewed", "again-1", product_id="P1"), "message_id": "r1"},
        {**event("Cart Viewed", "again-1"), "message_id": "r2"},
    ]
    assert await post(client, *sent) == 200
    calls = Calls(url)
    stop, running = worker(
        make_config(**sections),
        ("per_event", PerEvent(calls)),
        ("batches", Batches(calls, retries=1)),
    )

    async def batches(count):
        return len(calls.batches()) >= count and (await calls.streams())[0] == 0

    await until(lambda: batches(2))
    assert await post(client, *sent) == 200  # a client sending them again
    await until(lambda: batches(3))
    stop.set()
    assert await running == 0
    # the per-event observer saw each event once; the batch observers each time it came
    assert [entry for entry in calls.log if entry[0] == "event"] == [
        ("event", "r1"),
        ("event", "r2"),
    ]
    assert calls.batches() == [["r1", "r2"]] * 3
    first, redelivered = [call for call in calls.log if call[0] == "batch"][:2]
    assert first[2] == redelivered[2] == 1  # the entry was not acknowledged in between
    response = await client.get("/v1/profiles/again-1", headers=ADMIN)
    assert (await response.json())["aggregates"]["events"] == 2  # applied once
    await calls.redis.aclose()


async def test_the_embedded_gateway_answers_503_to_a_batch_asked_for_again(gateway):
    calls = Calls()
    client = await gateway(
        extra_plugins=[
            ("per_event", PerEvent(calls)),
            ("slow", Slow()),
            ("batches", Batches(calls, retries=1)),
        ],
        plugin={"slow": {"batch_budget_ms": 50}},
        **overrides("memory", ""),
    )
    sent = {**event("Product Viewed", "embedded-1", product_id="P1"), "message_id": "e1"}
    response = await client.post("/v1/events", json={"events": [sent]}, headers=basic())
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert (await response.json())["error"]["message"] == (
        "events applied but not yet observed by every plugin; send them again (each message id "
        "is applied once)"
    )
    started = time.monotonic()
    assert await post(client, sent) == 200
    assert time.monotonic() - started < 2  # the slow observer was cut off at 50 ms
    assert calls.log == [("event", "e1"), *[("batch", ["e1"], None, None)] * 2]
    metrics = await (await client.get("/metrics")).text()
    failures = 'journeygate_plugin_failures_total{hook="journeygate_observe_events",'
    assert failures + 'plugin="slow",reason="timeout"} 2.0' in metrics
    assert failures + 'plugin="batches",reason="retry"} 1.0' in metrics
