"""The worker: real ``journeygate worker`` processes, consumer groups, SIGKILL mid-batch,
and the journeygate_observe_event hook."""

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from eventkit import ADMIN, apply_pending, basic, event, fresh_redis_url, overrides

from journeygate import hookimpl
from journeygate.config import PROJECT_ROOT
from journeygate.events import worker as worker_module
from journeygate.events.apply import Applier
from journeygate.events.ingest import parse_batch
from journeygate.events.schema import parse_native
from journeygate.events.streams import EventStreams
from journeygate.events.worker import Worker, serve
from journeygate.registry import build_plugin_manager
from journeygate.store import keys, open_store

HERE = Path(__file__).resolve().parent


@pytest.fixture
def url(redis_url):
    return fresh_redis_url(redis_url)


def worker_env(url, catalog_path, **events):
    env = {
        **os.environ,
        "REDIS_URL": url,
        "JOURNEYGATE_CATALOG__PATH": str(catalog_path),
        "JOURNEYGATE_PLUGINS__LOAD_ENTRYPOINTS": "false",
        "JOURNEYGATE_EVENTS__STREAM_SHARDS": "4",
        "JOURNEYGATE_EVENTS__IDLE_SLEEP_MS": "20",
    }
    env |= {f"JOURNEYGATE_EVENTS__{name.upper()}": str(value) for name, value in events.items()}
    return env


def start_worker(env, consumer):
    return subprocess.Popen(
        [sys.executable, "-m", "journeygate.cli", "worker", "--consumer", consumer],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition, timeout=20.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def stop(process):
    """SIGTERM (a clean stop), and the process's output."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


def pending(client, consumer=None):
    total = 0
    for shard in range(4):
        summary = client.xpending(keys.event_stream(shard), "jg-workers")
        consumers = {c["name"]: c["pending"] for c in summary["consumers"]}
        total += consumers.get(consumer, 0) if consumer else summary["pending"]
    return total


def totals(client, customers):
    orders = revenue = events = 0
    for customer in customers:
        profile = client.hgetall(keys.profile(customer))
        orders += int(profile.get("orders", 0))
        revenue += float(profile.get("revenue", 0))
        events += int(profile.get("events", 0))
    return orders, round(revenue, 2), events


async def test_cli_worker_applies_events_and_stops_cleanly(gateway, url, catalog_path, visitor_id):
    client = await gateway(**overrides("redis", url))
    body = {
        "events": [
            {**event("order", visitor_id, revenue=12.5, order_id="O1"), "message_id": "o1"},
            event("Product Viewed", visitor_id, product_id="85123A", category="Lighting"),
        ]
    }
    assert (await client.post("/v1/events", json=body, headers=basic())).status == 200
    process = start_worker(worker_env(url, catalog_path), "cli-worker")
    try:

        async def applied():
            response = await client.get(f"/v1/profiles/{visitor_id}", headers=ADMIN)
            return response.status == 200 and (await response.json())["aggregates"]["orders"]

        for _ in range(200):
            if await applied():
                break
            await asyncio.sleep(0.05)
        profile = await (await client.get(f"/v1/profiles/{visitor_id}", headers=ADMIN)).json()
        assert profile["aggregates"]["orders"] == 1 and profile["aggregates"]["revenue"] == 12.5
        assert profile["preferred_categories"][0]["category"] == "Lighting"
    finally:
        output = await asyncio.to_thread(stop, process)
    assert process.returncode == 0, output
    assert "worker cli-worker consuming 4 stream shards" in output
    assert "stopping after 2 events applied" in output


async def test_a_stopped_worker_applies_what_it_read_ahead(gateway, url, catalog_path):
    """The worker reads the next batch while applying one; stopped (SIGTERM) in the middle of
    a backlog, it applies that batch too, rather than leaving it pending for minutes."""
    client = await gateway(**overrides("redis", url))
    customers = [f"ahead-{index}" for index in range(8)]
    for batch in range(60):
        body = {
            "events": [
                event("Product Viewed", customer, product_id=f"P{batch}") for customer in customers
            ]
        }
        assert (await client.post("/v1/events", json=body, headers=basic())).status == 200
    redis_client = redis.Redis.from_url(url, decode_responses=True)
    process = start_worker(worker_env(url, catalog_path, read_count=1), "ahead-worker")
    try:
        assert await asyncio.to_thread(
            wait_for, lambda: totals(redis_client, customers)[2] > 0, 30.0, 0.005
        )
    finally:
        output = await asyncio.to_thread(stop, process)
    assert process.returncode == 0, output
    applied = int(re.search(r"stopping after (\d+) events applied", output).group(1))
    assert pending(redis_client, "ahead-worker") == 0
    assert totals(redis_client, customers)[2] == applied
    assert applied < 60 * len(customers), "the backlog was drained before the stop"


def test_worker_needs_redis(catalog_path):
    env = {**os.environ, "JOURNEYGATE_CATALOG__PATH": str(catalog_path)}
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "journeygate.cli", "worker"],
        cwd=PROJECT_ROOT,
        env={**env, "JOURNEYGATE_STORE__REDIS_URL": "", "JOURNEYGATE_STORE__BACKEND": "memory"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr and "Traceback" not in result.stderr


async def test_a_worker_killed_mid_batch_loses_nothing_and_counts_nothing_twice(
    gateway, url, catalog_path, tmp_path
):
    client = await gateway(**overrides("redis", url))
    customers = [f"kill-{n}" for n in range(20)]
    expected_orders = expected_revenue = 0.0
    sent = 0
    for request in range(60):
        batch = []
        for index, customer in enumerate(customers[request % 4 :: 4]):
            amount = round(1 + ((request * 7 + index) % 13) * 1.25, 2)
            message_id = f"order-{request}-{index}"
            batch.append(
                {
                    "event": "order",
                    "user_id": customer,
                    "message_id": message_id,
                    "properties": {"order_id": message_id, "revenue": amount},
                }
            )
            expected_orders += 1
            expected_revenue += amount
        sent += len(batch)
        response = await client.post("/v1/events", json={"events": batch}, headers=basic())
        assert len((await response.json())["accepted"]) == len(batch)
        if request % 10 == 0:  # a client retry: the same messages again
            await client.post("/v1/events", json={"events": batch}, headers=basic())
    redis_client = redis.Redis.from_url(url, decode_responses=True)
    env = worker_env(url, catalog_path, read_count=3, claim_idle_ms=500, claim_interval_ms=100)

    marker = tmp_path / "stalled"
    stalled = subprocess.Popen(
        [sys.executable, str(HERE / "stall_worker.py"), str(marker), "doomed"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert await asyncio.to_thread(wait_for, marker.exists, 60.0), "the worker never applied"
        applied_before, _, _ = totals(redis_client, customers)
        unacknowledged = pending(redis_client, "doomed")
        # the doomed worker applied a batch it will never acknowledge, and left the rest
        assert 0 < applied_before < expected_orders
        assert unacknowledged > 0
    finally:
        stalled.send_signal(signal.SIGKILL)
        stalled.wait()

    survivors = [start_worker(env, name) for name in ("survivor-1", "survivor-2")]
    try:

        def done():
            return totals(redis_client, customers)[0] >= expected_orders and not pending(
                redis_client
            )

        assert await asyncio.to_thread(wait_for, done, 60.0)
        await asyncio.sleep(0.5)  # anything still in flight would show up now
        orders, revenue, events = totals(redis_client, customers)
        assert orders == expected_orders
        assert revenue == pytest.approx(round(expected_revenue, 2), abs=0.001)
        assert events == sent
        assert pending(redis_client) == 0
        assert pending(redis_client, "doomed") == 0
    finally:
        outputs = [await asyncio.to_thread(stop, process) for process in survivors]
        redis_client.close()
    assert "reclaimed" in "".join(outputs)
    assert all(process.returncode == 0 for process in survivors), outputs


class Recorder:
    def __init__(self):
        self.events = []

    @hookimpl
    async def journeygate_observe_event(self, event):
        self.events.append(event)


class Broken:
    @hookimpl
    def journeygate_observe_event(self, event):
        raise RuntimeError("observer bug")


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_plugins_observe_each_applied_event_once(gateway, url, backend, visitor_id):
    recorder = Recorder()
    client = await gateway(
        extra_plugins=[("broken", Broken()), ("recorder", recorder)], **overrides(backend, url)
    )
    body = {
        "events": [
            {**event("Product Added", visitor_id, product_id="P1", price=2), "message_id": "x1"},
            {**event("identify", visitor_id), "user_id": f"{visitor_id}-u", "message_id": "x2"},
        ]
    }
    for _ in range(2):  # a retry of the same batch is not observed again
        assert (await client.post("/v1/events", json=body, headers=basic())).status == 200
        await apply_pending(client)
    # (two visitors, two stream shards: no order between them)
    assert sorted(e.message_id for e in recorder.events) == ["x1", "x2"]
    added, identify = sorted(recorder.events, key=lambda e: e.message_id)
    assert added.kind == "cart_add" and added.name == "Product Added"
    # the identify in the same batch merged the visitor first: the addition is the customer's
    assert added.profile_id == f"{visitor_id}-u" and added.anonymous_id == visitor_id
    assert added.fields["pid"] == "P1"
    assert added.properties["price"] == 2 and added.channel == "web"
    assert identify.profile_id == f"{visitor_id}-u" and identify.anonymous_id == visitor_id


async def test_the_worker_starts_only_the_plugins_that_observe_events(
    gateway, make_config, url, visitor_id
):
    calls = []

    class Observer:
        @hookimpl
        def journeygate_startup(self, config):
            calls.append("observer started")

        @hookimpl
        def journeygate_observe_event(self, event):
            calls.append(event.name)

        @hookimpl
        async def journeygate_shutdown(self):
            calls.append("observer stopped")

    class Heavy:
        @hookimpl
        def journeygate_startup(self):
            calls.append("heavy started")  # a model the worker has no use for

    client = await gateway(**overrides("redis", url))
    body = {"events": [event("Cart Viewed", visitor_id)]}
    assert (await client.post("/v1/events", json=body, headers=basic())).status == 200
    config = make_config(**overrides("redis", url))
    pm = build_plugin_manager(
        config, load_entrypoints=False, extra_plugins=(("observer", Observer()), ("heavy", Heavy()))
    )
    stop = asyncio.Event()
    running = asyncio.create_task(serve(config, pm, consumer="in-process", stop=stop))
    for _ in range(100):
        if "Cart Viewed" in calls:
            break
        await asyncio.sleep(0.02)
    stop.set()
    assert await running == 0
    assert calls == ["observer started", "Cart Viewed", "observer stopped"]


async def accept(streams, config, events):
    """What the gateway does with ``POST /v1/events``: validate, append to the streams."""
    batch = parse_batch(events, "events", parse_native, config.events)
    assert not batch.rejected
    await streams.append(batch.encoded)


def accept_blocking(config, events):
    """Accept ``events`` through streams of their own, in a thread while the caller's event
    loop waits: a worker in that loop cannot read them meanwhile."""

    async def accept_once():
        streams = EventStreams(config.store.redis_url, config.events, 1.0)
        try:
            await accept(streams, config, events)
        finally:
            await streams.close()

    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, accept_once()).result()


def accept_then_stop_redis(config, server, events):
    """Accept ``events`` and stop Redis with its data saved, before a worker in the caller's
    event loop can read them."""
    accept_blocking(config, events)
    client = redis.Redis.from_url(server.url)
    client.shutdown(save=True)
    client.close()
    server.process.wait()


@contextlib.asynccontextmanager
async def worker_in_process(config, consumer):
    """A ``Worker`` of its own (store, streams, plugins without entry points) running in this
    loop: yields it and its task; stopped and closed on the way out."""
    store = open_store(config.store, "redis", config.events)
    streams = EventStreams(config.store.redis_url, config.events, 1.0)
    pm = build_plugin_manager(config, load_entrypoints=False)
    worker = Worker(config, Applier(store, config, pm), streams, consumer)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        yield worker, running
    finally:
        stop.set()
        await running
        await streams.close()
        await store.close()


async def test_a_redis_outage_is_logged_now_and_then_and_accepted_events_are_applied_after_it(
    private_redis, make_config, caplog, monkeypatch
):
    monkeypatch.setattr(worker_module, "OUTAGE_LOG_INTERVAL_S", 0.5)
    caplog.set_level(logging.INFO, logger=worker_module.__name__)
    config = make_config(**overrides("redis", private_redis.url, idle_sleep_ms=20))
    profiles = redis.Redis.from_url(private_redis.url, decode_responses=True)

    def orders(customer):
        return int(profiles.hget(keys.profile(customer), "orders") or 0)

    async with worker_in_process(config, "outage") as (worker, _):
        await accept(
            worker.streams, config, [event("order", "before", order_id="B0", revenue=10.0)]
        )
        assert await asyncio.to_thread(wait_for, lambda: orders("before") == 1)
        accepted = [
            event("order", "during", order_id="D1", revenue=42.0),
            event("Product Viewed", "during", product_id="85123A"),
        ]
        accept_then_stop_redis(config, private_redis, accepted)
        outage = time.monotonic()
        await asyncio.sleep(1.5)
        private_redis.start()  # with the data saved at the stop
        assert await asyncio.to_thread(wait_for, lambda: orders("during") == 1)
        outage = time.monotonic() - outage
        assert profiles.hget(keys.profile("during"), "events") == "2"
    profiles.close()

    lines = [r.getMessage() for r in caplog.records if r.name == worker_module.__name__]
    first = [line for line in lines if line.startswith("redis unavailable, retrying: ")]
    still = [line for line in lines if line.startswith("redis still unavailable")]
    back = [line for line in lines if line.startswith("redis reachable again")]
    assert len(first) == 1 and len(back) == 1
    # at most one line per interval (0.5 s here), each with the rounds failed since the last
    assert 1 <= len(still) <= outage / 0.5 + 1
    since = [int(re.search(r"\((\d+) more failed rounds\)", line)[1]) for line in still]
    rounds = int(
        re.fullmatch(r"redis reachable again after [\d.]+ s \((\d+) failed rounds\)", back[0])[1]
    )
    errors = worker.metrics.registry.get_sample_value("journeygate_worker_redis_errors_total")
    assert 1 + sum(since) <= rounds == errors
    # retried after 20 ms, 40, 80... (6 rounds), then every 1 s: not every 20 ms (75 in 1.5 s)
    assert rounds <= 7 + outage


async def test_a_worker_started_while_redis_is_down_waits_for_it(
    private_redis, make_config, caplog
):
    caplog.set_level(logging.INFO, logger=worker_module.__name__)
    config = make_config(**overrides("redis", private_redis.url, idle_sleep_ms=20))
    accept_then_stop_redis(config, private_redis, [event("order", "early", order_id="E1")])
    async with worker_in_process(config, "early-worker") as (_, running):
        await asyncio.sleep(0.5)
        assert not running.done(), "the worker gave up while Redis was down"
        private_redis.start()  # with the data saved at the stop
        profiles = redis.Redis.from_url(private_redis.url, decode_responses=True)
        assert await asyncio.to_thread(
            wait_for, lambda: profiles.hget(keys.profile("early"), "orders") == "1"
        )
        profiles.close()
    lines = [r.getMessage() for r in caplog.records if r.name == worker_module.__name__]
    assert sum(line.startswith("redis unavailable, retrying") for line in lines) == 1
    assert any(line.startswith("worker early-worker consuming") for line in lines)


async def test_workers_recreate_their_group_when_redis_restarts_without_its_data(
    private_redis, make_config, caplog
):
    caplog.set_level(logging.INFO, logger=worker_module.__name__)
    config = make_config(
        **overrides(
            "redis", private_redis.url, idle_sleep_ms=20, trim_interval_ms=50, claim_interval_ms=50
        )
    )
    store = open_store(config.store, "redis", config.events)
    pm = build_plugin_manager(config, load_entrypoints=False)
    streams = [EventStreams(config.store.redis_url, config.events, 1.0) for _ in range(2)]
    workers = [
        Worker(config, Applier(store, config, pm), each, f"regroup-{n}")
        for n, each in enumerate(streams)
    ]
    stop = asyncio.Event()
    running = [asyncio.create_task(worker.run(stop)) for worker in workers]
    profiles = redis.Redis.from_url(private_redis.url, decode_responses=True)
    customers = [f"regroup-{n}" for n in range(12)]
    assert {streams[0].shard(customer) for customer in customers} == {0, 1, 2, 3}

    def orders(customer):
        return int(profiles.hget(keys.profile(customer), "orders") or 0)

    def orders_of_all(count):
        return lambda: all(orders(customer) == count for customer in customers)

    try:
        await accept(streams[0], config, [event("order", "before", order_id="B0", revenue=1.0)])
        assert await asyncio.to_thread(wait_for, lambda: orders("before") == 1)
        # killed (nothing saved) and started again empty, and events accepted, while the
        # workers' event loop waits: they meet streams without their group, whose entries
        # were added before any worker could create it again
        private_redis.kill()
        private_redis.start()
        assert not profiles.exists(keys.profile("before"), *map(keys.event_stream, range(4)))
        accept_blocking(
            config,
            [event("order", c, order_id=f"A-{c}", revenue=2.0) for c in customers],
        )
        assert await asyncio.to_thread(wait_for, orders_of_all(1), timeout=10)
        # and the ingestion of a gateway that saw the streams before the loss goes on too
        await accept(
            streams[0],
            config,
            [event("order", c, order_id=f"L-{c}", revenue=3.0) for c in customers],
        )
        assert await asyncio.to_thread(wait_for, orders_of_all(2), timeout=10)
        assert all(not task.done() for task in running)
    finally:
        stop.set()
        await asyncio.gather(*running)
        profiles.close()
        for each in streams:
            await each.close()
        await store.close()

    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == worker_module.__name__ and r.levelno == logging.WARNING
    ]
    recreated = [line for line in warnings if line.startswith("consumer group jg-workers")]
    # each shard's group created again by one of the two workers (the other one met
    # BUSYGROUP there), each worker saying so at most once
    assert 1 <= len(recreated) <= 2
    shards = [
        name
        for line in recreated
        for name in re.match(r"consumer group jg-workers re-created on (.+?) \(", line)[1].split(
            ", "
        )
    ]
    assert sorted(shards) == [keys.event_stream(shard) for shard in range(4)]
    assert all("events accepted before" in line for line in recreated)
