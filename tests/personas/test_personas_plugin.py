"""The personas plugin through real decisions: ``visitor.segment``, ``persona`` and
``segments`` from a stored persona, from the nearest centroid, and from rule segments."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import time
import tomllib
from pathlib import Path

from jg_personas.features import profile_features
from jg_personas.plugin import PersonasPlugin
from journeygate import appkeys
from journeygate.config import PROJECT_ROOT

EVENT_TESTS = str(Path(__file__).resolve().parents[1] / "events")
if EVENT_TESTS not in sys.path:
    sys.path.append(EVENT_TESTS)
eventkit = importlib.import_module("eventkit")

DAY = 86400.0


async def start(gateway, artifacts, **settings):
    return await gateway(
        extra_plugins=[("personas", PersonasPlugin())],
        plugin={"personas": {"artifacts": str(artifacts), **settings}},
        **eventkit.overrides("memory", ""),
    )


async def decide(client, visitor):
    body = {"visitor_id": visitor, "slots": [{"id": "hero", "kind": "offer"}], "explain": True}
    response = await client.post("/v1/decide", json=body)
    assert response.status == 200, await response.text()
    return await response.json()


def order(visitor, order_id, days_ago, revenue):
    return {
        "event": "Order Completed",
        "user_id": visitor,
        "message_id": f"{visitor}-{order_id}",
        "timestamp": time.time() - days_ago * DAY,
        "properties": {
            "order_id": order_id,
            "revenue": revenue,
            "products": [{"product_id": "22423", "quantity": 1, "price": revenue}],
        },
    }


async def test_rule_segment_and_nearest_persona_from_event_aggregates(
    gateway, persona_artifacts, fitted, visitor_id
):
    client = await start(gateway, persona_artifacts)
    # two orders of 600, 400 and 200 days ago: AOV 600, 1.8 orders a year
    events = [order(visitor_id, "o1", 400, 600.0), order(visitor_id, "o2", 200, 600.0)]
    response = await client.post("/v1/events", json={"events": events}, headers=eventkit.basic())
    assert response.status == 200 and len((await response.json())["accepted"]) == 2

    body = await decide(client, visitor_id)
    visitor = body["visitor"]
    assert visitor["segment"] == "high-value-infrequent"
    assert visitor["segments"] == ["high-value-infrequent"]
    model, _ = fitted
    stored = await client.app[appkeys.STORE].get_profile(visitor_id)
    expected = model.nearest(profile_features(stored, time.time()))
    assert visitor["persona"] == expected.id
    (enrich,) = [c for c in body["explain"]["calls"] if "explanations" in c]
    explain = enrich["explanations"]["personas"]
    assert explain["persona"] == {
        "id": expected.id,
        "source": "nearest_centroid",
        "model": persona_artifacts.joinpath("CURRENT").read_text().strip(),
    }
    assert explain["figures"]["orders"] == 2 and explain["figures"]["revenue"] == 1200


async def test_a_stored_persona_wins_and_is_the_segment_without_a_rule(
    gateway, persona_artifacts, visitor_id
):
    client = await start(gateway, persona_artifacts)
    store = client.app[appkeys.STORE]
    await store.update_profile(visitor_id, {"persona": "some-persona", "persona_model": "v1"})
    visitor = (await decide(client, visitor_id))["visitor"]
    assert (visitor["segment"], visitor["persona"], visitor["segments"]) == (
        "some-persona",
        "some-persona",
        [],
    )
    # a rule on the persona, and the first matching rule wins the segment
    rules = [
        {"name": "big-spender", "when": {"revenue": {"gte": 1000}}},
        {"name": "flagged", "when": {"persona": {"eq": "some-persona"}}},
        {"name": "also", "when": {"persona": {"in": ["some-persona", "other"]}}},
    ]
    client = await start(gateway, persona_artifacts, segments=rules)
    await client.app[appkeys.STORE].update_profile(visitor_id, {"persona": "some-persona"})
    visitor = (await decide(client, visitor_id))["visitor"]
    assert (visitor["segment"], visitor["segments"]) == ("flagged", ["flagged", "also"])


async def test_a_new_visitor_has_no_segment(gateway, persona_artifacts, visitor_id):
    client = await start(gateway, persona_artifacts)
    visitor = (await decide(client, visitor_id))["visitor"]
    assert visitor["segment"] is None
    assert (visitor["persona"], visitor["segments"]) == (None, [])


async def test_without_a_model_rules_still_apply(gateway, tmp_path, visitor_id):
    client = await start(gateway, tmp_path / "no-models")
    assert (await client.get("/readyz")).status == 200
    events = [order(visitor_id, "o1", 3, 40.0)]
    response = await client.post("/v1/events", json={"events": events}, headers=eventkit.basic())
    assert response.status == 200
    visitor = (await decide(client, visitor_id))["visitor"]
    assert (visitor["segment"], visitor["persona"]) == ("first-time-buyer", None)


async def test_a_bad_rule_fails_startup_naming_the_key(gateway, persona_artifacts):
    rules = [{"name": "vip", "when": {"avg_order_value": {"gt": 500}}}]
    client = await start(gateway, persona_artifacts, segments=rules)
    response = await client.get("/readyz")
    assert response.status == 503
    failed = (await response.json())["plugins"]["failed"]
    assert "plugin.personas.segments[0].when.avg_order_value: unknown field" in failed["personas"]
    assert (await decide(client, "v-bad-rules"))["visitor"]["segment"] is None


def test_the_plugin_is_declared_as_an_entry_point():
    with (PROJECT_ROOT / "pyproject.toml").open("rb") as file:
        declared = tomllib.load(file)["project"]["entry-points"]["journeygate"]
    entry = importlib.metadata.EntryPoint("personas", declared["personas"], "journeygate")
    assert entry.load() is PersonasPlugin
