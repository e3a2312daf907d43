"""``journeygate convert-retail``: the real Online Retail data as a recorded event file.

The data set only records invoices, so the browsing that led to each order is synthetic but
plausible, and derived from the invoice alone (the file is the same on every run):

* for the k-th (1..n) of the n real products of an invoice at time T (distinct stock
  codes, in invoice order), a ``product_view`` at ``T - (n - k) * 60 s - 45 s`` and a
  ``cart_add`` 30 s later: one minute per product, so an invoice's browsing is one session
  (its events are far closer than the 30 minute session gap) that ends 15 s before the order;
* a ``checkout_start`` with the basket 10 s before the order, so cart-abandonment triggers
  see a completed checkout and stay quiet, as they should for a real order;
* an ``order`` at the real invoice time T with its line items and revenue (the sum of
  quantity x unit price of its lines, postage and fees included, as invoiced);
* a cancellation invoice (``C...``) becomes an ``order_refund`` with the refunded lines and
  amount at its real time (the data does not say which order it cancels).

Only lines of a known customer are used; the customer id is the event's ``user_id``. Invoice
times have no zone in the data and are taken as UTC. Every message id is derived from the
invoice and stock code (``retail:{invoice}:{step}[:{code}]``), and every order id is the
invoice number, so replaying the file twice applies nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from journeygate.catalog import category_for
from journeygate.events.profile import iso
from journeygate.events.schema import MAX_ITEMS, MAX_QUANTITY
from journeygate.retail_data import PRODUCT_CODE, read_online_retail

PRODUCT_STEP_S = 60.0
VIEW_LEAD_S = 45.0
CART_LEAD_S = 15.0
CHECKOUT_LEAD_S = 10.0
CHANNEL = "web"


def select_lines(
    frame: pd.DataFrame, customers: int | None = None, since: date | None = None
) -> pd.DataFrame:
    """The lines to convert: known customers only, from ``since`` on, and (``customers``)
    only the N lowest customer ids, so a slice is the same on every run."""
    frame = frame.loc[frame["CustomerID"].notna()]
    if since is not None:
        frame = frame.loc[frame["InvoiceDate"] >= pd.Timestamp(since)]
    if customers is not None:
        chosen = sorted(frame["CustomerID"].unique())[:customers]
        frame = frame.loc[frame["CustomerID"].isin(chosen)]
    return frame


@dataclass(slots=True)
class _Line:
    code: str
    title: str
    quantity: int
    price: float


def _items(lines: list[_Line], sign: int) -> tuple[list[dict[str, Any]], float]:
    """The basket of an invoice (one item per stock code, at most ``MAX_ITEMS``: the largest
    by value) and the invoiced amount, which always counts every line."""
    amount = round(sum(line.quantity * line.price * sign for line in lines), 2)
    by_code: dict[str, list[Any]] = {}
    for line in lines:
        entry = by_code.setdefault(line.code, [0, 0.0, line.title])
        entry[0] += line.quantity * sign
        entry[1] += line.quantity * line.price * sign
    basket = [(code, qty, value, title) for code, (qty, value, title) in by_code.items()]
    basket = [entry for entry in basket if entry[1] > 0 and entry[2] > 0]
    if len(basket) > MAX_ITEMS:
        largest = set(sorted(range(len(basket)), key=lambda i: -basket[i][2])[:MAX_ITEMS])
        basket = [entry for i, entry in enumerate(basket) if i in largest]
    items = [
        {
            "product_id": code,
            # the schema caps quantities; the amount above is still the invoiced one
            "quantity": min(qty, MAX_QUANTITY),
            "price": round(value / qty, 4),
            "category": category_for(title),
        }
        for code, qty, value, title in basket
    ]
    return items, amount


def _event(
    name: str, user: str, at: float, message_id: str, properties: dict[str, Any]
) -> dict[str, Any]:
    return {
        "event": name,
        "user_id": user,
        "channel": CHANNEL,
        "timestamp": iso(at),
        "message_id": message_id,
        "properties": properties,
    }


def invoice_events(
    invoice: str, user: str, at: float, country: str, lines: list[_Line]
) -> list[dict[str, Any]]:
    """The events of one invoice of customer ``user`` at ``at`` (epoch seconds)."""
    if invoice.startswith("C"):
        items, amount = _items(lines, -1)
        if amount <= 0:
            return []
        refund = {"order_id": invoice, "revenue": amount, "currency": "GBP", "products": items}
        return [_event("order_refund", user, at, f"retail:{invoice}:refund", refund)]
    if invoice.startswith("A"):
        return []  # bad-debt adjustments, not sales
    lines = [line for line in lines if line.quantity > 0 and line.price > 0]
    if not lines:
        return []
    items, amount = _items(lines, 1)
    events: list[dict[str, Any]] = []
    products = [item for item in items if PRODUCT_CODE.match(item["product_id"])]
    for k, item in enumerate(products):
        before = (len(products) - 1 - k) * PRODUCT_STEP_S
        product = {key: item[key] for key in ("product_id", "price", "category")}
        code = item["product_id"]
        view = _event(
            "product_view",
            user,
            at - before - VIEW_LEAD_S,
            f"retail:{invoice}:view:{code}",
            product,
        )
        cart = _event(
            "cart_add",
            user,
            at - before - CART_LEAD_S,
            f"retail:{invoice}:cart:{code}",
            {**product, "quantity": item["quantity"]},
        )
        events += (view, cart)
    basket = {"order_id": invoice, "products": items}
    events.append(
        _event("checkout_start", user, at - CHECKOUT_LEAD_S, f"retail:{invoice}:checkout", basket)
    )
    order = {**basket, "revenue": amount, "currency": "GBP", "country": country}
    events.append(_event("order", user, at, f"retail:{invoice}:order", order))
    return events


def retail_events(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Every event of ``frame``'s invoices, sorted by event time (as a recording would be).
    Plain Python over the rows: a pandas group per invoice is ~50x slower."""
    invoices: dict[str, tuple[str, float, str, list[_Line]]] = {}
    times = frame["InvoiceDate"].dt.tz_localize("UTC").map(pd.Timestamp.timestamp)
    for invoice, code, title, quantity, price, customer, country, at in zip(
        frame["InvoiceNo"],
        frame["StockCode"],
        frame["Description"],
        frame["Quantity"],
        frame["UnitPrice"],
        frame["CustomerID"],
        frame["Country"],
        times,
        strict=True,
    ):
        lines = invoices.setdefault(invoice, (str(customer), float(at), str(country), []))[3]
        lines.append(
            _Line(str(code), title if isinstance(title, str) else "", int(quantity), float(price))
        )
    events: list[dict[str, Any]] = []
    for invoice, (user, at, country, lines) in invoices.items():
        events += invoice_events(invoice, user, at, country, lines)
    events.sort(key=lambda event: str(event["timestamp"]))
    return events


def write_events(events: Iterable[dict[str, Any]], out: Path) -> int:
    """Write JSON Lines (one event per line); returns the number written."""
    count = 0
    with out.open("wb") as file:
        for event in events:
            file.write(orjson.dumps(event) + b"\n")
            count += 1
    return count


def convert_retail(
    source: str | Path, out: str | Path, customers: int | None = None, since: date | None = None
) -> tuple[int, int, int]:
    """Convert an Online Retail file (CSV, CSV.gz or Parquet) into an event file; returns
    (customers, invoices, events)."""
    frame = select_lines(read_online_retail(source), customers, since)
    written = write_events(retail_events(frame), Path(out))
    return int(frame["CustomerID"].nunique()), int(frame["InvoiceNo"].nunique()), written
