"""The report's statistics, on simulated traffic recorded through the experiment store,
against values computed independently with scipy and numpy from the raw per-visitor data."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

from journeygate.config import ExperimentsConfig
from journeygate.experiments.assignment import fixed_arm
from journeygate.experiments.config import parse_experiment
from journeygate.experiments.report import experiment_results, format_report
from journeygate.experiments.statistics import (
    chi_square_sf,
    sample_ratio,
    t_quantile,
    welch_difference,
)
from journeygate.experiments.storage import ArmCounts, Exposure, MemoryExperimentStore, Outcome

EXPERIMENT = parse_experiment(
    {
        "id": "sim",
        "slot": "hero",
        "arms": [{"name": "control"}, {"name": "treatment"}],
    },
    "test",
)


def simulate(rng, visitors, rates, order_values):
    """Per visitor: arm (by the real hash), revenue (sum of 1-3 orders when converted)."""
    arms, revenue, orders = [], [], []
    for index in range(visitors):
        visitor = f"sim-{index}"
        arm = fixed_arm(EXPERIMENT, visitor)
        converted = rng.random() < rates[arm]
        amounts = (
            list(rng.lognormal(order_values[arm], 0.6, size=rng.integers(1, 4)))
            if converted
            else []
        )
        arms.append(arm)
        revenue.append(float(sum(amounts)))
        orders.append((visitor, amounts))
    return np.array(arms), np.array(revenue), orders


async def record(orders, arms):
    store = MemoryExperimentStore(ExperimentsConfig(), max_visitors=1_000_000)
    now = time.time()
    await store.record_exposures(
        [
            Exposure("sim", arm, visitor, f"d-{visitor}", "hero", 0.5, now)
            for (visitor, _), arm in zip(orders, arms, strict=True)
        ]
    )
    outcomes = [
        Outcome("order", visitor, now + 1, revenue=float(amount), order_id=f"{visitor}-{i}")
        for visitor, amounts in orders
        for i, amount in enumerate(amounts)
    ]
    await store.attribute(outcomes, {"sim": "conversion"})
    return (await store.arm_counts(["sim"]))["sim"]


def wilson_scipy(k, n):
    interval = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    return interval.low, interval.high


async def test_report_matches_scipy_on_simulated_traffic():
    rng = np.random.default_rng(7)
    arms, revenue, orders = simulate(
        rng, 8000, {"control": 0.05, "treatment": 0.065}, {"control": 3.0, "treatment": 3.1}
    )
    counts = await record(orders, arms)
    results = experiment_results(EXPERIMENT, counts)
    by_arm = {arm["name"]: arm for arm in results["arms"]}
    raw = {name: revenue[arms == name] for name in ("control", "treatment")}
    for name, values in raw.items():
        n, k = len(values), int((values > 0).sum())
        arm = by_arm[name]
        assert (arm["exposures"], arm["conversions"]) == (n, k)
        assert arm["revenue_per_visitor"] == pytest.approx(values.mean(), abs=1e-4)
        low, high = wilson_scipy(k, n)
        assert arm["conversion_rate_ci"] == pytest.approx([low, high], abs=1e-6)
        # the counters hold the sum of squares of per-visitor revenue, not per order
        assert counts[name].revenue_sq == pytest.approx(float((values**2).sum()), rel=1e-9)

    lift = by_arm["treatment"]["lift"]
    (n1, k1), (n0, k0) = (
        (len(raw[name]), int((raw[name] > 0).sum())) for name in ("treatment", "control")
    )
    p1, p0 = k1 / n1, k0 / n0
    (l1, u1), (l0, u0) = wilson_scipy(k1, n1), wilson_scipy(k0, n0)
    newcombe = (
        p1 - p0 - math.hypot(p1 - l1, u0 - p0),
        p1 - p0 + math.hypot(u1 - p1, p0 - l0),
    )
    difference = lift["conversion_rate_difference"]
    assert difference["estimate"] == pytest.approx(p1 - p0, abs=1e-6)
    assert (difference["low"], difference["high"]) == pytest.approx(newcombe, abs=1e-6)

    welch = stats.ttest_ind(raw["treatment"], raw["control"], equal_var=False)
    interval = welch.confidence_interval(0.95)
    rpv = lift["revenue_per_visitor_difference"]
    assert rpv["estimate"] == pytest.approx(
        raw["treatment"].mean() - raw["control"].mean(), abs=1e-4
    )
    assert (rpv["low"], rpv["high"]) == pytest.approx((interval.low, interval.high), abs=1e-4)
    assert lift["welch_df"] == pytest.approx(welch.df, abs=0.01)

    # relative lift: the delta-method standard error against a bootstrap of the visitors
    relative = lift["conversion_rate_relative"]
    assert relative["estimate"] == pytest.approx(p1 / p0 - 1, abs=1e-6)
    converted = {name: (raw[name] > 0).astype(float) for name in raw}
    boot = np.array(
        [
            rng.choice(converted["treatment"], n1).mean()
            / rng.choice(converted["control"], n0).mean()
            for _ in range(3000)
        ]
    )
    delta_se = (relative["high"] - relative["low"]) / (2 * stats.norm.ppf(0.975))
    assert delta_se == pytest.approx(boot.std(ddof=1), rel=0.1)

    srm = results["sample_ratio"]
    observed = [by_arm["control"]["exposures"], by_arm["treatment"]["exposures"]]
    expected = stats.chisquare(observed, [sum(observed) / 2] * 2)
    assert srm["chi_square"] == pytest.approx(expected.statistic, abs=1e-4)
    assert srm["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert not srm["mismatch"] and results["warnings"] == []
    text = format_report(results)
    assert "treatment" in text and "sample ratio" in text


def test_sample_ratio_mismatch_is_detected_when_assignment_is_off():
    three = parse_experiment(
        {
            "id": "srm",
            "slot": "s",
            "arms": [{"name": "a", "weight": 2}, {"name": "b"}, {"name": "c"}],
        },
        "test",
    )
    visitors = [f"srm-{i}" for i in range(30_000)]
    assigned = [fixed_arm(three, visitor) for visitor in visitors]
    healthy = {arm: assigned.count(arm) for arm in ("a", "b", "c")}
    check = sample_ratio(healthy, three.shares)
    assert check is not None and not check.mismatch
    scipy_check = stats.chisquare(
        [healthy[a] for a in "abc"], [30_000 * three.shares[a] for a in "abc"]
    )
    assert check.p_value == pytest.approx(scipy_check.pvalue, rel=1e-9)
    # a logging bug loses 8% of arm b's exposures
    broken = dict(healthy, b=int(healthy["b"] * 0.92))
    counts = {arm: ArmCounts(exposed=n, decisions=n) for arm, n in broken.items()}
    results = experiment_results(three, counts)
    assert results["sample_ratio"]["mismatch"] is True
    assert results["sample_ratio"]["p_value"] < 0.001
    assert "sample ratio mismatch" in results["warnings"][0]
    assert "MISMATCH" in format_report(results)
    # a bandit moves traffic on purpose: no SRM check
    bandit = parse_experiment({**_raw(three), "policy": "thompson"}, "test")
    assert experiment_results(bandit, counts)["sample_ratio"] is None


def _raw(experiment):
    return {
        "id": experiment.id,
        "slot": experiment.slot,
        "arms": [{"name": arm.name, "weight": arm.weight} for arm in experiment.arms],
    }


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 7, 10])
def test_chi_square_tail_matches_scipy(dof):
    for statistic in (0.1, 1.0, 5.0, 20.0, 60.0):
        assert chi_square_sf(statistic, dof) == pytest.approx(
            stats.chi2.sf(statistic, dof), rel=1e-9
        )


@pytest.mark.parametrize("df", [1.0, 2.5, 9.7, 40.0, 5000.0])
def test_t_quantile_matches_scipy(df):
    for p in (0.9, 0.975, 0.995):
        assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), abs=1e-8)


def test_welch_needs_two_visitors_per_arm_and_handles_no_variance():
    assert welch_difference((1.0, 1.0, 1), (0.0, 0.0, 5), 0.95) is None
    interval, df = welch_difference((0.0, 0.0, 5), (0.0, 0.0, 5), 0.95)
    assert (interval.low, interval.high) == (0.0, 0.0) and math.isinf(df)
