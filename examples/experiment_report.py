"""An experiment report produced from a replayed event file, end to end.

1. Starts a real gateway (HTTP on a free port, in-process store) with one experiment on the
   ``hero`` offer slot: control ``default``, ``ten-off`` (a forced offer, ``offer_id``),
   ``free-gift``, and a 10% holdout on default content.
2. Sends page views to ``POST /v1/decide`` for simulated visitors, who then click the hero
   block and order with probabilities that depend on the arm they saw (the "true" effects
   below); order values are drawn from real Online Retail invoice totals (bundled sample).
3. Writes their clicks (``Block Clicked``, with the block's tracking ``decision_id`` and
   ``slot``) and orders (``Order Completed``) to an event file, in journeygate's event format.
4. Replays the file through ingestion with the code of ``journeygate replay``.
5. Replays it again (message ids are applied once: nothing changes), and prints
   ``GET /v1/experiments/hero-offer/results`` as ``journeygate experiments report`` does.

    .venv/bin/python examples/experiment_report.py [--visitors 10000] [--seed 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from journeygate import hookimpl
from journeygate.app import create_app
from journeygate.catalog import build_catalog_file
from journeygate.config import load_config
from journeygate.events.replay import replay
from journeygate.experiments.report import format_report
from journeygate.model import DecisionContext, Offer, SlotRequest
from journeygate.registry import build_plugin_manager
from journeygate.retail_data import read_online_retail

EXPERIMENTS = """
[[experiment]]
id = "hero-offer"
slot = "hero"
control = "default"
holdout = 0.1

[[experiment.arms]]
name = "default"

[[experiment.arms]]
name = "ten-off"
params = { offer_id = "ten-off" }

[[experiment.arms]]
name = "free-gift"
params = { offer_id = "free-gift" }
"""
# The simulated truth: click rate per hero view, and the chance a visitor orders.
CLICK_RATE = {"default": 0.04, "ten-off": 0.07, "free-gift": 0.05, "holdout": 0.03}
ORDER_RATE = {"default": 0.05, "ten-off": 0.065, "free-gift": 0.05, "holdout": 0.045}
API_KEY, WRITE_KEY = "example-admin", "example-write"


class ForcedOffer:
    """Stands in for an offer plugin: shows the offer an arm forces (``offer_id``)."""

    @hookimpl
    def journeygate_choose_offer(self, context: DecisionContext, slot: SlotRequest) -> Offer | None:
        offer_id = slot.params.get("offer_id")
        if offer_id and not slot.params.get("holdout"):
            return Offer(id=offer_id, title=offer_id.replace("-", " ").title())
        return None


def invoice_totals(config_path: Path) -> np.ndarray:
    """Totals of the real invoices in the bundled Online Retail sample."""
    frame = read_online_retail(config_path)
    frame = frame[~frame["InvoiceNo"].astype(str).str.startswith("C")]
    totals = (frame["Quantity"] * frame["UnitPrice"]).groupby(frame["InvoiceNo"]).sum()
    return totals[totals > 0].to_numpy()


async def run(visitors: int, seed: int, workdir: Path) -> None:
    rng = np.random.default_rng(seed)
    experiments_file = workdir / "experiments.toml"
    experiments_file.write_text(EXPERIMENTS, encoding="utf-8")
    config = load_config(
        overrides={
            "store": {"backend": "memory"},
            "server": {"api_keys": [API_KEY]},
            "events": {"write_keys": [WRITE_KEY]},
            "plugins": {"load_entrypoints": False},
            "experiments": {"file": str(experiments_file)},
            "catalog": {"path": str(workdir / "catalog.csv")},
        }
    )
    sample = config.resolve_path(config.catalog.sample_interactions)
    build_catalog_file(sample, workdir / "catalog.csv")
    totals = invoice_totals(sample)
    pm = build_plugin_manager(
        config, load_entrypoints=False, extra_plugins=(("offers", ForcedOffer()),)
    )
    runner = web.AppRunner(create_app(config, plugin_manager=pm), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}"
    events_path = workdir / "experiment_events.jsonl"
    try:
        started = time.time()
        async with aiohttp.ClientSession() as session:
            with events_path.open("w", encoding="utf-8") as out:
                for index in range(visitors):
                    visitor = f"exp-{seed}-{index}"
                    arm = None
                    for _ in range(int(rng.integers(1, 4))):  # 1-3 page views
                        body = {"visitor_id": visitor, "slots": [{"id": "hero", "kind": "offer"}]}
                        async with session.post(f"{url}/v1/decide", json=body) as response:
                            decision = await response.json()
                        tracking = decision["blocks"][0]["tracking"]
                        arm = tracking["arm"]
                        if rng.random() < CLICK_RATE[arm]:
                            out.write(event("Block Clicked", visitor, rng, tracking) + "\n")
                    if arm is not None and rng.random() < ORDER_RATE[arm]:
                        for _ in range(int(rng.integers(1, 3))):
                            revenue = round(float(rng.choice(totals)), 2)
                            props = {"order_id": uuid.uuid4().hex[:12], "revenue": revenue}
                            out.write(event("Order Completed", visitor, rng, props) + "\n")
        decided = time.time() - started
        print(f"{visitors} visitors decided in {decided:.1f} s; events in {events_path}")
        await asyncio.sleep(0.2)  # exposures are written every flush_interval_ms
        stats = await replay(events_path, url=url, write_key=WRITE_KEY)
        print(f"replayed {stats.accepted} events ({stats.rejected.total()} rejected)")
        results = await fetch_results(url)
        await replay(events_path, url=url, write_key=WRITE_KEY)
        unchanged = await fetch_results(url) == results
        print(f"replayed again: results {'unchanged' if unchanged else 'CHANGED'}\n")
        print(format_report(results))
    finally:
        await runner.cleanup()


async def fetch_results(url: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{url}/v1/experiments/hero-offer/results", headers={"X-API-Key": API_KEY}
        ) as response,
    ):
        results: dict[str, Any] = await response.json()
    return results


def event(name: str, visitor: str, rng: np.random.Generator, properties: dict[str, Any]) -> str:
    """One line of the event file: a few seconds to two minutes after the decision."""
    props = (
        {k: properties[k] for k in ("decision_id", "slot")}
        if name == "Block Clicked"
        else properties
    )
    return json.dumps(
        {
            "event": name,
            "visitor_id": visitor,
            "message_id": uuid.uuid4().hex,
            "timestamp": round(time.time() + float(rng.uniform(1, 120)), 3),
            "properties": props,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", help="where the event file goes (default: a temp dir)")
    args = parser.parse_args()
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        asyncio.run(run(args.visitors, args.seed, Path(args.workdir)))
        return
    with tempfile.TemporaryDirectory() as workdir:
        asyncio.run(run(args.visitors, args.seed, Path(workdir)))


if __name__ == "__main__":
    main()
