"""Benchmark of experiments: what they add to a decision, and how fast exposures and outcomes
are recorded in Redis, each with a baseline measured in the same run.

1. Decision cost: ``Pipeline.decide`` called directly (no HTTP; in-process store; built-in
   plugins only; one offer slot and one recommendations slot), ``--decisions`` times, with the
   offer slot under a running fixed-split experiment and, as the baseline, with no experiment.
   Per-decision time includes arm assignment (``prepare``) and queueing the exposure
   (``observe``); the background writes run concurrently, as in the gateway.
2. Recording: ``RedisExperimentStore.record_exposures`` and ``.attribute`` in batches of 500
   against a ``redis-server`` of this run's own. Baseline: one ``HSET`` per exposure in one
   pipeline per batch (the least a per-visitor record can cost).

    .venv/bin/python bench/experiments.py [--decisions 5000] [--exposures 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError

from journeygate import appkeys
from journeygate.app import create_app
from journeygate.catalog import build_catalog_file
from journeygate.config import ExperimentsConfig, load_config
from journeygate.experiments.storage import Exposure, Outcome, RedisExperimentStore
from journeygate.model import DecideRequest, RequestContext, SlotRequest

EXPERIMENT = """
[[experiment]]
id = "bench"
slot = "hero"
holdout = 0.1
[[experiment.arms]]
name = "a"
[[experiment.arms]]
name = "b"
params = { offer_id = "b" }
"""
BATCH = 500


async def decide_timing(workdir: Path, experiments_file: str, decisions: int) -> list[float]:
    """Microseconds per decision, for ``decisions`` visitors."""
    config = load_config(
        overrides={
            "store": {"backend": "memory"},
            "plugins": {"load_entrypoints": False},
            "catalog": {"path": str(workdir / "catalog.csv")},
            "experiments": {"file": experiments_file},
        }
    )
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    try:
        pipeline = runner.app[appkeys.PIPELINE]
        slots = (
            SlotRequest("hero", "offer"),
            SlotRequest("recs", "recommendations", strategy="popular", limit=4),
        )
        timings = []
        for index in range(decisions):
            request = DecideRequest(f"bench-{index}", None, RequestContext(), slots)
            started = time.perf_counter()
            await pipeline.decide(request)
            timings.append((time.perf_counter() - started) * 1e6)
        return timings[decisions // 10 :]  # without the warm-up
    finally:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def recording(url: str, count: int) -> tuple[float, float, float]:
    """Exposures/s, outcomes/s, and the baseline HSETs/s."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    store = RedisExperimentStore(client, ExperimentsConfig())
    now = time.time()
    exposures = [
        Exposure("bench", "ab"[i % 2], f"v{i}", f"d{i}", "hero", 0.45, now) for i in range(count)
    ]
    started = time.perf_counter()
    for i in range(0, count, BATCH):
        await store.record_exposures(exposures[i : i + BATCH])
    exposure_rate = count / (time.perf_counter() - started)
    outcomes = [
        Outcome("click", f"v{i}", now, f"d{i}", "hero") if i % 2 else
        Outcome("order", f"v{i}", now + 1, revenue=12.5, order_id=f"o{i}")
        for i in range(count)
    ]  # fmt: skip
    started = time.perf_counter()
    for i in range(0, count, BATCH):
        await store.attribute(outcomes[i : i + BATCH], {"bench": "click"})
    outcome_rate = count / (time.perf_counter() - started)
    counts = (await store.arm_counts(["bench"]))["bench"]
    assert sum(c.exposed for c in counts.values()) == count
    assert sum(c.clicks + c.orders for c in counts.values()) == count
    started = time.perf_counter()
    for i in range(0, count, BATCH):
        pipe = client.pipeline(transaction=False)
        for e in exposures[i : i + BATCH]:
            pipe.hset(f"base:{{{e.visitor_id}}}", e.experiment, e.arm)
        await pipe.execute()
    baseline_rate = count / (time.perf_counter() - started)
    await client.aclose()
    return exposure_rate, outcome_rate, baseline_rate


async def main(decisions: int, exposures: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        build_catalog_file(
            load_config().resolve_path("data/sample/online_retail_sample.csv.gz"),
            workdir / "catalog.csv",
        )
        experiments_file = workdir / "experiments.toml"
        experiments_file.write_text(EXPERIMENT, encoding="utf-8")
        baseline = await decide_timing(workdir, "", decisions)
        with_experiment = await decide_timing(workdir, str(experiments_file), decisions)
    print(f"1. Pipeline.decide, {len(baseline)} decisions each (after warm-up), microseconds")
    print(f"{'':<22} {'p50':>8} {'p99':>8} {'mean':>8}")
    for label, timings in (("no experiment", baseline), ("experiment on 1 slot", with_experiment)):
        ordered = sorted(timings)
        p99 = ordered[int(len(ordered) * 0.99)]
        print(
            f"{label:<22} {statistics.median(timings):>8.1f} {p99:>8.1f} "
            f"{statistics.fmean(timings):>8.1f}"
        )
    added = statistics.median(with_experiment) - statistics.median(baseline)
    print(f"   added per decision: {added:.1f} us (p50)")
    server = shutil.which("redis-server")
    if server is None:
        print("2. skipped: redis-server is not installed")
        return
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        client = aioredis.Redis.from_url(url)
        for _ in range(100):
            try:
                await client.ping()
                break
            except (OSError, RedisConnectionError):
                await asyncio.sleep(0.05)
        await client.aclose()
        exposure_rate, outcome_rate, baseline_rate = await recording(url, exposures)
    finally:
        process.kill()
        process.wait()
    print(f"2. Redis, {exposures} each, batches of {BATCH}")
    print(f"   exposures recorded   {exposure_rate:>9,.0f}/s")
    print(f"   clicks+orders credited {outcome_rate:>7,.0f}/s")
    print(f"   baseline: one HSET each {baseline_rate:>6,.0f}/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=5000)
    parser.add_argument("--exposures", type=int, default=20000)
    args = parser.parse_args()
    asyncio.run(main(args.decisions, args.exposures))
