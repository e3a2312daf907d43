"""``journeygate experiments report [ID]``: the results of one experiment (or all), read from
Redis, or from a running gateway's ``/v1/experiments/{id}/results`` with ``--url``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

import aiohttp

from journeygate.cliutil import fail
from journeygate.config import AppConfig

API_KEY_ENV = "JOURNEYGATE_API_KEY"


async def _from_redis(config: AppConfig, ids: list[str]) -> list[dict[str, Any]]:
    from journeygate.experiments.config import load_experiments
    from journeygate.experiments.report import experiment_results
    from journeygate.experiments.storage import experiment_store
    from journeygate.store import open_store

    experiments = {experiment.id: experiment for experiment in load_experiments(config)}
    store = open_store(config.store, "redis", config.events)
    try:
        counts = await experiment_store(
            store, config.experiments, config.store.memory_max_visitors
        ).arm_counts(ids)
    finally:
        await store.close()
    return [experiment_results(experiments[i], counts.get(i, {})) for i in ids]


async def _from_gateway(url: str, api_key: str, ids: list[str]) -> list[dict[str, Any]]:
    results = []
    headers = {"X-API-Key": api_key}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for experiment_id in ids:
            path = f"{url.rstrip('/')}/v1/experiments/{experiment_id}/results"
            async with session.get(path, headers=headers) as response:
                body = await response.json()
                if response.status != 200:
                    message = body.get("error", {}).get("message", response.reason)
                    raise RuntimeError(f"{path}: {response.status} {message}")
                results.append(body)
    return results


def report_command(args: argparse.Namespace, config: AppConfig) -> int:
    from journeygate.experiments.config import load_experiments
    from journeygate.experiments.report import format_report
    from journeygate.store import StoreUnavailable

    known = [experiment.id for experiment in load_experiments(config)]
    ids = [args.id] if args.id else known
    if args.id and args.id not in known and not args.url:
        return fail(f"no experiment {args.id!r} in {config.experiments.file or 'the config'}")
    if not ids:
        return fail(f"no experiments defined ({config.experiments.file or 'none configured'})")
    try:
        if args.url:
            api_key = args.api_key or os.environ.get(API_KEY_ENV) or ""
            results = asyncio.run(_from_gateway(args.url, api_key, ids))
        elif config.store_backend == "redis":
            results = asyncio.run(_from_redis(config, ids))
        else:
            return fail(
                "without Redis, results live in the gateway process: pass --url (and --api-key)"
            )
    except (StoreUnavailable, RuntimeError, aiohttp.ClientError) as exc:
        return fail(str(exc))
    if args.json:
        print(json.dumps(results if not args.id else results[0], indent=2))
    else:
        print("\n\n".join(format_report(result) for result in results))
    return 0


def register(sub: Any) -> None:
    """Add ``experiments report`` to the ``journeygate`` subparsers."""
    experiments = sub.add_parser("experiments", help="experiment results")
    commands = experiments.add_subparsers(dest="experiments_command", required=True)
    report = commands.add_parser(
        "report", help="per-arm results, lifts with 95%% intervals and the sample-ratio check"
    )
    report.add_argument("id", nargs="?", help="experiment id (default: every experiment)")
    report.add_argument("--url", help="ask a running gateway instead of Redis")
    report.add_argument("--api-key", help=f"admin API key for --url (default ${API_KEY_ENV})")
    report.add_argument("--json", action="store_true", help="print the JSON results")
    report.set_defaults(handler=report_command)
