"""Poison entries: isolated from the good entries around them, delivered ``max_deliveries``
times, then moved to the dead-letter stream (listed and requeued by the CLI)."""

import asyncio
import os
import subprocess
import sys

import orjson
import pytest
import redis
from eventkit import basic, dead_letter_settings, event, fresh_redis_url, internal

from journeygate import hookimpl
from journeygate.config import PROJECT_ROOT
from journeygate.events.apply import Applier
from journeygate.events.streams import EventStreams
from journeygate.events.worker import Worker, serve
from journeygate.registry import build_plugin_manager
from journeygate.store import keys, open_store


@pytest.fixture
def url(redis_url):
    return fresh_redis_url(redis_url)


class Recorder:
    def __init__(self):
        self.message_ids = []

    @hookimpl
    def journeygate_observe_event(self, event):
        self.message_ids.append(event.message_id)


async def test_a_poison_entry_is_dead_lettered_and_the_entries_around_it_are_applied(
    gateway, make_config, url, visitor_id
):
    gw = await gateway(**dead_letter_settings(url))
    client = redis.Redis.from_url(url)
    stream = keys.event_stream(0)

    def post(message_id):
        body = {"events": [{**event("Product Viewed", visitor_id, product_id="P1")}]}
        body["events"][0]["message_id"] = message_id
        return gw.post("/v1/events", json=body, headers=basic())

    assert (await post("good-1")).status == 200
    # the same visitor's bad event: it passes the stream's checks, the store rejects it
    bad = internal("bad-qty", visitor_id, x={"pid": "P1", "qty": "three"})
    mistyped_id = client.xadd(stream, {"e": orjson.dumps([bad])})
    assert (await post("good-2")).status == 200
    unreadable_id = client.xadd(stream, {"e": b"{not json"})
    assert (await post("good-3")).status == 200

    config = make_config(**dead_letter_settings(url))
    recorder = Recorder()
    pm = build_plugin_manager(config, load_entrypoints=False, extra_plugins=(("rec", recorder),))
    stop = asyncio.Event()
    running = asyncio.create_task(serve(config, pm, consumer="w1", stop=stop))
    try:
        for _ in range(200):
            if client.xlen(keys.DEAD_LETTER_STREAM) == 2:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        assert await running == 0

    # the good entries, in the same batch as the bad ones, are applied and observed once
    assert sorted(recorder.message_ids) == ["good-1", "good-2", "good-3"]
    assert client.hget(keys.profile(visitor_id), "product_views") == b"3"
    assert client.xpending(stream, "jg-workers")["pending"] == 0

    letters = {fields[b"id"]: fields for _, fields in client.xrange(keys.DEAD_LETTER_STREAM)}
    assert set(letters) == {mistyped_id, unreadable_id}
    assert b"INVALIDEVENT" in letters[mistyped_id][b"error"]
    assert b"x.pid or x.qty" in letters[mistyped_id][b"error"]
    assert b"unreadable entry" in letters[unreadable_id][b"error"]
    for fields in letters.values():
        assert fields[b"stream"] == stream.encode() and fields[b"deliveries"] == b"2"
    assert letters[unreadable_id][b"e"] == b"{not json"

    env = {
        **os.environ,
        "REDIS_URL": url,
        "JOURNEYGATE_PLUGINS__LOAD_ENTRYPOINTS": "false",
        "JOURNEYGATE_EVENTS__STREAM_SHARDS": "1",
    }

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "journeygate.cli", "dead-letters", *args],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    listed = cli()
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and all("deliveries=2" in line for line in lines)
    (unreadable,) = [line for line in lines if unreadable_id.decode() in line]
    assert "unreadable entry" in unreadable
    dead_letter_id = unreadable.split("\t")[0]
    requeued = cli("--requeue", dead_letter_id, "0-1")
    assert requeued.returncode == 1  # one of the two ids was unknown
    assert requeued.stdout.splitlines() == [f"{dead_letter_id}\trequeued", "0-1\tnot found"]
    assert client.xlen(keys.DEAD_LETTER_STREAM) == 1
    assert client.xrevrange(stream, count=1)[0][1][b"e"] == b"{not json"
    client.close()


async def test_events_applied_beside_a_rejected_visitor_are_counted_once(make_config, url):
    """One batch: a good event of one visitor, a rejected one of another. The batch call
    applies the good one before failing; the entry-by-entry retry finds it applied already,
    and the worker still counts it, once."""
    config = make_config(**dead_letter_settings(url))
    client = redis.Redis.from_url(url)
    stream = keys.event_stream(0)
    client.xadd(stream, {"e": orjson.dumps([internal("ok-1", "counted-visitor")])})
    bad = internal("bad-1", "rejected-visitor", x={"pid": "P1", "qty": "three"})
    client.xadd(stream, {"e": orjson.dumps([bad])})
    store = open_store(config.store, "redis", config.events)
    streams = EventStreams(url, config.events, 2.0)
    worker = Worker(config, Applier(store, config), streams, "w-count")
    try:
        await streams.ensure_groups()
        entries = await streams.read("w-count")
        assert len(entries) == 2
        assert await worker.process(entries) == 1
        assert worker.applied == 1
        assert worker.metrics.events_applied._value.get() == 1
        assert client.hget(keys.profile("counted-visitor"), "cart_adds") is not None
    finally:
        await store.close()
        await streams.close()
