"""Training runs, versioned artifacts (:mod:`journeygate.artifacts`) and the ``journeygate
train`` / ``evaluate`` commands."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from jg_recommender.evaluation import (
    Progress,
    evaluate,
    evaluate_data,
    format_table,
    load_interactions,
)
from jg_recommender.interaction_log import load_logged_interactions
from jg_recommender.model import (
    HybridRecommender,
    RecommenderParams,
    product_embeddings,
)
from journeygate import artifacts
from journeygate.artifacts import CURRENT
from journeygate.catalog import Product, load_catalog
from journeygate.config import AppConfig

DEFAULT_ARTIFACTS = "var/models/recommender"
EMBEDDING_CACHE = "var/cache/recommender"
DEFAULT_INTERACTIONS = "var/interactions"
PLUGIN_NAME = "recommender"

log = logging.getLogger(__name__)


def publish(model: HybridRecommender, out_root: Path, metrics: Mapping[str, Any] | None) -> Path:
    """Write ``model`` as a new artifact directory and point ``CURRENT`` at it."""
    return artifacts.publish(lambda directory: model.save(directory, metrics), out_root)


def events_data(
    events_dir: Path, catalog_path: Path, history: tuple[pd.DataFrame, list[Product]] | None
) -> tuple[pd.DataFrame, list[Product]]:
    """Interactions of the interactions log in ``events_dir`` (the plugin records the
    gateway's events there), with the products of the gateway's catalog (events carry no
    titles). With ``history`` (interactions and products of a file) both are combined: a
    logged purchase line the file already has (same user, item and order) is not counted
    twice, and the catalog's products are completed by the file's."""
    logged = load_logged_interactions(events_dir)
    if catalog_path.exists():
        products = {p.product_id: p for p in load_catalog(catalog_path).products.values()}
    elif history is None:
        raise FileNotFoundError(f"no catalog at {catalog_path}: run `journeygate build-catalog`")
    else:
        log.warning("no catalog at %s: products come from the file only", catalog_path)
        products = {}
    if history is None:
        interactions = logged
    else:
        file_interactions, file_products = history
        for product in file_products:
            products.setdefault(product.product_id, product)
        key = ["user_id", "item_id", "basket_id"]
        bought = file_interactions.loc[file_interactions["event"] == "purchase", key]
        seen = pd.MultiIndex.from_frame(bought.astype(str))
        repeated = (logged["event"] == "purchase") & pd.MultiIndex.from_frame(
            logged[key].astype(str)
        ).isin(seen)
        interactions = pd.concat([file_interactions, logged.loc[~repeated]], ignore_index=True)
        interactions = interactions.sort_values("timestamp", kind="stable").reset_index(drop=True)
    return interactions, [products[pid] for pid in sorted(products)]


def train(
    source: Path | None,
    out_root: Path,
    params: RecommenderParams | None = None,
    evaluate_first: bool = False,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    events_dir: Path | None = None,
    catalog_path: Path | None = None,
) -> Path:
    """Fit on all of ``source`` (an Online Retail-layout file) and/or the interactions log in
    ``events_dir`` (products from ``catalog_path``, see :func:`events_data`) and publish the
    artifact.

    With ``evaluate_first`` the same parameters are first scored on the temporal split
    (docs/evaluation.md) and the test-window NDCG@10 table is stored in ``meta.json``.
    Returns the new artifact directory.
    """
    say = progress or (lambda _message: None)
    params = params or RecommenderParams()
    if source is None and events_dir is None:
        raise ValueError("train needs a source file, an interactions log, or both")
    history = load_interactions(source) if source is not None else None
    if events_dir is not None:
        if catalog_path is None:
            raise ValueError("training from events needs the gateway's catalog")
        interactions, products = events_data(events_dir, catalog_path, history)
    else:
        assert history is not None
        interactions, products = history
    say(f"{len(interactions):,} interactions, {len(products):,} products; embedding products")
    embeddings = product_embeddings(products, cache_dir)
    metrics = None
    if evaluate_first:
        report = evaluate_data(
            interactions, products, embeddings, params, source=str(source), progress=say
        )
        metrics = report.summary()
    say("fitting")
    model = HybridRecommender.fit(interactions, products, params, embeddings)
    return publish(model, out_root, metrics)


# -- command line --------------------------------------------------------------------------


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _artifacts_root(config: AppConfig) -> Path:
    settings = config.plugin_config(PLUGIN_NAME).settings
    return config.resolve_path(str(settings.get("artifacts", DEFAULT_ARTIFACTS)))


def add_arguments_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source", type=Path, help="Online Retail-layout file (default: the bundled sample)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"artifact root (default: [plugin.recommender] artifacts, else {DEFAULT_ARTIFACTS})",
    )
    parser.add_argument(
        "--from-events",
        nargs="?",
        const="",
        metavar="DIR",
        help="train on the interactions the plugin logged from the gateway's events (default "
        f"DIR: [plugin.recommender] interactions_dir, else {DEFAULT_INTERACTIONS}), with the "
        "products of the gateway's catalog; with --source, on both",
    )
    parser.add_argument(
        "--algorithm", choices=("als", "bpr"), default="als", help="factor model (default: als)"
    )
    parser.add_argument(
        "--evaluate",
        action="store_true",
        help="score the parameters on the temporal split first and store the metrics",
    )


def train_command(args: argparse.Namespace, config: AppConfig) -> int:
    events_dir = None
    from_events = getattr(args, "from_events", None)
    if from_events is not None:
        settings = config.plugin_config(PLUGIN_NAME).settings
        events_dir = config.resolve_path(
            from_events or str(settings.get("interactions_dir", DEFAULT_INTERACTIONS))
        )
    source = args.source
    if source is None and events_dir is None:
        source = config.resolve_path(config.catalog.sample_interactions)
    out_root = args.out or _artifacts_root(config)
    started = time.perf_counter()
    path = train(
        source,
        out_root,
        RecommenderParams.for_algorithm(args.algorithm),
        evaluate_first=args.evaluate,
        cache_dir=config.resolve_path(EMBEDDING_CACHE),
        progress=_progress,
        events_dir=events_dir,
        catalog_path=config.resolve_path(config.catalog.path),
    )
    seconds = time.perf_counter() - started
    print(f"{out_root / CURRENT} -> {path.name} (trained in {seconds:.1f} s)")
    return 0


def add_arguments_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="interactions in the Online Retail layout")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--artifact", type=Path, help="evaluate the parameters this artifact was trained with"
    )
    source.add_argument(
        "--tune",
        action="store_true",
        help="choose parameters on the validation window first (about a minute on full data)",
    )
    source.add_argument(
        "--algorithm", choices=("als", "bpr"), help="evaluate this factor model's defaults"
    )
    parser.add_argument(
        "--days", type=int, default=30, help="length of the test and validation windows"
    )


def evaluate_command(args: argparse.Namespace, config: AppConfig) -> int:
    params = None
    if args.artifact is not None:
        params = HybridRecommender.load(args.artifact).params
    elif args.algorithm is not None:
        params = RecommenderParams.for_algorithm(args.algorithm)
    report = evaluate(
        args.file,
        params,
        tune_params=args.tune,
        days=args.days,
        cache_dir=config.resolve_path(EMBEDDING_CACHE),
        progress=_progress,
    )
    print(format_table(report))
    return 0
