"""Experiments through a real gateway: assignment in decisions, exposures, clicks and orders
attributed from events (in process, and through Redis streams and the worker), the results
endpoint checked against the OpenAPI document."""

from __future__ import annotations

import uuid

import pytest
from xpkit import (
    ADMIN,
    apply_pending,
    event,
    fresh_redis_url,
    overrides,
    response_schema,
    send_events,
    write_experiments,
)

from journeygate import appkeys, hookimpl
from journeygate.experiments.assignment import fixed_arm
from journeygate.experiments.config import load_experiments
from journeygate.model import Offer
from journeygate.store import StoreUnavailable

RESULTS = "/v1/experiments/{experiment_id}/results"


class ForcedOffer:
    """The offer contract of experiments: ``params.offer_id`` forces an offer, a holdout
    gets default content."""

    @hookimpl
    def journeygate_choose_offer(self, context, slot):
        offer_id = slot.params.get("offer_id")
        if offer_id and not slot.params.get("holdout"):
            return Offer(id=offer_id, title=f"Offer {offer_id}")
        return None


async def decide(client, visitor, explain=False):
    response = await client.post(
        "/v1/decide",
        json={
            "visitor_id": visitor,
            "slots": [
                {"id": "hero", "kind": "offer"},
                {"id": "recs", "kind": "recommendations", "strategy": "popular", "limit": 4},
            ],
            "explain": explain,
        },
    )
    assert response.status == 200
    return await response.json()


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_arms_exposures_and_attribution_end_to_end(
    gateway, make_config, redis_url, tmp_path, backend
):
    url = fresh_redis_url(redis_url)
    settings = overrides(backend, url, write_experiments(tmp_path))
    client = await gateway(extra_plugins=[("forced_offer", ForcedOffer())], **settings)
    (experiment,) = load_experiments(make_config(**settings))
    run = uuid.uuid4().hex[:8]
    visitors = [f"x{run}-{i}" for i in range(60)]
    decisions = {}
    for index, visitor in enumerate(visitors):
        body = await decide(client, visitor, explain=index == 0)
        hero, recs = body["blocks"]
        arm = fixed_arm(experiment, visitor)
        assert hero["tracking"] == {
            "decision_id": body["decision_id"],
            "slot": "hero",
            "source": hero["source"],
            "experiment": "hero-test",
            "arm": arm,
        }
        assert "experiment" not in recs["tracking"]  # no experiment on this slot
        if arm == "ten-off":
            assert hero["offer"]["id"] == "ten-off" and hero["source"] == "forced_offer"
        else:
            assert hero["source"] == "fallback"  # default content
        if index == 0:
            (entry,) = [c for c in body["explain"]["calls"] if c["hook"] == "experiment"]
            assert entry["arm"] == arm and entry["propensity"] == experiment.shares[arm]
        decisions[visitor] = (body["decision_id"], arm)
    # the same visitor keeps its arm
    again = await decide(client, visitors[0])
    assert again["blocks"][0]["tracking"]["arm"] == decisions[visitors[0]][1]
    await client.app[appkeys.EXPERIMENTS].flush()

    zero = {"clicks": 0, "conversions": 0, "revenue": 0.0}
    expected = {arm.name: dict(zero) for arm in experiment.arms}
    events = []
    for index, visitor in enumerate(visitors):
        decision_id, arm = decisions[visitor]
        if index % 2 == 0:
            click = event("Block Clicked", visitor, decision_id=decision_id, slot="hero")
            events.append(click)
            expected[arm]["clicks"] += 1
        if index % 3 == 0:
            order_id = f"{run}-o{index}"
            events.append(event("Order Completed", visitor, order_id=order_id, revenue=20.0))
            # the same order again under another message id counts once
            events.append(event("Order Completed", visitor, order_id=order_id, revenue=20.0))
            expected[arm]["conversions"] += 1
            expected[arm]["revenue"] += 20.0
        if index % 6 == 0:  # a second order of the same visitor: revenue, not a new converter
            events.append(
                event("Order Completed", visitor, order_id=f"{run}-p{index}", revenue=5.0)
            )
            expected[arm]["revenue"] += 5.0
    # orders of visitors never exposed credit nothing
    events.append(event("Order Completed", f"stranger-{run}", order_id=f"{run}-s", revenue=99.0))
    retried = event("Block Clicked", visitors[2], decision_id=decisions[visitors[2]][0])
    retried["message_id"] = f"{run}-retry"
    events += [retried, dict(retried)]  # a retried message id is applied once
    expected[decisions[visitors[2]][1]]["clicks"] += 1
    await send_events(client, events)
    await apply_pending(client)

    response = await client.get(RESULTS.format(experiment_id="hero-test"), headers=ADMIN)
    assert response.status == 200
    results = await response.json()
    document = await (await client.get("/openapi.json")).json()
    response_schema(document, RESULTS, 200).validate(results)
    arms = {arm["name"]: arm for arm in results["arms"]}
    assert sum(arm["exposures"] for arm in arms.values()) == len(visitors)
    for name, arm in arms.items():
        assert arm["exposures"] == sum(1 for _, a in decisions.values() if a == name)
        assert arm["clicks"] == expected[name]["clicks"]
        assert arm["conversions"] == expected[name]["conversions"]
        assert arm["revenue"] == pytest.approx(expected[name]["revenue"])
    assert arms["default"]["control"] and arms["default"]["lift"] is None
    assert arms["ten-off"]["lift"]["conversion_rate_difference"]["estimate"] == pytest.approx(
        arms["ten-off"]["conversion_rate"] - arms["default"]["conversion_rate"], abs=2e-6
    )
    assert results["sample_ratio"] is not None
    for path, headers, status in (
        (RESULTS.format(experiment_id="hero-test"), {}, 401),
        (RESULTS.format(experiment_id="nope"), ADMIN, 404),
    ):
        response = await client.get(path, headers=headers)
        assert response.status == status
        response_schema(document, RESULTS, status).validate(await response.json())


async def test_arm_slot_fields_and_holdout_change_the_block(gateway, tmp_path):
    text = """
[[experiment]]
id = "recs-test"
slot = "recs"
holdout = 0.5
[[experiment.arms]]
name = "short"
limit = 2
params = { category_hint = "x" }
"""
    client = await gateway(experiments={"file": write_experiments(tmp_path, text)})
    seen = set()
    for index in range(40):
        body = await decide(client, f"slot-{index}")
        recs = body["blocks"][1]
        arm = recs["tracking"]["arm"]
        seen.add(arm)
        if arm == "short":
            assert len(recs["items"]) == 2
        else:
            assert arm == "holdout" and recs["source"] == "fallback" and len(recs["items"]) == 4
    assert seen == {"short", "holdout"}


async def test_no_experiment_outside_its_dates_or_traffic(gateway, tmp_path):
    text = """
[[experiment]]
id = "later"
slot = "hero"
start = 2099-01-01T00:00:00Z
[[experiment.arms]]
name = "a"
[[experiment.arms]]
name = "b"

[[experiment]]
id = "nobody"
slot = "recs"
traffic = 0.0
[[experiment.arms]]
name = "a"
[[experiment.arms]]
name = "b"
"""
    client = await gateway(experiments={"file": write_experiments(tmp_path, text)})
    body = await decide(client, "dates-1")
    assert all("experiment" not in block["tracking"] for block in body["blocks"])
    results = await (await client.get(RESULTS.format(experiment_id="later"), headers=ADMIN)).json()
    assert results["status"] == "scheduled" and results["sample_ratio"] is None


async def test_decisions_go_on_when_redis_is_down_and_exposures_are_written_later(
    gateway, private_redis, tmp_path
):
    # exposures are written only when the test says so
    settings = overrides(
        "redis", private_redis.url, write_experiments(tmp_path), flush_interval_ms=600_000
    )
    settings["store"]["timeout_ms"] = 100
    client = await gateway(**settings)
    runner = client.app[appkeys.EXPERIMENTS]
    private_redis.kill()
    for index in range(5):
        body = await decide(client, f"outage-{index}")
        assert body["blocks"][0]["tracking"]["experiment"] == "hero-test"
    with pytest.raises(StoreUnavailable):
        await runner.flush()
    private_redis.start()
    await runner.flush()  # the queued exposures were kept
    counts = (await runner.store.arm_counts(["hero-test"]))["hero-test"]
    assert sum(arm.exposed for arm in counts.values()) == 5


async def test_offer_arms_through_the_offers_plugin(gateway, tmp_path):
    """The offers plugin honours the arms' params: a forced offer, a pool, the holdout."""
    from jg_offers.plugin import OffersPlugin

    catalog = tmp_path / "offers.toml"
    catalog.write_text(
        """
[[offers]]
id = "a-offer"
kind = "discount"
title = "A"
priority = 20

[[offers]]
id = "b-offer"
kind = "discount"
title = "B"
priority = 10

[[offers]]
id = "c-offer"
kind = "discount"
title = "C"
priority = 5
""",
        encoding="utf-8",
    )
    text = """
[[experiment]]
id = "offers-test"
slot = "hero"
holdout = 0.25
[[experiment.arms]]
name = "control"
[[experiment.arms]]
name = "forced-b"
params = { offer_id = "b-offer" }
[[experiment.arms]]
name = "pool-c"
params = { offers = ["c-offer"] }
"""
    client = await gateway(
        extra_plugins=[("offers", OffersPlugin())],
        plugin={"offers": {"catalog": str(catalog)}},
        experiments={"file": write_experiments(tmp_path, text)},
    )
    expected = {"control": "a-offer", "forced-b": "b-offer", "pool-c": "c-offer"}
    seen = set()
    for index in range(60):
        (hero, _) = (await decide(client, f"offers-{index}"))["blocks"]
        arm = hero["tracking"]["arm"]
        seen.add(arm)
        if arm == "holdout":
            assert hero["source"] == "fallback" and hero["offer"]["id"] == "free-delivery"
        else:
            assert hero["source"] == "offers" and hero["offer"]["id"] == expected[arm]
    assert seen == {*expected, "holdout"}
