"""Rule segments from config: checked at startup with the key named, evaluated in order."""

from __future__ import annotations

import tomllib

import pytest

from jg_personas.segments import DEFAULT_SEGMENTS, matching, parse_segments
from jg_personas.settings import PersonaSettings
from journeygate.config import PROJECT_ROOT

WHERE = "plugin.personas.segments"


def test_rules_match_in_order_and_missing_figures_never_match():
    segments = parse_segments(
        [
            {
                "name": "high-value-infrequent",
                "when": {"average_order_value": {"gt": 500}, "orders_per_year": {"lt": 2}},
            },
            {"name": "mid-aov", "when": {"average_order_value": {"gte": 100, "lte": 600}}},
            {"name": "wholesale", "when": {"persona": {"in": ["high-value-wide-range"]}}},
            {"name": "not-lapsed", "when": {"persona": {"ne": "lapsed-low-value-one-timers"}}},
        ],
        WHERE,
    )
    big = {"average_order_value": 550.0, "orders_per_year": 1.5, "persona": "high-value-wide-range"}
    assert matching(segments, big) == [
        "high-value-infrequent",
        "mid-aov",
        "wholesale",
        "not-lapsed",
    ]
    assert matching(segments, {**big, "orders_per_year": 2.0}) == [
        "mid-aov",
        "wholesale",
        "not-lapsed",
    ]
    assert matching(segments, {"average_order_value": 600.0, "persona": None}) == ["mid-aov"]
    # no orders: no figures, no persona; no condition holds, negative ones included
    assert matching(segments, {"persona": None}) == []


def test_default_segments():
    settings = PersonaSettings.from_mapping({})
    assert settings.artifacts == "var/models/personas"
    assert [s.name for s in settings.segments] == [rule["name"] for rule in DEFAULT_SEGMENTS]
    one_big_order = {"orders": 1, "average_order_value": 800.0, "orders_per_year": 1.0}
    assert matching(settings.segments, one_big_order) == [
        "high-value-infrequent",
        "first-time-buyer",
    ]
    lapsing = {"orders": 5, "days_since_last_order": 120.0, "orders_per_year": 4.0}
    assert matching(settings.segments, lapsing) == ["lapsing-regular"]
    assert PersonaSettings.from_mapping({"segments": []}).segments == ()


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ("vip", f"{WHERE}: expected a list of segment tables, got str"),
        (["vip"], f"{WHERE}[0]: expected a table with name and when"),
        ([{"name": "vip", "when": {"orders": {"gt": 1}}, "if": 1}], f"{WHERE}[0].if: unknown key"),
        (
            [{"name": "VIP!", "when": {"orders": {"gt": 1}}}],
            f"{WHERE}[0].name: expected lower-case",
        ),
        ([{"name": "vip", "when": {}}], f"{WHERE}[0].when: expected a table of conditions"),
        ([{"name": "vip", "when": {"aov": {"gt": 1}}}], f"{WHERE}[0].when.aov: unknown field"),
        (
            [{"name": "vip", "when": {"orders": 3}}],
            f"{WHERE}[0].when.orders: expected a table of operators",
        ),
        (
            [{"name": "vip", "when": {"orders": {"over": 3}}}],
            f"{WHERE}[0].when.orders.over: unknown operator",
        ),
        (
            [{"name": "vip", "when": {"orders": {"gt": "3"}}}],
            f"{WHERE}[0].when.orders.gt: expected a number, got '3'",
        ),
        (
            [{"name": "vip", "when": {"orders": {"gt": True}}}],
            f"{WHERE}[0].when.orders.gt: expected a number",
        ),
        (
            [{"name": "vip", "when": {"orders": {"in": []}}}],
            f"{WHERE}[0].when.orders.in: expected a non-empty list",
        ),
        (
            [{"name": "vip", "when": {"persona": {"gt": "a"}}}],
            f"{WHERE}[0].when.persona.gt: persona is a string",
        ),
        (
            [{"name": "vip", "when": {"persona": {"eq": 1}}}],
            f"{WHERE}[0].when.persona.eq: expected a string",
        ),
        (
            [
                {"name": "vip", "when": {"orders": {"gt": 1}}},
                {"name": "vip", "when": {"orders": {"gt": 2}}},
            ],
            f"{WHERE}[1].name: segment 'vip' is defined twice",
        ),
    ],
)
def test_bad_rules_are_rejected_naming_the_key(segments, message):
    with pytest.raises(ValueError) as error:
        PersonaSettings.from_mapping({"segments": segments})
    assert str(error.value).startswith(message)


def test_unknown_settings_are_rejected():
    with pytest.raises(ValueError, match=r"^plugin.personas.segmnets: unknown setting"):
        PersonaSettings.from_mapping({"segmnets": []})
    with pytest.raises(ValueError, match=r"^plugin.personas.artifacts: expected a directory"):
        PersonaSettings.from_mapping({"artifacts": 3})


def test_the_commented_config_section_shows_the_defaults():
    text = (PROJECT_ROOT / "config" / "journeygate.toml").read_text(encoding="utf-8")
    # the section runs from its header to the next blank line
    block = text[text.index("# [plugin.personas]") :].split("\n\n", 1)[0].splitlines()
    section = tomllib.loads("\n".join(line[2:] for line in block if line.startswith("# ")))
    assert PersonaSettings.from_mapping(section["plugin"]["personas"]) == PersonaSettings()
