"""The worker's operations endpoints: ``/metrics`` shows what it applied, reclaimed and
dead-lettered, the consumer group's backlog (read from Redis at most once per second) and
the webhook deliveries of its dispatcher; ``/healthz`` answers while it runs; the port comes
from ``--metrics-port`` or ``[events] worker_metrics_port`` and a taken one is a clean error."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web
from eventkit import basic, event, fresh_redis_url, overrides
from prometheus_client.parser import text_string_to_metric_families

from journeygate.cli import main
from journeygate.config import PROJECT_ROOT, AppConfig, ConfigError, load_config
from journeygate.events.streams import EventStreams
from journeygate.events.worker import serve
from journeygate.registry import build_plugin_manager
from journeygate.store import keys, open_store
from journeygate.webhooks import WebhookMessage
from journeygate.webhooks.model import webhook_queue
from testkit import free_port


@pytest.fixture
def url(redis_url: str) -> str:
    return fresh_redis_url(redis_url)


def settings(url: str, port: int, **events: Any) -> dict[str, Any]:
    return overrides("redis", url, worker_metrics_port=port, **events)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Prometheus text as {(sample name, sorted labels): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def per_stream(samples: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["stream"]: v for (n, labels), v in samples.items() if n == name}


async def scrape(port: int) -> Samples:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(await response.text())


async def settle(port: int, condition: Any, timeout_s: float = 10.0) -> Samples:
    """Scrape until ``condition(samples)`` holds (fails the test after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = await scrape(port)
        if condition(samples):
            return samples
        assert time.monotonic() < deadline, f"never reached; last scrape: {samples}"
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running_worker(config: AppConfig, consumer: str = "w1") -> AsyncIterator[None]:
    """``journeygate worker`` in this process, its metrics server answering; stopped on exit."""
    stop = asyncio.Event()
    pm = build_plugin_manager(config, load_entrypoints=False)
    task = asyncio.create_task(serve(config, pm, consumer=consumer, stop=stop))
    port = config.events.worker_metrics_port
    try:
        deadline = time.monotonic() + 10
        async with aiohttp.ClientSession() as session:
            while True:
                assert not task.done(), task.result()
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        assert await response.json() == {"status": "ok", "consumer": consumer}
                        break
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline, "the metrics server never answered"
                    await asyncio.sleep(0.02)
        yield
    finally:
        stop.set()
        assert await task == 0


async def test_applied_events_and_the_drained_backlog(gateway, make_config, url):
    port = free_port()
    section = settings(url, port)
    gw = await gateway(**section)
    visitors = [f"mv-{index}" for index in range(10)]
    for batch in range(3):
        body = {"events": [event("Product Viewed", v, product_id=f"P{batch}") for v in visitors]}
        response = await gw.post("/v1/events", json=body, headers=basic())
        assert response.status == 200
    client = redis.Redis.from_url(url)
    lengths = {
        keys.event_stream(shard): client.xlen(keys.event_stream(shard)) for shard in range(4)
    }
    assert sum(lengths.values()) > 4  # one entry per request and shard touched

    # the gateway reports what its backpressure check read: every shard's length
    gateway_samples = parse(await (await gw.get("/metrics")).text())
    assert per_stream(gateway_samples, "journeygate_events_backlog") == lengths
    assert value(gateway_samples, "journeygate_events_backlog_high_water") == 100_000

    # before any worker created the consumer group, every entry is lag
    config = make_config(**section)
    streams = EventStreams(url, config.events, 5.0)
    try:
        shards, dead_letters = await streams.group_backlog()
    finally:
        await streams.close()
    assert {s.stream: (s.pending, s.lag) for s in shards} == {
        name: (0, length) for name, length in lengths.items()
    }
    assert dead_letters == 0

    async with running_worker(config):
        samples = await settle(
            port,
            lambda s: (
                value(s, "journeygate_worker_events_applied_total") == 30
                and set(per_stream(s, "journeygate_worker_stream_backlog").values()) == {0}
            ),
        )
    assert set(per_stream(samples, "journeygate_worker_stream_backlog")) == set(lengths)
    assert set(per_stream(samples, "journeygate_worker_stream_pending").values()) == {0}
    assert set(per_stream(samples, "journeygate_worker_stream_lag").values()) == {0}
    assert value(samples, "journeygate_worker_batch_duration_seconds_count") >= 1
    assert value(samples, "journeygate_worker_entries_dead_lettered_total") == 0
    assert per_stream(samples, "journeygate_worker_dead_letters") == {keys.DEAD_LETTER_STREAM: 0}
    assert value(samples, "journeygate_worker_stream_backlog_high_water") == 100_000
    # stopped with the worker
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_reclaimed_and_dead_lettered_entries(gateway, make_config, url, visitor_id):
    port = free_port()
    section = settings(
        url, port, stream_shards=1, max_deliveries=2, claim_idle_ms=100, claim_interval_ms=50
    )
    gw = await gateway(**section)
    body = {"events": [event("Product Viewed", visitor_id, product_id="P1")]}
    assert (await gw.post("/v1/events", json=body, headers=basic())).status == 200
    client = redis.Redis.from_url(url)
    client.xadd(keys.event_stream(0), {"e": b"{not json"})
    config = make_config(**section)
    # a worker reads both entries and dies without acknowledging them
    streams = EventStreams(url, config.events, 5.0)
    try:
        await streams.ensure_groups()
        assert len(await streams.read("crashed")) == 2
    finally:
        await streams.close()

    async with running_worker(config):
        samples = await settle(
            port,
            lambda s: (
                value(s, "journeygate_worker_entries_dead_lettered_total") == 1
                and value(s, "journeygate_worker_dead_letters", stream=keys.DEAD_LETTER_STREAM) == 1
                and value(s, "journeygate_worker_stream_backlog", stream=keys.event_stream(0)) == 0
            ),
        )
    assert value(samples, "journeygate_worker_entries_reclaimed_total") == 2
    assert value(samples, "journeygate_worker_entries_failed_total") == 1  # its 2nd delivery
    assert value(samples, "journeygate_worker_events_applied_total") == 1
    assert client.xlen(keys.DEAD_LETTER_STREAM) == 1


async def test_webhook_deliveries_show_on_the_worker_metrics(
    aiohttp_server, make_config, url, visitor_id
):
    received: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=200 if len(received) > 1 else 503)

    receiver = web.Application()
    receiver.router.add_post("/crm", handle)
    server = await aiohttp_server(receiver)
    port = free_port()
    config = make_config(
        **settings(url, port),
        webhooks={
            "backoff_base_ms": 20,
            "backoff_max_ms": 40,
            "poll_interval_ms": 10,
            "endpoints": {"crm": {"url": str(server.make_url("/crm")), "secret": "s"}},
        },
    )
    store = open_store(config.store, "redis", config.events)
    try:
        queue = webhook_queue(store, config)
        assert queue is not None
        message = WebhookMessage(
            endpoint="crm",
            event_type="trigger.test",
            payload={"n": 1},
            dedupe_key="metrics-test",
            visitor_id=visitor_id,
        )
        assert await queue.enqueue([message]) == [True]
    finally:
        await store.close()

    async with running_worker(config):
        samples = await settle(
            port,
            lambda s: (
                value(
                    s, "journeygate_webhook_deliveries_total", endpoint="crm", outcome="delivered"
                )
                == 1
            ),
        )
    assert len(received) == 2
    outcome = "journeygate_webhook_deliveries_total"
    assert value(samples, outcome, endpoint="crm", outcome="retry") == 1
    latency = "journeygate_webhook_delivery_duration_seconds_count"
    assert value(samples, latency, endpoint="crm") == 2


async def test_the_backlog_is_read_at_most_once_per_second_and_dropped_when_redis_is_down(
    private_redis, make_config
):
    port = free_port()
    shards = 2
    # trimming (whose script also calls XINFO) runs once at startup, then not for a minute
    config = make_config(
        **settings(private_redis.url, port, stream_shards=shards, trim_interval_ms=60_000)
    )
    client = redis.Redis.from_url(private_redis.url)

    def xinfo_calls() -> int:
        return int(client.info("commandstats").get("cmdstat_xinfo|groups", {}).get("calls", 0))

    async with running_worker(config):
        deadline = time.monotonic() + 10
        while xinfo_calls() < shards:  # the startup trim ran
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        client.config_resetstat()
        for _ in range(3):
            samples = await scrape(port)
        assert xinfo_calls() == shards  # one read for the three scrapes
        assert len(per_stream(samples, "journeygate_worker_stream_backlog")) == shards
        await asyncio.sleep(1.05)
        await scrape(port)
        assert xinfo_calls() == 2 * shards

        private_redis.kill()
        await asyncio.sleep(1.05)
        samples = await scrape(port)  # still answers, without backlog figures
        assert per_stream(samples, "journeygate_worker_stream_backlog") == {}
        assert per_stream(samples, "journeygate_worker_dead_letters") == {}
        await settle(port, lambda s: value(s, "journeygate_worker_redis_errors_total") >= 1)
    client.close()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"JOURNEYGATE_EVENTS__WORKER_METRICS_PORT": "70000"}, "events.worker_metrics_port: out"),
        ({"JOURNEYGATE_EVENTS__WORKER_METRICS_PORT": "-1"}, "events.worker_metrics_port: must"),
        ({"JOURNEYGATE_EVENTS__WORKER_METRICS_PORT": "ninety"}, "events.worker_metrics_port: exp"),
        (
            {
                "JOURNEYGATE_EVENTS__WORKER_METRICS_PORT": "9109",
                "JOURNEYGATE_EVENTS__WORKER_METRICS_HOST": "",
            },
            "events.worker_metrics_host: empty",
        ),
    ],
)
def test_bad_metrics_settings_name_the_key(environ, message):
    with pytest.raises(ConfigError) as error:
        load_config(environ=environ)
    assert str(error.value).startswith(message)


def test_metrics_settings_default_to_off_and_take_environment_overrides():
    assert load_config(environ={}).events.worker_metrics_port == 0
    config = load_config(
        environ={
            "JOURNEYGATE_EVENTS__WORKER_METRICS_PORT": "9109",
            "JOURNEYGATE_EVENTS__WORKER_METRICS_HOST": "0.0.0.0",
        }
    )
    assert (config.events.worker_metrics_host, config.events.worker_metrics_port) == (
        "0.0.0.0",
        9109,
    )


def worker_env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": url,
        "JOURNEYGATE_PLUGINS__LOAD_ENTRYPOINTS": "false",
        "JOURNEYGATE_EVENTS__STREAM_SHARDS": "2",
    }


def start_worker_process(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "journeygate.cli", "worker", "--consumer", "cli-w", *args],
        cwd=PROJECT_ROOT,
        env=worker_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_the_worker_command_serves_metrics_on_its_port_and_refuses_a_taken_one(url):
    port = free_port()
    process = start_worker_process(url, "--metrics-port", str(port))
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.communicate()
            try:
                samples = await scrape(port)
                break
            except aiohttp.ClientConnectionError:
                assert time.monotonic() < deadline, "the worker's /metrics never answered"
                await asyncio.sleep(0.05)
        assert value(samples, "journeygate_worker_events_applied_total") == 0
        assert sorted(per_stream(samples, "journeygate_worker_stream_backlog")) == [
            keys.event_stream(0),
            keys.event_stream(1),
        ]

        # a second worker on the same port stops at once, saying why
        second = start_worker_process(url, "--metrics-port", str(port))
        _, stderr = second.communicate(timeout=30)
        assert second.returncode == 2
        last = stderr.strip().splitlines()[-1]
        assert last == (
            f"journeygate: worker metrics: cannot listen on 127.0.0.1:{port}: Address already "
            "in use; every worker on a host needs its own --metrics-port "
            "(events.worker_metrics_port)"
        )
        assert "Traceback" not in stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0
    with socket.socket() as sock:  # the port is free again
        sock.bind(("127.0.0.1", port))


def test_a_bad_metrics_port_option_is_one_clean_line(monkeypatch, capsys):
    monkeypatch.setenv("JOURNEYGATE_PLUGINS__LOAD_ENTRYPOINTS", "false")
    assert main(["worker", "--metrics-port", "70000"]) == 2
    assert capsys.readouterr().err == (
        "journeygate: events.worker_metrics_port: out of range (0 = off): 70000\n"
    )
