"""Automatic pipelining of concurrent store calls (``journeygate.store.batching``)."""

import asyncio

import pytest
import redis
import redis.asyncio as aioredis

from journeygate.config import StoreConfig
from journeygate.store import StoreUnavailable, open_store
from journeygate.store.batching import MAX_BATCH_COMMANDS, CommandBatcher


def connections_received(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("stats")["total_connections_received"])
    finally:
        client.close()


async def test_concurrent_decisions_share_one_connection(private_redis):
    store = open_store(StoreConfig(redis_url=private_redis.url), "redis")
    await store.load_visitor("warm", "s")
    before = connections_received(private_redis.url)
    visitors = await asyncio.gather(
        *(store.load_visitor(f"v{n}", "s", page_view="P1") for n in range(50))
    )
    # one connection check of ours; the 50 calls went out as one pipeline on the batcher's one
    assert connections_received(private_redis.url) == before + 1
    assert all(visitor.store_available for visitor in visitors)
    profiles = await asyncio.gather(*(store.get_profile(f"v{n}") for n in range(50)))
    assert profiles == [None] * 50
    await store.close()


async def test_one_callers_error_and_cancellation_leave_the_others_alone(redis_url):
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    batcher = CommandBatcher(client, timeout_s=1.0)
    await client.set("jg:test:batching", "text")

    async def cancelled() -> list:
        task = asyncio.ensure_future(batcher.execute([(("GET", "jg:test:batching"), {})]))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return []

    wrong_type, fine, _ = await asyncio.gather(
        batcher.execute([(("INCR", "jg:test:batching"), {})]),
        batcher.execute([(("GET", "jg:test:batching"), {}), (("STRLEN", "jg:test:batching"), {})]),
        cancelled(),
    )
    assert isinstance(wrong_type[0], redis.ResponseError)
    assert fine == ["text", 4]
    await client.delete("jg:test:batching")
    await batcher.aclose()
    await client.aclose()


async def test_unreachable_redis_fails_every_caller_in_the_batch():
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    batcher = CommandBatcher(client, timeout_s=0.5)
    results = await asyncio.gather(
        *(batcher.execute([(("GET", "k"), {})]) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, StoreUnavailable) for result in results)
    await batcher.aclose()
    await client.aclose()


async def test_a_full_batch_is_sent_as_it_is_and_the_next_callers_start_another(private_redis):
    """More commands in one loop iteration than a batch holds: two pipelines on two
    connections, every caller answered with its own reply."""
    client = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    batcher = CommandBatcher(client, timeout_s=5.0)
    await client.ping()
    before = connections_received(private_redis.url)
    key = "jg:{test}:batching-counter"
    callers = MAX_BATCH_COMMANDS + 300
    replies = await asyncio.gather(
        *(batcher.execute([(("INCR", key), {})]) for _ in range(callers))
    )
    assert sorted(reply for (reply,) in replies) == list(range(1, callers + 1))
    # one connection check of ours, and the batcher's two connections
    assert connections_received(private_redis.url) == before + 3
    await client.delete(key)
    await batcher.aclose()
    await client.aclose()


async def test_calls_made_while_every_connection_is_busy_wait_and_go_out_together(private_redis):
    """One connection allowed, held by a blocking command: the calls of the next loop
    iterations wait for it instead of opening connections, and are all answered."""
    client = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    batcher = CommandBatcher(client, timeout_s=5.0, max_connections=1)
    await client.ping()
    before = connections_received(private_redis.url)
    blocked = asyncio.ensure_future(batcher.execute([(("BLPOP", "jg:{test}:empty", 0.3), {})]))
    later = []
    for n in range(5):
        await asyncio.sleep(0.01)  # each in a loop iteration of its own
        later.append(asyncio.ensure_future(batcher.execute([(("ECHO", f"call {n}"), {})])))
    replies = await asyncio.gather(*later)
    assert blocked.done() and await blocked == [None]  # the BLPOP answered first
    assert replies == [[f"call {n}"] for n in range(5)]
    assert connections_received(private_redis.url) == before + 2  # ours, and the batcher's one
    await batcher.aclose()
    await client.aclose()


async def test_a_connection_redis_closed_is_replaced_without_failing_the_callers(private_redis):
    """Redis dropping every client (a restart does the same): the next batch's write or
    first reply fails on the dead connection, and is sent again on a fresh one."""
    client = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    batcher = CommandBatcher(client, timeout_s=2.0)
    assert await batcher.execute([(("ECHO", "first"), {})]) == ["first"]
    admin = redis.Redis.from_url(private_redis.url)
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    admin.close()
    assert await batcher.execute([(("ECHO", "after"), {})]) == ["after"]
    await batcher.aclose()
    await client.aclose()


async def test_a_late_reply_fails_its_callers_but_keeps_the_connection(private_redis):
    """Redis paused past the timeout: the callers get StoreUnavailable at the timeout, the
    reply that comes later is read off the connection, which the next batch uses again."""
    client = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    batcher = CommandBatcher(client, timeout_s=0.1)
    assert await batcher.execute([(("ECHO", "warm"), {})]) == ["warm"]
    admin = redis.Redis.from_url(private_redis.url)
    before = int(admin.info("stats")["total_connections_received"])
    admin.execute_command("CLIENT", "PAUSE", 400, "ALL")
    with pytest.raises(StoreUnavailable, match="no reply within 100 ms"):
        await batcher.execute([(("ECHO", "late"), {})])
    await asyncio.sleep(0.5)  # the pause ends and the late reply arrives
    assert await batcher.execute([(("ECHO", "next"), {})]) == ["next"]
    assert int(admin.info("stats")["total_connections_received"]) == before  # none new
    admin.close()
    await batcher.aclose()
    await client.aclose()


async def test_a_batch_unanswered_past_the_grace_gives_its_connection_up(
    private_redis, monkeypatch
):
    """Redis paused past the timeout and the grace: the batch's connection is closed, and
    the next batch is sent on a fresh one once Redis answers again."""
    monkeypatch.setattr("journeygate.store.batching.LATE_BATCH_GRACE_S", 0.2)
    client = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    batcher = CommandBatcher(client, timeout_s=0.1)
    assert await batcher.execute([(("ECHO", "warm"), {})]) == ["warm"]
    admin = redis.Redis.from_url(private_redis.url)
    before = int(admin.info("stats")["total_connections_received"])
    admin.execute_command("CLIENT", "PAUSE", 800, "ALL")
    with pytest.raises(StoreUnavailable):
        await batcher.execute([(("ECHO", "lost"), {})])
    await asyncio.sleep(1.0)  # given up on at 0.3 s; the pause ends at 0.8 s
    assert await batcher.execute([(("ECHO", "fresh"), {})]) == ["fresh"]
    assert int(admin.info("stats")["total_connections_received"]) == before + 1
    admin.close()
    await batcher.aclose()
    await client.aclose()
