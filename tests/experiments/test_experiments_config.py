"""Experiment definitions are validated at startup; errors name the key."""

from __future__ import annotations

import re

import pytest

from journeygate.config import ConfigError
from journeygate.experiments.config import load_experiments, parse_experiments

ARMS = [{"name": "a"}, {"name": "b"}]


def test_a_full_definition_is_parsed(make_config, tmp_path):
    path = tmp_path / "experiments.toml"
    path.write_text(
        """
[[experiment]]
id = "hero-offer"
slot = "hero"
control = "default"
holdout = 0.1
traffic = 0.5
start = 2026-11-01T00:00:00Z
stop = 2026-12-31
policy = "thompson"
reward = "conversion"
[[experiment.arms]]
name = "default"
[[experiment.arms]]
name = "ten-off"
weight = 3
strategy = "for_you"
limit = 4
params = { offer_id = "ten-off" }
""",
        encoding="utf-8",
    )
    (experiment,) = load_experiments(make_config(experiments={"file": str(path)}))
    assert [arm.name for arm in experiment.arms] == ["default", "ten-off", "holdout"]
    assert experiment.arm("holdout").is_holdout
    assert dict(experiment.arm("ten-off").slot_fields) == {"strategy": "for_you", "limit": 4}
    assert dict(experiment.shares) == pytest.approx(
        {"default": 0.225, "ten-off": 0.675, "holdout": 0.1}
    )
    assert (experiment.policy, experiment.reward, experiment.traffic) == (
        "thompson",
        "conversion",
        0.5,
    )
    assert experiment.running(experiment.start) and not experiment.running(experiment.stop)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"arms": [{"name": "a", "weight": 0}, {"name": "b"}]}, "experiment[0].arms[0].weight"),
        ({"arms": [{"name": "a", "colour": "red"}, {"name": "b"}]}, "experiment[0].arms[0].colour"),
        ({"arms": [{"name": "a"}]}, "experiment[0].arms"),
        ({"control": "z"}, "experiment[0].control"),
        ({"policy": "greedy"}, "experiment[0].policy"),
        ({"reward": "views"}, "experiment[0].reward"),
        ({"traffic": 1.5}, "experiment[0].traffic"),
        ({"holdout": 1.0}, "experiment[0].holdout"),
        ({"start": "soon"}, "experiment[0].start"),
        ({"start": "2026-02-01", "stop": "2026-01-01"}, "experiment[0].stop"),
        ({"id": "has {braces}"}, "experiment[0].id"),
        ({"arms": [{"name": "a", "limit": 100}, {"name": "b"}]}, "experiment[0].arms[0].limit"),
        ({"variants": []}, "experiment[0].variants"),
    ],
)
def test_errors_name_the_key(change, key):
    raw = {"id": "e", "slot": "hero", "arms": ARMS, **change}
    with pytest.raises(ConfigError, match="^x.toml: " + re.escape(key)):
        parse_experiments({"experiment": [raw]}, "x.toml")


def test_one_experiment_per_slot_at_a_time():
    first = {"id": "one", "slot": "hero", "arms": ARMS, "stop": "2026-06-01"}
    overlapping = {"id": "two", "slot": "hero", "arms": ARMS, "start": "2026-05-01"}
    with pytest.raises(ConfigError, match=r"experiment\[1\]\.slot: 'two' and 'one'"):
        parse_experiments({"experiment": [first, overlapping]}, "x.toml")
    after = dict(overlapping, start="2026-06-01")
    assert len(parse_experiments({"experiment": [first, after]}, "x.toml")) == 2
    with pytest.raises(ConfigError, match=r"experiment\[1\]\.id"):
        parse_experiments({"experiment": [first, dict(after, id="one")]}, "x.toml")


def test_a_missing_file_or_a_bad_setting_stops_startup(make_config):
    with pytest.raises(ConfigError, match=r"experiments\.file: not found"):
        load_experiments(make_config(experiments={"file": "nope/experiments.toml"}))
    with pytest.raises(ConfigError, match=r"experiments\.bandit_min_propensity"):
        make_config(experiments={"bandit_min_propensity": 0.7})
    assert load_experiments(make_config(experiments={"file": ""})) == ()
    assert load_experiments(make_config()) == ()  # the bundled file defines none
