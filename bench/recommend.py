"""Benchmark of the recommender plugin (``plugins/jg_recommender``), in four parts, one run.

What is measured
    1. Training on the FULL Online Retail data (``--data``, default
       ``../shared/data/online_retail/online_retail_2010_2011.parquet``), with the parts of
       ``jg_recommender.training.train`` timed one by one, into a temporary artifact directory
       (``var/models/recommender`` is not touched): reading the file and building the
       interactions and the catalog; embedding the product texts with MiniLM (from the cache in
       ``var/cache/recommender`` when its texts hash matches, which the output says; with
       ``--fresh-embeddings`` they are always encoded); ``HybridRecommender.fit``, of which the
       implicit ALS fit is shown on its own (the rest is confidence matrices, co-occurrence,
       popularity); writing and loading the artifact.
    2. Single-request latency in this process, one call at a time, of the model method each
       slot strategy uses (the model trained in part 1, loaded from its artifact, BLAS limited to
       one thread as the plugin does in the gateway). ``--calls`` calls each (default 2,000)
       after a warm-up, inputs drawn with a fixed seed from the real data: a known customer
       with the product page in the session (``for_you``, the plugin's default: purchases
       excluded), an anonymous visitor with 2 items of one real basket (``for_you`` anonymous),
       a product weighted by how often it was bought (``similar_items``), 1-4 items of a real
       basket (``bought_together``), a category weighted by its number of products
       (``trending``), and 2-4 words of product titles (``search``). Search is split in two:
       ``model.search`` with a precomputed query embedding, and embedding one query with MiniLM
       (``encode_texts([query])``, ``--encode-calls`` calls) -- the latter is what the
       micro-batcher of part 3 amortises. Then the same strategies through the plugin,
       ``RecommenderPlugin.journeygate_candidates`` with a ``DecisionContext`` as the pipeline
       builds it and awaiting its result only when it is awaitable, as the pipeline does (a
       cache hit is answered synchronously, a miss scores in an executor of 2 threads, like
       the gateway's), business rules included. Each strategy starts with an empty ranking
       cache; the hit rate is printed with it (real traffic repeats products and categories,
       so hits are frequent there, rare for known customers and baskets; the 500 search
       queries are cycled, so 75% of search calls are hits). In the gateway every product's
       similar items are also precomputed after a model load (``warm_similar_items``), which
       this does not do, so there ``similar_items`` is answered from the cache every time.
    3. Query encoding at concurrency 32, one forward pass per request vs. the
       ``MicroBatchEncoder``: ``bench/encoder.py``'s measurement, called from here.
    4. ``POST /v1/decide`` against a bare aiohttp + Redis handler: ``bench/decide.py``'s
       measurement, called from here (its JSON is also kept in ``var/bench/``). The gateway
       loads the recommender through its entry point, and the decisions ask for a
       ``similar_items`` block, so the plugin is on the path.
       The artifact it serves is ``var/models/recommender/CURRENT`` (``journeygate train``
       writes one first when there is none).

How to read it
    The targets (PASS/FAIL lines): p50 under 2 ms in-process for ``for_you`` (both kinds),
    ``similar_items`` and ``bought_together``; micro-batching at least 3x the throughput of
    one-at-a-time encoding at concurrency 32; and the /v1/decide targets of bench/decide.py.
    Part 2 times one call with nothing else running in this process: it is the CPU cost of a
    ranking on a cache miss, not a latency under load (part 4 is). p99 is sensitive to
    whatever else runs on the machine; the CPU busy fraction of the whole machine is measured
    (1 s, from ``/proc/stat``) before the run and before each part, and a note is printed when
    other processes were busy (above 20%), in which case compare with a run on an idle machine.
    In the plugin table a p50 is the cost of the more frequent case, a hit or a miss (see the
    hit rate); its p99 includes the executor hop and thread scheduling, so it moves most with
    other load. Part 4's ratios are the gateway with every plugin against the bare handler.

Usage
    .venv/bin/python bench/recommend.py [--data FILE] [--calls 2000] [--json PATH]
        [--skip-decide] [--decide-requests 3000] [--fresh-embeddings]

Takes about 2 minutes on 2 cores: training ~6 s with cached embeddings (the first run on a
file adds ~30 s of MiniLM encoding), part 2 ~30 s, part 3 ~20 s, part 4 ~60 s.
Exit status: 0 when the benchmark ran, whether or not the targets were met; 1 when a part
could not run (no data file, a server that did not start).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _path in (BENCH, ROOT / "plugins"):  # sibling benchmarks; runnable without the install too
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import decide  # noqa: E402
import encoder as encoder_bench  # noqa: E402
import jg_recommender.model as model_module  # noqa: E402
from jg_recommender.evaluation import load_interactions  # noqa: E402
from jg_recommender.model import (  # noqa: E402
    HybridRecommender,
    RecommenderParams,
    product_embeddings,
)
from jg_recommender.plugin import RANKING_DEPTH, RecommenderPlugin  # noqa: E402
from jg_recommender.training import DEFAULT_ARTIFACTS, EMBEDDING_CACHE, publish  # noqa: E402
from journeygate.artifacts import CURRENT, latest_artifact  # noqa: E402
from journeygate.catalog import Catalog  # noqa: E402
from journeygate.encoder import encode_texts, load_sentence_model  # noqa: E402
from journeygate.model import (  # noqa: E402
    CartItem,
    DecideRequest,
    DecisionContext,
    PageContext,
    RequestContext,
    SlotRequest,
    StoredVisitor,
    VisitorState,
)

DEFAULT_DATA = ROOT.parent / "shared/data/online_retail/online_retail_2010_2011.parquet"
TARGET_P50_MS = 2.0
TARGET_KINDS = ("for_you (known)", "for_you (anonymous)", "similar_items", "bought_together")
SLOT_LIMIT = 8
WANTED = RANKING_DEPTH  # how many candidates the plugin asks the model for
BUSY_NOTE = 0.2


def busy(label: str, results: dict[str, Any]) -> None:
    """Print and record how busy the machine's CPUs were over one second."""
    fraction = decide.cpu_busy_fraction()
    results.setdefault("cpu_busy", {})[label] = fraction
    if fraction is None:
        return
    note = " - other processes are busy, figures will be skewed" if fraction > BUSY_NOTE else ""
    load = os.getloadavg()[0]
    print(
        f"CPU busy before {label}: {fraction:.0%} of {os.cpu_count()} cpus "
        f"(load average {load:.2f}){note}",
        flush=True,
    )


def heading(text: str) -> None:
    print(f"\n== {text} ==", flush=True)


# -- 1. training -------------------------------------------------------------------------------


@contextlib.contextmanager
def timed_factor_fit(seconds: list[float]) -> Iterator[None]:
    """Time the ALS/BPR fit inside ``HybridRecommender.fit`` (wraps the model module's factor
    fit for the duration; restored afterwards)."""
    original = model_module._fit_factors

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - started)

    model_module._fit_factors = wrapper
    try:
        yield
    finally:
        model_module._fit_factors = original


def train_timed(
    data: Path, out_root: Path, fresh_embeddings: bool
) -> tuple[dict[str, Any], HybridRecommender, pd.DataFrame, list[Any]]:
    """The steps of ``training.train`` (no evaluation), each timed; the loaded model."""
    steps: dict[str, float] = {}
    started = time.perf_counter()
    interactions, products = load_interactions(data)
    steps["read"] = time.perf_counter() - started

    cache_dir = None if fresh_embeddings else ROOT / EMBEDDING_CACHE
    before = set(cache_dir.glob("embeddings-*.npy")) if cache_dir and cache_dir.is_dir() else set()
    started = time.perf_counter()
    embeddings = product_embeddings(products, cache_dir)
    steps["embed"] = time.perf_counter() - started
    if cache_dir is None:
        source = "encoded (--fresh-embeddings, cache not used)"
    elif set(cache_dir.glob("embeddings-*.npy")) - before:
        source = f"encoded, then cached in {EMBEDDING_CACHE}/"
    else:
        source = f"from the cache in {EMBEDDING_CACHE}/"

    factor_fit: list[float] = []
    params = RecommenderParams()
    started = time.perf_counter()
    with timed_factor_fit(factor_fit):
        model = HybridRecommender.fit(interactions, products, params, embeddings)
    steps["fit"] = time.perf_counter() - started
    steps["fit_factors"] = sum(factor_fit)

    started = time.perf_counter()
    artifact = publish(model, out_root, None)
    steps["save"] = time.perf_counter() - started
    steps["total"] = steps["read"] + steps["embed"] + steps["fit"] + steps["save"]
    started = time.perf_counter()
    loaded = HybridRecommender.load(artifact)
    steps["load"] = time.perf_counter() - started
    counts = model.meta["counts"]
    report = {
        "data": str(data),
        "seconds": steps,
        "embeddings": source,
        "algorithm": params.algorithm,
        "factors": params.factors,
        "iterations": params.iterations,
        "interactions": len(interactions),
        "products": len(products),
        "users": counts.get("users"),
        "artifact_mb": sum(f.stat().st_size for f in artifact.iterdir()) / 1e6,
    }
    return report, loaded, interactions, products


def print_training(report: dict[str, Any]) -> None:
    s = report["seconds"]
    print(
        f"data: {report['data']}\n"
        f"  {report['interactions']:,} interactions, {report['users']:,} customers, "
        f"{report['products']:,} products; {report['algorithm'].upper()} "
        f"{report['factors']} factors x {report['iterations']} iterations"
    )
    print(f"  read + interactions + catalog  {s['read']:7.2f} s")
    print(f"  embed product texts            {s['embed']:7.2f} s  ({report['embeddings']})")
    print(f"  HybridRecommender.fit          {s['fit']:7.2f} s")
    print(f"    of which {report['algorithm'].upper()} fit (implicit)  {s['fit_factors']:7.2f} s")
    print(f"    other components             {s['fit'] - s['fit_factors']:7.2f} s")
    print(f"  write artifact                 {s['save']:7.2f} s  ({report['artifact_mb']:.0f} MB)")
    print(f"  total                          {s['total']:7.2f} s")
    print(f"  (loading the artifact, as the gateway does: {s['load']:.2f} s)")


# -- 2. latency --------------------------------------------------------------------------------


class Inputs:
    """Realistic request inputs drawn from the real interactions, with a fixed seed."""

    def __init__(
        self,
        model: HybridRecommender,
        interactions: pd.DataFrame,
        products: Sequence[Any],
        seed: int,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        known = interactions.loc[interactions["item_id"].isin(pd.Index(model.item_ids))]
        self.lines = known["item_id"].to_numpy(dtype=str)  # bought items, traffic-weighted
        self.customers = np.asarray(
            [user for user in known["user_id"].unique() if model.has_user(user)], dtype=str
        )
        baskets = known.groupby("basket_id")["item_id"].unique()
        self.baskets = [list(items) for items in baskets]
        self.multi = [items for items in self.baskets if len(items) >= 2]
        self.categories = np.asarray([p.category for p in products], dtype=str)

    def product(self) -> str:
        return str(self.lines[self.rng.integers(len(self.lines))])

    def customer(self) -> str:
        return str(self.customers[self.rng.integers(len(self.customers))])

    def cart(self, low: int = 1, high: int = 4) -> list[str]:
        basket = self.baskets[self.rng.integers(len(self.baskets))]
        size = min(len(basket), int(self.rng.integers(low, high + 1)))
        return [str(item) for item in self.rng.choice(basket, size=size, replace=False)]

    def session(self) -> list[str]:
        basket = self.multi[self.rng.integers(len(self.multi))]
        return [str(item) for item in self.rng.choice(basket, size=2, replace=False)]

    def category(self) -> str:
        return str(self.categories[self.rng.integers(len(self.categories))])


def summary(ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "calls": len(ordered),
        "p50_ms": decide.percentile(ordered, 0.50),
        "p99_ms": decide.percentile(ordered, 0.99),
        "mean_ms": float(np.mean(ordered)),
    }


def time_calls(calls: Sequence[Callable[[], Any]], warmup: int) -> dict[str, float]:
    """Run each zero-argument call once, timed one by one, after ``warmup`` of them."""
    for call in calls[:warmup]:
        call()
    ms = []
    for call in calls:
        started = time.perf_counter_ns()
        call()
        ms.append((time.perf_counter_ns() - started) / 1e6)
    return summary(ms)


def model_latency(
    model: HybridRecommender, inputs: Inputs, queries: Sequence[str], args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """p50/p99 of the model method behind each slot kind, one call at a time."""
    n, count = WANTED, args.calls
    plans: dict[str, list[Callable[[], Any]]] = {}

    def bind(method: Callable[..., Any], *call_args: Any) -> Callable[[], Any]:
        return lambda: method(*call_args)

    plans["for_you (known)"] = [
        bind(model.recommend_for_user, inputs.customer(), n, (), (inputs.product(),), False)
        for _ in range(count)
    ]
    plans["for_you (anonymous)"] = [
        bind(model.recommend_for_items, inputs.session(), n) for _ in range(count)
    ]
    plans["similar_items"] = [bind(model.similar_items, inputs.product(), n) for _ in range(count)]
    plans["bought_together"] = [
        bind(model.bought_together, sorted(inputs.cart()), n) for _ in range(count)
    ]
    plans["trending"] = [bind(model.trending, n, (), inputs.category()) for _ in range(count)]
    vectors = encode_texts(list(queries))
    plans["search (model.search)"] = [
        bind(model.search, vectors[index % len(vectors)], n) for index in range(count)
    ]
    results: dict[str, dict[str, float]] = {}
    with threadpool_limits(1, "blas"):  # as the plugin sets it in the gateway
        for kind, calls in plans.items():
            results[kind] = time_calls(calls, warmup=min(200, count))
        embed = [
            bind(encode_texts, [queries[index % len(queries)]])
            for index in range(args.encode_calls)
        ]
        results["search (embed 1 query)"] = time_calls(embed, warmup=20)
    return results


def plugin_contexts(
    inputs: Inputs, queries: Sequence[str], count: int
) -> dict[str, list[tuple[DecisionContext, SlotRequest]]]:
    """Decision contexts as the pipeline builds them, one slot each."""

    def context(
        visitor: str,
        page: PageContext,
        cart: Sequence[str] = (),
        profile: dict[str, Any] | None = None,
        session_views: Sequence[str] = (),
    ) -> DecisionContext:
        request = RequestContext(page=page, cart=tuple(CartItem(item) for item in cart))
        return DecisionContext(
            decision_id="bench",
            request=DecideRequest(visitor, f"{visitor}-s", request, ()),
            stored=StoredVisitor(profile=profile or {}, session_views=tuple(session_views)),
            visitor=VisitorState(),
        )

    def slot(strategy: str, **params: Any) -> SlotRequest:
        return SlotRequest("bench", "recommendations", strategy, SLOT_LIMIT, params=params)

    def product_page(product_id: str) -> PageContext:
        return PageContext(type="product", product_id=product_id)

    kinds = (*TARGET_KINDS, "trending", "search")
    plans: dict[str, list[tuple[DecisionContext, SlotRequest]]] = {kind: [] for kind in kinds}
    for index in range(count):
        customer = inputs.customer()
        plans["for_you (known)"].append(
            (
                context(
                    f"v{customer}", product_page(inputs.product()), (), {"customer_id": customer}
                ),
                slot("for_you"),
            )
        )
        first, second = inputs.session()
        plans["for_you (anonymous)"].append(
            (context(f"anon{index}", product_page(first), (), None, (second,)), slot("for_you"))
        )
        plans["similar_items"].append(
            (context(f"anon{index}", product_page(inputs.product())), slot("similar_items"))
        )
        plans["bought_together"].append(
            (
                context(f"anon{index}", PageContext(type="cart"), inputs.cart()),
                slot("bought_together"),
            )
        )
        plans["trending"].append(
            (
                context(f"anon{index}", PageContext(type="category", category=inputs.category())),
                slot("trending"),
            )
        )
        query = queries[index % len(queries)]
        plans["search"].append(
            (context(f"anon{index}", PageContext(type="search", query=query)), slot("search"))
        )
    return plans


async def answer(
    call: Callable[[DecisionContext, SlotRequest], Any], ctx: DecisionContext, slot: SlotRequest
) -> Any:
    """Call the hook as the pipeline does: a cache hit answers at once, a miss returns an
    awaitable that scores in the executor."""
    result = call(ctx, slot)
    return await result if inspect.isawaitable(result) else result


async def plugin_latency(
    model: HybridRecommender,
    products: Sequence[Any],
    inputs: Inputs,
    queries: Sequence[str],
    count: int,
) -> dict[str, dict[str, float]]:
    """``journeygate_candidates`` one call at a time: ranking cache, executor, rules."""
    from journeygate.encoder import MicroBatchEncoder

    plans = plugin_contexts(inputs, queries, count)
    results: dict[str, dict[str, float]] = {}
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="bench") as executor:
        catalog = Catalog(products)
        encoder = MicroBatchEncoder(executor=executor)
        try:
            for kind, plan in plans.items():
                plugin = RecommenderPlugin()  # each kind starts with an empty ranking cache
                plugin.model, plugin.catalog, plugin.executor = model, catalog, executor
                plugin.encoder = encoder
                call = plugin.journeygate_candidates
                await answer(call, *plan[0])
                cached_before = len(plugin._cache)
                ms = []
                empty = 0
                for ctx, slot in plan:
                    started = time.perf_counter_ns()
                    candidates = await answer(call, ctx, slot)
                    ms.append((time.perf_counter_ns() - started) / 1e6)
                    empty += not candidates
                misses = len(plugin._cache) - cached_before
                results[kind] = summary(ms) | {
                    "cache_hit_rate": 1 - misses / len(plan),
                    "empty_answers": empty,
                }
        finally:
            await encoder.close()
    return results


def print_latency(
    model_results: dict[str, dict[str, float]], plugin_results: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    print(f"model methods, one call at a time (n={WANTED}, 1 BLAS thread):")
    print(f"  {'slot kind':<24} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for kind, row in model_results.items():
        print(
            f"  {kind:<24} {row['calls']:>6} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f}"
            f" {row['mean_ms']:>8.3f}"
        )
    targets = []
    for kind in TARGET_KINDS:
        p50 = model_results[kind]["p50_ms"]
        passed = p50 < TARGET_P50_MS
        targets.append(
            {"name": f"{kind} p50 < {TARGET_P50_MS:g} ms", "value": p50, "passed": passed}
        )
        print(f"{'PASS' if passed else 'FAIL'}  {kind} p50 < {TARGET_P50_MS:g} ms ({p50:.3f} ms)")
    if plugin_results:
        print(
            "\nthrough the plugin (journeygate_candidates: ranking cache, executor hop, rules;"
            " search includes the query embedding on a miss):"
        )
        print(
            f"  {'slot kind':<24} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}"
            f" {'cache hits':>10}"
        )
        for kind, row in plugin_results.items():
            print(
                f"  {kind:<24} {row['calls']:>6} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f}"
                f" {row['mean_ms']:>8.3f} {row['cache_hit_rate']:>10.0%}"
                + (f"  ({row['empty_answers']} empty)" if row["empty_answers"] else "")
            )
    return targets


# -- 3. encoder --------------------------------------------------------------------------------


def encoder_throughput(args: argparse.Namespace) -> dict[str, Any]:
    encoder_args = encoder_bench.parse_args(["--concurrency", "32", "--seed", str(args.seed)])
    report: dict[str, Any] = asyncio.run(encoder_bench.run(encoder_args))
    encoder_bench.print_report(report)
    return report


# -- 4. /v1/decide -----------------------------------------------------------------------------


def ensure_model() -> str:
    """The artifact the gateway will serve; ``journeygate train`` writes one when missing."""
    artifacts = ROOT / DEFAULT_ARTIFACTS
    path = latest_artifact(artifacts)
    if path is None:
        print(f"no {DEFAULT_ARTIFACTS}/{CURRENT}: running `journeygate train`...", flush=True)
        command = decide.journeygate_command()
        subprocess.run([command, "train"], cwd=ROOT, check=True, timeout=600)
        path = latest_artifact(artifacts)
        if path is None:
            raise decide.StartupError("journeygate train did not write an artifact")
    print(f"gateway serves {path.relative_to(ROOT)}")
    return str(path.name)


def decide_table(args: argparse.Namespace) -> dict[str, Any] | None:
    artifact = ensure_model()
    out = decide.LOG_DIR / "recommend-decide.json"  # next to the server logs it refers to
    out.unlink(missing_ok=True)
    status = decide.main(["--requests", str(args.decide_requests), "--json", str(out)])
    if status != 0 or not out.exists():
        print(f"bench/decide.py exited with status {status}", file=sys.stderr)
        return None
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    report["artifact"] = artifact
    blocks = report.get("smoke", {}).get("blocks", [])
    sources = {block.get("slot"): block.get("source") for block in blocks}
    print(f"recommendation block answered by: {sources.get('pdp-similar')!r}")
    return report


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Online Retail file")
    parser.add_argument("--calls", type=int, default=2000, help="calls per slot kind")
    parser.add_argument(
        "--encode-calls", type=int, default=200, help="single-query MiniLM encodes timed"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--fresh-embeddings", action="store_true", help="encode the products, ignore the cache"
    )
    parser.add_argument("--skip-plugin", action="store_true", help="skip the plugin latencies")
    parser.add_argument("--skip-encoder", action="store_true", help="skip part 3")
    parser.add_argument("--skip-decide", action="store_true", help="skip part 4")
    parser.add_argument(
        "--decide-requests", type=int, default=3000, help="bench/decide.py --requests"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.exists():
        print(f"bench: no data file {args.data} (use --data FILE)", file=sys.stderr)
        return 1
    started = time.perf_counter()
    results: dict[str, Any] = {
        "environment": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "load_average": os.getloadavg(),
        },
        "settings": {
            "calls": args.calls,
            "encode_calls": args.encode_calls,
            "seed": args.seed,
            "n": WANTED,
        },
    }
    targets: list[dict[str, Any]] = []
    busy("the run", results)

    heading("1. training on the full data")
    with tempfile.TemporaryDirectory(prefix="jg-bench-train-") as tmp:
        training, model, interactions, products = train_timed(
            args.data, Path(tmp), args.fresh_embeddings
        )
    results["training"] = training
    print_training(training)

    heading("2. single-request latency in-process")
    busy("latency", results)
    load_sentence_model()
    inputs = Inputs(model, interactions, products, args.seed)
    queries = encoder_bench.make_queries(500, args.seed)
    results["latency"] = model_latency(model, inputs, queries, args)
    plugin_results = {}
    if not args.skip_plugin:
        plugin_results = asyncio.run(plugin_latency(model, products, inputs, queries, args.calls))
    results["plugin_latency"] = plugin_results
    targets += print_latency(results["latency"], plugin_results)

    if not args.skip_encoder:
        heading("3. query encoding at concurrency 32 (bench/encoder.py)")
        busy("encoding", results)
        encoder_report = encoder_throughput(args)
        results["encoder"] = encoder_report
        targets.append(
            {
                "name": "micro-batch >= 3x one-at-a-time throughput at concurrency 32",
                "value": encoder_report["throughput_ratio"],
                "passed": encoder_report["target_met"],
            }
        )

    status = 0
    if not args.skip_decide:
        heading("4. POST /v1/decide with the recommender on (bench/decide.py)")
        busy("/v1/decide", results)
        try:
            decide_report = decide_table(args)
        except (decide.StartupError, subprocess.SubprocessError) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            decide_report = None
        results["decide"] = decide_report
        if decide_report is None:
            status = 1
        else:
            targets += decide_report["targets"]

    heading("targets")
    for target in targets:
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[target["passed"]]
        value = target["value"]
        print(f"{verdict}  {target['name']} ({'-' if value is None else f'{value:.3f}'})")
    results["targets"] = targets
    results["seconds"] = time.perf_counter() - started
    print(f"\nbenchmark took {results['seconds']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"results written to {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
