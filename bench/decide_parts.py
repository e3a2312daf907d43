"""Where a decision's CPU goes: the server's CPU per request for requests that each do a part
of one, on the servers ``bench/decide.py`` starts, in one run.

What runs
    Redis, the gateway (one worker, every installed plugin) and the bare aiohttp + Redis
    baseline, started as ``bench/decide.py`` starts them. Then each kind of request below is
    sent ``--requests`` times at concurrency ``--concurrency`` (32), the kinds taking turns
    for ``--rounds`` rounds (5), so that all of them meet the same drift of the machine's
    speed. For each kind: the server process's CPU time per request (from ``/proc``),
    the median over the rounds and the lowest.

The kinds, each adding one part to the one above it
    * ``baseline /healthz`` and ``gateway /healthz``: each app's HTTP floor (aiohttp, the
      socket calls; the gateway's middleware with metrics and CORS);
    * ``baseline /profile``: the floor plus one Redis GET through redis-py: decide.py's
      baseline request;
    * ``decide, rejected``: a POST whose body is read and parsed, then refused by validation
      with a JSON error;
    * ``decide, offer slot`` and ``decide, recommendations slot``: one decision with one of
      the benchmark's two slots (the profile load, the visitor's enrichment, the slot,
      the response);
    * ``decide, both slots``: decide.py's request.

How to read it
    With ``--distinct 1`` (the default) every request of a kind is the same and every cache
    of the gateway stays warm: what remains is the cost of the code, with less noise
    than decide.py's figures (a few percent between rounds), so that a change to one part
    shows. ``--distinct 2000`` sends decide.py's mix of visitors and product pages (colder
    caches, higher figures). Only the differences between lines of the same run mean
    anything: the machine's speed drifts between runs.

Usage
    .venv/bin/python bench/decide_parts.py [--requests 5000] [--rounds 5] [--distinct 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import aiohttp
import orjson

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # the sibling benchmark whose servers and load this reuses
    sys.path.insert(0, str(BENCH))

import decide  # noqa: E402

BASELINE_FLOOR = "baseline /healthz"
GATEWAY_FLOOR = "gateway /healthz"
REJECTED = "decide, rejected"


class Kind(NamedTuple):
    """One kind of request: what is sent, the server that answers it, and the kind it adds a
    part to (the difference to that one's figure is printed beside its own)."""

    workload: decide.Workload
    server: decide.Server
    over: str | None = None


def kinds_of_request(
    servers: decide.Servers, visitors: Sequence[str], distinct: int, seed: int
) -> list[Kind]:
    """Every kind of request, in the order they are printed."""
    products = decide.load_products(decide.CATALOG_PATH)
    encoded = decide.decide_bodies(products, visitors, distinct, seed)
    bodies = [orjson.loads(body) for body in encoded]
    gateway, baseline = servers.gateway_url, servers.baseline_url

    def deciding(name: str, kinds: Sequence[str]) -> Kind:
        slots = [slot for slot in decide.SLOTS if slot["kind"] in kinds]
        requests = [orjson.dumps({**body, "slots": slots}) for body in bodies]
        workload = decide.Workload(name, gateway, "POST", ["/v1/decide"], requests)
        return Kind(workload, servers.gateway, REJECTED)

    rejected = [orjson.dumps({"visitor_id": body["visitor_id"]}) for body in bodies]
    profiles = [f"/profile/{body['visitor_id']}" for body in bodies]
    return [
        Kind(decide.Workload(BASELINE_FLOOR, baseline, "GET", ["/healthz"]), servers.baseline),
        Kind(
            decide.Workload("baseline /profile", baseline, "GET", profiles),
            servers.baseline,
            BASELINE_FLOOR,
        ),
        Kind(
            decide.Workload(GATEWAY_FLOOR, gateway, "GET", ["/healthz"]),
            servers.gateway,
            BASELINE_FLOOR,
        ),
        Kind(
            decide.Workload(REJECTED, gateway, "POST", ["/v1/decide"], rejected),
            servers.gateway,
            GATEWAY_FLOOR,
        ),
        deciding("decide, offer slot", ["offer"]),
        deciding("decide, recommendations slot", ["recommendations"]),
        deciding("decide, both slots", ["offer", "recommendations"]),
    ]


async def measure(kinds: Sequence[Kind], args: argparse.Namespace) -> dict[str, list[float]]:
    """CPU seconds per request of every kind, one figure per round."""
    cpu: dict[str, list[float]] = {kind.workload.target: [] for kind in kinds}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for kind in kinds:  # warm-up: every distinct request once
            workload = kind.workload
            await decide.drive(session, workload, workload.distinct, args.concurrency, 0, 60.0)
        for round_index in range(args.rounds):
            for kind in kinds:
                sample = await decide.drive(
                    session,
                    kind.workload,
                    args.requests,
                    args.concurrency,
                    round_index * args.requests,
                    args.run_timeout,
                    kind.server,
                )
                if sample.cpu_seconds is not None:
                    cpu[kind.workload.target].append(sample.cpu_seconds / args.requests)
            print(f"round {round_index + 1} of {args.rounds} done", file=sys.stderr)
    return cpu


def print_table(kinds: Sequence[Kind], cpu: dict[str, list[float]]) -> None:
    medians = {name: statistics.median(figures) * 1e6 for name, figures in cpu.items() if figures}
    print(f"\n{'request':30s} {'median µs':>10s} {'lowest µs':>10s}  added over")
    for kind in kinds:
        name = kind.workload.target
        if name not in medians:
            print(f"{name:30s} {'-':>10s}")
            continue
        added = ""
        if kind.over in medians:
            added = f"{medians[name] - medians[kind.over]:+7.1f} µs  {kind.over}"
        print(f"{name:30s} {medians[name]:10.1f} {min(cpu[name]) * 1e6:10.1f}  {added}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests", type=decide.positive_int, default=5000, help="per kind and round"
    )
    parser.add_argument("--rounds", type=decide.positive_int, default=5)
    parser.add_argument("--concurrency", type=decide.positive_int, default=32)
    parser.add_argument(
        "--distinct", type=decide.positive_int, default=1, help="distinct requests per kind"
    )
    parser.add_argument("--visitors", type=decide.positive_int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--request-timeout", type=float, default=10.0)
    parser.add_argument("--run-timeout", type=float, default=120.0)
    parser.add_argument("--startup-timeout", type=float, default=90.0)
    parser.add_argument("--settle", type=float, default=3.0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    visitors = decide.visitor_ids(args.visitors)
    with contextlib.ExitStack() as stack:
        try:
            servers = decide.start_servers(args, stack, visitors)
        except decide.StartupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        kinds = kinds_of_request(servers, visitors, args.distinct, args.seed)
        print_table(kinds, asyncio.run(measure(kinds, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
