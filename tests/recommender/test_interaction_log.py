"""The interactions log: real Online Retail events through a gateway and a worker into the
recommender's log, ``journeygate train --from-events`` on it, the worker's cheap startup,
identity stitching and retention."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jg_recommender import training
from jg_recommender.interaction_log import (
    InteractionLog,
    interaction_rows,
    load_logged_interactions,
    log_files,
    read_rows,
)
from jg_recommender.model import HybridRecommender
from jg_recommender.plugin import RecommenderPlugin
from journeygate import appkeys
from journeygate.artifacts import latest_artifact
from journeygate.catalog import build_catalog, write_catalog
from journeygate.events.replay import replay
from journeygate.events.retail_events import retail_events, select_lines, write_events
from journeygate.events.schema import MAX_QUANTITY, Event, parse_native
from journeygate.events.worker import serve
from journeygate.registry import build_plugin_manager
from journeygate.retail_data import PRODUCT_CODE, read_online_retail
from testkit import SAMPLE

# The event tests' helpers (a module of tests/events, which is on the path only when those
# tests were collected first).
EVENT_TESTS = str(Path(__file__).resolve().parents[1] / "events")
if EVENT_TESTS not in sys.path:
    sys.path.append(EVENT_TESTS)
eventkit = importlib.import_module("eventkit")
WRITE_KEY = eventkit.WRITE_KEY
apply_pending = eventkit.apply_pending
fresh_redis_url = eventkit.fresh_redis_url
overrides = eventkit.overrides

CUSTOMERS = 10  # the 10 lowest customer ids of the sample: 30 invoices, 2 cancellations
DAY = 86_400.0


@pytest.fixture(scope="module")
def lines():
    return select_lines(read_online_retail(SAMPLE), CUSTOMERS)


def expected(lines, customer):
    """Per kind, the interactions of one customer straight from the invoice lines: a view
    and a cart add per distinct product of an order, a purchase per distinct stock code."""
    mine = lines.loc[lines["CustomerID"] == customer]
    sold = mine.loc[
        ~mine["InvoiceNo"].str.startswith(("C", "A"))
        & (mine["Quantity"] > 0)
        & (mine["UnitPrice"] > 0)
    ]
    per_code = sold.groupby(["InvoiceNo", "StockCode"])["Quantity"].sum()
    products = [code for _, code in per_code.index if PRODUCT_CODE.match(code)]
    return {
        "view": len(products),
        "cart_add": len(products),
        "purchase": len(per_code),
        "purchased_units": float(per_code.clip(upper=MAX_QUANTITY).sum()),
        "baskets": set(sold["InvoiceNo"]),
    }


async def test_events_are_logged_and_train_a_model(
    gateway, redis_url, lines, tmp_path, embedding_cache, monkeypatch, capsys
):
    catalog = tmp_path / "catalog.csv"
    write_catalog(build_catalog(lines), catalog)
    log_dir = tmp_path / "interactions"
    plugin = RecommenderPlugin()
    client = await gateway(
        extra_plugins=[("recommender", plugin)],
        catalog={"path": str(catalog)},
        plugin={
            "recommender": {
                "artifacts": str(tmp_path / "served"),
                "reload_interval_s": 0,
                "search": False,
                "interactions_dir": str(log_dir),
            }
        },
        **overrides("redis", fresh_redis_url(redis_url)),
    )
    recording = tmp_path / "retail.jsonl"
    sent = write_events(retail_events(lines), recording)
    stats = await replay(recording, str(client.make_url("")), write_key=WRITE_KEY, batch_size=200)
    assert stats.accepted == sent and not stats.rejected
    assert await apply_pending(client) == sent
    assert plugin.interactions is not None
    await plugin.interactions.flush()

    files = log_files(log_dir)
    today = datetime.now(UTC).date().isoformat()
    assert [p.name for p in files] == [f"{today}.{plugin.interactions._tag}.jsonl"]
    assert files[0].name.endswith(f"-{os.getpid()}.jsonl")
    rows = list(read_rows(log_dir))
    customers = sorted(lines["CustomerID"].unique())
    for customer in customers:
        mine = [row for row in rows if row["user_id"] == str(customer)]
        want = expected(lines, customer)
        counts = {kind: sum(row["event"] == kind for row in mine) for kind in want}
        assert {kind: counts[kind] for kind in ("view", "cart_add", "purchase")} == {
            kind: want[kind] for kind in ("view", "cart_add", "purchase")
        }
        purchases = [row for row in mine if row["event"] == "purchase"]
        assert sum(row["quantity"] for row in purchases) == want["purchased_units"]
        assert {row["basket_id"] for row in purchases} == want["baskets"]
    assert {row["event"] for row in rows} == {"view", "cart_add", "purchase"}  # no refunds

    # applying the same events again logs nothing: observers see applied events only
    again = await replay(recording, str(client.make_url("")), write_key=WRITE_KEY)
    assert again.accepted == sent and await apply_pending(client) == 0
    assert await plugin.interactions.flush() == 0

    monkeypatch.setattr(training, "EMBEDDING_CACHE", str(embedding_cache))
    parser = argparse.ArgumentParser()
    training.add_arguments_train(parser)
    out = tmp_path / "models"
    args = parser.parse_args(["--from-events", str(log_dir), "--out", str(out)])
    assert training.train_command(args, client.app[appkeys.CONFIG]) == 0
    artifact = latest_artifact(out)
    assert artifact is not None and artifact.name in capsys.readouterr().out
    model = HybridRecommender.load(artifact)
    assert all(model.has_user(str(c)) for c in customers)
    assert model.meta["counts"]["users"] == len(customers)
    # postage and fees (POST, M) are order lines but not products: not in the catalog
    products = set(model.item_ids)
    assert {row["item_id"] for row in rows} - products == {"POST", "M"}
    trained = [row for row in rows if row["item_id"] in products]
    assert model.meta["counts"]["interactions"] == len(trained)
    customer = str(customers[0])
    bought = {row["item_id"] for row in rows if row["user_id"] == customer}
    ranking = model.recommend_for_user(customer, 10)
    assert len(ranking) == 10 and {item for item, _, _ in ranking} <= set(model.item_ids)
    # repeats included (the default): the customer's own purchases rank high
    assert bought & {item for item, _, _ in ranking}


async def test_the_worker_starts_the_plugin_without_a_model(
    redis_url, make_config, tmp_path, monkeypatch
):
    """The worker only needs the log: no artifact is looked for, no encoder is built."""
    config = make_config(
        **overrides("redis", fresh_redis_url(redis_url)),
        plugin={"recommender": {"interactions_dir": str(tmp_path / "log")}},
    )
    plugin = RecommenderPlugin()

    async def no_model() -> bool:
        raise AssertionError("the worker loaded a model")

    monkeypatch.setattr(plugin, "reload", no_model)
    pm = build_plugin_manager(
        config, load_entrypoints=False, extra_plugins=(("recommender", plugin),)
    )
    stop = asyncio.Event()
    stop.set()
    assert await serve(config, pm, consumer="log-test", stop=stop) == 0
    assert pm.has_plugin("recommender")  # started, not disabled
    assert plugin.interactions is not None and plugin.model is None and plugin.encoder is None
    assert not plugin.serving


def native(raw, received=None):
    received = received or time.time()
    return parse_native(raw, "events[0]", received, 0.0, 60.0)


def test_block_clicks_identity_links_and_stitching(tmp_path):
    at = time.time() - 100
    events = [
        native({"event": "product_view", "visitor_id": "anon-1", "timestamp": at,
                "properties": {"product_id": "22423"}}),
        native({"event": "Block Clicked", "visitor_id": "anon-1", "timestamp": at + 1,
                "properties": {"product_id": "85123A", "decision_id": "d1", "slot": "pdp"}}),
        native({"event": "Product Clicked", "visitor_id": "anon-1", "timestamp": at + 2,
                "properties": {"product_id": "21212", "decision_id": "d1"}}),
        native({"event": "Product Clicked", "visitor_id": "anon-1", "timestamp": at + 3,
                "properties": {"product_id": "99999"}}),  # not from a block: not logged
        native({"event": "identify", "visitor_id": "anon-1", "user_id": "c-7",
                "timestamp": at + 4}),
        native({"event": "Product Added", "user_id": "c-7", "timestamp": at + 5,
                "properties": {"product_id": "22423", "quantity": 3}}),
        native({"event": "page_view", "user_id": "c-7", "timestamp": at + 6,
                "properties": {"path": "/"}}),
    ]  # fmt: skip
    log = InteractionLog(tmp_path)
    rows = []
    for raw in events:
        event = Event.from_internal(raw, raw["v"])
        rows += interaction_rows(event)
        log.record(event)
    assert [(r["event"], r["item_id"]) for r in rows] == [
        ("view", "22423"),
        ("block_click", "85123A"),
        ("block_click", "21212"),
        ("link", "anon-1"),
        ("cart_add", "22423"),
    ]
    log._write(log._buffer)
    table = load_logged_interactions(tmp_path)
    assert set(table["user_id"]) == {"c-7"}  # the anonymous history is the customer's
    assert list(table["event"]) == ["view", "block_click", "block_click", "cart_add"]
    assert list(table["quantity"]) == [1.0, 1.0, 1.0, 3.0]
    assert abs(table["timestamp"].iloc[0].timestamp() - at) < 0.01


async def test_rotation_by_day_deletes_files_past_retention(tmp_path):
    now = datetime(2024, 6, 1, 12, tzinfo=UTC).timestamp()
    clock = [now]
    for name in (
        "2023-05-01.other-1.jsonl",  # 397 days before: kept
        "2023-04-28.other-1.jsonl",  # 400 days before: kept
        "2023-04-27.other-2.jsonl",  # 401 days before: deleted
        "2022-01-01.other-3.jsonl",  # deleted
        "notes.txt",  # not a log file: left alone
    ):
        (tmp_path / name).write_text('{"x": 1}\n')
    log = InteractionLog(tmp_path, retention_days=400, clock=lambda: clock[0])
    event = Event.from_internal(
        native({"event": "product_view", "user_id": "c1", "properties": {"product_id": "p1"}}),
        "c1",
    )
    log.record(event)
    assert await log.flush() == 1
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "2023-04-28.other-1.jsonl",
        "2023-05-01.other-1.jsonl",
        f"2024-06-01.{log._tag}.jsonl",
        "notes.txt",
    ]
    clock[0] = now + 3 * DAY  # a new day: a new file, and 2023-04-28 is now too old
    log.record(event)
    await log.flush()
    assert [p.name for p in log_files(tmp_path)] == [
        "2023-05-01.other-1.jsonl",
        f"2024-06-01.{log._tag}.jsonl",
        f"2024-06-04.{log._tag}.jsonl",
    ]
    # a line cut short by a killed process is skipped, the others are read
    with (tmp_path / f"2024-06-04.{log._tag}.jsonl").open("ab") as handle:
        handle.write(b'{"user_id": "c1", "item_')
    assert sum(row.get("user_id") == "c1" for row in read_rows(tmp_path)) == 2
