"""Redis-specific guarantees: bounded keys, one hash slot per visitor, failure as an error."""

import asyncio
import json
import time

import pytest
import redis
from redis.crc import key_slot

from journeygate.config import EventsConfig, StoreConfig
from journeygate.store import DecayedScore, StoreUnavailable, keys, open_store


async def test_every_key_has_a_ttl_and_shares_the_visitor_hash_tag(
    redis_url, redis_client, visitor_id
):
    store = open_store(StoreConfig(redis_url=redis_url), "redis")
    await store.update_profile(visitor_id, {"segment": "x"})
    await store.load_visitor(visitor_id, "s1", page_view="A")
    await store.close()
    found = sorted(redis_client.scan_iter(match=f"jg:{{{visitor_id}}}:*"))
    assert found == sorted(
        [
            keys.profile(visitor_id),
            keys.views(visitor_id),
            keys.sessions(visitor_id),
            keys.session(visitor_id, "s1"),
            keys.session_views(visitor_id, "s1"),
        ]
    )
    slots = {key_slot(key.encode()) for key in found}
    assert len(slots) == 1
    for key in found:
        assert redis_client.ttl(key) > 0, key


async def test_sessions_index_is_capped(redis_url, redis_client, visitor_id):
    store = open_store(StoreConfig(redis_url=redis_url, history_max=3), "redis")
    for index in range(6):
        await store.load_visitor(visitor_id, f"s{index}")
    await store.close()
    assert redis_client.zrange(keys.sessions(visitor_id), 0, -1) == ["s3", "s4", "s5"]


async def test_unreachable_redis_raises_store_unavailable_quickly():
    store = open_store(StoreConfig(redis_url="redis://127.0.0.1:1/0", timeout_ms=100), "redis")
    with pytest.raises(StoreUnavailable):
        await store.load_visitor("v1", "s1", page_view="A")
    assert await store.ping() is False
    await store.close()


async def test_stage_history_is_capped_with_a_ttl_and_erased(redis_url, redis_client, visitor_id):
    events = EventsConfig(stage_history_max=3)
    store = open_store(StoreConfig(redis_url=redis_url), "redis", events)
    stages = ["awareness", "consideration", "decision", "retention", "advocacy"]
    for n, stage in enumerate(stages):
        await store.record_stage(visitor_id, stage, 1000.0 + n, f"d{n}")
    history = [json.loads(raw) for raw in redis_client.lrange(keys.stages(visitor_id), 0, -1)]
    entry_ids = [record.pop("entry") for record in history]
    assert [redis_client.xrange(keys.JOURNEY_TRANSITIONS, i, i)[0][1]["v"] for i in entry_ids] == [
        visitor_id
    ] * 3
    assert history == [
        {"from": "retention", "to": "advocacy", "at": 1004, "decision_id": "d4"},
        {"from": "decision", "to": "retention", "at": 1003, "decision_id": "d3"},
        {"from": "consideration", "to": "decision", "at": 1002, "decision_id": "d2"},
    ]
    assert redis_client.ttl(keys.stages(visitor_id)) > 0
    assert key_slot(keys.stages(visitor_id).encode()) == key_slot(keys.profile(visitor_id).encode())
    await store.delete_visitor(visitor_id)
    assert not redis_client.exists(keys.stages(visitor_id))
    # the erasure reached the global transitions stream too
    assert all(not redis_client.xrange(keys.JOURNEY_TRANSITIONS, i, i) for i in entry_ids)
    await store.close()


async def test_bulk_profile_updates_and_blends_set_the_profile_ttl(
    redis_url, redis_client, visitor_id
):
    store = open_store(StoreConfig(redis_url=redis_url, profile_ttl_s=1000), "redis")
    await store.update_profiles([(f"{visitor_id}-{i}", {"persona": "p"}) for i in range(3)])
    await store.blend_score(f"{visitor_id}-3", DecayedScore("mood", 0.5, time.time(), 86400.0))
    await store.close()
    for i in range(4):
        assert 0 < redis_client.ttl(keys.profile(f"{visitor_id}-{i}")) <= 1000


BUSY_SCRIPT = """
local start = redis.call('TIME')
repeat
  local now = redis.call('TIME')
until (now[1] - start[1]) * 1000000 + (now[2] - start[2]) >= tonumber(ARGV[1])
return 1
"""


async def test_a_late_call_keeps_its_connection(private_redis):
    """A call that runs out of time fails at once but is not interrupted: its connection goes
    back to the pool when the late reply came, and no new connection is opened."""
    store = open_store(StoreConfig(redis_url=private_redis.url, timeout_ms=50), "redis")
    await store.load_visitor("v1", "s1")  # the pooled connection and the script are ready
    admin = redis.Redis.from_url(private_redis.url)
    connections_before = admin.info("stats")["total_connections_received"]
    blocker = asyncio.get_running_loop().run_in_executor(
        None, lambda: redis.Redis.from_url(private_redis.url).eval(BUSY_SCRIPT, 0, 300_000)
    )
    await asyncio.sleep(0.05)  # Redis is busy for 0.3 s from now
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.load_visitor("v1", "s1")
    assert time.monotonic() - started < 0.2
    await blocker
    await asyncio.sleep(0.05)
    visitor = await store.load_visitor("v1", "s1")
    assert visitor.store_available
    # the blocker's and the admin's connections only; the store opened none
    assert admin.info("stats")["total_connections_received"] == connections_before + 1
    await store.close()
    admin.close()


async def test_scripts_are_loaded_again_when_redis_lost_them(redis_url, redis_client, visitor_id):
    """EVALSHA names a script by the SHA1 computed in the gateway; after a Redis restart
    (``SCRIPT FLUSH`` here) the first call loads it again and still answers."""
    store = open_store(StoreConfig(redis_url=redis_url), "redis")
    await store.load_visitor(visitor_id, "s1", page_view="A")
    redis_client.script_flush()
    stored = await store.load_visitor(visitor_id, "s1", page_view="B")
    await store.close()
    assert stored.session_views == ("A",)  # the view of this page is recorded after the read
    assert sorted(redis_client.lrange(keys.session_views(visitor_id, "s1"), 0, -1)) == ["A", "B"]
