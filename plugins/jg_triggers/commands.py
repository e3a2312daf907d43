"""``journeygate triggers list`` (the configured triggers and guardrails, checked) and
``journeygate triggers log`` (fired triggers and what became of them, newest first)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from jg_triggers.settings import (
    PLUGIN_NAME,
    CartAbandonment,
    HighValueInfrequent,
    Inactivity,
    LongDwell,
    NegativeFeedback,
    PluginSettings,
    PostPurchase,
    RepeatedProductInterest,
    SearchNoResults,
    SearchPattern,
    TriggerSpec,
    load_settings,
)
from journeygate.config import AppConfig
from journeygate.store import StoreUnavailable

DEFAULT_LOG_COUNT = 20


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("triggers", help="behavioral triggers: list, log")
    commands = parser.add_subparsers(dest="triggers_command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="check config/triggers.toml and list triggers")
    listing.add_argument("--file", help="a trigger file other than the configured one")
    listing.set_defaults(handler=list_command)
    logged = commands.add_parser("log", help="fired triggers and their outcomes, newest first")
    logged.add_argument("--count", type=int, default=DEFAULT_LOG_COUNT, help="lines (default 20)")
    logged.set_defaults(handler=log_command)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def describe(spec: TriggerSpec) -> str:
    """What a trigger watches, in a few words."""
    rule = spec.rule
    if isinstance(rule, CartAbandonment):
        return f"cart, no checkout within {_duration(rule.delay_s)}"
    if isinstance(rule, RepeatedProductInterest):
        return f"{rule.views} views of a product in {_duration(rule.window_s)}, not bought"
    if isinstance(rule, LongDwell):
        pages = (["product pages"] if rule.products else []) + list(rule.paths)
        return f"{_duration(rule.threshold_s)} on {', '.join(pages)}"
    if isinstance(rule, SearchNoResults):
        return "a search with no results"
    if isinstance(rule, SearchPattern):
        return f"a search matching {' | '.join(p.pattern for p in rule.patterns)}"
    if isinstance(rule, Inactivity):
        return f"no visit for {_duration(rule.delay_s)} after {rule.min_events}+ events"
    if isinstance(rule, PostPurchase):
        return f"{_duration(rule.delay_s)} after an order"
    if isinstance(rule, HighValueInfrequent):
        return (
            f"average order >= {rule.min_average_order_value:g}, "
            f"< {rule.max_orders_per_year:g} orders/year"
        )
    assert isinstance(rule, NegativeFeedback)
    return "feedback labelled negative"


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def list_command(args: argparse.Namespace, config: AppConfig) -> int:
    """Check the trigger file (a mistake exits 2 naming the key) and print one line per
    trigger, then the caps and quiet hours."""
    path = config.resolve_path(
        args.file or PluginSettings.read(config.plugin_config(PLUGIN_NAME).settings).file
    )
    settings = load_settings(path)
    endpoints = config.webhooks.endpoints
    state = "" if endpoints else "; inactive: no [webhooks.endpoints] configured"
    print(f"{path}: {len(settings.active)} of {len(settings.triggers)} triggers enabled{state}")
    rows = [("trigger", "type", "when", "action", "endpoint", "guardrails")]
    for spec in settings.triggers:
        guards = []
        if spec.marketing:
            guards.append(f"consent {spec.consent}, quiet hours")
        if spec.debounce_s:
            guards.append(f"debounce {_duration(spec.debounce_s)}")
        cap = settings.caps.get(spec.action)
        if cap is not None:
            guards.append(f"cap {cap.count} per {_duration(cap.window_s)}")
        endpoint = spec.endpoint if spec.endpoint in endpoints else f"{spec.endpoint} (missing)"
        name = spec.name if spec.enabled else f"{spec.name} (off)"
        rows.append((name, spec.type, describe(spec), spec.action, endpoint, "; ".join(guards)))
    _table(rows)
    quiet = settings.quiet_hours
    if quiet is not None:
        print(f"quiet hours: {quiet.start:%H:%M}-{quiet.end:%H:%M} {quiet.zone}")
    return 0


def log_command(args: argparse.Namespace, config: AppConfig) -> int:
    """The newest fired triggers from the log stream (Redis)."""
    if config.store_backend != "redis":
        print("journeygate: the trigger log is kept in Redis: set REDIS_URL (or store.redis_url)")
        return 2
    if args.count < 1:
        print("journeygate: --count must be at least 1")
        return 2
    from jg_triggers.plugin import open_trigger_store

    settings = load_settings(
        config.resolve_path(PluginSettings.read(config.plugin_config(PLUGIN_NAME).settings).file)
    )

    async def read() -> int:
        store = open_trigger_store(config, settings)
        try:
            records = await store.read_log(args.count)
        except StoreUnavailable as exc:
            print(f"journeygate: {exc}")
            return 1
        finally:
            await store.close()
        if not records:
            print("no trigger has fired")
            return 0
        rows = [("at", "trigger", "visitor", "outcome", "detail", "occurrence")]
        for record in records:
            at = datetime.fromtimestamp(record.at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            rows.append(
                (
                    at,
                    record.trigger,
                    record.visitor,
                    record.outcome,
                    record.detail,
                    record.occurrence,
                )
            )
        _table(rows)
        return 0

    return asyncio.run(read())
