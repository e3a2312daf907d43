"""Benchmark of offer selection: what the offers plugin adds to a decision, in one run.

What runs
    In this process, no server: the offers plugin started on the shipped catalog
    (``config/offers.toml``, 7 offers) with the in-process profile store, and, as the
    baseline, the built-in fallback's ``journeygate_choose_offer`` (it returns the configured
    default offer: the cheapest possible answer of the same hook).

What is measured
    2,000 decision contexts built like the pipeline builds them, with varied visitor state
    (stage, intent, sentiment, orders, segments, consents, a fired trigger, cart values,
    channels, recent offer shows in the profile). For each, timed one call at a time with
    ``time.perf_counter_ns`` after a warm-up: the fallback's answer (baseline), the offers
    plugin's answer, the same with ``explain`` on (every offer evaluated completely and the
    alternatives listed), and recording the shows after the response
    (``journeygate_observe_decision``, one profile write to the in-process store).
    Reported: p50, p99 and mean microseconds per call, and what each adds to the baseline's
    p50 (the most stable figure on a shared machine). The offers hook is synchronous and does
    no I/O, so this is its whole cost on the event loop; budget counts are read from memory
    (refreshed in the background with Redis).

Usage
    .venv/bin/python bench/offers.py [--contexts 2000] [--rounds 5]

Exit status: 0 when the benchmark ran.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from jg_offers.plugin import OffersPlugin
from journeygate.builtins.fallback import FallbackPlugin
from journeygate.catalog import Catalog
from journeygate.config import load_config
from journeygate.hookspecs import ROLE_EMBEDDED
from journeygate.model import (
    Block,
    CartItem,
    DecideRequest,
    DecisionContext,
    RequestContext,
    SlotRequest,
    StoredVisitor,
    VisitorState,
)
from journeygate.store import open_store

SLOT = SlotRequest(id="hero", kind="offer")
STAGES = (None, "awareness", "consideration", "decision", "retention", "advocacy")
INTENTS = (None, "browsing", "comparing", "ready_to_buy")
OFFER_IDS = ("welcome-10", "free-shipping-nudge", "lighting-bundle", "refer-a-friend")


def contexts(count: int, explain: bool, seed: int = 7) -> list[DecisionContext]:
    rng = random.Random(seed)
    now = time.time()
    built = []
    for index in range(count):
        cart = tuple(
            CartItem(f"P{k}", rng.randint(1, 3), round(rng.uniform(1, 25), 2))
            for k in range(rng.randint(0, 4))
        )
        profile: dict[str, Any] = {"orders": rng.choice((0, 0, 1, 2, 5))}
        if rng.random() < 0.2:
            profile["triggers"] = {"cart_abandonment": now - rng.uniform(0, 7200)}
        if rng.random() < 0.2:
            profile["segments"] = ["vip"]
        if rng.random() < 0.5:
            profile["offer_shows"] = {
                rng.choice(OFFER_IDS): [now - rng.uniform(0, 90000) for _ in range(2)]
            }
        request = DecideRequest(
            visitor_id=f"b-{index}",
            session_id="s",
            context=RequestContext(cart=cart, channel=rng.choice(("web", "web", "app", "email"))),
            slots=(SLOT,),
            explain=explain,
        )
        sentiment = rng.choice((None, None, -0.6, 0.1, 0.7))
        built.append(
            DecisionContext(
                decision_id=f"d{index}",
                request=request,
                stored=StoredVisitor(
                    profile=profile,
                    consents={"marketing_email": rng.random() < 0.5},
                ),
                visitor=VisitorState(
                    stage=rng.choice(STAGES), intent=rng.choice(INTENTS), sentiment=sentiment
                ),
            )
        )
    return built


def timed(call: Callable[[DecisionContext], Any], items: Sequence[DecisionContext]) -> list[float]:
    samples = []
    for context in items:
        started = time.perf_counter_ns()
        call(context)
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


async def timed_async(
    call: Callable[[DecisionContext], Any], items: Sequence[DecisionContext]
) -> list[float]:
    samples = []
    for context in items:
        started = time.perf_counter_ns()
        await call(context)
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def summary(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    return (
        statistics.median(ordered),
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        statistics.fmean(ordered),
    )


async def run(count: int, rounds: int) -> None:
    config = load_config(overrides={"store": {"backend": "memory"}})
    store = open_store(config.store, "memory", config.events)
    offers = OffersPlugin()
    await offers.journeygate_startup(config=config, store=store, role=ROLE_EMBEDDED)
    fallback = FallbackPlugin()
    fallback.journeygate_startup(config=config, catalog=Catalog(()))
    plain, explained = contexts(count, False), contexts(count, True)
    chosen = [offers.journeygate_choose_offer(c, SLOT) for c in plain]
    blocks = {
        c.decision_id: [Block(slot=SLOT, source="offers", offer=offer)]
        for c, offer in zip(plain, chosen, strict=True)
    }
    results: dict[str, list[float]] = {
        "fallback (baseline)": [],
        "offers": [],
        "offers, explain": [],
        "record shows": [],
    }
    for _ in range(rounds + 1):  # the first round warms up and is dropped
        round_results = {
            "fallback (baseline)": timed(
                lambda c: fallback.journeygate_choose_offer(c, SLOT), plain
            ),
            "offers": timed(lambda c: offers.journeygate_choose_offer(c, SLOT), plain),
            "offers, explain": timed(lambda c: offers.journeygate_choose_offer(c, SLOT), explained),
            "record shows": await timed_async(
                lambda c: offers.journeygate_observe_decision(c, blocks[c.decision_id]), plain
            ),
        }
        if _:
            for name, samples in round_results.items():
                results[name] += samples
    await offers.journeygate_shutdown()
    served = {}
    for offer in chosen:
        served[offer.id] = served.get(offer.id, 0) + 1
    print(f"offer selection, {count} contexts x {rounds} rounds, shipped catalog (7 offers)")
    print(f"offers served: {', '.join(f'{k} {v}' for k, v in sorted(served.items()))}")
    print(f"{'call':<22}{'p50 us':>10}{'p99 us':>10}{'mean us':>10}{'p50 over baseline':>19}")
    base = summary(results["fallback (baseline)"])[0]
    for name, samples in results.items():
        p50, p99, mean = summary(samples)
        print(f"{name:<22}{p50:>10.1f}{p99:>10.1f}{mean:>10.1f}{p50 - base:>16.1f} us")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (p99 and means move with it)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contexts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    asyncio.run(run(args.contexts, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
