"""The Redis outbox across dispatchers: what a stopped or crashed dispatcher held is
delivered by another, several dispatchers deliver each message once, keys are bounded, and
an outage is survived."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from hookkit import message, running

from journeygate.store import StoreUnavailable, keys, open_store
from journeygate.webhooks.dispatcher import Dispatcher
from journeygate.webhooks.model import AttemptResult, webhook_queue
from journeygate.webhooks.redis import RedisOutbox
from testkit import settle


@pytest.fixture
async def redis_queues(webhook_config, redis_url, clean_webhooks, receiver):
    """Outboxes over separate connection pools (as separate processes have), one Redis."""
    stores = []

    def factory(**hooks):
        config = webhook_config(
            urls={"crm": receiver.url("/crm"), "email": receiver.url("/email")},
            store={"backend": "redis", "redis_url": redis_url, "timeout_ms": 2000},
            **hooks,
        )
        store = open_store(config.store, "redis", config.events)
        stores.append(store)
        queue = webhook_queue(store, config)
        assert isinstance(queue, RedisOutbox)
        return queue

    yield factory
    for store in stores:
        await store.close()


async def delivered(queue) -> set[str]:
    return {e.delivery_id for e in await queue.log(1000) if e.outcome == "delivered"}


async def test_a_crashed_dispatchers_claims_are_delivered_by_another(redis_queues, receiver):
    queue = redis_queues(timeout_ms=200, claim_idle_ms=300, lease_ms=300)
    await queue.enqueue([message(f"m{i}") for i in range(5)])
    crashed = await queue.claim("crashed", 3)  # read, then the process died
    assert len(crashed) == 3
    survivor = redis_queues(timeout_ms=200, claim_idle_ms=300, lease_ms=300)
    async with running(Dispatcher(survivor, survivor.config, "survivor")):
        await receiver.wait_for(2)
        await asyncio.sleep(0.1)
        assert len(receiver.requests) == 2  # the crashed one's entries are not idle long enough
        await receiver.wait_for(5, timeout_s=3)
        await settle(lambda: _count(survivor, 5))
    assert Counter(receiver.ids()).most_common(1)[0][1] == 1
    # the crashed dispatcher, back from the dead, cannot record anything over it
    late = AttemptResult("retry", 500, "late", 0.0, 0.0)
    assert await queue.complete("crashed", crashed[0], late) is None
    assert await queue.claim("anyone", 10) == []


async def _count(queue, count: int) -> bool:
    return len(await delivered(queue)) >= count


async def test_a_crashed_dispatchers_retry_lease_runs_out(redis_queues, receiver):
    queue = redis_queues(timeout_ms=200, claim_idle_ms=300, lease_ms=300)
    await queue.enqueue([message("a")])
    (claim,) = await queue.claim("d1", 1)
    assert await queue.complete("d1", claim, AttemptResult("retry", 500, "HTTP 500", 0.0, 0.0))
    (leased,) = await queue.claim("crashed", 1)
    assert leased.delivery.attempt == 2
    assert await queue.claim("other", 1) == []  # leased, not due
    async with running(Dispatcher(queue, queue.config, "survivor")):
        await settle(lambda: _count(queue, 1))
    assert [r.json["attempt"] for r in receiver.requests] == [2]


async def test_a_stopped_dispatcher_leaves_the_rest_to_the_next(redis_queues, receiver):
    receiver.delay_s = 0.15
    first = redis_queues(concurrency=2)
    await first.enqueue([message(f"m{i}") for i in range(6)])
    async with running(Dispatcher(first, first.config, "first")):
        await receiver.wait_for(2)  # two in flight when the stop comes: they finish
    assert len(await delivered(first)) == 2
    second = redis_queues(concurrency=2)
    receiver.delay_s = 0
    async with running(Dispatcher(second, second.config, "second")):
        await settle(lambda: _count(second, 6))
    assert sorted(r.json["data"]["key"] for r in receiver.requests) == [f"m{i}" for i in range(6)]


async def test_a_cancelled_dispatchers_deliveries_go_back_to_the_retries(redis_queues, receiver):
    receiver.delay_s = 5
    queue = redis_queues(concurrency=2, timeout_ms=5000, lease_ms=6000, claim_idle_ms=6000)
    await queue.enqueue([message("a"), message("b")])
    task = asyncio.create_task(Dispatcher(queue, queue.config, "first").run(asyncio.Event()))
    await receiver.wait_for(2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    log = await queue.log(10)
    assert [(e.outcome, e.error) for e in log] == [("retry", "dispatcher stopped")] * 2
    receiver.delay_s = 0
    async with running(Dispatcher(queue, queue.config, "second")):
        await settle(lambda: _count(queue, 2))
    assert Counter(receiver.ids()) == {claim_id: 2 for claim_id in set(receiver.ids())}


@pytest.mark.parametrize("flaky", [False, True], ids=["healthy", "first-attempt-fails"])
async def test_two_dispatchers_deliver_each_message_once(redis_queues, receiver, flaky):
    receiver.delay_s = 0.01
    if flaky:  # every delivery's first attempt fails: retries are shared out too
        receiver.first_attempt_status = 503
    one, two = redis_queues(concurrency=4), redis_queues(concurrency=4)
    await one.enqueue([message(f"m{i}") for i in range(30)])
    first, second = Dispatcher(one, one.config, "one"), Dispatcher(two, two.config, "two")
    async with running(first), running(second):
        await settle(lambda: _count(one, 30), timeout_s=10)
    attempts = Counter(
        (r.headers["Journeygate-Delivery"], r.json["attempt"]) for r in receiver.requests
    )
    assert len(receiver.requests) == (60 if flaky else 30)
    assert set(attempts.values()) == {1}  # no attempt was sent twice
    assert len(set(receiver.ids())) == 30
    assert first.outcomes["delivered"] > 0 and second.outcomes["delivered"] > 0


async def test_keys_expire_or_are_bounded(redis_queues, receiver, clean_webhooks):
    client = clean_webhooks
    node_size = client.config_get("stream-node-max-entries")["stream-node-max-entries"]
    client.config_set("stream-node-max-entries", 2)  # so that MAXLEN ~ trims close to the cap
    try:
        queue = redis_queues(log_maxlen=4, dead_letter_maxlen=2, dedupe_ttl_s=600, max_attempts=2)
        receiver.script.extend([(500, {})] * 3)
        await queue.enqueue([message(f"m{i}", f"v{i % 3}") for i in range(12)])
        index_ttl = client.ttl(keys.webhook_visitor("v1"))
        assert 600 < index_ttl <= 600 + 2 * queue.config.backoff_max_ms // 1000 + 1
        assert 590 < client.ttl(keys.webhook_dedupe("m3")) <= 600
        receiver.default = 400
        dispatcher = Dispatcher(queue, queue.config, "d1")
        async with running(dispatcher):
            await settle(lambda: _recorded(dispatcher, retry=3, dead_letter=12))
    finally:
        client.config_set("stream-node-max-entries", node_size)
    bounded = {
        keys.WEBHOOK_OUTBOX,
        keys.WEBHOOK_RETRIES,
        keys.WEBHOOK_RETRYING,
        keys.WEBHOOK_LOG,
        keys.WEBHOOK_DEAD_LETTERS,
    }
    for key in client.scan_iter(match="jg:{webhooks/}:*"):
        assert key in bounded or client.ttl(key) > 0, key
    assert client.xlen(keys.WEBHOOK_OUTBOX) == 0  # acknowledged entries are deleted
    assert client.zcard(keys.WEBHOOK_RETRIES) == client.hlen(keys.WEBHOOK_RETRYING) == 0
    assert not client.exists(keys.webhook_visitor("v1"))  # nothing pending: no index
    assert client.xlen(keys.WEBHOOK_LOG) <= 4 + 2
    assert client.xlen(keys.WEBHOOK_DEAD_LETTERS) <= 2 + 2


async def _recorded(dispatcher, **outcomes: int) -> bool:
    return all(dispatcher.outcomes[name] == count for name, count in outcomes.items())


async def test_an_outage_is_survived(webhook_config, private_redis, receiver):
    config = webhook_config(
        urls={"crm": receiver.url("/crm")},
        store={"backend": "redis", "redis_url": private_redis.url, "timeout_ms": 2000},
    )
    store = open_store(config.store, "redis", config.events)
    queue = webhook_queue(store, config)
    try:
        async with running(Dispatcher(queue, config.webhooks, "d1")):
            private_redis.kill()
            with pytest.raises(StoreUnavailable):
                await queue.enqueue([message("a")])
            await asyncio.sleep(0.1)  # the dispatcher polls a dead Redis meanwhile
            private_redis.start()
            assert await queue.enqueue([message("a")]) == [True]
            await receiver.wait_for(1)
    finally:
        await store.close()


async def test_unreadable_records_are_dropped_not_blocking(redis_queues, clean_webhooks, caplog):
    client = clean_webhooks
    queue = redis_queues()
    client.xadd(keys.WEBHOOK_OUTBOX, {"d": "not a delivery"})
    await queue.enqueue([message("a")])
    client.zadd(keys.WEBHOOK_RETRIES, {"old": 0})
    client.hset(keys.WEBHOOK_RETRYING, "old", '{"id": "old"}')  # a field missing
    (claim,) = await queue.claim("d1", 10)
    assert claim.delivery.dedupe_key == "a"
    assert client.xlen(keys.WEBHOOK_OUTBOX) == 1  # only the good one, pending
    assert client.zcard(keys.WEBHOOK_RETRIES) == client.hlen(keys.WEBHOOK_RETRYING) == 0
    assert "not a delivery" in caplog.text
