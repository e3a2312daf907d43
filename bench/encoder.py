"""Benchmark of query encoding: one forward pass per request vs. the MicroBatchEncoder, in one run.

Why
    On a small CPU box MiniLM encodes one short sentence in ~12 ms but hundreds per second in
    batches, so a search slot that encodes each query on its own wastes most of the CPU. This
    measures how much sharing forward passes between concurrent requests buys.

What runs
    One asyncio loop in this process and one ``ThreadPoolExecutor`` (``--workers``, default 2
    like the gateway's ``plugins.executor_workers``), used by both modes:
    * one-at-a-time (baseline): each request does its own
      ``loop.run_in_executor(executor, encode_texts, [text])``;
    * micro-batch: each request does ``await MicroBatchEncoder(executor=...).encode(text)``
      (``--max-batch``, ``--max-wait-ms``), with the LRU cache disabled.
    Queries are short product-like searches: 2-4 random words drawn from the product titles
    in ``var/catalog.csv`` (seeded). Every query of a run is distinct, so neither the cache nor
    in-batch de-duplication helps; both modes encode the same list of texts.

What is measured
    After a warm-up of both paths, for concurrency ``--concurrency`` (default 32) and 1:
    N closed-loop asyncio clients (each sends its next query when the last one was answered)
    share ``--requests`` queries (default 640; ``--single`` at concurrency 1, default 50).
    Reported per mode: throughput (texts/s over the whole run), latency p50/p99 measured
    around the ``await`` (queueing + forward pass), and for the micro-batcher the number of
    forward passes and the mean batch size. Then the throughput ratio at concurrency 32
    (target: micro-batching >= 3x one-at-a-time) and the extra latency micro-batching adds to
    a lone request (bounded by ~``--max-wait-ms``).

Usage
    .venv/bin/python bench/encoder.py [--requests 640] [--concurrency 32] [--json PATH]

Exit status: 0 when the benchmark ran, whether or not the target was met.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "plugins") not in sys.path:  # runnable without the editable install too
    sys.path.insert(0, str(ROOT / "plugins"))

from closedloop import drive  # noqa: E402
from journeygate.encoder import (  # noqa: E402
    MicroBatchEncoder,
    encode_texts,
    load_sentence_model,
)

CATALOG = ROOT / "var" / "catalog.csv"
TARGET_RATIO = 3.0
Encode = Callable[[str], Awaitable[Any]]


def make_queries(count: int, seed: int, catalog: Path = CATALOG) -> list[str]:
    """``count`` distinct search-like queries: 2-4 words sampled from catalog titles."""
    with catalog.open(newline="", encoding="utf-8") as handle:
        titles = [row["title"] for row in csv.DictReader(handle)]
    words = sorted({word for title in titles for word in re.findall(r"[a-z]{3,}", title.lower())})
    if len(words) < 10:
        raise SystemExit(f"too few words in {catalog} to build queries")
    rng = random.Random(seed)
    queries: dict[str, None] = {}
    while len(queries) < count:
        queries[" ".join(rng.sample(words, rng.randint(2, 4)))] = None
    return list(queries)


async def measure(encode: Encode, texts: Sequence[str], concurrency: int) -> dict[str, float]:
    """Closed loop: ``concurrency`` clients share ``texts``; throughput and latency."""
    latencies, elapsed = await drive(encode, texts, concurrency)
    ms = np.asarray(latencies) * 1000.0
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "seconds": elapsed,
        "texts_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    total = 2 * 16 + 2 * args.requests + 2 * args.single
    texts = make_queries(total, args.seed)
    warmup, texts = texts[:32], texts[32:]
    load = [texts[: args.requests], texts[args.requests : 2 * args.requests]]
    single = texts[2 * args.requests :]
    results: list[dict[str, Any]] = []

    with ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="bench") as executor:

        async def one_at_a_time(text: str) -> np.ndarray:
            return await loop.run_in_executor(executor, encode_texts, [text])

        batcher = MicroBatchEncoder(
            executor=executor,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            cache_size=0,
        )
        try:
            await measure(one_at_a_time, warmup[:16], 4)
            await measure(batcher.encode, warmup[16:], 4)
            # each mode gets its own distinct texts of the same kind (no cross-mode caching
            # anywhere; the halves are drawn from one seeded sample)
            plan = [
                ("one-at-a-time", one_at_a_time, load[0], args.concurrency),
                ("micro-batch", batcher.encode, load[1], args.concurrency),
                ("one-at-a-time", one_at_a_time, single[: args.single], 1),
                ("micro-batch", batcher.encode, single[args.single :], 1),
            ]
            for mode, encode, batch_texts, concurrency in plan:
                before = batcher.stats.as_dict()
                row: dict[str, Any] = {"mode": mode}
                row.update(await measure(encode, batch_texts, concurrency))
                if mode == "micro-batch":
                    after = batcher.stats.as_dict()
                    passes = after["batches"] - before["batches"]
                    row["batches"] = passes
                    row["mean_batch"] = (after["texts"] - before["texts"]) / max(passes, 1)
                results.append(row)
        finally:
            await batcher.close()

    def pick(mode: str, concurrency: int) -> dict[str, Any]:
        return next(r for r in results if r["mode"] == mode and r["concurrency"] == concurrency)

    base, micro = pick("one-at-a-time", args.concurrency), pick("micro-batch", args.concurrency)
    lone_base, lone_micro = pick("one-at-a-time", 1), pick("micro-batch", 1)
    ratio = micro["texts_per_s"] / base["texts_per_s"]
    return {
        "environment": {
            "cpus": os.cpu_count(),
            "torch_threads": _torch_threads(),
            "executor_workers": args.workers,
            "max_batch": args.max_batch,
            "max_wait_ms": args.max_wait_ms,
            "seed": args.seed,
        },
        "results": results,
        "throughput_ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
        "p99_ratio": micro["p99_ms"] / base["p99_ms"],
        "single_added_p50_ms": lone_micro["p50_ms"] - lone_base["p50_ms"],
    }


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def print_report(report: dict[str, Any]) -> None:
    env = report["environment"]
    print(
        f"cpus={env['cpus']} torch_threads={env['torch_threads']} "
        f"executor_workers={env['executor_workers']} max_batch={env['max_batch']} "
        f"max_wait_ms={env['max_wait_ms']}"
    )
    header = (
        f"{'mode':<14} {'conc':>4} {'requests':>8} {'texts/s':>9} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'passes':>7} {'mean batch':>10}"
    )
    print(header)
    print("-" * len(header))
    for row in report["results"]:
        passes = f"{row['batches']:>7}" if "batches" in row else f"{'-':>7}"
        mean = f"{row['mean_batch']:>10.1f}" if "mean_batch" in row else f"{'-':>10}"
        print(
            f"{row['mode']:<14} {row['concurrency']:>4} {row['requests']:>8} "
            f"{row['texts_per_s']:>9.1f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} "
            f"{passes} {mean}"
        )
    verdict = "PASS" if report["target_met"] else "FAIL"
    conc = report["results"][0]["concurrency"]
    print(
        f"\nthroughput at concurrency {conc}: micro-batch / one-at-a-time = "
        f"{report['throughput_ratio']:.2f}x (target >= {report['target_ratio']:.0f}x) {verdict}"
    )
    print(f"p99 at concurrency {conc}: micro-batch / one-at-a-time = {report['p99_ratio']:.2f}x")
    print(
        f"lone request (concurrency 1): micro-batching adds "
        f"{report['single_added_p50_ms']:+.1f} ms at p50"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=640, help="queries per load run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--single", type=int, default=50, help="queries at concurrency 1")
    parser.add_argument("--workers", type=int, default=2, help="executor threads")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table; 0 whether or not the target was met."""
    args = parse_args(argv)
    started = time.perf_counter()
    load_sentence_model()
    print(f"model loaded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    report = asyncio.run(run(args))
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
