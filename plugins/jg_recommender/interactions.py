"""The interactions table every recommender component learns from, and its confidence matrix.

One row per interaction: ``user_id`` (str), ``item_id`` (str), ``event`` (str), ``quantity``
(float), ``timestamp`` (datetime64), ``basket_id`` (str or None). It is built from Online
Retail purchase lines (:func:`from_online_retail`) or from gateway events (:func:`from_events`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from journeygate.retail_data import purchases

COLUMNS = ("user_id", "item_id", "event", "quantity", "timestamp", "basket_id")

# Implicit-feedback strength of one event. A purchase is the strongest evidence of interest;
# adding to the cart is a deliberate step towards it; clicking a recommendation block shows
# interest in a product we proposed (stronger than a view, which may be a bounce); a product
# view is the weakest signal. The ratios follow the usual funnel (views >> carts >> orders),
# so a handful of views never outweighs a purchase.
EVENT_WEIGHTS: Mapping[str, float] = {
    "view": 1.0,
    "block_click": 2.0,
    "cart_add": 3.0,
    "purchase": 5.0,
}
SECONDS_PER_DAY = 86_400.0


def _table(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce a frame with the interaction columns to the table's dtypes."""
    unknown = set(frame["event"]) - set(EVENT_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown event type {sorted(unknown)[0]!r}")
    table = pd.DataFrame(
        {
            "user_id": frame["user_id"].astype(str),
            "item_id": frame["item_id"].astype(str),
            "event": frame["event"].astype(str),
            "quantity": frame["quantity"].astype(float),
            "timestamp": pd.to_datetime(frame["timestamp"]),
            "basket_id": frame["basket_id"].astype(object),
        }
    )
    return table.sort_values("timestamp", kind="stable").reset_index(drop=True)


def from_online_retail(frame: pd.DataFrame) -> pd.DataFrame:
    """Purchase lines of known customers as ``purchase`` events, one basket per invoice.

    Lines without a CustomerID are dropped: they cannot be tied to anyone's history.
    """
    lines = purchases(frame)
    lines = lines.loc[lines["CustomerID"].notna()]
    return _table(
        pd.DataFrame(
            {
                "user_id": lines["CustomerID"].astype("int64").astype(str),
                "item_id": lines["StockCode"],
                "event": "purchase",
                "quantity": lines["Quantity"],
                "timestamp": lines["InvoiceDate"],
                "basket_id": lines["InvoiceNo"],
            }
        )
    )


def from_events(events: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Gateway events (mappings with the table's keys; ``quantity`` defaults to 1 and
    ``basket_id`` to None) as an interactions table."""
    frame = pd.DataFrame.from_records(list(events), columns=list(COLUMNS))
    frame["quantity"] = frame["quantity"].fillna(1.0)
    frame["basket_id"] = frame["basket_id"].where(frame["basket_id"].notna(), None)
    return _table(frame)


def confidence_matrix(
    interactions: pd.DataFrame,
    items: Sequence[str] | np.ndarray,
    half_life_days: float,
    users: Sequence[str] | np.ndarray | None = None,
    now: pd.Timestamp | None = None,
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """User × item implicit-feedback confidence: the sum over a pair's interactions of
    ``EVENT_WEIGHTS[event] * log1p(quantity) * 0.5 ** (age_days / half_life_days)``.

    Log-quantity keeps a wholesaler's 480-unit order from drowning every other signal; the
    decay (age measured from ``now``, default the last interaction) lets recent taste win.
    Columns follow ``items`` (interactions with other items are ignored, items without any
    keep an empty column); rows follow ``users`` or, by default, the users in the table.
    Returns the matrix with its user and item id arrays.
    """
    item_ids = np.asarray(items, dtype=str)
    user_ids = (
        np.asarray(users, dtype=str)
        if users is not None
        else np.asarray(pd.unique(interactions["user_id"]), dtype=str)
    )
    item_pos = pd.Index(item_ids).get_indexer(interactions["item_id"])
    user_pos = pd.Index(user_ids).get_indexer(interactions["user_id"])
    keep = (item_pos >= 0) & (user_pos >= 0)
    rows = interactions.loc[keep]
    if now is None:
        now = rows["timestamp"].max() if len(rows) else pd.Timestamp(0)
    age_days = (now - rows["timestamp"]).dt.total_seconds().to_numpy() / SECONDS_PER_DAY
    weights = (
        rows["event"].map(EVENT_WEIGHTS).to_numpy(dtype=np.float64)
        * np.log1p(rows["quantity"].clip(lower=0).to_numpy(dtype=np.float64))
        * np.exp2(-np.clip(age_days, 0, None) / half_life_days)
    )
    matrix = sp.csr_matrix(
        (weights, (user_pos[keep], item_pos[keep])),
        shape=(len(user_ids), len(item_ids)),
        dtype=np.float32,
    )
    matrix.sum_duplicates()
    return matrix, user_ids, item_ids
