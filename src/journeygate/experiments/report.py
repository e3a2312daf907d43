"""An experiment's results (``GET /v1/experiments/{id}/results``) and their text form
(``journeygate experiments report``), from the arm counters; methods in ``statistics``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from journeygate.experiments.config import Experiment
from journeygate.experiments.statistics import (
    SRM_ALPHA,
    rate_difference,
    relative_lift,
    sample_ratio,
    welch_difference,
    wilson,
)
from journeygate.experiments.storage import ArmCounts

CONFIDENCE = 0.95
METHODS = {
    "conversion_rate": "converting visitors / exposed visitors; Wilson score interval",
    "conversion_rate_difference": "arm - control; Newcombe hybrid score interval (Wilson)",
    "conversion_rate_relative": "arm / control - 1; delta-method (Wald) interval",
    "revenue_per_visitor_difference": "arm - control; Welch t interval (Satterthwaite df)",
    "sample_ratio": f"Pearson chi-square, exposed visitors vs shares; mismatch if p < {SRM_ALPHA}",
}


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def status(experiment: Experiment, now: float) -> str:
    if experiment.start is not None and now < experiment.start:
        return "scheduled"
    if experiment.stop is not None and now >= experiment.stop:
        return "stopped"
    return "running"


def _lift(counts: ArmCounts, control: ArmCounts) -> dict[str, Any]:
    difference = rate_difference(
        counts.converted, counts.exposed, control.converted, control.exposed, CONFIDENCE
    )
    relative = relative_lift(
        counts.converted, counts.exposed, control.converted, control.exposed, CONFIDENCE
    )
    welch = welch_difference(
        (counts.revenue, counts.revenue_sq, counts.exposed),
        (control.revenue, control.revenue_sq, control.exposed),
        CONFIDENCE,
    )
    return {
        "conversion_rate_difference": difference.as_json(),
        "conversion_rate_relative": relative.as_json() if relative else None,
        "revenue_per_visitor_difference": welch[0].as_json(4) if welch else None,
        "welch_df": round(welch[1], 2) if welch and welch[1] != float("inf") else None,
    }


def experiment_results(
    experiment: Experiment, counts: Mapping[str, ArmCounts], now: float | None = None
) -> dict[str, Any]:
    """Per-arm exposures, conversions, rates, revenue per visitor, lift against control
    with 95% intervals, and the sample-ratio check (fixed splits only: a bandit moves
    traffic on purpose)."""
    now = time.time() if now is None else now
    control = counts.get(experiment.control, ArmCounts())
    arms = []
    for arm in experiment.arms:
        c = counts.get(arm.name, ArmCounts())
        rate = wilson(c.converted, c.exposed, CONFIDENCE)
        arms.append(
            {
                "name": arm.name,
                "control": arm.name == experiment.control,
                "share": round(experiment.shares.get(arm.name, 0.0), 6),
                "exposures": c.exposed,
                "decisions": c.decisions,
                "clicks": c.clicks,
                "conversions": c.converted,
                "orders": c.orders,
                "revenue": round(c.revenue, 2),
                "conversion_rate": round(rate.estimate, 6),
                "conversion_rate_ci": [round(rate.low, 6), round(rate.high, 6)],
                "revenue_per_visitor": round(c.revenue / c.exposed, 4) if c.exposed else 0.0,
                "click_rate": round(c.clicks / c.decisions, 6) if c.decisions else 0.0,
                "rewards": c.rewards,
                "lift": None if arm.name == experiment.control else _lift(c, control),
            }
        )
    warnings = []
    srm: dict[str, Any] | None = None
    if experiment.policy == "fixed":
        check = sample_ratio({name: c.exposed for name, c in counts.items()}, experiment.shares)
        if check is not None:
            srm = {
                "chi_square": round(check.statistic, 4),
                "p_value": check.p_value,
                "mismatch": check.mismatch,
                "expected": {arm: round(n, 2) for arm, n in check.expected.items()},
            }
            if check.mismatch:
                warnings.append(
                    f"sample ratio mismatch: exposures per arm are off the configured shares "
                    f"(chi-square {check.statistic:.1f}, p = {check.p_value:.2g}); "
                    "do not trust the lifts until assignment is fixed"
                )
    return {
        "experiment": experiment.id,
        "slot": experiment.slot,
        "policy": experiment.policy,
        "reward": experiment.reward,
        "status": status(experiment, now),
        "start": _iso(experiment.start),
        "stop": _iso(experiment.stop),
        "traffic": experiment.traffic,
        "holdout": experiment.holdout,
        "control": experiment.control,
        "confidence": CONFIDENCE,
        "arms": arms,
        "sample_ratio": srm,
        "warnings": warnings,
        "methods": METHODS,
    }


def _interval(value: Mapping[str, float] | None, scale: float = 1.0, unit: str = "") -> str:
    if value is None:
        return "-"
    return (
        f"{value['estimate'] * scale:+.2f}{unit} "
        f"[{value['low'] * scale:+.2f}, {value['high'] * scale:+.2f}]"
    )


def format_report(results: Mapping[str, Any]) -> str:
    """The results as a text table (what ``journeygate experiments report`` prints)."""
    lines = [
        f"experiment {results['experiment']} on slot {results['slot']}: {results['policy']} "
        f"policy, {results['status']}, control {results['control']!r}",
        f"{'arm':<12} {'share':>6} {'visitors':>8} {'conv':>6} {'rate':>7} {'clicks':>6} "
        f"{'rev/visitor':>11}  {'rate diff, pp [95% CI]':<24} {'relative lift [95% CI]':<28} "
        f"{'rev/visitor diff [95% CI]'}",
    ]
    for arm in results["arms"]:
        lift = arm["lift"] or {}
        lines.append(
            f"{arm['name']:<12} {arm['share']:>6.1%} {arm['exposures']:>8} "
            f"{arm['conversions']:>6} {arm['conversion_rate']:>7.2%} {arm['clicks']:>6} "
            f"{arm['revenue_per_visitor']:>11.2f}  "
            + (
                "(control)"
                if arm["control"]
                else f"{_interval(lift.get('conversion_rate_difference'), 100):<24} "
                f"{_interval(lift.get('conversion_rate_relative'), 100, '%'):<28} "
                f"{_interval(lift.get('revenue_per_visitor_difference'))}"
            )
        )
    srm = results.get("sample_ratio")
    if srm is not None:
        verdict = "MISMATCH" if srm["mismatch"] else "ok"
        lines.append(
            f"sample ratio: chi-square {srm['chi_square']:.2f}, p = {srm['p_value']:.3g} "
            f"({verdict})"
        )
    else:
        lines.append("sample ratio: not checked (bandit allocation or no exposures yet)")
    lines += [f"WARNING: {warning}" for warning in results.get("warnings", ())]
    return "\n".join(lines)
