"""The profile as ``GET /v1/profiles/{id}`` shows it, computed from what the worker stored.

Derived figures are computed when read, not stored, so they stay right whatever order the
events arrived in: dwell time (from consecutive page events of a session, by event time),
average order value, purchase frequency, recency, preferred categories and channel.
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime
from typing import Any

from journeygate.store import RawVisitor

# Numeric fields the worker keeps in the profile hash; any other field there was set by a
# plugin or the decide pipeline and is shown under ``attributes``.
AGGREGATES = (
    "events",
    "page_views",
    "product_views",
    "searches",
    "cart_adds",
    "cart_removes",
    "checkouts",
    "orders",
    "revenue",
    "refunds",
    "refunded",
    "cancellations",
)
TIMES = ("first_seen", "last_seen", "first_order_at", "last_order_at", "last_checkout_at")
TOP_CATEGORIES = 5
DAY = 86400.0
# Purchase frequency is orders per year over the time since the first order, but over at
# least this many days, so one recent order does not read as 365 orders a year.
MIN_FREQUENCY_SPAN_DAYS = 30


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _session(raw: dict[str, Any], gap: float) -> dict[str, Any]:
    fields = raw["fields"]
    dwell: dict[str, float] = {}
    page_dwell: dict[str, float] = {}
    pages = raw["pages"]
    for ((product_id, path), at), (_, following) in itertools.pairwise(pages):
        seconds = following - at
        if seconds > gap:
            continue
        if product_id:
            dwell[product_id] = dwell.get(product_id, 0.0) + seconds
        if path:
            page_dwell[path] = page_dwell.get(path, 0.0) + seconds
    products = [
        {"product_id": pid, "views": int(views), "dwell_s": round(dwell.pop(pid, 0.0), 3)}
        for pid, views in raw["products"]
    ]
    started, last = fields.get("start", 0.0), fields.get("last", 0.0)
    return {
        "session_id": raw["id"],
        "started_at": iso(started),
        "last_activity_at": iso(last),
        "duration_s": round(last - started, 3),
        "events": int(fields.get("events", 0)),
        "page_views": int(fields.get("pages", 0)),
        "channels": {
            name[3:]: int(count) for name, count in fields.items() if name.startswith("ch:")
        },
        "products_viewed": products,
        "categories_viewed": [
            {"category": category, "views": int(views)} for category, views in raw["categories"]
        ],
        "page_dwell_s": {path: round(seconds, 3) for path, seconds in page_dwell.items()},
        "searches": list(raw["searches"]),
        "cart_adds": int(fields.get("cart_adds", 0)),
        "cart_removes": int(fields.get("cart_removes", 0)),
        "checkouts": int(fields.get("checkouts", 0)),
        "orders": int(fields.get("orders", 0)),
        "revenue": round(float(fields.get("revenue", 0.0)), 2),
    }


def build_profile(
    raw: RawVisitor,
    requested_id: str,
    profile_id: str,
    session_gap_s: float,
    max_sessions: int | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The merged profile of ``profile_id`` (``requested_id`` may be an id merged into it)."""
    now = time.time() if now is None else now
    stored = raw.profile
    numbers = {name: stored.get(name, 0) for name in AGGREGATES}
    orders = int(numbers["orders"])
    revenue = round(float(numbers["revenue"]), 2)
    first_order_at = stored.get("first_order_at")
    last_order_at = stored.get("last_order_at")
    last_seen = stored.get("last_seen")
    frequency = None
    if orders and first_order_at is not None:
        span_days = max((now - first_order_at) / DAY, MIN_FREQUENCY_SPAN_DAYS)
        frequency = round(orders * 365 / span_days, 3)
    aggregates: dict[str, Any] = {
        name: (round(float(value), 2) if name in ("revenue", "refunded") else int(value))
        for name, value in numbers.items()
    }
    aggregates |= {
        "revenue": revenue,
        "average_order_value": round(revenue / orders, 2) if orders else None,
        "purchase_frequency_per_year": frequency,
        "days_since_last_order": (
            round((now - last_order_at) / DAY, 2) if last_order_at is not None else None
        ),
        "days_since_last_seen": round((now - last_seen) / DAY, 2) if last_seen else None,
    }
    channels = dict(sorted(raw.channels.items(), key=lambda pair: (-pair[1], pair[0])))
    items: list[dict[str, Any]] = [
        {"product_id": pid, "quantity": quantity, "price": price}
        for pid, (quantity, price) in sorted(raw.cart.items())
    ]
    sessions = raw.sessions if max_sessions is None else raw.sessions[:max_sessions]
    return {
        "visitor_id": requested_id,
        "profile_id": profile_id,
        "merged_ids": list(raw.aliases),
        **{name: iso(stored.get(name)) for name in TIMES},
        "aggregates": aggregates,
        "preferred_categories": [
            {"category": category, "score": score}
            for category, score in raw.categories[:TOP_CATEGORIES]
        ],
        "preferred_channel": next(iter(channels), None),
        "channels": channels,
        "consents": {
            name: {"granted": granted, "updated_at": iso(at)}
            for name, (granted, at) in sorted(raw.consents.items())
        },
        "purchased_products": [pid for pid, _ in raw.purchased],
        "cart": {
            "items": items,
            "value": round(sum(i["quantity"] * (i["price"] or 0.0) for i in items), 2),
        },
        "sessions": [_session(session, session_gap_s) for session in sessions],
        "attributes": {
            name: value
            for name, value in stored.items()
            if name not in AGGREGATES and name not in TIMES
        },
    }
