"""Benchmark of feedback scoring: one-at-a-time vs. the micro-batching path, in one run.

Why
    Every feedback event costs MiniLM forward passes (one per sentence) plus the classifier
    head. Scored one at a time, concurrent feedback queues behind single-text passes;
    through :meth:`FeedbackScorer.score` (what the sentiment plugin's observer awaits) the
    sentences of concurrent feedback share passes in the executor.

What runs
    One asyncio loop and one ``ThreadPoolExecutor`` (``--workers``, default 2 like the
    gateway's ``plugins.executor_workers``), torch threads per forward pass as the plugin sets
    them (``--torch-threads``, default its ``torch_threads``), used by both modes:
    * one-at-a-time (baseline): each feedback does its own
      ``loop.run_in_executor(executor, scorer.score_many, [text])`` (split, embed, classify);
    * micro-batch: each feedback does ``await scorer.score(text)`` (sentence cache disabled).
    Feedback texts are 1-4 real review sentences from ``data/sentiment`` (seeded), every
    sentence used once in the whole run, so neither caching nor de-duplication helps.

What is measured
    After a warm-up of both paths, for each concurrency in ``--concurrency`` (default 1, 4
    and 16): N closed-loop clients share ``--requests`` feedbacks per mode, sent in
    ``--rounds`` rounds that alternate the modes (the shared box's load drifts). Reported per
    mode: latency p50/p95 per feedback around the ``await`` (queueing + scoring), throughput,
    cost per feedback (wall time / feedbacks, the figure that decides capacity on a 2-core
    box) and, for the micro-batcher, the mean batch size (sentences per forward pass).
    Target: p50 < 20 ms per feedback on 2 cores through the micro-batching path, for a
    feedback that queues behind no other (concurrency 1). With N clients in a closed loop a
    feedback also waits for the others' passes, about N times the cost per feedback (Little's
    law): the cost column, not the p50, is what concurrency should lower.

Usage
    .venv/bin/python bench/sentiment.py [--requests 120] [--concurrency 1 4 16] [--json PATH]
    (needs a trained model: ``journeygate train-sentiment --no-evaluate``)

Exit status: 0 when the benchmark ran, whether or not the target was met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "plugins") not in sys.path:  # runnable without the editable install too
    sys.path.insert(0, str(ROOT / "plugins"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from closedloop import drive  # noqa: E402
from jg_sentiment.data import load_sentences  # noqa: E402
from jg_sentiment.model import SentimentModel  # noqa: E402
from jg_sentiment.scoring import FeedbackScorer  # noqa: E402
from jg_sentiment.settings import DEFAULT_ARTIFACTS, SentimentSettings  # noqa: E402
from journeygate.artifacts import latest_artifact  # noqa: E402
from journeygate.encoder import set_torch_threads  # noqa: E402

TARGET_P50_MS = 20.0
Score = Callable[[str], Awaitable[Any]]


def make_feedback(count: int, seed: int) -> list[str]:
    """``count`` feedback texts of 1-4 distinct real sentences; no sentence is used twice."""
    sentences = list(dict.fromkeys(load_sentences().texts))
    rng = random.Random(seed)
    rng.shuffle(sentences)
    feedback = []
    while len(feedback) < count:
        take = rng.randint(1, 4)
        if len(sentences) < take:
            raise SystemExit(f"not enough distinct sentences for {count} feedbacks")
        feedback.append(" ".join(sentences.pop() for _ in range(take)))
    return feedback


def summary(latencies: list[float], seconds: float) -> dict[str, float]:
    ms = np.asarray(latencies) * 1000.0
    return {
        "feedbacks": len(latencies),
        "per_s": len(latencies) / seconds,
        "cost_ms": seconds * 1000.0 / len(latencies),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
    }


async def run(args: argparse.Namespace, model: SentimentModel) -> list[dict[str, Any]]:
    """Per concurrency level, ``--rounds`` rounds that alternate the two modes (so a change
    in the machine's load hits both alike), pooled per mode."""
    loop = asyncio.get_running_loop()
    levels = list(args.concurrency)
    per_round = args.requests // args.rounds
    texts = make_feedback(16 + 2 * per_round * args.rounds * len(levels), args.seed)
    warmup, texts = texts[:16], texts[16:]
    results: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="bench") as executor:
        scorer = FeedbackScorer(
            model,
            executor=executor,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            cache_size=0,
        )

        async def one_at_a_time(text: str) -> Any:
            return await loop.run_in_executor(executor, scorer.score_many, [text])

        modes = {"one-at-a-time": one_at_a_time, "micro-batch": scorer.score}
        try:
            await drive(one_at_a_time, warmup[:8], 2)
            await drive(scorer.score, warmup[8:], 2)
            for level in levels:
                pooled: dict[str, tuple[list[float], float]] = {m: ([], 0.0) for m in modes}
                before = scorer.batcher.stats.as_dict()
                for _ in range(args.rounds):
                    for mode, score in modes.items():
                        chunk, texts = texts[:per_round], texts[per_round:]
                        latencies, seconds = await drive(score, chunk, level)
                        pooled[mode] = (pooled[mode][0] + latencies, pooled[mode][1] + seconds)
                after = scorer.batcher.stats.as_dict()
                batches = after["batches"] - before["batches"]
                for mode, (latencies, seconds) in pooled.items():
                    row: dict[str, Any] = {"mode": mode, "concurrency": level}
                    row |= summary(latencies, seconds)
                    micro = mode == "micro-batch" and batches
                    row["mean_batch"] = (
                        (after["texts"] - before["texts"]) / batches if micro else None
                    )
                    results.append(row)
        finally:
            await scorer.close()
    return results


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        f"{'mode':<14} {'conc':>4} {'feedbacks':>9} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'per s':>7} {'cost ms':>8} {'batch':>6}"
    ]
    for row in results:
        batch = f"{row['mean_batch']:.1f}" if row["mean_batch"] else "-"
        lines.append(
            f"{row['mode']:<14} {row['concurrency']:>4} {row['feedbacks']:>9} "
            f"{row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['per_s']:>7.1f} "
            f"{row['cost_ms']:>8.1f} {batch:>6}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=120, help="feedbacks per mode and level")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=SentimentSettings().torch_threads,
        help="intra-op threads per forward pass (default: the plugin's torch_threads)",
    )
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=SentimentSettings().max_wait_ms,
        help="batching window (default: the plugin's max_wait_ms)",
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--artifacts", type=Path, default=ROOT / DEFAULT_ARTIFACTS)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    path = latest_artifact(args.artifacts)
    if path is None:
        raise SystemExit(f"no model in {args.artifacts}: run `journeygate train-sentiment`")
    model = SentimentModel.load(path)
    set_torch_threads(args.torch_threads)  # as the plugin does at startup
    print(
        f"model {path.name}; {os.cpu_count()} CPUs visible; {args.workers} executor threads; "
        f"{args.torch_threads} torch thread(s) per pass"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes skew every figure)")
    results = asyncio.run(run(args, model))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(table(results))
    micro = [r for r in results if r["mode"] == "micro-batch"]
    for row in micro:
        base = next(
            r
            for r in results
            if r["mode"] == "one-at-a-time" and r["concurrency"] == row["concurrency"]
        )
        print(
            f"concurrency {row['concurrency']}: micro-batch p50 {row['p50_ms']:.1f} ms vs "
            f"{base['p50_ms']:.1f} ms one at a time; cost {row['cost_ms']:.1f} vs "
            f"{base['cost_ms']:.1f} ms per feedback"
        )
    lone = next((r for r in micro if r["concurrency"] == 1), None)
    if lone is not None:
        met = "PASS" if lone["p50_ms"] < TARGET_P50_MS else "FAIL"
        print(
            f"{met}  p50 of a feedback that queues behind no other (concurrency 1) "
            f"< {TARGET_P50_MS:.0f} ms (measured {lone['p50_ms']:.1f} ms)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
