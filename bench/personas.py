"""Benchmark of the personas plugin: bulk profile writes and live assignment, with baselines.

What runs
    ``redis-server`` on a free port of 127.0.0.1 (its own, no persistence), or the Redis at
    ``REDIS_URL`` when set (database 0 of it gets ``bench-persona-*`` profiles, 90-day TTL).
    Everything else runs in this process.

What is measured
    1. Writing one persona per customer (``--customers``, default 4,338: the full Online
       Retail data's customers), as ``journeygate segment`` does, three ways on the same
       store, each on its own ids: ``update_profile`` one visitor at a time (baseline: one
       round trip each); ``update_profile`` under ``asyncio.gather`` limited to 32 in flight;
       and ``update_profiles`` with 500 visitors per round trip (what the command uses).
       Reported: seconds and profiles/s, best of ``--repeat`` runs.
    2. The cost of ``journeygate_enrich_visitor`` per decision on the event loop: the
       plugin's function over profiles with event aggregates and no stored persona (nearest
       centroid over the live features + the default rule segments), against profiles with a
       stored persona (rules only), as the baseline. The model is fitted on the bundled
       sample; profiles are drawn from its customers' real features. Reported: microseconds
       per call (mean over ``--calls``).

Usage
    .venv/bin/python bench/personas.py [--customers 4338] [--calls 20000] [--repeat 3]

Exit status: 0 when the benchmark ran.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import redis

from jg_personas.clustering import fit_personas
from jg_personas.commands import PROFILE_CHUNK
from jg_personas.features import customer_features
from jg_personas.plugin import visitor_segments
from jg_personas.settings import PersonaSettings
from journeygate.config import PROJECT_ROOT, StoreConfig
from journeygate.retail_data import read_online_retail
from journeygate.store import ProfileStore, open_store

SAMPLE = PROJECT_ROOT / "data" / "sample" / "online_retail_sample.csv.gz"
GATHER_LIMIT = 32
DAY = 86400.0


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """``REDIS_URL``, or a redis-server of our own on a free port (stopped afterwards)."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not installed and REDIS_URL is not set")
    options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([server, *options], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(500):
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                break
            time.sleep(0.01)
        yield url
    finally:
        client.close()
        process.terminate()
        process.wait()


async def one_at_a_time(store: ProfileStore, updates: list[tuple[str, dict[str, Any]]]) -> None:
    for visitor_id, fields in updates:
        await store.update_profile(visitor_id, fields)


async def gathered(store: ProfileStore, updates: list[tuple[str, dict[str, Any]]]) -> None:
    limit = asyncio.Semaphore(GATHER_LIMIT)

    async def write(visitor_id: str, fields: dict[str, Any]) -> None:
        async with limit:
            await store.update_profile(visitor_id, fields)

    await asyncio.gather(*(write(visitor_id, fields) for visitor_id, fields in updates))


async def pipelined(store: ProfileStore, updates: list[tuple[str, dict[str, Any]]]) -> None:
    for start in range(0, len(updates), PROFILE_CHUNK):
        await store.update_profiles(updates[start : start + PROFILE_CHUNK])


Writer = Callable[[ProfileStore, list[tuple[str, dict[str, Any]]]], Awaitable[None]]


async def bench_writes(url: str, customers: int, repeat: int) -> None:
    store = open_store(StoreConfig(redis_url=url, timeout_ms=10_000), "redis")
    modes: list[tuple[str, Writer]] = [
        ("update_profile, one at a time (baseline)", one_at_a_time),
        (f"update_profile, gather ({GATHER_LIMIT} in flight)", gathered),
        (f"update_profiles, {PROFILE_CHUNK} per round trip", pipelined),
    ]
    print(f"1. persona written to {customers} profiles (best of {repeat})")
    try:
        for index, (label, writer) in enumerate(modes):
            best = float("inf")
            for run in range(repeat):
                updates = [
                    (f"bench-persona-{index}-{run}-{i}", {"persona": "p", "persona_model": "v"})
                    for i in range(customers)
                ]
                started = time.perf_counter()
                await writer(store, updates)
                best = min(best, time.perf_counter() - started)
            print(f"   {label:<45} {best:7.3f} s  {customers / best:>9,.0f} profiles/s")
    finally:
        await store.close()


def bench_enrich(calls: int) -> None:
    table = customer_features(read_online_retail(SAMPLE))
    model, labels = fit_personas(table)
    segments = PersonaSettings().segments
    now = time.time()
    aggregates = [
        {
            "orders": row.orders,
            "revenue": row.revenue,
            "refunds": row.refunds,
            "first_order_at": now - row.tenure_days * DAY,
            "last_order_at": now - row.days_since_last_order * DAY,
        }
        for row in table.itertuples()
    ]
    stored = [
        {**profile, "persona": model.personas[label].id}
        for profile, label in zip(aggregates, labels, strict=True)
    ]
    print(f"2. journeygate_enrich_visitor per decision (mean of {calls} calls)")
    for label, profiles in (
        ("stored persona + rules (baseline)", stored),
        ("nearest centroid + rules", aggregates),
    ):
        started = time.perf_counter()
        for i in range(calls):
            visitor_segments(model, segments, profiles[i % len(profiles)], now)
        micros = (time.perf_counter() - started) / calls * 1e6
        print(f"   {label:<45} {micros:7.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=4338)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with redis_server() as url:
        asyncio.run(bench_writes(url, args.customers, args.repeat))
    bench_enrich(args.calls)


if __name__ == "__main__":
    main()
