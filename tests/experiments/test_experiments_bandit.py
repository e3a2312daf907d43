"""The Thompson-sampling policy: it shifts traffic toward the better arm in a simulation, logs
the true choice probability of every decision, keeps exploring, and runs in the gateway."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import numpy as np
import pytest
from xpkit import write_experiments

from journeygate import appkeys
from journeygate.config import ExperimentsConfig
from journeygate.experiments.config import parse_experiment
from journeygate.experiments.policy import ThompsonSampling
from journeygate.experiments.storage import Exposure, MemoryExperimentStore, Outcome

RATES = {"a": 0.02, "b": 0.06, "c": 0.03}


async def test_thompson_sampling_shifts_traffic_to_the_better_arm():
    experiment = parse_experiment(
        {
            "id": "bandit",
            "slot": "hero",
            "policy": "thompson",
            "reward": "click",
            "arms": [{"name": name} for name in RATES],
        },
        "test",
    )
    policy = ThompsonSampling(experiment, draws=20_000, min_propensity=0.01, seed=11)
    store = MemoryExperimentStore(ExperimentsConfig(), max_visitors=100_000)
    rng = np.random.default_rng(5)
    shares = []
    for round_ in range(15):
        exposures, outcomes, chosen = [], [], Counter()
        expected = dict(policy.probabilities)
        for index in range(1000):
            visitor, decision = f"v{round_}-{index}", uuid.uuid4().hex
            arm, propensity = policy.choose(visitor, decision)
            assert propensity == pytest.approx(expected[arm])
            chosen[arm] += 1
            now = time.time()
            exposures.append(Exposure("bandit", arm, visitor, decision, "hero", propensity, now))
            if rng.random() < RATES[arm]:
                outcomes.append(Outcome("click", visitor, now, decision, "hero"))
        for arm, p in expected.items():  # decisions follow the logged probabilities
            assert abs(chosen[arm] / 1000 - p) < 4 * np.sqrt(p * (1 - p) / 1000) + 0.005
        await store.record_exposures(exposures)
        await store.attribute(outcomes, {"bandit": "click"})
        counts = (await store.arm_counts(["bandit"]))["bandit"]
        policy.update(policy.estimate(counts))
        shares.append(chosen["b"] / 1000)
    assert shares[0] == pytest.approx(1 / 3, abs=0.06)  # no data: uniform
    assert np.mean(shares[-3:]) > 0.75  # most traffic goes to the best arm
    assert min(policy.probabilities.values()) >= 0.01  # the others are still explored
    counts = (await store.arm_counts(["bandit"]))["bandit"]
    assert sum(c.decisions for c in counts.values()) == 15_000
    assert counts["b"].rewards == counts["b"].clicks  # one click per decision at most
    log = await store.decision_log("bandit", 5)
    assert [set(entry) for entry in log] == [
        {"decision_id", "visitor_id", "arm", "slot", "propensity", "at"}
    ] * 5


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_gateway_logs_the_propensity_of_every_decision(gateway, redis_url, tmp_path, backend):
    text = """
[[experiment]]
id = "bandit-gw"
slot = "hero"
policy = "thompson"
holdout = 0.2
[[experiment.arms]]
name = "a"
[[experiment.arms]]
name = "b"
"""
    store = (
        {"redis_url": redis_url, "timeout_ms": 1000}
        if backend == "redis"
        else {"backend": "memory"}
    )
    experiment_id = "bandit-gw"
    client = await gateway(
        store=store, experiments={"file": write_experiments(tmp_path, text), "flush_interval_ms": 5}
    )
    runner = client.app[appkeys.EXPERIMENTS]
    before = {e["decision_id"] for e in await runner.store.decision_log(experiment_id, 10_000)}
    explained = {}
    for index in range(30):
        response = await client.post(
            "/v1/decide",
            json={
                "visitor_id": f"bg-{uuid.uuid4().hex[:8]}-{index}",
                "slots": [{"id": "hero", "kind": "offer"}],
                "explain": True,
            },
        )
        body = await response.json()
        (entry,) = [c for c in body["explain"]["calls"] if c["hook"] == "experiment"]
        assert entry["policy"] == "thompson"
        # no data yet: about uniform (estimated from posterior draws)
        expected = 0.2 if entry["arm"] == "holdout" else 0.8 * 0.5
        assert entry["propensity"] == pytest.approx(expected, abs=0.03)
        explained[body["decision_id"]] = (entry["arm"], entry["propensity"])
    await runner.flush()
    logged = {
        e["decision_id"]: (e["arm"], e["propensity"])
        for e in await runner.store.decision_log(experiment_id, 10_000)
        if e["decision_id"] not in before
    }
    assert logged == explained
