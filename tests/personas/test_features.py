"""Customer features from the real sample: hand-computed values, and the same figures from the
profile that replaying the customer's converted events builds."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pandas as pd
import pytest

from jg_personas.features import FEATURES, customer_features, profile_features
from journeygate.config import EventsConfig
from journeygate.events.apply import Applier
from journeygate.events.ingest import parse_batch
from journeygate.events.retail_events import retail_events
from journeygate.events.schema import parse_native
from journeygate.store import open_store

EVENT_TESTS = str(Path(__file__).resolve().parents[1] / "events")
if EVENT_TESTS not in sys.path:
    sys.path.append(EVENT_TESTS)
eventkit = importlib.import_module("eventkit")

# The sample's last invoice: 2011-12-09 12:50. Worked out by hand from the customers' lines:
HAND_COMPUTED = {
    # 577556 on 2011-11-20 15:36: 12 x 1.45 + 12 x 1.65 + 4 x 3.75 = 52.20;
    # C578003 refunds 3 x 3.75. One order, one refund.
    "13832": {
        "days_since_last_order": 18 + (21 * 60 + 14) / 1440,  # 18 d 21 h 14 min
        "orders_per_year": 365 / 30,  # one order, span below 30 days
        "revenue": 52.20,
        "average_order_value": 52.20,
        "distinct_products": 3,
        "units_per_order": 28,
        "return_rate": 0.5,  # 1 refund / (1 order + 1 refund)
        "tenure_days": 18 + (21 * 60 + 14) / 1440,
        "orders": 1,
        "refunds": 1,
    },
    # 539006 on 2010-12-15 12:54: 40.68 + 12.60 + 25.20 + 23.80 = 102.28;
    # 579939 on 2011-12-01 10:18: 30.60 + 17.85 + 104.40 + 62.40 = 215.25; C540379 refunds 2.
    "15101": {
        "days_since_last_order": 8 + (2 * 60 + 32) / 1440,
        "orders_per_year": 2 * 365 / (358 + (23 * 60 + 56) / 1440),
        "revenue": 317.53,
        "average_order_value": 317.53 / 2,
        "distinct_products": 8,
        "units_per_order": (12 + 6 + 12 + 4 + 36 + 3 + 72 + 96) / 2,
        "return_rate": 1 / 3,
        "tenure_days": 358 + (23 * 60 + 56) / 1440,
        "orders": 2,
        "refunds": 1,
    },
    # 580955 on 2011-12-06 14:22: 11 products (144.06) and postage (28.00) = 172.06;
    # postage counts in revenue, not as a product or as units.
    "12442": {
        "days_since_last_order": 2 + (22 * 60 + 28) / 1440,
        "orders_per_year": 365 / 30,
        "revenue": 172.06,
        "average_order_value": 172.06,
        "distinct_products": 11,
        "units_per_order": 12 + 6 + 6 + 12 + 24 + 24 + 24 + 12 + 12 + 25 + 24,
        "return_rate": 0.0,
        "tenure_days": 2 + (22 * 60 + 28) / 1440,
        "orders": 1,
        "refunds": 0,
    },
}


def test_features_match_hand_computed_values(features):
    for customer, expected in HAND_COMPUTED.items():
        row = features.loc[customer]
        assert row.to_dict() == pytest.approx(expected, rel=1e-9), customer


def test_only_customers_with_an_order_are_featured(retail_frame, features):
    # 12605's three lines are all cancellations
    assert "12605" not in features.index
    known = retail_frame.loc[retail_frame["CustomerID"].notna()]
    assert len(features) == known["CustomerID"].nunique() - 5
    assert list(features.columns) == [f.name for f in FEATURES] + ["orders", "refunds"]
    assert (features["orders"] >= 1).all() and features.index.is_monotonic_increasing


def test_reference_time_defaults_to_the_last_invoice(retail_frame, features):
    later = customer_features(
        retail_frame, retail_frame["InvoiceDate"].max() + pd.Timedelta(days=10)
    )
    shifted = later["days_since_last_order"] - features["days_since_last_order"]
    assert shifted.to_numpy() == pytest.approx(10.0)


async def test_replayed_events_build_profiles_with_the_same_features(
    retail_frame, features, make_config, redis_url
):
    """The live features of a profile the event worker built equal the file's, at the same
    reference time: personas assigned live and in batch agree."""
    customers = ["13832", "15101", "12442", "12863", "12365"]
    chosen = retail_frame.loc[retail_frame["CustomerID"].astype(str).isin(customers)]
    batch = parse_batch(retail_events(chosen), "events", parse_native, EventsConfig())
    assert batch.rejected == []
    url = eventkit.fresh_redis_url(redis_url)
    config = make_config(store={"redis_url": url, "timeout_ms": 2000})
    store = open_store(config.store, "redis", config.events)
    try:
        await Applier(store, config).apply(batch.accepted)
        reference = retail_frame["InvoiceDate"].max().tz_localize("UTC").timestamp()
        for customer in customers:
            live = profile_features(await store.get_profile(customer), reference)
            expected = features.loc[customer]
            assert set(live) == {f.name for f in FEATURES if f.live} | {"orders", "refunds"}
            for name, value in live.items():
                assert value == pytest.approx(expected[name], rel=1e-6, abs=0.01), (customer, name)
    finally:
        await store.close()


def test_a_profile_without_orders_has_no_features():
    assert profile_features({}, 0.0) == {}
    assert profile_features({"orders": 0, "product_views": 4}, 0.0) == {}
    assert profile_features({"orders": "x", "first_order_at": 1.0, "last_order_at": 1.0}, 2.0) == {}
