"""Sticky, deterministic assignment from sha256 buckets: the same in every process, shares as
configured, traffic allocation and holdout, independent between experiments."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys

import pytest
from scipy import stats

from journeygate.experiments.assignment import bucket, fixed_arm, in_traffic
from journeygate.experiments.config import parse_experiment

EXPERIMENT = parse_experiment(
    {
        "id": "assign",
        "slot": "hero",
        "holdout": 0.1,
        "traffic": 0.3,
        "arms": [{"name": "a", "weight": 1}, {"name": "b", "weight": 2}],
    },
    "test",
)
VISITORS = [f"visitor-{i}" for i in range(40_000)]


def test_bucket_is_the_documented_sha256_prefix():
    digest = hashlib.sha256(b"assign\x1farm\x1fvisitor-1").digest()
    assert bucket("assign", "arm", "visitor-1") == int.from_bytes(digest[:8], "big") / 2**64


def test_assignment_is_the_same_in_another_process():
    code = (
        "from journeygate.experiments.assignment import fixed_arm\n"
        "from journeygate.experiments.config import parse_experiment\n"
        "e = parse_experiment({'id': 'assign', 'slot': 'hero', 'holdout': 0.1, 'arms': "
        "[{'name': 'a', 'weight': 1}, {'name': 'b', 'weight': 2}]}, 'x')\n"
        "print(' '.join(fixed_arm(e, f'visitor-{i}') for i in range(200)))\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert other == [fixed_arm(EXPERIMENT, f"visitor-{i}") for i in range(200)]
    assert [fixed_arm(EXPERIMENT, "visitor-7")] * 3 == [fixed_arm(EXPERIMENT, "visitor-7")] * 3


def test_arm_shares_traffic_and_holdout_match_the_config():
    assert dict(EXPERIMENT.shares) == pytest.approx({"a": 0.3, "b": 0.6, "holdout": 0.1})
    arms = [fixed_arm(EXPERIMENT, visitor) for visitor in VISITORS]
    n = len(VISITORS)
    for arm, share in EXPERIMENT.shares.items():
        observed = arms.count(arm) / n
        assert abs(observed - share) < 4 * math.sqrt(share * (1 - share) / n)
    in_experiment = sum(in_traffic(EXPERIMENT, visitor) for visitor in VISITORS) / n
    assert abs(in_experiment - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)


def test_assignments_of_two_experiments_are_independent():
    other = parse_experiment(
        {"id": "other", "slot": "recs", "arms": [{"name": "x"}, {"name": "y"}]}, "test"
    )
    table = [[0, 0], [0, 0], [0, 0]]
    rows = {"a": 0, "b": 1, "holdout": 2}
    for visitor in VISITORS:
        table[rows[fixed_arm(EXPERIMENT, visitor)]][fixed_arm(other, visitor) == "y"] += 1
    assert stats.chi2_contingency(table).pvalue > 0.001
    # being in the traffic share says nothing about the arm either
    inside = [fixed_arm(EXPERIMENT, v) for v in VISITORS if in_traffic(EXPERIMENT, v)]
    assert abs(inside.count("b") / len(inside) - 0.6) < 4 * math.sqrt(0.24 / len(inside))
