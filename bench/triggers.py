"""What the triggers plugin costs the event worker, against the worker without it, in one run.

What runs
    ``redis-server`` on a free port (its own, no persistence) and, in this process, the
    worker's apply path: ``Applier.apply`` (one Lua call per visitor) followed by the
    observers, in batches of ``--batch`` events (100 by default; a worker's batch is what one
    read of every stream shard returns: a few events when it keeps up, thousands in a
    backlog). With triggers, the plugin is started as in a worker (``role="worker"``, so its
    timer scheduler runs too, firing what comes due) with the shipped ``config/triggers.toml``
    and one webhook endpoint (nothing delivers: the messages stay in the outbox); its batch
    observer (``journeygate_observe_events``) runs the engine on each batch before
    ``apply`` returns, as the worker waits for it before acknowledging the batch.

The events
    The bundled Online Retail sample converted by ``journeygate.events.retail_events``
    (product views, cart adds, checkouts, orders, refunds), the first ``--events`` of them,
    their times squeezed into the last hour (order kept), so that every trigger is live:
    carts set timers that checkouts cancel, orders set follow-ups and check the high-value
    rule, every customer gets an inactivity timer. No customer gave marketing consent, so
    marketing fires end as ``suppressed:no_consent`` (logged, not queued). Each run labels
    its user and message ids, so nothing is skipped as already applied.

What is measured
    events/s applied, and CPU ms per 1,000 events of this process and of redis-server, for
    the worker without plugins (baseline) and with the triggers plugin, alternating
    ``--rounds`` times (the load of a shared machine drifts); the best round of each is
    printed with the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from jg_triggers.plugin import TriggersPlugin
from journeygate.config import PROJECT_ROOT, AppConfig, load_config
from journeygate.events.apply import Applier
from journeygate.events.retail_events import retail_events, select_lines
from journeygate.events.schema import parse_native
from journeygate.registry import build_plugin_manager
from journeygate.retail_data import read_online_retail
from journeygate.store import open_store

SAMPLE = PROJECT_ROOT / "data" / "sample" / "online_retail_sample.csv.gz"
HOUR = 3600.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_events(count: int) -> list[dict[str, Any]]:
    events = retail_events(select_lines(read_online_retail(SAMPLE)))[:count]
    return events


def squeezed(events: Sequence[dict[str, Any]], label: str, now: float) -> list[dict[str, Any]]:
    """The events as internal records, times mapped into the last hour, ids labelled."""
    raw = [
        {
            **event,
            "user_id": f"{label}-{event['user_id']}",
            "message_id": f"{label}:{event['message_id']}",
        }
        for event in events
    ]
    parsed = [parse_native(event, "e", now, 0.0, 300.0) for event in raw]
    first, last = parsed[0]["t"], parsed[-1]["t"]
    span = max(last - first, 1.0)
    for record in parsed:
        record["t"] = round(now - HOUR + (record["t"] - first) / span * (HOUR - 1), 3)
    return parsed


def config_for(redis_url: str, triggers: bool) -> AppConfig:
    overrides: dict[str, Any] = {
        "store": {"redis_url": redis_url, "timeout_ms": 5000},
        "plugins": {"load_entrypoints": False, "default_budget_ms": 1000},
        "webhooks": {"endpoints": {"crm": {"url": "http://127.0.0.1:9/crm", "secret": "bench"}}},
    }
    if triggers:
        file = str(PROJECT_ROOT / "config" / "triggers.toml")
        overrides["plugin"] = {"triggers": {"file": file}}
    return load_config(environ={}, overrides=overrides)


async def run_once(
    redis_url: str, events: list[dict[str, Any]], triggers: bool, redis_pid: int, batch: int
) -> tuple[float, float, float]:
    """events/s, this process's and redis-server's CPU ms per 1,000 events."""
    config = config_for(redis_url, triggers)
    store = open_store(config.store, "redis", config.events)
    plugin = TriggersPlugin() if triggers else None
    extra = (("triggers", plugin),) if plugin is not None else ()
    pm = build_plugin_manager(config, load_entrypoints=False, extra_plugins=extra)
    if plugin is not None:
        await plugin.journeygate_startup(config=config, store=store, role="worker")
    applier = Applier(store, config, pm)
    own, server = time.process_time(), cpu_s(redis_pid)
    started = time.perf_counter()
    for index in range(0, len(events), batch):
        await applier.apply(events[index : index + batch])
    elapsed = time.perf_counter() - started
    own, server = time.process_time() - own, cpu_s(redis_pid) - server
    if plugin is not None:
        await plugin.journeygate_shutdown()
    await store.close()
    per_k = 1000 / len(events)
    return len(events) / elapsed, own * 1000 * per_k, server * 1000 * per_k


async def main(args: argparse.Namespace) -> None:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        events = load_events(args.events)
        print(
            f"load average {os.getloadavg()[0]:.2f}; {len(events)} events per run, "
            f"{args.batch} per batch"
        )
        results: dict[str, list[tuple[float, float, float]]] = {"baseline": [], "triggers": []}
        for round_ in range(args.rounds):
            for mode in ("baseline", "triggers"):
                label = f"r{round_}{mode[0]}"
                run_events = squeezed(events, label, time.time())
                result = await run_once(
                    url, run_events, mode == "triggers", process.pid, args.batch
                )
                results[mode].append(result)
                print(f"  round {round_ + 1} {mode:8}  {result[0]:8.0f} events/s")
        log = client.xlen("jg:{triggers/log}")
        timers = sum(client.zcard(f"jg:{{triggers/{k}}}:due") for k in range(8))
        client.close()
        best = {mode: max(runs) for mode, runs in results.items()}
        print("\nmode       events/s   cpu ms/1k events (this process)   (redis-server)")
        for mode, (rate, own, redis_cpu) in best.items():
            print(f"{mode:9} {rate:9.0f}   {own:31.1f}   {redis_cpu:14.1f}")
        ratio = best["triggers"][0] / best["baseline"][0]
        print(f"\nwith triggers: {ratio:.0%} of the baseline's rate")
        print(f"trigger log entries: {log}; timers pending at the end: {timers}")
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100, help="events per Applier.apply call")
    asyncio.run(main(parser.parse_args()))
