"""``journeygate segment [FILE]``: cluster an Online Retail file's customers into personas.

Computes every customer's features, fits and names the clusters (:mod:`jg_personas.clustering`),
publishes the model as a versioned artifact (``personas.json`` and every customer's persona in
``assignments.csv``), prints the summary table, and, with Redis configured, writes each
customer's ``persona`` and ``persona_model`` (the artifact's version) to their profile.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from jg_personas.features import FEATURES, customer_features
from jg_personas.model import PersonaModel
from jg_personas.settings import PLUGIN_NAME, PersonaSettings
from journeygate.artifacts import publish_artifact
from journeygate.config import AppConfig
from journeygate.retail_data import RetailDataError, read_online_retail
from journeygate.store import StoreUnavailable, open_store

ASSIGNMENTS_FILE = "assignments.csv"
PROFILE_CHUNK = 500  # visitors per pipelined round trip
WRITE_TIMEOUT_MS = 10_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", nargs="?", help="Online Retail file, CSV(.gz) or Parquet (default: the sample)"
    )
    parser.add_argument("--out", help="artifact directory (default: plugin.personas.artifacts)")
    parser.add_argument(
        "--no-profiles", action="store_true", help="do not write personas to profiles"
    )


def format_table(model: PersonaModel) -> str:
    """The personas with their customers, share and feature medians, one line each."""
    total = sum(persona.customers for persona in model.personas)
    width = max(len("persona"), *(len(persona.name) for persona in model.personas))
    widths = [max(len(feature.label), 7) for feature in FEATURES]
    labels = "  ".join(f"{f.label:>{w}}" for f, w in zip(FEATURES, widths, strict=True))
    rows = [f"{'persona':<{width}}  customers   share  {labels}"]
    for persona in model.personas:
        figures = "  ".join(
            f"{persona.medians[f.name]:>{w}.{2 if f.name == 'return_rate' else 1}f}"
            for f, w in zip(FEATURES, widths, strict=True)
        )
        share = f"{persona.customers / total:.1%}"
        rows.append(f"{persona.name:<{width}}  {persona.customers:>9}  {share:>6}  {figures}")
    return "\n".join(rows)


async def write_profiles(
    config: AppConfig, assignments: Sequence[tuple[str, str]], version: str
) -> None:
    """Set ``persona`` and ``persona_model`` on every customer's profile, in chunks of
    ``PROFILE_CHUNK`` visitors per round trip."""
    # The decide path's store timeout is tens of milliseconds; a bulk write may take longer.
    timeout_ms = max(config.store.timeout_ms, WRITE_TIMEOUT_MS)
    store = open_store(
        dataclasses.replace(config.store, timeout_ms=timeout_ms),
        config.store_backend,
        config.events,
    )
    try:
        for start in range(0, len(assignments), PROFILE_CHUNK):
            chunk = assignments[start : start + PROFILE_CHUNK]
            await store.update_profiles(
                [
                    (visitor_id, {"persona": persona, "persona_model": version})
                    for visitor_id, persona in chunk
                ]
            )
    finally:
        await store.close()


def segment_command(args: argparse.Namespace, config: AppConfig) -> int:
    try:
        settings = PersonaSettings.from_mapping(config.plugin_config(PLUGIN_NAME).settings)
    except ValueError as exc:
        print(f"journeygate segment: {exc}", file=sys.stderr)
        return 2
    source = (
        Path(args.file) if args.file else config.resolve_path(config.catalog.sample_interactions)
    )
    out = Path(args.out) if args.out else config.resolve_path(settings.artifacts)
    # scikit-learn only here: every process that builds the command line (the gateway and
    # its workers included) would otherwise import it at startup
    from jg_personas.clustering import TooFewCustomers, fit_personas

    started = time.perf_counter()
    try:
        frame = read_online_retail(source)
        reference = frame["InvoiceDate"].max()
        about = {
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": str(source),
            "reference_time": pd.Timestamp(reference).isoformat(),
        }
        table = customer_features(frame, reference)
        model, labels = fit_personas(table, about)
    except (RetailDataError, TooFewCustomers) as exc:
        print(f"journeygate segment: {exc}", file=sys.stderr)
        return 2
    ids = np.array([persona.id for persona in model.personas])
    assignments = pd.DataFrame({"visitor_id": table.index, "persona": ids[labels]})

    def write(directory: Path) -> None:
        model.save(directory)
        assignments.to_csv(directory / ASSIGNMENTS_FILE, index=False)

    path = publish_artifact(out, write)
    seconds = time.perf_counter() - started
    scores = ", ".join(f"{k}: {score:.3f}" for k, score in model.meta["silhouette"].items())
    print(
        f"{len(table)} customers of {source} (reference {reference:%Y-%m-%d %H:%M}); "
        f"k = {model.meta['k']}, the {model.meta['k_criterion']} "
        f"(on {model.meta['silhouette_sample']} customers; {scores})"
    )
    print(format_table(model))
    print(f"medians per persona; model {path} ({seconds:.1f} s)")
    if args.no_profiles:
        return 0
    if config.store_backend != "redis":
        print(
            f"no Redis configured (REDIS_URL): personas not written to profiles; "
            f"they are in {path / ASSIGNMENTS_FILE}"
        )
        return 0
    pairs = list(zip(assignments["visitor_id"], assignments["persona"], strict=True))
    started = time.perf_counter()
    try:
        asyncio.run(write_profiles(config, pairs, path.name))
    except StoreUnavailable as exc:
        print(f"journeygate segment: profiles not written: {exc}", file=sys.stderr)
        return 1
    print(
        f"persona written to {len(pairs)} profiles in {time.perf_counter() - started:.2f} s "
        f"(fields persona, persona_model = {path.name})"
    )
    return 0
