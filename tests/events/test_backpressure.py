"""Backpressure: with the workers behind, ingestion answers 503 before MAXLEN trimming could
drop an accepted event, and accepts again once a worker has caught up."""

import asyncio
import time

import orjson
import pytest
import redis
from eventkit import ADMIN, WRITE_KEY, basic, event, overrides
from test_segment import send_with_library

from journeygate.events.worker import serve
from journeygate.registry import build_plugin_manager
from journeygate.store import keys

SHARDS = 4
MAXLEN = 40  # per shard; the high-water mark (50 %) is 20 entries


@pytest.fixture
def small_nodes(private_redis):
    """A private Redis whose stream nodes hold 4 entries, so that ``MAXLEN ~ 40`` really
    trims at 40-odd entries (with the default 100 it would never trim in these tests)."""
    client = redis.Redis.from_url(private_redis.url)
    client.config_set("stream-node-max-entries", 4)
    yield private_redis, client
    client.close()


@pytest.fixture
async def one_shard(make_config, small_nodes):
    """Streams of one shard on the small-node Redis, its consumer group created, and a client
    of that Redis."""
    from journeygate.events.streams import EventStreams

    server, client = small_nodes
    config = make_config(**settings(server.url, stream_shards=1))
    streams = EventStreams(server.url, config.events, 5.0)
    await streams.ensure_groups()
    yield streams, client
    await streams.close()


def settings(url, **events):
    return overrides(
        "redis",
        url,
        stream_maxlen=MAXLEN,
        backlog_high_water_pct=50,
        backlog_refresh_ms=0,
        trim_interval_ms=20,
        **events,
    )


def stored_message_ids(client):
    ids = []
    for shard in range(SHARDS):
        for _, fields in client.xrange(keys.event_stream(shard)):
            ids += [stored["id"] for stored in orjson.loads(fields[b"e"])]
    return ids


async def run_worker_until(config, condition, timeout=20.0):
    """An in-process ``journeygate worker`` until ``condition()`` holds."""
    stop = asyncio.Event()
    pm = build_plugin_manager(config, load_entrypoints=False)
    running = asyncio.create_task(serve(config, pm, consumer="drainer", stop=stop))
    try:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "the worker did not catch up"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        assert await running == 0


async def test_ingestion_refuses_before_an_accepted_event_is_trimmed_then_resumes(
    gateway, make_config, small_nodes
):
    server, client = small_nodes
    gw = await gateway(**settings(server.url))
    accepted, refused = [], 0
    for n in range(4 * SHARDS * MAXLEN):  # four times what the streams may hold
        body = {"events": [{**event("page_view", f"v-{n % 16}"), "message_id": f"m-{n}"}]}
        response = await gw.post("/v1/events", json=body, headers=basic())
        if response.status == 200:
            accepted.append(f"m-{n}")
            continue
        assert response.status == 503
        assert response.headers["Retry-After"] == "2"
        error = (await response.json())["error"]
        assert error["code"] == "backpressure" and "nothing was accepted" in error["message"]
        refused += 1
    # every accepted event is still in the streams: MAXLEN never had to trim
    assert sorted(stored_message_ids(client)) == sorted(accepted)
    assert refused and len(accepted) <= SHARDS * MAXLEN // 2

    config = make_config(**settings(server.url))
    await run_worker_until(
        config, lambda: all(client.xlen(keys.event_stream(s)) < 10 for s in range(SHARDS))
    )
    body = {"events": [{**event("page_view", "v-0"), "message_id": "after"}]}
    assert (await gw.post("/v1/events", json=body, headers=basic())).status == 200

    applied = 0
    for visitor in {f"v-{n % 16}" for n in range(16)}:
        profile = await (await gw.get(f"/v1/profiles/{visitor}", headers=ADMIN)).json()
        applied += profile["aggregates"]["events"]
    assert applied == len(accepted)  # no accepted event lost (the last one is still queued)


async def test_a_segment_library_retries_through_backpressure(gateway, make_config, small_nodes):
    server, client = small_nodes
    gw = await gateway(**settings(server.url, stream_shards=1))
    n = 0
    while (
        await gw.post(
            "/v1/events", json={"events": [event("page_view", f"fill-{n}")]}, headers=basic()
        )
    ).status == 200:
        n += 1
    track = {"userId": "c-busy", "event": "Product Viewed", "properties": {"product_id": "P"}}
    response = await gw.post("/v1/track", json=track, headers=basic())
    assert response.status == 503 and response.headers["Retry-After"] == "2"
    assert (await response.json())["error"]["code"] == "backpressure"
    order = {"order_id": "A", "revenue": 5}
    calls = [("track", {"user_id": "c-busy", "event": "Order Completed", "properties": order})]
    errors = []
    sending = asyncio.create_task(
        asyncio.to_thread(send_with_library, str(gw.make_url("/")), WRITE_KEY, calls, errors, 6)
    )
    await asyncio.sleep(0.3)  # the library's first attempt is refused (503 backpressure)
    config = make_config(**settings(server.url, stream_shards=1))

    def delivered():
        return client.hget(keys.profile("c-busy"), "orders") == b"1"

    await run_worker_until(config, lambda: sending.done() and delivered(), timeout=40)
    await sending
    assert errors == []
    metrics = await (await gw.get("/metrics")).text()
    assert 'route="/v1/batch",status="503"' in metrics


async def test_trimming_keeps_what_any_group_has_not_acknowledged(one_shard):
    streams, client = one_shard
    name = keys.event_stream(0)
    for n in range(12):
        await streams.append([("v", orjson.dumps({"n": n}))])
    ids = [entry_id for entry_id, _ in client.xrange(name)]
    read = await streams.read("c1")  # 12 delivered (read_count 50)
    await streams.ack([entry for entry in read if entry.entry_id not in (ids[5], ids[9])])
    await streams.trim_acknowledged()
    kept = [entry_id for entry_id, _ in client.xrange(name)]
    assert ids[5] in kept and kept == ids[ids.index(kept[0]) :]  # pending 5 and after
    assert len(kept) < 12  # what was acknowledged before it is gone

    # another group that has read nothing yet pins everything that is left
    client.xgroup_create(name, "analytics", id="0")
    await streams.ack([entry for entry in read if entry.entry_id in (ids[5], ids[9])])
    await streams.trim_acknowledged()
    assert [entry_id for entry_id, _ in client.xrange(name)] == kept
    assert streams.backlog == [12]  # as last seen by the append pipeline


async def test_trimming_loads_its_script_again_when_redis_lost_it(one_shard):
    streams, client = one_shard
    assert await streams.trim_acknowledged() == 0  # the script is loaded
    for n in range(12):
        await streams.append([("v", orjson.dumps({"n": n}))])
    await streams.ack(await streams.read("c1"))
    client.script_flush()  # what a Redis restart does to the scripts
    assert await streams.trim_acknowledged() > 0


async def test_trimming_refuses_a_stream_without_the_workers_group(make_config, small_nodes):
    """What a Redis that lost its data holds: streams made again by the gateway's XADD, and
    maybe another application's group. Trimming up to that group would drop what the workers'
    group, created again from the first entry, still has to read."""
    from journeygate.events.streams import EventStreams, GroupMissing

    server, client = small_nodes
    config = make_config(**settings(server.url, stream_shards=1))
    workers = [EventStreams(server.url, config.events, 5.0) for _ in range(2)]
    name = keys.event_stream(0)
    try:
        with pytest.raises(GroupMissing):  # no stream at all
            await workers[0].trim_acknowledged()
        for n in range(12):
            await workers[0].append([("v", orjson.dumps({"n": n}))])
        client.xgroup_create(name, "analytics", id="$")  # done with every entry
        with pytest.raises(GroupMissing):
            await workers[0].trim_acknowledged()
        assert client.xlen(name) == 12

        # two workers creating it at once: one does, the other meets BUSYGROUP
        created = await asyncio.gather(*(streams.ensure_groups() for streams in workers))
        assert sorted(created) == [[], [name]]
        assert len(await workers[1].read("c1")) == 12
    finally:
        for streams in workers:
            await streams.close()


async def test_requeued_dead_letters_obey_backpressure(one_shard):
    """A requeue that would take a shard past its high-water mark is refused whole: MAXLEN
    trimming would otherwise drop entries no worker has applied."""
    from journeygate.events.streams import Backpressure

    streams, client = one_shard
    name = keys.event_stream(0)
    letters = [
        client.xadd(keys.DEAD_LETTER_STREAM, {"stream": name, "e": b"[]", "id": f"d{n}"})
        for n in range(3)
    ]
    for n in range(streams.high_water - 2):
        await streams.append([("v", orjson.dumps({"n": n}))])
    with pytest.raises(Backpressure):
        await streams.requeue([letter.decode() for letter in letters])
    assert client.xlen(keys.DEAD_LETTER_STREAM) == 3
    assert client.xlen(name) == streams.high_water - 2
    # two fit
    requeued = await streams.requeue([letter.decode() for letter in letters[:2]])
    assert requeued == [letter.decode() for letter in letters[:2]]
    assert client.xlen(name) == streams.high_water
    assert client.xlen(keys.DEAD_LETTER_STREAM) == 1
