"""``journeygate offers``: check the offer catalog and list what it holds, before deploying it."""

from __future__ import annotations

import argparse
import datetime as dt

from jg_offers.catalog import PLUGIN_NAME, Eligibility, OfferSpec, OffersSettings, load_catalog
from journeygate.config import AppConfig


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "offers", help="check the offer catalog ([plugin.offers] catalog) and list its offers"
    )
    parser.add_argument("--catalog", help="a catalog file other than the configured one")
    parser.set_defaults(handler=offers_command)


def _rules(rules: Eligibility) -> list[str]:
    described = []
    for name in ("stages", "intents", "personas", "segments", "channels", "consents", "triggers"):
        values = getattr(rules, name)
        if values:
            described.append(f"{name}={','.join(sorted(values))}")
    for name in ("sentiment", "cart_value", "orders"):
        low, high = getattr(rules, f"{name}_min"), getattr(rules, f"{name}_max")
        if low is not None or high is not None:
            described.append(
                f"{name}={'' if low is None else f'{low:g}'}..{'' if high is None else f'{high:g}'}"
            )
    return described


def _caps(offer: OfferSpec) -> str:
    caps = []
    if offer.caps.budget is not None:
        caps.append(f"budget {offer.caps.budget}")
    if offer.caps.per_visitor is not None:
        caps.append(f"{offer.caps.per_visitor}/visitor/{offer.caps.window_s / 3600:g}h")
    return ", ".join(caps) or "-"


def _day(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%d %H:%MZ")


def _schedule(offer: OfferSpec) -> str:
    schedule = offer.schedule
    parts = []
    if schedule.start is not None or schedule.end is not None:
        start = _day(schedule.start) if schedule.start is not None else ""
        end = _day(schedule.end) if schedule.end is not None else ""
        parts.append(f"{start}..{end}")
    if schedule.hours is not None:
        parts.append(f"{schedule.hours[0]}-{schedule.hours[1]}h")
    return " ".join(parts) or "always"


def offers_command(args: argparse.Namespace, config: AppConfig) -> int:
    """Validate the catalog (a mistake exits 2 naming the key) and print one line per offer,
    highest priority first."""
    settings = OffersSettings.read(config.plugin_config(PLUGIN_NAME).settings)
    path = config.resolve_path(args.catalog or settings.catalog)
    catalog = load_catalog(path, settings.zone)
    print(f"{path}: {len(catalog.offers)} offers, valid")
    upsell = _rules(catalog.upsell_eligibility)
    if upsell:
        print(f"upsell offers also need: {' '.join(upsell)}")
    rows = [("id", "kind", "priority", "upsell", "eligibility", "schedule", "caps")]
    for offer in sorted(catalog.offers, key=lambda o: -o.priority):
        rows.append(
            (
                offer.id,
                offer.kind,
                str(offer.priority),
                "yes" if offer.upsell else "",
                " ".join(_rules(offer.eligibility)) or "everyone",
                _schedule(offer),
                _caps(offer),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0
