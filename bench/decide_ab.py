"""Two versions of the gateway against each other: the CPU one decision costs each.

On these shared 2-vCPU machines a whole run of ``bench/decide.py`` drifts by 10% and more
from one minute to the next, so comparing runs of two commits one after the other cannot
tell a 5% change from noise. This benchmark runs both versions at once, on one Redis:

    * ``new``: the gateway of this checkout;
    * ``old``: the gateway of another checkout (``--old PATH``, e.g. a ``git worktree add``
      of the commit to compare with), started with its ``src`` and ``plugins`` first on
      ``PYTHONPATH`` (same virtualenv, same config, models and catalog);

primes both with every distinct request, then, per concurrency level, sends ``--rounds``
rounds of ``--requests`` product-page decisions (decide.py's mix) to each, the order
alternating per round, and reads each server's CPU time from ``/proc``. It prints each
version's CPU per decision and the ratio new/old, total and per round. Run it once with both
sides at the same commit to see the noise floor (about ±3% over 16 rounds here).

    git worktree add /tmp/jg-old <commit> && ln -s "$PWD/var" /tmp/jg-old/var
    .venv/bin/python bench/decide_ab.py --old /tmp/jg-old
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # the sibling benchmark whose servers and load this reuses
    sys.path.insert(0, str(BENCH))

import decide  # noqa: E402

VERSIONS = ("new", "old")
WARMUP = 200


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="root of the other checkout")
    parser.add_argument("--concurrency", default="8,32", help="e.g. 8,32")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1000, help="per round and version")
    parser.add_argument("--distinct", type=int, default=2000, help="distinct requests")
    parser.add_argument("--visitors", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--settle", type=float, default=6.0)
    parser.add_argument("--request-timeout", type=float, default=10.0)
    parser.add_argument("--run-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    args.concurrency = [int(level) for level in args.concurrency.split(",")]
    if not (args.old / "src" / "journeygate").is_dir():
        parser.error(f"--old {args.old}: no src/journeygate there")
    return args


def start(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, tuple[Any, str]]:
    """Redis and both gateways; returns each version's server and URL."""
    port = decide.free_port()
    redis = decide.Server.start(
        "ab-redis",
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
    )
    stack.callback(redis.stop)
    redis_url = f"redis://{decide.HOST}:{port}/0"
    decide.wait_redis(redis_url, 10, redis)
    command = decide.journeygate_command()
    old_path = f"{args.old.resolve() / 'src'}{os.pathsep}{args.old.resolve() / 'plugins'}"
    servers = {}
    for version in VERSIONS:
        env = dict(os.environ, REDIS_URL=redis_url)
        if version == "old":
            env["PYTHONPATH"] = old_path
        gateway_port = decide.free_port()
        server = decide.Server.start(
            f"ab-{version}",
            [command, "serve", "--host", decide.HOST, "--port", str(gateway_port)],
            env=env,
        )
        stack.callback(server.stop)
        servers[version] = (server, f"http://{decide.HOST}:{gateway_port}")
    for server, url in servers.values():
        decide.wait_http(server, f"{url}/readyz", 90)
    return servers


async def measure(args: argparse.Namespace, servers: dict[str, tuple[Any, str]]) -> None:
    await asyncio.sleep(args.settle)  # the recommender's warm-up, as decide.py waits
    products = decide.load_products(decide.CATALOG_PATH)
    bodies = decide.decide_bodies(
        products, decide.visitor_ids(args.visitors), args.distinct, args.seed
    )
    workloads = {
        version: decide.Workload(version, url, "POST", ["/v1/decide"], bodies)
        for version, (_, url) in servers.items()
    }
    for version, (server, _) in servers.items():
        await decide.prime(workloads[version], server, args)
    for concurrency in args.concurrency:
        cpu = dict.fromkeys(VERSIONS, 0.0)
        answered = dict.fromkeys(VERSIONS, 0)
        ratios = []
        for index in range(args.rounds):
            per_round = {}
            for version in VERSIONS if index % 2 == 0 else VERSIONS[::-1]:
                server = servers[version][0]
                connector = aiohttp.TCPConnector(limit=concurrency)
                async with aiohttp.ClientSession(connector=connector) as session:
                    workload = workloads[version]
                    await decide.drive(session, workload, WARMUP, concurrency, 0, args.run_timeout)
                    sample = await decide.drive(
                        session,
                        workload,
                        args.requests,
                        concurrency,
                        index * args.requests,
                        args.run_timeout,
                        server,
                    )
                if sample.cpu_seconds is None or not sample.latencies:
                    raise decide.StartupError(f"{version}: no CPU time or no answers")
                cpu[version] += sample.cpu_seconds
                answered[version] += len(sample.latencies)
                per_round[version] = sample.cpu_seconds / len(sample.latencies)
            ratios.append(per_round["new"] / per_round["old"])
        each = {version: cpu[version] / answered[version] * 1e6 for version in VERSIONS}
        print(
            f"concurrency {concurrency}: new {each['new']:.0f} µs, old {each['old']:.0f} µs "
            f"of CPU per decision; new/old {each['new'] / each['old']:.3f} "
            f"(median of rounds {statistics.median(ratios):.3f}, "
            f"rounds {min(ratios):.2f}-{max(ratios):.2f})",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with contextlib.ExitStack() as stack:
            servers = start(args, stack)
            asyncio.run(measure(args, servers))
    except decide.StartupError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
