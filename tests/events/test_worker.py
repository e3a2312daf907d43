"""The worker: real ``journeygate worker`` processes, consumer groups, SIGKILL mid-batch,
and the journeygate_observe_event hook."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from eventkit import ADMIN, apply_pending, basic, event, fresh_redis_url, overrides

from journeygate import hookimpl
from journeygate.config import PROJECT_ROOT
from journeygate.events.worker import serve
from journeygate.registry import build_plugin_manager
from journeygate.store import keys

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
