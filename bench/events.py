"""Benchmark of event ingestion and the worker, with a raw-XADD baseline, in one run.

What runs
    * ``redis-server`` on a free port of 127.0.0.1 (its own, no persistence);
    * the gateway, ``journeygate serve`` (one process, Redis store, every installed plugin),
      with a write key and an admin key given through the environment
      (``JOURNEYGATE_EVENTS__WRITE_KEYS``, ``JOURNEYGATE_SERVER__API_KEYS``);
    * ``journeygate worker`` (one process), started for part 2; for part 3 it is replaced by
      one whose triggers plugin is active: a webhook endpoint pointing at this process
      (``JOURNEYGATE_WEBHOOKS__ENDPOINTS__BENCH__URL`` and ``__SECRET``) and a trigger file of
      one trigger that fires at once, ``search_no_results`` (``JOURNEYGATE_PLUGIN__TRIGGERS__
      FILE``); the worker runs the webhook dispatcher too;
    * the load generator: this process (one asyncio loop), which serves nothing but, in part
      3, the webhook receiver (an aiohttp server standing in for the email/CRM tool).

The events
    Real ones: the bundled Online Retail sample (``data/sample/online_retail_sample.csv.gz``)
    converted by ``journeygate.events.retail_events`` (product views, cart adds, checkouts,
    orders, refunds, by event time), the first ``--events`` of them. Every run below sends the
    same events with its own label folded into the user id and the message id (``i8-12583``,
    ``i8:retail:536370:view:22728``), so no run's events are duplicates of another's and the
    worker applies each of them for real (nothing is skipped as already applied).

What is measured
    1. Ingestion: ``POST /v1/events``, 100 events per request, closed loop at each
       concurrency (default 8 and 32 connections; each connection sends its next batch when
       the last one was answered), after a short warm-up. events/s = events accepted (HTTP
       200; every event of these batches is valid) / wall time. A 200 means the events are in
       the Redis streams. The baseline, in the same run, from this process: raw XADD of the
       same payloads through redis-py (redis.asyncio, the same number of concurrent tasks) in
       the gateway's layout: the events of a batch of 100 grouped by stream shard
       ``jg:events:{shard-K}`` (crc32 of the visitor id), one XADD per shard with
       ``MAXLEN ~``, all of a batch in one pipeline. The payloads are the gateway's stored
       form (validated and encoded before the clock starts), so the ratio gateway/baseline
       is what HTTP, authentication, JSON parsing and validation cost on top of the Redis
       writes themselves.
    2. Worker: everything parts 1 wrote (warm-up, every gateway run and every baseline run)
       sits in the streams; one ``journeygate worker`` is started and ``XINFO GROUPS`` of
       every shard is polled until the consumer group has no lag and nothing pending.
       events/s = events in the streams / time from the worker's first read (the group's
       ``entries-read`` moving) until then; the time from spawning the process (Python
       start-up, plugin start-up) is printed as well. At the end the worker is stopped and
       the count it logs ("stopping after N events applied") must equal every accepted
       event; a few profiles per run are read back and their event counts checked.
    3. Latency from ingestion, with the part-3 worker running and otherwise idle, one event
       at a time, each after a random pause (uniform, 0 to max(2 / ``--latency-rate``, the
       poll periods involved) seconds, so probes are not in step with the polls); the first
       webhook probe, sent before anything is measured, waits for the worker to start.
       a. to applied: a product view of a new visitor; time from sending ``POST /v1/events``
          until ``GET /v1/profiles/{id}`` (admin key, polled about every millisecond) first
          answers 200, i.e. the profile exists; an upper bound by about one poll. With empty
          streams the worker polls every ``events.idle_sleep_ms`` (20 ms by default, a
          non-blocking read), so expect about half of that at p50 and all of it at p99: the
          figure is the poll interval, not the cost of applying one event.
       b. to a trigger's webhook (the issue's "end-to-end latency from ingestion to a
          trigger's webhook"): a search with no results (``results: 0``) of a new visitor;
          time from sending ``POST /v1/events`` until the receiver gets the signed
          ``trigger.search_no_results`` webhook for that visitor, its ``Journeygate-Signature``
          checked with ``journeygate.webhooks.verify_signature`` (a bad one is counted and
          answered 401). On the way: the worker's poll of the streams (``idle_sleep_ms``),
          applying, the triggers engine (a few round trips) queueing the webhook in the
          outbox, which wakes the worker's idle dispatcher at once (they share the outbox;
          ``webhooks.poll_interval_ms`` only paces what other processes queue), and the
          POST. The worker's poll bounds the waiting: expect about half of it at p50 and all
          of it at p99, plus the work.
       Neither says anything about latency under load (part 2's backlog is the load case).

How to read it
    On a 2-core machine the load generator, the gateway, Redis and the worker compete for
    the same CPUs, so absolute figures are what this box does with everything on it; the
    baseline (same box, same run, same payloads) is the reference. Per phase, the CPU
    seconds of each process are printed (gateway, redis-server, worker, this process): CPU
    ms per 1,000 events is the most portable figure. The machine's CPU busy fraction before
    the run is printed; when other processes were busy (above 20%), compare with a run on an
    idle machine. Targets (PASS/FAIL lines, from issue 4): ingestion >= 20,000 events/s (the
    best concurrency level) and worker >= 10,000 events/s.

Usage
    .venv/bin/python bench/events.py [--events 100000] [--concurrency 8,32] [--json PATH]

Takes about 2 minutes on 2 cores. Exit status: 0 when the benchmark ran (whether or not the
targets were met), 1 when a process failed to start or a phase failed, 130 on Ctrl-C.
Process logs are kept in ``var/bench/`` (``events-*.log``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis
from aiohttp import web

from journeygate.config import EventsConfig, load_config
from journeygate.events.ingest import parse_batch
from journeygate.events.retail_events import retail_events, select_lines
from journeygate.events.schema import parse_native
from journeygate.retail_data import read_online_retail
from journeygate.store import keys
from journeygate.webhooks import verify_signature

for _path in (Path(__file__).resolve().parent,):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import decide  # noqa: E402

ROOT = decide.ROOT
SAMPLE = ROOT / "data" / "sample" / "online_retail_sample.csv.gz"
HOST = decide.HOST
WRITE_KEY = "bench-write-key"
ADMIN_KEY = "bench-admin-key"
BATCH = 100
WARMUP_BATCHES = 20
TARGET_INGEST = 20_000.0
TARGET_WORKER = 10_000.0
PROFILES_CHECKED_PER_RUN = 5
WEBHOOK_ENDPOINT = "bench"
WEBHOOK_SECRET = "bench-webhook-secret"
# Part 3's trigger file: the one trigger, a service action (no consent, no quiet hours).
TRIGGER_FILE = f"""[triggers.search_no_results]
endpoint = "{WEBHOOK_ENDPOINT}"
marketing = false
"""
APPLIED_LOG = re.compile(r"stopping after (\d+) events applied")


# -- the events --------------------------------------------------------------------------------


def load_events(count: int) -> list[dict[str, Any]]:
    """The first ``count`` events of the bundled sample, as ``journeygate convert-retail``
    would write them."""
    events: list[dict[str, Any]] = retail_events(select_lines(read_online_retail(SAMPLE)))
    if len(events) < count:
        raise decide.StartupError(f"{SAMPLE} has only {len(events)} events, {count} asked")
    return events[:count]


def labelled(events: Sequence[dict[str, Any]], label: str) -> list[dict[str, Any]]:
    """The same events for other visitors and with other message ids: one set per run."""
    return [
        {
            **event,
            "user_id": f"{label}-{event['user_id']}",
            "message_id": f"{label}:{event['message_id']}",
        }
        for event in events
    ]


def request_bodies(events: Sequence[dict[str, Any]]) -> list[bytes]:
    return [
        orjson.dumps({"events": list(events[start : start + BATCH])})
        for start in range(0, len(events), BATCH)
    ]


def stored_batches(
    events: Sequence[dict[str, Any]], config: EventsConfig
) -> list[list[tuple[str, bytes]]]:
    """(visitor id, encoded event) per batch of 100, exactly as the gateway stores them."""
    batches = []
    for start in range(0, len(events), BATCH):
        batch = parse_batch(events[start : start + BATCH], "events", parse_native, config)
        if batch.rejected:
            raise decide.StartupError(f"converted events rejected: {batch.rejected[:3]}")
        batches.append(batch.encoded)
    return batches


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Processes:
    redis_url: str
    gateway_url: str
    redis: decide.Server
    gateway: decide.Server
    env: dict[str, str]


def start_processes(args: argparse.Namespace, stack: contextlib.ExitStack) -> Processes:
    port = decide.free_port()
    redis_server = decide.Server.start(
        "events-redis",
        ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"],
    )
    stack.callback(redis_server.stop)
    redis_url = f"redis://{HOST}:{port}/0"
    decide.wait_redis(redis_url, args.startup_timeout, redis_server)
    print(f"redis: started redis-server on {HOST}:{port}")

    command = decide.journeygate_command()
    prepared = subprocess.run(
        [command, "prepare"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    if prepared.returncode != 0:
        raise decide.StartupError(
            f"journeygate prepare failed:\n{prepared.stdout}{prepared.stderr}"
        )
    # The recommender's interactions log stays on (it is part of what a worker does per
    # event) but goes to a directory that is removed afterwards.
    interactions = stack.enter_context(tempfile.TemporaryDirectory(prefix="jg-bench-"))
    env = dict(
        os.environ,
        REDIS_URL=redis_url,
        JOURNEYGATE_EVENTS__WRITE_KEYS=WRITE_KEY,
        JOURNEYGATE_SERVER__API_KEYS=ADMIN_KEY,
        JOURNEYGATE_PLUGIN__RECOMMENDER__INTERACTIONS_DIR=interactions,
    )
    gateway_port = decide.free_port()
    gateway = decide.Server.start(
        "events-gateway",
        [command, "serve", "--host", HOST, "--port", str(gateway_port), "--workers", "1"],
        env=env,
    )
    stack.callback(gateway.stop)
    gateway_url = f"http://{HOST}:{gateway_port}"
    decide.wait_http(gateway, f"{gateway_url}/readyz", args.startup_timeout)
    settled = settle(gateway, args.settle)
    print(
        f"gateway: {gateway_url} (log: {gateway.log_path.relative_to(ROOT)}; "
        f"idle {settled:.1f}s after /readyz)"
    )
    return Processes(redis_url, gateway_url, redis_server, gateway, env)


def settle(server: decide.Server, limit_s: float) -> float:
    """Wait (at most ``limit_s``) until the process uses under 5% of a CPU for 1 s: plugins
    warm up in the background after /readyz (the recommender precomputes similar items)."""
    started = time.monotonic()
    last = server.cpu_seconds()
    quiet = 0
    while time.monotonic() - started < limit_s and last is not None and quiet < 2:
        time.sleep(0.5)
        server.check_alive()
        now = server.cpu_seconds()
        if now is None:
            break
        quiet = quiet + 1 if now - last < 0.025 else 0
        last = now
    return time.monotonic() - started


@dataclass
class CpuMeter:
    """CPU seconds used by each process (and this one) between ``start`` and ``stop``."""

    servers: dict[str, decide.Server]
    before: dict[str, float | None] = field(default_factory=dict)
    used: dict[str, float | None] = field(default_factory=dict)

    def _sample(self) -> dict[str, float | None]:
        sample = {name: server.cpu_seconds() for name, server in self.servers.items()}
        sample["loadgen"] = time.process_time()
        return sample

    def start(self) -> None:
        self.before = self._sample()

    def stop(self) -> dict[str, float | None]:
        after = self._sample()
        self.used = {}
        for name, value in after.items():
            before = self.before.get(name)
            self.used[name] = None if value is None or before is None else value - before
        return self.used


# -- 1. ingestion --------------------------------------------------------------------------------


@dataclass
class IngestResult:
    target: str  # "gateway" or "baseline"
    concurrency: int
    events: int
    seconds: float
    events_per_s: float
    errors: int
    error_kinds: dict[str, int]
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_s: dict[str, float | None] = field(default_factory=dict)


def auth_header() -> dict[str, str]:
    token = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def ingest_gateway(
    gateway_url: str,
    bodies: Sequence[bytes],
    warmup: Sequence[bytes],
    concurrency: int,
    meter: CpuMeter,
    args: argparse.Namespace,
) -> IngestResult:
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=auth_header()
    ) as session:
        await decide.drive(
            session,
            decide.Workload("warm-up", gateway_url, "POST", ["/v1/events"], warmup),
            len(warmup),
            concurrency,
            0,
            args.run_timeout,
        )
        workload = decide.Workload("gateway", gateway_url, "POST", ["/v1/events"], bodies)
        meter.start()
        sample = await decide.drive(
            session, workload, len(bodies), concurrency, 0, args.run_timeout
        )
        cpu = meter.stop()
    run = sample.result("gateway", concurrency, len(bodies))
    return IngestResult(
        target="gateway",
        concurrency=concurrency,
        events=run.ok * BATCH,
        seconds=run.seconds,
        events_per_s=run.ok * BATCH / run.seconds if run.seconds > 0 else 0.0,
        errors=run.errors,
        error_kinds=run.error_kinds,
        p50_ms=run.p50_ms,
        p99_ms=run.p99_ms,
        cpu_s=cpu,
    )


async def ingest_baseline(
    redis_url: str,
    batches: Sequence[list[tuple[str, bytes]]],
    config: EventsConfig,
    concurrency: int,
    meter: CpuMeter,
) -> IngestResult:
    """Raw XADD through redis-py: per batch, one XADD per shard in one pipeline."""
    client = aioredis.Redis.from_url(redis_url, max_connections=concurrency)
    names = [keys.event_stream(shard) for shard in range(config.stream_shards)]
    maxlen = str(config.stream_maxlen)
    next_index = 0
    errors: Counter[str] = Counter()
    latencies: list[float] = []

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(batches):
            batch = batches[next_index]
            next_index += 1
            started = time.perf_counter()
            by_shard: dict[int, list[bytes]] = {}
            for visitor_id, encoded in batch:
                shard = zlib.crc32(visitor_id.encode()) % len(names)
                by_shard.setdefault(shard, []).append(encoded)
            pipe = client.pipeline(transaction=False)
            for shard, encoded_events in by_shard.items():
                payload = b"[" + b",".join(encoded_events) + b"]"
                pipe.execute_command("XADD", names[shard], "MAXLEN", "~", maxlen, "*", "e", payload)
            try:
                await pipe.execute()
            except Exception as exc:  # counted, like an HTTP error
                errors[exc.__class__.__name__] += 1
                continue
            latencies.append(time.perf_counter() - started)

    try:
        await client.ping()
        meter.start()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        cpu = meter.stop()
    finally:
        await client.aclose()
    ms = sorted(value * 1000 for value in latencies)
    return IngestResult(
        target="baseline",
        concurrency=concurrency,
        events=len(latencies) * BATCH,
        seconds=seconds,
        events_per_s=len(latencies) * BATCH / seconds if seconds > 0 else 0.0,
        errors=errors.total(),
        error_kinds=dict(errors),
        p50_ms=decide.percentile(ms, 0.50) if ms else None,
        p99_ms=decide.percentile(ms, 0.99) if ms else None,
        cpu_s=cpu,
    )


# -- 2. the worker -------------------------------------------------------------------------------


@dataclass
class WorkerResult:
    events: int
    drained: bool
    seconds_from_first_read: float | None
    seconds_from_spawn: float | None
    events_per_s: float | None
    events_per_s_from_spawn: float | None
    cpu_s: dict[str, float | None] = field(default_factory=dict)
    applied_logged: int | None = None
    profiles_checked: int = 0
    profile_mismatches: list[str] = field(default_factory=list)


async def group_state(
    client: aioredis.Redis, names: Sequence[str], group: str
) -> tuple[bool, bool]:
    """(the group has read something, the group is drained: no lag, nothing pending)."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.xinfo_groups(name)
    started = drained = True
    read_any = False
    for groups in await pipe.execute():
        mine = [info for info in groups if info["name"].decode() == group]
        if not mine:
            started = drained = False
            continue
        info = mine[0]
        read_any = read_any or bool(info.get("entries-read"))
        if info.get("lag") != 0 or info.get("pending") != 0:
            drained = False
    return started and read_any, drained


def start_worker(
    procs: Processes,
    stack: contextlib.ExitStack,
    name: str = "events-worker",
    env: dict[str, str] | None = None,
) -> decide.Server:
    worker = decide.Server.start(
        name, [decide.journeygate_command(), "worker"], env={**procs.env, **(env or {})}
    )
    stack.callback(worker.stop)
    return worker


async def drain(
    procs: Processes,
    worker: decide.Server,
    spawned: float,
    events: int,
    config: EventsConfig,
    meter: CpuMeter,
    timeout_s: float,
) -> WorkerResult:
    client = aioredis.Redis.from_url(procs.redis_url)
    names = [keys.event_stream(shard) for shard in range(config.stream_shards)]
    first_read: float | None = None
    done: float | None = None
    try:
        while time.monotonic() - spawned < timeout_s:
            worker.check_alive()
            read_any, drained = await group_state(client, names, config.consumer_group)
            now = time.monotonic()
            if read_any and first_read is None:
                first_read = now
                meter.start()
            if drained and first_read is not None:
                done = now
                break
            await asyncio.sleep(0.005 if first_read is None else 0.02)
    finally:
        await client.aclose()
    cpu = meter.stop() if first_read is not None else {}
    from_read = done - first_read if done is not None and first_read is not None else None
    from_spawn = done - spawned if done is not None else None
    return WorkerResult(
        events=events,
        drained=done is not None,
        seconds_from_first_read=from_read,
        seconds_from_spawn=from_spawn,
        events_per_s=events / from_read if from_read else None,
        events_per_s_from_spawn=events / from_spawn if from_spawn else None,
        cpu_s=cpu,
    )


async def check_profiles(gateway_url: str, expected: dict[str, int], result: WorkerResult) -> None:
    """Each profile's ``aggregates.events`` must be the number of events sent for it."""
    headers = {"X-API-Key": ADMIN_KEY}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for visitor_id, count in expected.items():
            async with session.get(
                f"{gateway_url}/v1/profiles/{visitor_id}", headers=headers
            ) as response:
                body = await response.json(loads=orjson.loads) if response.status == 200 else {}
            got = body.get("aggregates", {}).get("events")
            result.profiles_checked += 1
            if got != count:
                result.profile_mismatches.append(f"{visitor_id}: {got} events, {count} sent")


def applied_from_log(worker: decide.Server) -> int | None:
    try:
        text = worker.log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = APPLIED_LOG.findall(text)
    return int(found[-1]) if found else None


# -- 3. latency ----------------------------------------------------------------------------------


@dataclass
class LatencyResult:
    probes: int
    accepted: int
    applied: int
    timeouts: int
    errors: int
    applied_p50_ms: float | None
    applied_p95_ms: float | None
    applied_p99_ms: float | None
    applied_max_ms: float | None
    post_p50_ms: float | None
    post_p99_ms: float | None
    polls_per_probe: float | None


async def latency(
    gateway_url: str, args: argparse.Namespace, label: str, idle_sleep_ms: int
) -> LatencyResult:
    applied: list[float] = []
    posted: list[float] = []
    timeouts = errors = polls = 0
    # A random pause before each probe (at least one worker poll period wide), so probes are
    # not sent in step with the idle worker's polls, which would bias every probe alike.
    rng = random.Random(args.seed)
    jitter = max(2.0 / args.latency_rate, idle_sleep_ms / 1000)
    write = {**auth_header(), "Content-Type": "application/json"}
    admin = {"X-API-Key": ADMIN_KEY}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for index in range(args.latency_probes):
            await asyncio.sleep(rng.uniform(0.0, jitter))
            visitor = f"{label}-{index}"
            event = {
                "event": "product_view",
                "visitor_id": visitor,
                "channel": "web",
                "message_id": f"{label}:{index}",
                "properties": {"product_id": "85123A", "price": 2.55, "category": "Lighting"},
            }
            body = orjson.dumps({"events": [event]})
            started = time.perf_counter()
            async with session.post(f"{gateway_url}/v1/events", data=body, headers=write) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
                    continue
            posted.append(time.perf_counter() - started)
            url = f"{gateway_url}/v1/profiles/{visitor}"
            while True:
                polls += 1
                async with session.get(url, headers=admin) as response:
                    await response.read()
                    status = response.status
                if status == 200:
                    applied.append(time.perf_counter() - started)
                    break
                if status != 404:
                    errors += 1
                    break
                if time.perf_counter() - started > args.latency_timeout:
                    timeouts += 1
                    break
                await asyncio.sleep(0.001)
    ms = sorted(value * 1000 for value in applied)
    post_ms = sorted(value * 1000 for value in posted)
    return LatencyResult(
        probes=args.latency_probes,
        accepted=len(posted),
        applied=len(applied),
        timeouts=timeouts,
        errors=errors,
        applied_p50_ms=decide.percentile(ms, 0.50) if ms else None,
        applied_p95_ms=decide.percentile(ms, 0.95) if ms else None,
        applied_p99_ms=decide.percentile(ms, 0.99) if ms else None,
        applied_max_ms=ms[-1] if ms else None,
        post_p50_ms=decide.percentile(post_ms, 0.50) if post_ms else None,
        post_p99_ms=decide.percentile(post_ms, 0.99) if post_ms else None,
        polls_per_probe=polls / args.latency_probes if args.latency_probes else None,
    )


@dataclass
class WebhookResult:
    probes: int
    accepted: int
    delivered: int
    timeouts: int
    errors: int
    bad_signatures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    idle_sleep_ms: int
    poll_interval_ms: int


class WebhookReceiver:
    """The email/CRM tool: an aiohttp server in this process that checks each webhook's
    signature and notes, by visitor, when it arrived (before answering)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.bad_signatures = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        arrived = time.perf_counter()
        signature = request.headers.get("Journeygate-Signature", "")
        if not verify_signature(self.secret, signature, body):
            self.bad_signatures += 1
            return web.Response(status=401)
        visitor = orjson.loads(body)["data"]["visitor_id"]
        waiter = self.waiting.pop(visitor, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(arrived)
        return web.Response(status=200)

    def expect(self, visitor: str) -> asyncio.Future[float]:
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[visitor] = waiter
        return waiter

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = decide.free_port()
        await web.TCPSite(self.runner, HOST, port).start()
        self.url = f"http://{HOST}:{port}/hooks"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def search_without_results(visitor: str, message_id: str) -> bytes:
    event = {
        "event": "Products Searched",
        "visitor_id": visitor,
        "channel": "web",
        "message_id": message_id,
        "properties": {"query": "purple teapot", "results": 0},
    }
    return orjson.dumps({"events": [event]})


async def first_webhook(
    gateway_url: str, receiver: WebhookReceiver, label: str, timeout_s: float
) -> bool:
    """One probe before anything is measured: the part-3 worker has started (plugins, the
    dispatcher) once its webhook arrives."""
    waiter = receiver.expect(f"{label}-start")
    body = search_without_results(f"{label}-start", f"{label}:start")
    headers = {**auth_header(), "Content-Type": "application/json"}
    url = f"{gateway_url}/v1/events"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        await response.read()
        if response.status != 200:
            return False
    try:
        await asyncio.wait_for(waiter, timeout_s)
    except TimeoutError:
        return False
    return True


async def webhook_latency(
    gateway_url: str,
    receiver: WebhookReceiver,
    args: argparse.Namespace,
    label: str,
    idle_sleep_ms: int,
    poll_interval_ms: int,
) -> WebhookResult:
    """POST one search without results at a time; time until its webhook arrives."""
    latencies: list[float] = []
    accepted = timeouts = errors = 0
    rng = random.Random(args.seed + 1)
    jitter = max(2.0 / args.latency_rate, (idle_sleep_ms + poll_interval_ms) / 1000)
    write = {**auth_header(), "Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for index in range(args.webhook_probes):
            await asyncio.sleep(rng.uniform(0.0, jitter))
            visitor = f"{label}-{index}"
            waiter = receiver.expect(visitor)
            body = search_without_results(visitor, f"{label}:{index}")
            started = time.perf_counter()
            async with session.post(f"{gateway_url}/v1/events", data=body, headers=write) as r:
                await r.read()
                status = r.status
            if status != 200:
                errors += 1
                receiver.waiting.pop(visitor, None)
                continue
            accepted += 1
            try:
                arrived = await asyncio.wait_for(waiter, args.webhook_timeout)
            except TimeoutError:
                timeouts += 1
                receiver.waiting.pop(visitor, None)
                continue
            latencies.append(arrived - started)
    ms = sorted(value * 1000 for value in latencies)
    return WebhookResult(
        probes=args.webhook_probes,
        accepted=accepted,
        delivered=len(latencies),
        timeouts=timeouts,
        errors=errors,
        bad_signatures=receiver.bad_signatures,
        p50_ms=decide.percentile(ms, 0.50) if ms else None,
        p95_ms=decide.percentile(ms, 0.95) if ms else None,
        p99_ms=decide.percentile(ms, 0.99) if ms else None,
        max_ms=ms[-1] if ms else None,
        idle_sleep_ms=idle_sleep_ms,
        poll_interval_ms=poll_interval_ms,
    )


# -- the report ----------------------------------------------------------------------------------


@dataclass
class Report:
    settings: dict[str, Any]
    environment: dict[str, Any]
    ingestion: list[IngestResult] = field(default_factory=list)
    ratios: list[dict[str, Any]] = field(default_factory=list)
    worker: WorkerResult | None = None
    latency: LatencyResult | None = None
    webhook: WebhookResult | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)

    def compute(self) -> None:
        for concurrency in self.settings["concurrency"]:
            runs = {r.target: r for r in self.ingestion if r.concurrency == concurrency}
            if "gateway" in runs and "baseline" in runs and runs["baseline"].events_per_s:
                ratio = runs["gateway"].events_per_s / runs["baseline"].events_per_s
                self.ratios.append({"concurrency": concurrency, "gateway_over_baseline": ratio})
        gateway = [r for r in self.ingestion if r.target == "gateway" and not r.errors]
        best = max(gateway, key=lambda r: r.events_per_s, default=None)
        self.targets.append(
            {
                "name": f"ingestion >= {TARGET_INGEST:,.0f} events/s (POST /v1/events, best "
                f"concurrency{'' if best is None else f': {best.concurrency}'})",
                "value": None if best is None else best.events_per_s,
                "passed": None if best is None else best.events_per_s >= TARGET_INGEST,
            }
        )
        rate = self.worker.events_per_s if self.worker and self.worker.drained else None
        lost = self.worker is not None and self.worker.applied_logged not in (
            None,
            self.settings["accepted_total"],
        )
        self.targets.append(
            {
                "name": f"worker >= {TARGET_WORKER:,.0f} events/s (one process, from first read "
                "to no lag/pending)",
                "value": rate,
                "passed": None if rate is None else rate >= TARGET_WORKER and not lost,
            }
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "environment": self.environment,
            "ingestion": [asdict(r) for r in self.ingestion],
            "ratios": self.ratios,
            "worker": asdict(self.worker) if self.worker else None,
            "latency": asdict(self.latency) if self.latency else None,
            "webhook": asdict(self.webhook) if self.webhook else None,
            "targets": self.targets,
        }


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _cpu(cpu: dict[str, float | None], events: int) -> str:
    """CPU ms per 1,000 events of each process."""
    parts = []
    for name in ("gateway", "redis", "worker", "loadgen"):
        seconds = cpu.get(name)
        if seconds is not None and events and (name != "worker" or seconds > 0):
            parts.append(f"{name} {seconds * 1e6 / events:.0f}")
    return " ".join(parts) or "-"


def print_report(report: Report) -> None:
    print()
    print("1. ingestion, batches of 100 events")
    print(
        f"{'conc':>4}  {'target':<28} {'events':>7} {'s':>6} {'events/s':>9} {'p50 ms':>7}"
        f" {'p99 ms':>7} {'errors':>6}  cpu ms per 1,000 events"
    )
    names = {"gateway": "POST /v1/events (gateway)", "baseline": "raw XADD, redis-py"}
    for r in report.ingestion:
        print(
            f"{r.concurrency:>4}  {names[r.target]:<28} {r.events:>7} {r.seconds:>6.2f}"
            f" {r.events_per_s:>9,.0f} {_fmt(r.p50_ms, 2):>7} {_fmt(r.p99_ms, 2):>7}"
            f" {r.errors:>6}  {_cpu(r.cpu_s, r.events)}"
        )
        for kind, count in sorted(r.error_kinds.items()):
            print(f"{'':>6}error: {kind} x{count}")
    for ratio in report.ratios:
        print(
            f"  concurrency {ratio['concurrency']}: gateway = "
            f"{ratio['gateway_over_baseline']:.0%} of raw XADD throughput"
        )
    w = report.worker
    if w is not None:
        print()
        print("2. worker (one journeygate worker process, backlog of every run above)")
        print(
            f"  events {w.events}, drained {'yes' if w.drained else 'NO (timed out)'}: "
            f"{_fmt(w.seconds_from_first_read, 2)} s from first read "
            f"({_fmt(w.events_per_s, 0)} events/s), {_fmt(w.seconds_from_spawn, 2)} s from "
            f"spawning the process ({_fmt(w.events_per_s_from_spawn, 0)} events/s)"
        )
        print(f"  cpu ms per 1,000 events: {_cpu(w.cpu_s, w.events)}")
        applied = "-" if w.applied_logged is None else str(w.applied_logged)
        print(
            f"  applied (logs of this worker and part 3's, at exit): {applied} of "
            f"{report.settings['accepted_total']} accepted (part 3's probes included); "
            f"profiles checked {w.profiles_checked}, mismatches {len(w.profile_mismatches)}"
        )
        for mismatch in w.profile_mismatches[:5]:
            print(f"    {mismatch}")
    lat = report.latency
    if lat is not None:
        print()
        print(
            "3a. ingestion -> applied (POST /v1/events of one event until GET /v1/profiles/{id} "
            "answers 200)"
        )
        print(
            f"  probes {lat.probes} (applied {lat.applied}, timeouts {lat.timeouts}, errors "
            f"{lat.errors}): p50 {_fmt(lat.applied_p50_ms)} ms, p95 {_fmt(lat.applied_p95_ms)} "
            f"ms, p99 {_fmt(lat.applied_p99_ms)} ms, max {_fmt(lat.applied_max_ms)} ms"
        )
        print(
            f"  the POST alone: p50 {_fmt(lat.post_p50_ms, 2)} ms, p99 "
            f"{_fmt(lat.post_p99_ms, 2)} ms; {_fmt(lat.polls_per_probe)} profile polls per probe"
        )
        print(f"  (the idle worker polls the streams every {report.settings['idle_sleep_ms']} ms)")
    hook = report.webhook
    if hook is not None:
        print()
        print(
            "3b. ingestion -> trigger webhook (POST /v1/events of a search without results "
            "until the receiver gets the signed trigger.search_no_results webhook)"
        )
        print(
            f"  probes {hook.probes} (delivered {hook.delivered}, timeouts {hook.timeouts}, "
            f"errors {hook.errors}, bad signatures {hook.bad_signatures}): p50 "
            f"{_fmt(hook.p50_ms)} ms, p95 {_fmt(hook.p95_ms)} ms, p99 {_fmt(hook.p99_ms)} ms, "
            f"max {_fmt(hook.max_ms)} ms"
        )
        print(
            f"  the waiting is bounded by the idle worker's poll of the streams, every "
            f"{hook.idle_sleep_ms} ms (events.idle_sleep_ms): about {hook.idle_sleep_ms / 2:.0f}"
            f" ms at p50 and {hook.idle_sleep_ms} ms at p99, plus the work (the worker's "
            f"dispatcher is woken by the webhook it queues; its poll, every "
            f"{hook.poll_interval_ms} ms, is for what other processes queue)"
        )
    print()
    busy = report.environment.get("cpu_busy_before_run")
    print(
        f"CPU busy before the run: {'-' if busy is None else f'{busy:.0%}'} of "
        f"{report.environment['cpus']} cpus"
    )
    for target in report.targets:
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[target["passed"]]
        value = target["value"]
        shown = "not measured" if value is None else f"measured {value:,.0f}"
        print(f"{verdict}  {target['name']} ({shown})")


# -- the benchmark -------------------------------------------------------------------------------


async def run_benchmark(
    args: argparse.Namespace, procs: Processes, stack: contextlib.ExitStack
) -> Report:
    app_config = load_config(environ={})
    config = app_config.events
    gateway_before = procs.gateway.cpu_seconds()
    busy = await asyncio.to_thread(decide.cpu_busy_fraction)
    gateway_after = procs.gateway.cpu_seconds()
    gateway_busy = None
    if gateway_before is not None and gateway_after is not None:
        gateway_busy = (gateway_after - gateway_before) / (os.cpu_count() or 1)
    if busy is not None:
        note = " - other processes are busy, figures will be skewed" if busy > 0.2 else ""
        print(
            f"CPU busy before the run: {busy:.0%} of {os.cpu_count()} cpus "
            f"(the idle gateway: {_fmt(None if gateway_busy is None else gateway_busy * 100, 0)}"
            f"%){note}"
        )
    started = time.perf_counter()
    events = await asyncio.to_thread(load_events, args.events)
    print(
        f"events: first {len(events)} of the converted sample "
        f"({time.perf_counter() - started:.1f}s to convert), "
        f"{len({e['user_id'] for e in events})} customers, "
        f"{dict(Counter(e['event'] for e in events))}"
    )
    report = Report(
        settings={
            "events": args.events,
            "batch": BATCH,
            "concurrency": args.concurrency,
            "stream_shards": config.stream_shards,
            "read_count": config.read_count,
            "idle_sleep_ms": config.idle_sleep_ms,
            "latency_probes": args.latency_probes,
            "latency_rate": args.latency_rate,
            "redis": "redis-server (own, no persistence)",
        },
        environment={
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "cpu_busy_before_run": busy,
            "gateway_busy_before_run": gateway_busy,
        },
    )
    meter = CpuMeter({"gateway": procs.gateway, "redis": procs.redis})
    warmup = request_bodies(labelled(events[: WARMUP_BATCHES * BATCH], "warm"))
    accepted = len(warmup) * BATCH
    expected: dict[str, int] = {}
    for concurrency in args.concurrency:
        label = f"i{concurrency}"
        sent = labelled(events, label)
        print(f"ingesting through the gateway at concurrency {concurrency}...", flush=True)
        procs.gateway.check_alive()
        result = await ingest_gateway(
            procs.gateway_url,
            request_bodies(sent),
            warmup if concurrency == args.concurrency[0] else [],
            concurrency,
            meter,
            args,
        )
        report.ingestion.append(result)
        accepted += result.events
        label = f"b{concurrency}"
        sent_raw = labelled(events, label)
        print(f"raw XADD through redis-py at concurrency {concurrency}...", flush=True)
        batches = await asyncio.to_thread(stored_batches, sent_raw, config)
        result = await ingest_baseline(procs.redis_url, batches, config, concurrency, meter)
        report.ingestion.append(result)
        accepted += result.events
        for run in (sent, sent_raw):
            counts = Counter(str(e["user_id"]) for e in run)
            expected |= dict(counts.most_common(PROFILES_CHECKED_PER_RUN))

    print(f"starting journeygate worker on {accepted} events in the streams...", flush=True)
    meter = CpuMeter({"gateway": procs.gateway, "redis": procs.redis})
    spawned = time.monotonic()
    worker = start_worker(procs, stack)
    meter.servers["worker"] = worker
    report.worker = await drain(
        procs, worker, spawned, accepted, config, meter, args.worker_timeout
    )
    if report.worker.drained:
        await check_profiles(procs.gateway_url, expected, report.worker)
    await asyncio.to_thread(worker.stop)
    applied = [applied_from_log(worker)]
    if report.worker.drained:
        receiver = WebhookReceiver(WEBHOOK_SECRET)
        await receiver.start()
        try:
            accepted_part3, applied_part3 = await part3(args, procs, stack, receiver, report)
        finally:
            await receiver.stop()
        accepted += accepted_part3
        applied.append(applied_part3)
    counts = [count for count in applied if count is not None]
    report.worker.applied_logged = sum(counts) if len(counts) == len(applied) else None
    report.settings["accepted_total"] = accepted
    report.compute()
    return report


async def part3(
    args: argparse.Namespace,
    procs: Processes,
    stack: contextlib.ExitStack,
    receiver: WebhookReceiver,
    report: Report,
) -> tuple[int, int | None]:
    """Part 3 with a worker whose triggers send to ``receiver``; returns the events accepted
    and the events that worker applied (from its log)."""
    config = load_config(environ={})
    directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jg-bench-")))
    trigger_file = directory / "triggers.toml"
    trigger_file.write_text(TRIGGER_FILE, encoding="utf-8")
    endpoint = f"JOURNEYGATE_WEBHOOKS__ENDPOINTS__{WEBHOOK_ENDPOINT.upper()}"
    env = {
        f"{endpoint}__URL": receiver.url,
        f"{endpoint}__SECRET": WEBHOOK_SECRET,
        "JOURNEYGATE_PLUGIN__TRIGGERS__FILE": str(trigger_file),
    }
    print("starting a journeygate worker with triggers for part 3...", flush=True)
    worker = start_worker(procs, stack, "events-worker-triggers", env)
    label = f"hook{os.getpid()}"
    accepted = 1
    if not await first_webhook(procs.gateway_url, receiver, label, args.startup_timeout):
        worker.check_alive()
        raise decide.StartupError(
            f"no webhook from the part-3 worker within {args.startup_timeout:.0f}s\n"
            f"{worker.log_tail()}"
        )
    print(f"measuring ingestion -> applied latency ({args.latency_probes} probes)...", flush=True)
    report.latency = await latency(
        procs.gateway_url, args, f"lat{os.getpid()}", config.events.idle_sleep_ms
    )
    accepted += report.latency.accepted
    print(
        f"measuring ingestion -> trigger webhook latency ({args.webhook_probes} probes)...",
        flush=True,
    )
    report.webhook = await webhook_latency(
        procs.gateway_url,
        receiver,
        args,
        label,
        config.events.idle_sleep_ms,
        config.webhooks.poll_interval_ms,
    )
    accepted += report.webhook.accepted
    await asyncio.to_thread(worker.stop)
    return accepted, applied_from_log(worker)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark event ingestion (POST /v1/events) and the worker, "
        "with a raw-XADD baseline."
    )
    parser.add_argument(
        "--events",
        type=decide.positive_int,
        default=100_000,
        help="events per ingestion run, a multiple of 100 (default 100000)",
    )
    parser.add_argument(
        "--concurrency", type=decide.concurrency_levels, default=[8, 32], help="e.g. 8,32"
    )
    parser.add_argument("--latency-probes", type=decide.positive_int, default=150)
    parser.add_argument(
        "--latency-rate", type=float, default=20.0, help="latency probes per second, about"
    )
    parser.add_argument(
        "--latency-timeout", type=float, default=5.0, help="seconds a probe may take"
    )
    parser.add_argument("--webhook-probes", type=decide.positive_int, default=100)
    parser.add_argument(
        "--webhook-timeout", type=float, default=10.0, help="seconds a webhook probe may take"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the latency probes' pauses")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument("--request-timeout", type=float, default=10.0)
    parser.add_argument("--run-timeout", type=float, default=60.0)
    parser.add_argument("--worker-timeout", type=float, default=120.0)
    parser.add_argument("--startup-timeout", type=float, default=90.0)
    parser.add_argument(
        "--settle",
        type=float,
        default=15.0,
        help="at most this many seconds for the gateway's background warm-up after /readyz",
    )
    args = parser.parse_args(argv)
    if args.events % BATCH:
        parser.error(f"--events must be a multiple of {BATCH}")
    if args.latency_rate <= 0:
        parser.error("--latency-rate must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return decide.run_measured(
        lambda stack: start_processes(args, stack),
        lambda procs, stack: run_benchmark(args, procs, stack),
        print_report,
        args.json,
    )


if __name__ == "__main__":
    sys.exit(main())
