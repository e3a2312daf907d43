"""``journeygate segment`` end to end on the real bundled sample: the model artifact, the
printed table, personas written to the profiles of the customers' event ids (real Redis), and
a decision that reads them back."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from pathlib import Path

import pandas as pd
import redis

from jg_personas.model import PersonaModel
from jg_personas.plugin import PersonasPlugin
from journeygate.artifacts import latest_artifact
from journeygate.cli import main
from journeygate.events.retail_events import retail_events
from journeygate.store import keys

EVENT_TESTS = str(Path(__file__).resolve().parents[1] / "events")
if EVENT_TESTS not in sys.path:
    sys.path.append(EVENT_TESTS)
eventkit = importlib.import_module("eventkit")

PERSONAS_DB = 9


async def test_segment_writes_personas_to_the_profiles_of_replayed_customers(
    retail_frame, redis_url, tmp_path, monkeypatch, capsys, gateway
):
    url = eventkit.fresh_redis_url(redis_url, PERSONAS_DB)
    monkeypatch.setenv("REDIS_URL", url)
    out = tmp_path / "personas"
    # a thread: the command runs its own event loop, as it does from a shell
    assert await asyncio.to_thread(main, ["segment", "--out", str(out)]) == 0
    printed = capsys.readouterr().out

    artifact = latest_artifact(out)
    assert artifact is not None
    model = PersonaModel.load(artifact)
    assert model.meta["source"].endswith("online_retail_sample.csv.gz")
    assert f"k = {model.meta['k']}, the highest mean silhouette over k = 3..8" in printed
    header = next(row for row in printed.splitlines() if row.startswith("persona "))
    assert header.split()[:5] == ["persona", "customers", "share", "recency_d", "orders/yr"]
    for persona in model.personas:
        share = f"{persona.customers / model.meta['customers']:.1%}"
        line = next(row for row in printed.splitlines() if row.startswith(persona.name + "  "))
        assert f" {persona.customers} " in line and share in line
    assert f"persona written to {model.meta['customers']} profiles" in printed

    assignments = pd.read_csv(artifact / "assignments.csv", dtype=str)
    # the customers' ids are the user ids of the events convert-retail makes for them
    buyers = {e["user_id"] for e in retail_events(retail_frame) if e["event"] == "order"}
    assert set(assignments["visitor_id"]) == buyers
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        for visitor_id, persona in zip(
            assignments["visitor_id"], assignments["persona"], strict=True
        ):
            stored = client.hgetall(keys.profile(visitor_id))
            assert json.loads(stored["persona"]) == persona
            assert json.loads(stored["persona_model"]) == artifact.name
        assert client.ttl(keys.profile(assignments["visitor_id"].iloc[0])) > 0
    finally:
        client.close()

    # the gateway reads it back: the customer's segment is their persona
    gateway_client = await gateway(
        extra_plugins=[("personas", PersonasPlugin())],
        plugin={"personas": {"artifacts": str(out)}},
        store={"redis_url": url, "timeout_ms": 1000},
    )
    visitor_id, persona = assignments.iloc[0]
    response = await gateway_client.post(
        "/v1/decide", json={"visitor_id": visitor_id, "slots": [{"id": "hero", "kind": "offer"}]}
    )
    visitor = (await response.json())["visitor"]
    assert (visitor["segment"], visitor["persona"], visitor["segments"]) == (persona, persona, [])


def test_without_redis_the_personas_are_only_saved(retail_frame, tmp_path, monkeypatch, capsys):
    # the 120 lowest customer ids of the sample: small and fast
    customers = sorted(retail_frame["CustomerID"].dropna().unique())[:120]
    source = tmp_path / "slice.csv.gz"
    retail_frame.loc[retail_frame["CustomerID"].isin(customers)].to_csv(source, index=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("JOURNEYGATE_STORE__BACKEND", "memory")
    assert main(["segment", str(source), "--out", str(tmp_path / "m")]) == 0
    printed = capsys.readouterr().out
    artifact = latest_artifact(tmp_path / "m")
    assert "no Redis configured (REDIS_URL): personas not written to profiles" in printed
    assert (
        len(pd.read_csv(artifact / "assignments.csv"))
        == PersonaModel.load(artifact).meta["customers"]
    )


def test_errors_are_one_line(tmp_path, capsys, retail_frame, monkeypatch):
    readme = Path(__file__).resolve().parents[2] / "README.md"
    assert main(["segment", str(readme), "--out", str(tmp_path)]) == 2
    assert main(["segment", str(tmp_path / "missing.csv"), "--out", str(tmp_path)]) == 2
    few = tmp_path / "few.csv"
    customers = sorted(retail_frame["CustomerID"].dropna().unique())[:5]
    retail_frame.loc[retail_frame["CustomerID"].isin(customers)].to_csv(few, index=False)
    assert main(["segment", str(few), "--out", str(tmp_path)]) == 2
    monkeypatch.setenv("JOURNEYGATE_PLUGIN__PERSONAS__SEGMENTS", "vip")
    assert main(["segment", "--out", str(tmp_path)]) == 2
    errors = capsys.readouterr().err
    assert "Traceback" not in errors
    assert "plugin.personas.segments: expected a list of segment tables, got str" in errors
    assert "README.md" in errors and "missing.csv" in errors and "at least 9 are needed" in errors
    assert latest_artifact(tmp_path) is None
