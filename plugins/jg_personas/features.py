"""Per-customer purchase features, computed the same way from a data file and from a profile.

From a file (:func:`customer_features`), the lines count exactly as ``journeygate
convert-retail`` turns them into events (:mod:`journeygate.events.retail_events`): an order is
an invoice not starting with ``C`` or ``A`` with its positive lines, worth the sum of
quantity x unit price of those lines (postage and fees included, as invoiced); a refund is a
``C`` invoice with a positive refunded amount; the visitor id is the customer id as a decimal
string (the events' ``user_id``). So a customer's features from the file are the features
of the profile that replaying the converted events builds (:func:`profile_features`), at the
same reference time. Times are measured up to ``reference``: the file's last invoice, or now
for a live profile. Orders per year use the profile's rule (orders over the time since the
first order, at least ``MIN_FREQUENCY_SPAN_DAYS``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from journeygate.events.profile import DAY, MIN_FREQUENCY_SPAN_DAYS
from journeygate.events.retail_events import select_lines
from journeygate.retail_data import PRODUCT_CODE


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    label: str  # column header of the summary table
    log: bool  # log1p before standardising (heavy-tailed amounts and counts)
    live: bool  # computable from a profile's aggregates at decision time


FEATURES = (
    Feature("days_since_last_order", "recency_d", log=True, live=True),
    Feature("orders_per_year", "orders/yr", log=True, live=True),
    Feature("revenue", "revenue", log=True, live=True),
    Feature("average_order_value", "AOV", log=True, live=True),
    Feature("distinct_products", "products", log=True, live=False),
    Feature("units_per_order", "units/order", log=True, live=False),
    Feature("return_rate", "returns", log=False, live=True),
    Feature("tenure_days", "tenure_d", log=True, live=True),
)
FEATURE_NAMES = tuple(feature.name for feature in FEATURES)
# Not clustered, but shown and usable in rule segments.
COUNTS = ("orders", "refunds")


def orders_per_year(orders: float, tenure_days: float) -> float:
    return float(orders * 365 / max(tenure_days, MIN_FREQUENCY_SPAN_DAYS))


def return_rate(orders: float, refunds: float) -> float:
    """Refund invoices among all invoices: 0 (never returned) to 1 (only refunds)."""
    total = orders + refunds
    return refunds / total if total else 0.0


def customer_features(frame: pd.DataFrame, reference: pd.Timestamp | None = None) -> pd.DataFrame:
    """One row per customer with at least one order (index ``visitor_id``), the columns of
    ``FEATURES`` and ``COUNTS``. ``reference`` defaults to the file's last invoice time."""
    lines = select_lines(frame)
    reference = frame["InvoiceDate"].max() if reference is None else reference
    amount = lines["Quantity"] * lines["UnitPrice"]
    invoice = lines["InvoiceNo"]
    sold = ~invoice.str.startswith(("C", "A")) & (lines["Quantity"] > 0) & (lines["UnitPrice"] > 0)
    sales = lines.loc[sold].assign(amount=amount[sold])
    orders = sales.groupby(["CustomerID", "InvoiceNo"], sort=False).agg(
        at=("InvoiceDate", "first"), amount=("amount", "sum")
    )
    orders["amount"] = orders["amount"].round(2)
    per_customer = orders.groupby(level="CustomerID").agg(
        orders=("amount", "size"),
        revenue=("amount", "sum"),
        first=("at", "min"),
        last=("at", "max"),
    )
    cancelled = lines.loc[invoice.str.startswith("C")].assign(amount=-amount)
    refunded = cancelled.groupby(["CustomerID", "InvoiceNo"], sort=False)["amount"].sum().round(2)
    refunds = (refunded > 0).groupby(level="CustomerID").sum()
    products = sales.loc[sales["StockCode"].str.match(PRODUCT_CODE)]
    by_customer = products.groupby("CustomerID")
    table = per_customer.assign(
        refunds=refunds.reindex(per_customer.index, fill_value=0),
        distinct_products=by_customer["StockCode"].nunique(),
        units=by_customer["Quantity"].sum(),
    ).fillna({"distinct_products": 0, "units": 0})
    tenure = (reference - table["first"]) / pd.Timedelta(seconds=DAY)
    features = pd.DataFrame(
        {
            "days_since_last_order": (reference - table["last"]) / pd.Timedelta(seconds=DAY),
            "orders_per_year": [
                orders_per_year(n, days) for n, days in zip(table["orders"], tenure, strict=True)
            ],
            "revenue": table["revenue"],
            "average_order_value": table["revenue"] / table["orders"],
            "distinct_products": table["distinct_products"],
            "units_per_order": table["units"] / table["orders"],
            "return_rate": [
                return_rate(n, r) for n, r in zip(table["orders"], table["refunds"], strict=True)
            ],
            "tenure_days": tenure,
            "orders": table["orders"],
            "refunds": table["refunds"],
        },
        index=table.index,
    ).astype(float)
    features.index = features.index.astype(str).rename("visitor_id")
    return features.sort_index()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def profile_features(profile: Mapping[str, Any], now: float) -> dict[str, float]:
    """The live features and counts of a profile the event worker built (``orders``,
    ``revenue``, ``refunds``, ``first_order_at``, ``last_order_at``); empty without orders.
    ``distinct_products`` and ``units_per_order`` are not in the profile and are left out."""
    orders = _number(profile.get("orders")) or 0.0
    first, last = _number(profile.get("first_order_at")), _number(profile.get("last_order_at"))
    if orders <= 0 or first is None or last is None:
        return {}
    revenue = _number(profile.get("revenue")) or 0.0
    refunds = _number(profile.get("refunds")) or 0.0
    tenure = max(now - first, 0.0) / DAY
    return {
        "days_since_last_order": max(now - last, 0.0) / DAY,
        "orders_per_year": orders_per_year(orders, tenure),
        "revenue": revenue,
        "average_order_value": revenue / orders,
        "return_rate": return_rate(orders, refunds),
        "tenure_days": tenure,
        "orders": orders,
        "refunds": refunds,
    }
