"""Benchmark of ``POST /v1/decide`` against a bare aiohttp + Redis handler, in one run.

What runs
    * ``redis-server`` on a free port of 127.0.0.1 (or the Redis at ``REDIS_URL``, when set);
    * the gateway, ``journeygate serve`` (one worker, Redis profile store, every installed
      plugin), after ``journeygate prepare`` has made sure the catalog exists;
    * the baseline: this script started with ``--baseline-server``, a minimal aiohttp app with
      one handler that does one Redis ``GET`` (redis.asyncio + hiredis, one pool) and answers a
      small JSON object;
    * the load generator: this process, which starts and stops the servers but serves nothing.
      One asyncio loop, N workers sharing one ``ClientSession`` whose connector is limited to N
      connections (closed loop: each worker sends its next request when the last one answered).

What is measured
    First a priming pass per server: every distinct request of the pool (``--body-pool``,
    2,000) once, at concurrency 8, its throughput and CPU per request printed apart. The
    gateway computes each product page's recommendations and renders each block for the
    first time there; without it the first level measured would pay for all those cache
    misses and the others for none, so the order of the levels would decide the figures.
    Then, for every concurrency level (default 1, 8, 32): a short warm-up of each server, then
    a fixed number of requests to each, sent in ``--slices`` parts (3) that alternate between
    the servers, so that both meet the same drift of the machine's speed. Gateway requests are
    realistic product-page decisions (500 visitors, a few sessions each, a product page and
    one cart item from ``var/catalog.csv``, a recommendations slot and an offer slot);
    baseline requests are ``GET /profile/{visitor}``.
    Every response must be 200; anything else, and every client exception, is an error.
    Reported per run: successful requests per second, latency percentiles p50/p95/p99 measured
    in the client (send to last byte of the body), errors, for the gateway the decisions that
    were degraded although answered with 200 (``degraded``: store errors, plugin failures and
    fallback blocks counted by the gateway's ``/metrics`` during the run), and the server
    process's CPU time per request (from ``/proc``; threads included).

How to read it
    The load generator shares the machine with the servers (on a 2-core box it competes with
    them for CPU), so absolute figures say little. Read the ratios: gateway req/s over
    baseline req/s, and gateway p99 over baseline p99, at the same concurrency in the same run.
    The baseline is the floor of what any aiohttp handler that touches Redis costs here; the
    ratios say how much the decision pipeline adds on top. CPU ms/request is the most stable
    figure across machines: it is what one decision costs the gateway process. Any other busy
    process skews the run; the load average at the start is printed (and a note when the
    machine was already busy), so compare runs taken on an idle machine.
    The targets (PASS/FAIL lines): gateway throughput >= 50% of the baseline's at
    concurrency 32, and gateway p99 <= 2x the baseline's p99 at concurrency 8.
    After the table come the gateway's counters for the whole run, warm-ups included: a 200
    answered without the visitor's profile (store timeout), with an empty block because a
    plugin ran out of its budget, or by the fallback, is not an HTTP error but is degraded.

Usage
    .venv/bin/python bench/decide.py [--requests 3000] [--concurrency 1,8,32] [--json PATH]

Exit status: 0 when the benchmark ran (whether or not the targets were met), 1 when a server
failed to start or the gateway could not answer a first decision, 130 on Ctrl-C.
Server logs are kept in ``var/bench/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CATALOG_PATH = ROOT / "var" / "catalog.csv"
LOG_DIR = ROOT / "var" / "bench"
HOST = "127.0.0.1"
BASELINE_KEY_PREFIX = "jgbench:profile:"
BASELINE_KEY_TTL_S = 3600
SLOTS = (
    {"id": "pdp-similar", "kind": "recommendations", "strategy": "similar_items", "limit": 8},
    {"id": "hero", "kind": "offer"},
)
SESSIONS_PER_VISITOR = 3
TARGET_THROUGHPUT_CONCURRENCY = 32
PRIMING_CONCURRENCY = 8  # the pass that sends every distinct request once, before the levels
TARGET_THROUGHPUT_RATIO = 0.5
TARGET_P99_CONCURRENCY = 8
TARGET_P99_RATIO = 2.0


class StartupError(RuntimeError):
    """A server did not start, or the gateway cannot answer a decision."""


# -- the baseline server (runs in its own process) -------------------------------------------


def serve_baseline(port: int, redis_url: str) -> int:
    """A minimal aiohttp app: one Redis GET per request, a small JSON answer."""
    import redis.asyncio as aioredis
    from aiohttp import web

    client_key = web.AppKey("client", aioredis.Redis)

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        app[client_key] = aioredis.Redis.from_url(redis_url, decode_responses=True)
        yield
        await app[client_key].aclose()

    async def profile(request: web.Request) -> web.Response:
        visitor_id = request.match_info["visitor_id"]
        raw = await request.app[client_key].get(BASELINE_KEY_PREFIX + visitor_id)
        return web.json_response(
            {"visitor_id": visitor_id, "profile": json.loads(raw) if raw else None}
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.cleanup_ctx.append(redis_ctx)
    app.router.add_get("/profile/{visitor_id}", profile)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host=HOST, port=port, print=None, access_log=None)
    return 0


# -- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A subprocess whose output goes to a log file under ``var/bench``."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, name: str, command: Sequence[str], env: dict[str, str] | None = None) -> Server:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log_path = LOG_DIR / f"{name}.log"
        with log_path.open("wb") as log:
            try:
                process = subprocess.Popen(
                    list(command),
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            except OSError as exc:
                raise StartupError(f"{name}: cannot run {command[0]}: {exc}") from exc
        return cls(name, process, log_path)

    def stop(self) -> None:
        """Terminate, then kill whatever has not exited after a grace period."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise StartupError(f"{self.name} exited with status {code}\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last lines of {self.log_path} ---\n{tail}"

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the process so far (Linux ``/proc``), or None."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """A GET that ignores proxy settings (everything here is on 127.0.0.1)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_http(server: Server, url: str, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200, the process exits, or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            status, body = http_get(url)
            if status == 200:
                return
            last = f"HTTP {status}: {body[:500].decode(errors='replace')}"
        except (OSError, ValueError) as exc:
            last = f"{exc.__class__.__name__}: {exc}"
        time.sleep(0.2)
    raise StartupError(
        f"{server.name} not ready at {url} after {timeout_s:.0f}s ({last})\n{server.log_tail()}"
    )


def wait_redis(url: str, timeout_s: float, server: Server | None = None) -> None:
    import redis

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if server is not None:
            server.check_alive()
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            if client.ping():
                return
        except redis.RedisError as exc:
            last = f"{exc.__class__.__name__}: {exc}"
        finally:
            client.close()
        time.sleep(0.1)
    tail = f"\n{server.log_tail()}" if server is not None else ""
    raise StartupError(f"redis at {url} not reachable after {timeout_s:.0f}s ({last}){tail}")


def seed_baseline_keys(redis_url: str, visitor_ids: Sequence[str]) -> None:
    """Give the baseline's GET a small stored profile to read (keys expire after an hour)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for index, visitor_id in enumerate(visitor_ids):
            value = json.dumps({"segment": f"s{index % 5}", "stage": "consideration"})
            pipe.set(BASELINE_KEY_PREFIX + visitor_id, value, ex=BASELINE_KEY_TTL_S)
        pipe.execute()
    finally:
        client.close()


def cpu_busy_fraction(seconds: float = 1.0) -> float | None:
    """How busy the machine's CPUs are (0-1) over ``seconds``, from ``/proc/stat``; None
    elsewhere. Taken while the servers are idle, it shows other processes that would skew
    the run."""

    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = values[3] + values[4]  # idle, iowait
        return sum(values) - idle, sum(values)

    try:
        busy_before, total_before = sample()
        time.sleep(seconds)
        busy_after, total_after = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total_after - total_before
    return (busy_after - busy_before) / total if total > 0 else None


def journeygate_command() -> str:
    for candidate in (BIN / "journeygate", ROOT / ".venv" / "bin" / "journeygate"):
        if candidate.exists():
            return str(candidate)
    raise StartupError("journeygate command not found; run `make setup` first")


@dataclass
class Servers:
    redis_url: str
    gateway_url: str
    baseline_url: str
    gateway: Server
    baseline: Server


def start_servers(
    args: argparse.Namespace, stack: contextlib.ExitStack, visitor_ids: Sequence[str]
) -> Servers:
    """Redis (unless REDIS_URL is set), the gateway and the baseline; each stopped by ``stack``."""
    redis_url = os.environ.get("REDIS_URL", "")
    if redis_url:
        print(f"redis: using REDIS_URL={redis_url}")
        wait_redis(redis_url, min(args.startup_timeout, 10.0))
    else:
        port = free_port()
        redis_server = Server.start(
            "redis",
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        )
        stack.callback(redis_server.stop)
        redis_url = f"redis://{HOST}:{port}/0"
        wait_redis(redis_url, args.startup_timeout, redis_server)
        print(f"redis: started redis-server on {HOST}:{port}")
    seed_baseline_keys(redis_url, visitor_ids)

    command = journeygate_command()
    prepared = subprocess.run(
        [command, "prepare"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    if prepared.returncode != 0:
        raise StartupError(f"journeygate prepare failed:\n{prepared.stdout}{prepared.stderr}")

    env = dict(os.environ, REDIS_URL=redis_url)
    gateway_port, baseline_port = free_port(), free_port()
    gateway = Server.start(
        "gateway",
        [command, "serve", "--host", HOST, "--port", str(gateway_port), "--workers", "1"],
        env=env,
    )
    stack.callback(gateway.stop)
    baseline = Server.start(
        "baseline",
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--baseline-server",
            str(baseline_port),
            redis_url,
        ],
        env=env,
    )
    stack.callback(baseline.stop)
    gateway_url = f"http://{HOST}:{gateway_port}"
    baseline_url = f"http://{HOST}:{baseline_port}"
    wait_http(baseline, f"{baseline_url}/healthz", args.startup_timeout)
    wait_http(gateway, f"{gateway_url}/readyz", args.startup_timeout)
    # Plugins finish background work after they are ready (the recommender precomputes every
    # product's similar items); measuring during it would charge that CPU to requests.
    time.sleep(args.settle)
    print(f"gateway: {gateway_url} (log: {gateway.log_path.relative_to(ROOT)})")
    print(f"baseline: {baseline_url} (log: {baseline.log_path.relative_to(ROOT)})")
    return Servers(redis_url, gateway_url, baseline_url, gateway, baseline)


# -- workload ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Product:
    product_id: str
    price: float


def load_products(path: Path) -> list[Product]:
    with path.open(newline="", encoding="utf-8") as handle:
        products = [
            Product(row["product_id"], float(row["price"] or 0))
            for row in csv.DictReader(handle)
            if row.get("available", "1") != "0"
        ]
    if len(products) < 2:
        raise StartupError(f"{path}: fewer than two available products")
    return products


def visitor_ids(count: int) -> list[str]:
    return [f"bench-v{index:04d}" for index in range(count)]


def decide_bodies(
    products: Sequence[Product], visitors: Sequence[str], count: int, seed: int
) -> list[bytes]:
    """Encoded product-page decisions: a random visitor, one of its sessions, a product page
    and one (other) product in the cart."""
    rng = random.Random(seed)
    bodies = []
    for _ in range(count):
        visitor = rng.choice(visitors)
        page, in_cart = rng.sample(products, 2)
        body = {
            "visitor_id": visitor,
            "session_id": f"{visitor}-s{rng.randrange(SESSIONS_PER_VISITOR)}",
            "context": {
                "page": {
                    "type": "product",
                    "product_id": page.product_id,
                    "url": f"https://shop.example/products/{page.product_id}",
                },
                "cart": {
                    "items": [
                        {
                            "product_id": in_cart.product_id,
                            "quantity": rng.randint(1, 3),
                            "price": in_cart.price,
                        }
                    ]
                },
                "channel": "web",
                "device": rng.choice(("mobile", "desktop", "tablet")),
                "locale": "en-GB",
            },
            "slots": list(SLOTS),
        }
        bodies.append(json.dumps(body).encode())
    return bodies


@dataclass(frozen=True)
class Workload:
    """What one target is sent: a method and, per request, a path and an optional body."""

    target: str
    base_url: str
    method: str
    paths: Sequence[str]
    bodies: Sequence[bytes] | None = None
    metrics_path: str | None = None

    @property
    def distinct(self) -> int:
        """How many different requests it cycles through."""
        return max(len(self.paths), len(self.bodies or ()))

    def request(self, index: int) -> tuple[str, bytes | None]:
        path = self.paths[index % len(self.paths)]
        body = self.bodies[index % len(self.bodies)] if self.bodies else None
        return self.base_url + path, body


# -- load generation ---------------------------------------------------------------------------


@dataclass
class RunResult:
    target: str
    concurrency: int
    requests: int
    ok: int
    errors: int
    error_kinds: dict[str, int]
    seconds: float
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    cpu_ms_per_request: float | None = None
    degraded: dict[str, int] | None = None


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks of sorted data."""
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Sample:
    """What one stretch of requests to one target gave: latencies of the 200s, the errors,
    the wall-clock time and the server's CPU time."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    cpu_seconds: float | None = 0.0

    def add(self, other: Sample) -> None:
        self.latencies.extend(other.latencies)
        self.errors.update(other.errors)
        self.seconds += other.seconds
        if self.cpu_seconds is None or other.cpu_seconds is None:
            self.cpu_seconds = None
        else:
            self.cpu_seconds += other.cpu_seconds

    def result(self, target: str, concurrency: int, requests: int) -> RunResult:
        ms = sorted(value * 1000 for value in self.latencies)
        ok = len(ms)
        return RunResult(
            target=target,
            concurrency=concurrency,
            requests=requests,
            ok=ok,
            errors=self.errors.total(),
            error_kinds=dict(self.errors),
            seconds=self.seconds,
            rps=ok / self.seconds if self.seconds > 0 else 0.0,
            p50_ms=percentile(ms, 0.50) if ms else None,
            p95_ms=percentile(ms, 0.95) if ms else None,
            p99_ms=percentile(ms, 0.99) if ms else None,
            mean_ms=statistics.fmean(ms) if ms else None,
            cpu_ms_per_request=(
                self.cpu_seconds * 1000 / ok if self.cpu_seconds is not None and ok else None
            ),
        )


async def drive(
    session: aiohttp.ClientSession,
    workload: Workload,
    total: int,
    concurrency: int,
    offset: int,
    time_limit_s: float,
    server: Server | None = None,
) -> Sample:
    """Send ``total`` requests from ``concurrency`` closed-loop workers (and measure the CPU
    time ``server`` spent meanwhile)."""
    sample = Sample()
    latencies, errors = sample.latencies, sample.errors
    headers = {"Content-Type": "application/json"} if workload.bodies else None
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < total:
            index = next_index
            next_index += 1
            url, body = workload.request(offset + index)
            started = time.perf_counter()
            try:
                async with session.request(
                    workload.method, url, data=body, headers=headers
                ) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[exc.__class__.__name__] += 1
                continue
            if status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors[f"HTTP {status}"] += 1

    cpu_before = server.cpu_seconds() if server is not None else None
    started = time.perf_counter()
    try:
        async with asyncio.timeout(time_limit_s):
            await asyncio.gather(*(worker() for _ in range(concurrency)))
    except TimeoutError:
        unfinished = total - len(latencies) - errors.total()
        errors[f"not finished within {time_limit_s:.0f}s"] += unfinished
    sample.seconds = time.perf_counter() - started
    cpu_after = server.cpu_seconds() if server is not None else None
    sample.cpu_seconds = (
        cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    )
    return sample


def slice_sizes(total: int, slices: int) -> list[int]:
    """``total`` requests in ``slices`` nearly equal parts (none empty)."""
    slices = max(1, min(slices, total))
    return [total // slices + (index < total % slices) for index in range(slices)]


async def measure_level(
    workloads: Sequence[tuple[Workload, Server]], concurrency: int, args: argparse.Namespace
) -> list[RunResult]:
    """Every target at one concurrency, over fresh keep-alive connections: a warm-up each,
    then ``args.requests`` each, sent in ``args.slices`` parts that alternate between the
    targets. The machine's speed drifts (other tenants of the host); alternating puts both
    targets under the same drift, so that their ratio does not depend on which of them met
    a slow minute. Each part ends when its last request is answered, which costs the slower
    target a little more: the ratio errs against the gateway."""
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    warmup = max(args.warmup, concurrency * 4)
    async with contextlib.AsyncExitStack() as stack:
        sessions = []
        for workload, _ in workloads:
            connector = aiohttp.TCPConnector(limit=concurrency)
            session = await stack.enter_async_context(
                aiohttp.ClientSession(connector=connector, timeout=timeout)
            )
            await drive(session, workload, warmup, concurrency, 0, args.run_timeout)
            sessions.append(session)
        counters_before = [
            await scrape_metrics(session, workload)
            for session, (workload, _) in zip(sessions, workloads, strict=True)
        ]
        samples = [Sample() for _ in workloads]
        offset = warmup
        for size in slice_sizes(args.requests, args.slices):
            for sample, session, (workload, server) in zip(
                samples, sessions, workloads, strict=True
            ):
                server.check_alive()
                sample.add(
                    await drive(
                        session, workload, size, concurrency, offset, args.run_timeout, server
                    )
                )
            offset += size
        counters_after = [
            await scrape_metrics(session, workload)
            for session, (workload, _) in zip(sessions, workloads, strict=True)
        ]
    results = []
    for sample, (workload, _), before, after in zip(
        samples, workloads, counters_before, counters_after, strict=True
    ):
        result = sample.result(workload.target, concurrency, args.requests)
        if before is not None and after is not None:
            result.degraded = after.degraded_since(before)
        results.append(result)
    return results


async def prime(workload: Workload, server: Server, args: argparse.Namespace) -> RunResult:
    """Send every distinct request of the pool once (at concurrency 8), before any level is
    measured: the gateway computes each product's recommendations and renders each block for
    the first time here, so that every level meets the same warm caches and the order of the
    levels does not decide which one pays for the misses. Its cost is reported apart."""
    connector = aiohttp.TCPConnector(limit=PRIMING_CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        sample = await drive(
            session,
            workload,
            workload.distinct,
            PRIMING_CONCURRENCY,
            0,
            args.run_timeout,
            server,
        )
    return sample.result(workload.target, PRIMING_CONCURRENCY, workload.distinct)


async def smoke_check(gateway_url: str, body: bytes) -> dict[str, Any]:
    """One explained decision, before any load: the gateway must answer it with 200."""
    explained = json.loads(body) | {"explain": True}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(f"{gateway_url}/v1/decide", json=explained) as response,
    ):
        text = await response.text()
        if response.status != 200:
            raise StartupError(f"gateway answered a decision with {response.status}: {text}")
        answer: dict[str, Any] = json.loads(text)
        return answer


# -- gateway counters ------------------------------------------------------------------------


@dataclass
class GatewayCounters:
    """Degradation the status code does not show, from the gateway's ``/metrics``."""

    decide_responses: dict[str, float] = field(default_factory=dict)
    server_mean_ms: float | None = None
    store_errors: dict[str, float] = field(default_factory=dict)
    plugin_failures: dict[str, float] = field(default_factory=dict)
    fallback_blocks: dict[str, float] = field(default_factory=dict)
    log_warnings: int = 0
    log_errors: int = 0

    @classmethod
    def parse(cls, text: str) -> GatewayCounters:
        from prometheus_client.parser import text_string_to_metric_families

        counters = cls()
        seconds_sum = seconds_count = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name, labels = sample.name, sample.labels
                decide_route = labels.get("route") == "/v1/decide"
                if name == "journeygate_http_requests_total" and decide_route:
                    counters.decide_responses[labels["status"]] = sample.value
                elif name == "journeygate_http_request_duration_seconds_sum" and decide_route:
                    seconds_sum = sample.value
                elif name == "journeygate_http_request_duration_seconds_count" and decide_route:
                    seconds_count = sample.value
                elif name == "journeygate_store_errors_total":
                    counters.store_errors[labels["operation"]] = sample.value
                elif name == "journeygate_plugin_failures_total":
                    key = f"{labels['plugin']}/{labels['hook']}/{labels['reason']}"
                    counters.plugin_failures[key] = sample.value
                elif name == "journeygate_fallback_blocks_total":
                    counters.fallback_blocks[labels["kind"]] = sample.value
        if seconds_count:
            counters.server_mean_ms = seconds_sum / seconds_count * 1000
        return counters

    def degraded_since(self, before: GatewayCounters) -> dict[str, int]:
        """Decisions answered with 200 but degraded since ``before``, by kind (non-zero)."""
        kinds = {
            "store errors": (self.store_errors, before.store_errors),
            "plugin failures": (self.plugin_failures, before.plugin_failures),
            "fallback blocks": (self.fallback_blocks, before.fallback_blocks),
        }
        deltas = {
            kind: round(sum(now.values()) - sum(then.values()))
            for kind, (now, then) in kinds.items()
        }
        return {kind: delta for kind, delta in deltas.items() if delta}


async def scrape_metrics(
    session: aiohttp.ClientSession, workload: Workload
) -> GatewayCounters | None:
    if workload.metrics_path is None:
        return None
    try:
        async with session.get(workload.base_url + workload.metrics_path) as response:
            if response.status != 200:
                return None
            return GatewayCounters.parse(await response.text())
    except (aiohttp.ClientError, TimeoutError):
        return None


async def gateway_counters(gateway_url: str, log_path: Path) -> GatewayCounters:
    """The whole run's counters, plus the WARNING and ERROR lines of the gateway's log."""
    workload = Workload("gateway", gateway_url, "GET", ["/metrics"], metrics_path="/metrics")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        counters = await scrape_metrics(session, workload) or GatewayCounters()
    with contextlib.suppress(OSError), log_path.open(encoding="utf-8", errors="replace") as log:
        for line in log:
            counters.log_warnings += " WARNING " in line
            counters.log_errors += " ERROR " in line
    return counters


# -- the report --------------------------------------------------------------------------------


@dataclass
class Report:
    settings: dict[str, Any]
    environment: dict[str, Any]
    runs: list[RunResult]
    ratios: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    gateway: GatewayCounters | None = None
    smoke: dict[str, Any] = field(default_factory=dict)
    priming: list[RunResult] = field(default_factory=list)

    def run(self, target: str, concurrency: int) -> RunResult | None:
        for result in self.runs:
            if result.target == target and result.concurrency == concurrency:
                return result
        return None

    def compute(self) -> None:
        for concurrency in self.settings["concurrency"]:
            gateway, baseline = self.run("gateway", concurrency), self.run("baseline", concurrency)
            if gateway is None or baseline is None:
                continue
            self.ratios.append(
                {
                    "concurrency": concurrency,
                    "rps_ratio": _ratio(gateway.rps, baseline.rps),
                    "p99_ratio": _ratio(gateway.p99_ms, baseline.p99_ms),
                }
            )
        by_concurrency = {ratio["concurrency"]: ratio for ratio in self.ratios}
        throughput = by_concurrency.get(TARGET_THROUGHPUT_CONCURRENCY, {}).get("rps_ratio")
        self.targets.append(
            {
                "name": f"gateway throughput >= {TARGET_THROUGHPUT_RATIO:.0%} of baseline "
                f"at concurrency {TARGET_THROUGHPUT_CONCURRENCY}",
                "value": throughput,
                "passed": None if throughput is None else throughput >= TARGET_THROUGHPUT_RATIO,
            }
        )
        p99 = by_concurrency.get(TARGET_P99_CONCURRENCY, {}).get("p99_ratio")
        self.targets.append(
            {
                "name": f"gateway p99 <= {TARGET_P99_RATIO:g}x baseline p99 "
                f"at concurrency {TARGET_P99_CONCURRENCY}",
                "value": p99,
                "passed": None if p99 is None else p99 <= TARGET_P99_RATIO,
            }
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "environment": self.environment,
            "priming": [asdict(result) for result in self.priming],
            "runs": [asdict(result) for result in self.runs],
            "ratios": self.ratios,
            "targets": self.targets,
            "gateway_counters": asdict(self.gateway) if self.gateway else None,
            "smoke": self.smoke,
        }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_report(report: Report) -> None:
    print()
    print(
        f"{'conc':>4}  {'target':<8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
        f" {'errors':>7} {'degraded':>8} {'cpu ms/req':>10}"
    )
    for result in report.runs:
        degraded = "-" if result.degraded is None else str(sum(result.degraded.values()))
        print(
            f"{result.concurrency:>4}  {result.target:<8} {result.rps:>8.0f}"
            f" {_fmt(result.p50_ms):>8} {_fmt(result.p95_ms):>8} {_fmt(result.p99_ms):>8}"
            f" {result.errors:>7} {degraded:>8} {_fmt(result.cpu_ms_per_request):>10}"
        )
        for kind, count in sorted(result.error_kinds.items()):
            print(f"{'':>14}error: {kind} x{count}")
        for kind, count in sorted((result.degraded or {}).items()):
            print(f"{'':>14}degraded (200 all the same): {kind} x{count}")
    print()
    print(f"{'conc':>4}  {'req/s gateway/baseline':>22}  {'p99 gateway/baseline':>20}")
    for ratio in report.ratios:
        rps_ratio, p99_ratio = ratio["rps_ratio"], ratio["p99_ratio"]
        rps_text = "-" if rps_ratio is None else f"{rps_ratio:.0%}"
        p99_text = "-" if p99_ratio is None else f"{p99_ratio:.2f}x"
        print(f"{ratio['concurrency']:>4}  {rps_text:>22}  {p99_text:>20}")
    print()
    for target in report.targets:
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[target["passed"]]
        value = target["value"]
        shown = "not measured" if value is None else f"measured {value:.2f}"
        print(f"{verdict}  {target['name']} ({shown})")
    counters = report.gateway
    if counters is not None:
        print()
        print("gateway counters for the whole run, warm-up included (/metrics, log):")
        print(f"  /v1/decide responses by status: {_counts(counters.decide_responses)}")
        print(f"  server-side mean /v1/decide time: {_fmt(counters.server_mean_ms, 3)} ms")
        print(f"  store errors: {_counts(counters.store_errors)}")
        print(f"  plugin failures: {_counts(counters.plugin_failures)}")
        print(
            f"  fallback blocks (another plugin asked first): {_counts(counters.fallback_blocks)}"
        )
        print(f"  log lines: {counters.log_warnings} WARNING, {counters.log_errors} ERROR")


def _counts(values: dict[str, float]) -> str:
    if not values:
        return "none"
    return ", ".join(f"{key}={value:.0f}" for key, value in sorted(values.items()))


# -- the benchmark -------------------------------------------------------------------------------


async def run_benchmark(args: argparse.Namespace, servers: Servers, visitors: list[str]) -> Report:
    products = load_products(CATALOG_PATH)
    bodies = decide_bodies(products, visitors, args.body_pool, args.seed)
    rng = random.Random(args.seed + 1)
    baseline_paths = [f"/profile/{rng.choice(visitors)}" for _ in range(args.body_pool)]
    workloads = (
        (
            Workload("gateway", servers.gateway_url, "POST", ["/v1/decide"], bodies, "/metrics"),
            servers.gateway,
        ),
        (Workload("baseline", servers.baseline_url, "GET", baseline_paths), servers.baseline),
    )
    busy = await asyncio.to_thread(cpu_busy_fraction)
    if busy is not None:
        note = " - other processes are busy, figures will be skewed" if busy > 0.2 else ""
        print(f"CPU busy before the run: {busy:.0%} of {os.cpu_count()} cpus{note}")
    answer = await smoke_check(servers.gateway_url, bodies[0])
    explain = answer.get("explain", {})
    smoke = {
        "blocks": [
            {
                "slot": block.get("slot"),
                "source": block.get("source"),
                "items": len(block.get("items") or []),
                "offer": (block.get("offer") or {}).get("id"),
                "html_chars": len(block.get("html") or ""),
            }
            for block in answer.get("blocks", [])
        ],
        "store_available": explain.get("store", {}).get("available"),
        "duration_ms": explain.get("duration_ms"),
    }
    print(f"first decision: {json.dumps(smoke)}")
    report = Report(
        settings={
            "requests": args.requests,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "slices": args.slices,
            "visitors": args.visitors,
            "seed": args.seed,
            "redis": "REDIS_URL" if os.environ.get("REDIS_URL") else "redis-server (own)",
        },
        environment={
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "cpu_busy_before_run": busy,
        },
        runs=[],
        smoke=smoke,
    )
    for workload, server in workloads:
        primed = await prime(workload, server, args)
        report.priming.append(primed)
        print(
            f"primed {workload.target}: every one of the {primed.requests} distinct requests "
            f"once, {primed.rps:,.0f} req/s, "
            f"{_fmt(primed.cpu_ms_per_request)} cpu ms/req",
            flush=True,
        )
    for concurrency in args.concurrency:
        names = " and ".join(workload.target for workload, _ in workloads)
        print(
            f"running {names} at concurrency {concurrency} ({args.requests} requests each, "
            f"alternating in {len(slice_sizes(args.requests, args.slices))} parts)...",
            flush=True,
        )
        report.runs.extend(await measure_level(workloads, concurrency, args))
    report.gateway = await gateway_counters(servers.gateway_url, servers.gateway.log_path)
    report.compute()
    return report


def concurrency_levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from None
    if not levels or any(level < 1 for level in levels):
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return levels


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer: {text!r}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark POST /v1/decide against a bare aiohttp + Redis handler.",
        epilog="Set REDIS_URL to use an existing Redis instead of starting redis-server.",
    )
    parser.add_argument("--requests", type=positive_int, default=3000, help="per level and target")
    parser.add_argument(
        "--concurrency", type=concurrency_levels, default=[1, 8, 32], help="e.g. 1,8,32"
    )
    parser.add_argument("--warmup", type=int, default=200, help="warm-up requests per run")
    parser.add_argument(
        "--slices",
        type=positive_int,
        default=3,
        help="parts each level's requests are sent in, alternating between the targets",
    )
    parser.add_argument("--visitors", type=positive_int, default=500, help="distinct visitors")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated requests")
    parser.add_argument("--body-pool", type=positive_int, default=2000, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument(
        "--request-timeout", type=float, default=10.0, help="seconds before a request is an error"
    )
    parser.add_argument(
        "--run-timeout", type=float, default=60.0, help="seconds one measured run may take"
    )
    parser.add_argument(
        "--startup-timeout", type=float, default=90.0, help="seconds a server may take to start"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="seconds to wait after /readyz for plugins' background warm-up",
    )
    parser.add_argument(
        "--baseline-server",
        nargs=2,
        metavar=("PORT", "REDIS_URL"),
        help="internal: run the baseline server (started by the benchmark itself)",
    )
    return parser.parse_args(argv)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the servers are stopped on the way out."""
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline_server:
        port, redis_url = args.baseline_server
        return serve_baseline(int(port), redis_url)
    visitors = visitor_ids(args.visitors)
    return run_measured(
        lambda stack: start_servers(args, stack, visitors),
        lambda servers, stack: run_benchmark(args, servers, visitors),
        print_report,
        args.json,
    )


def run_measured(
    setup: Callable[[contextlib.ExitStack], Any],
    measure: Callable[[Any, contextlib.ExitStack], Coroutine[Any, Any, Any]],
    report: Callable[[Any], None],
    json_path: Path | None,
) -> int:
    """Start what a benchmark needs, measure, print the report (and its JSON); every process
    it started is stopped on any exit, Ctrl-C and SIGTERM included. Shared by the benchmarks."""
    try:
        with _sigterm_exits(), contextlib.ExitStack() as stack:
            try:
                started = setup(stack)
                results = asyncio.run(measure(started, stack))
            except StartupError as exc:
                print(f"bench: {exc}", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        print("bench: interrupted; processes stopped", file=sys.stderr)
        return 130
    report(results)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results.as_json(), indent=2) + "\n", encoding="utf-8")
        print(f"\nresults written to {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
