"""The trigger store contract, run against both implementations (Redis, in process): state
written only at the version read, leased timer claims, capped and cancelled timers, the
guard, the log, erasure; and every Redis key of a visitor expires."""

from __future__ import annotations

import time

import pytest
import redis

from jg_triggers.memory_store import MemoryTriggerStore
from jg_triggers.redis_store import RedisTriggerStore
from jg_triggers.store import GuardCheck, LogRecord, StateWrite, TimerEntry, shard_of
from journeygate.store import keys

pytest_plugins = ["triggerfixtures"]  # url, receiver, stack

SHARDS = 4
TTL = 3600.0


@pytest.fixture(params=["memory", "redis"])
async def store(request, url):
    if request.param == "redis":
        made = RedisTriggerStore(url, SHARDS, max_timers_per_shard=3, timeout_s=2.0)
    else:
        made = MemoryTriggerStore(max_visitors=100, max_timers=3, log_maxlen=1000)
    yield made
    await made.close()


def guard(visitor, occurrence, trigger="t1", action="a", now=1000.0, **limits):
    return GuardCheck(
        visitor=visitor,
        occurrence=occurrence,
        trigger=trigger,
        action=action,
        now=now,
        debounce_s=limits.get("debounce_s", 0.0),
        cap_count=limits.get("cap_count", 0),
        cap_window_s=limits.get("cap_window_s", 0.0),
        keep_s=limits.get("keep_s", 86400.0),
        fires_kept=limits.get("fires_kept", 50),
        ttl_s=TTL,
    )


async def test_state_is_written_only_at_the_version_read(store):
    (empty,) = await store.load_states(["v1"])
    assert empty.version == 0 and empty.fields == {}
    first = StateWrite("v1", 0, {"cart": {"qty": 2}, "checkout": 5.0})
    other = StateWrite("v2", 0, {"page": {"t": 1.0}})
    assert await store.save_states([first, other], TTL) == [True, True]
    v1, v2 = await store.load_states(["v1", "v2"])
    assert v1.fields == {"cart": {"qty": 2}, "checkout": 5.0} and v1.version == 1
    assert v2.fields == {"page": {"t": 1.0}}
    # another worker read version 0 too: its write is refused, it reads again and retries
    stale = StateWrite("v1", 0, {"cart": {"qty": 9}})
    assert await store.save_states([stale, StateWrite("v1", 1, {}, ["cart"])], TTL) == [
        False,
        True,
    ]
    (v1,) = await store.load_states(["v1"])
    assert v1.fields == {"checkout": 5.0} and v1.version == 2


async def test_a_claimed_timer_is_held_until_its_lease_ends(store):
    now = time.time()
    due = [TimerEntry("v1", "cart", "", now - 1, {"n": 1}), TimerEntry("v2", "post", "O1", now - 1)]
    later = TimerEntry("v3", "cart", "", now + 60)
    assert await store.update_timers([*due, later], [], TTL) == 0
    claimed = await store.claim(now, now + 5, 10)
    assert sorted(held.timer.id for held in claimed) == ["v1|cart|", "v2|post|O1"]
    assert {held.timer.id: held.timer.data for held in claimed}["v1|cart|"] == {"n": 1}
    assert await store.claim(now + 1, now + 6, 10) == []  # held by the first claim
    again = await store.claim(now + 5, now + 10, 10)  # its lease ran out: claimed again
    assert len(again) == 2
    # the first scheduler finishes late: the second one holds them now, nothing is removed
    await store.finish(claimed)
    assert len(await store.claim(now + 10, now + 15, 10)) == 2
    # a timer moved while held (re-armed) is not removed by finishing the claim
    held = await store.claim(now + 15, now + 20, 10)
    await store.update_timers([TimerEntry("v1", "cart", "", now + 30)], [], TTL)
    await store.finish(held)
    assert await store.claim(now + 29, now + 40, 10) == []
    (moved,) = await store.claim(now + 30, now + 40, 10)
    assert moved.timer.id == "v1|cart|" and moved.timer.due == now + 30
    await store.finish([moved])
    assert [h.timer.id for h in await store.claim(now + 100, now + 110, 10)] == ["v3|cart|"]


async def test_timers_are_capped_and_cancelled(store):
    now = time.time()
    # four visitors on one shard, three timers at most per shard (two in memory: one store)
    visitors = [v for v in (f"cap-{i}" for i in range(200)) if shard_of(v, SHARDS) == 0][:4]
    timers = [TimerEntry(v, "t", "", now + 60) for v in visitors]
    assert await store.update_timers(timers, [], TTL) == 1
    # moving a timer is never refused; a cancelled one makes room in the same call
    moved = TimerEntry(visitors[0], "t", "", now + 90)
    assert await store.update_timers([moved], [(visitors[1], "t", "")], TTL) == 0
    assert await store.update_timers([timers[3]], [(visitors[2], "t", "")], TTL) == 0
    claimed = await store.claim(now + 100, now + 110, 10)
    assert sorted(h.timer.visitor for h in claimed) == sorted([visitors[0], visitors[3]])


async def test_the_guard_lets_an_occurrence_through_once_and_applies_limits(store):
    first = await store.guard(guard("v1", "o1", now=1000.0, debounce_s=60))
    assert first.outcome == "ok" and first.last == {"t1": 1000.0}
    # the same occurrence again (a retry after a crash): through again, not counted twice
    assert (await store.guard(guard("v1", "o1", now=1010.0, debounce_s=60))).outcome == "replay"
    assert (await store.guard(guard("v1", "o2", now=1030.0, debounce_s=60))).outcome == ("debounce")
    assert (await store.guard(guard("v1", "o3", now=1070.0, debounce_s=60))).outcome == "ok"
    # a cap per action type, across triggers
    capped = {"cap_count": 2, "cap_window_s": 500.0}
    assert (await store.guard(guard("v1", "o4", "t2", now=1100.0, **capped))).outcome == "cap"
    result = await store.guard(guard("v1", "o5", "t2", action="b", now=1100.0, **capped))
    assert result.outcome == "ok" and result.last == {"t1": 1070.0, "t2": 1100.0}
    assert (await store.guard(guard("v1", "o6", "t2", now=1700.0, **capped))).outcome == "ok"


async def test_erasure_drops_state_timers_and_log_entries(store):
    now = time.time()
    await store.save_states([StateWrite("gone", 0, {"cart": {"qty": 1}})], TTL)
    await store.update_timers(
        [TimerEntry("gone", "cart", "", now + 60), TimerEntry("kept", "cart", "", now + 60)],
        [],
        TTL,
    )
    await store.guard(guard("gone", "o1"))
    lines = [
        LogRecord(now, "cart", visitor, f"cart:{visitor}:1", "sent", "a", "crm")
        for visitor in ("gone", "kept", "gone")
    ]
    await store.log(lines, maxlen=1000, ttl_s=TTL)
    assert [r.visitor for r in await store.read_log(10)] == ["gone", "kept", "gone"]
    counts = await store.forget(["gone", "never-seen"])
    assert counts == {"timers": 1, "log_entries": 2, "visitors": 1}
    assert (await store.load_states(["gone"]))[0].version == 0
    assert [r.visitor for r in await store.read_log(10)] == ["kept"]
    assert [h.timer.visitor for h in await store.claim(now + 60, now + 70, 10)] == ["kept"]
    assert await store.forget(["gone"]) == {"timers": 0, "log_entries": 0, "visitors": 0}


async def test_every_visitor_key_expires(url):
    store = RedisTriggerStore(url, SHARDS, max_timers_per_shard=100, timeout_s=2.0)
    try:
        await store.save_states([StateWrite("ttl", 0, {"page": {"t": 1.0}})], TTL)
        await store.update_timers([TimerEntry("ttl", "cart", "", time.time() + 60)], [], TTL)
        await store.guard(guard("ttl", "o1"))
        await store.log([LogRecord(1.0, "cart", "ttl", "o1", "sent", "a", "crm")], 100, TTL)
    finally:
        await store.close()
    client = redis.Redis.from_url(url)
    try:
        names = (keys.trigger_state, keys.trigger_timer_ids, keys.trigger_log_ids)
        for key in (name("ttl") for name in names):
            assert 0 < client.ttl(key) <= TTL, key
        assert client.xlen(keys.TRIGGER_LOG) == 1
    finally:
        client.close()
