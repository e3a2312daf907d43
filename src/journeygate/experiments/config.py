"""Experiment definitions: ``config/experiments.toml`` (``[experiments] file``), validated at
startup. An error names the key, e.g. ``experiments.toml: experiment[0].arms[1].weight``.

One ``[[experiment]]`` table per experiment::

    [[experiment]]
    id = "hero-offer"            # letters, digits, . _ : - (part of Redis keys)
    slot = "hero"                # the slot id it applies to
    control = "default"          # the arm lifts are measured against (default: the first)
    holdout = 0.1                # share kept on default content: an implicit arm "holdout"
    traffic = 0.5                # share of visitors in the experiment (the rest: no change)
    start = 2026-11-01T00:00:00Z # optional; running from start (inclusive) to stop (exclusive)
    stop = 2026-12-31T00:00:00Z
    policy = "fixed"             # fixed split by weight, or "thompson" (bandit)
    reward = "click"             # the bandit's reward: "click" or "conversion"
    [[experiment.arms]]
    name = "default"
    weight = 1
    [[experiment.arms]]
    name = "ten-off"
    weight = 1
    params = { offer_id = "ten-off" }   # merged into slot.params
    # strategy, limit, template, plugin: replace the slot's own
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from journeygate.config import AppConfig, ConfigError
from journeygate.model import EMPTY

IDENTIFIER = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
POLICIES = ("fixed", "thompson")
REWARDS = ("click", "conversion")
HOLDOUT_ARM = "holdout"
ARM_SLOT_FIELDS = ("strategy", "limit", "template", "plugin")
EXPERIMENT_KEYS = frozenset(
    {"id", "slot", "arms", "control", "holdout", "traffic", "start", "stop", "policy", "reward"}
)
ARM_KEYS = frozenset({"name", "weight", "params", *ARM_SLOT_FIELDS})


@dataclass(frozen=True, slots=True)
class Arm:
    """One variant: its share (``weight``), the params merged into the slot, and the slot
    fields it replaces (``strategy``, ``limit``, ``template``, ``plugin``)."""

    name: str
    weight: float
    params: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    slot_fields: Mapping[str, Any] = field(default_factory=lambda: EMPTY)

    @property
    def is_holdout(self) -> bool:
        return bool(self.params.get("holdout"))


@dataclass(frozen=True, slots=True)
class Experiment:
    """A validated experiment. ``arms`` includes the holdout arm when ``holdout`` > 0; the
    weights of ``arms`` are normalised to shares of the experiment's visitors."""

    id: str
    slot: str
    arms: tuple[Arm, ...]
    control: str
    holdout: float = 0.0
    traffic: float = 1.0
    start: float | None = None
    stop: float | None = None
    policy: str = "fixed"
    reward: str = "click"
    shares: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def running(self, now: float) -> bool:
        return (self.start is None or self.start <= now) and (self.stop is None or now < self.stop)

    def arm(self, name: str) -> Arm:
        return next(arm for arm in self.arms if arm.name == name)


def _epoch(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{key}: expected an ISO 8601 date or time, got {value!r}") from None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    raise ConfigError(f"{key}: expected a date or time, got {value!r}")


def _share(value: Any, key: str, low: float, high: float, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{key}: must be between {low} and {high}, got {value}")
    return float(value)


def _choice(value: Any, key: str, options: tuple[str, ...]) -> str:
    if value is None:
        return options[0]
    if value not in options:
        raise ConfigError(f"{key}: expected one of {', '.join(options)}, got {value!r}")
    return str(value)


def _arm(raw: Any, key: str) -> Arm:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key}: expected a table")
    unknown = sorted(set(raw) - ARM_KEYS)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key")
    name = raw.get("name")
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise ConfigError(f"{key}.name: expected 1-64 letters, digits or . _ : -, got {name!r}")
    weight = raw.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
        raise ConfigError(f"{key}.weight: expected a positive number, got {weight!r}")
    params = raw.get("params", {})
    if not isinstance(params, Mapping):
        raise ConfigError(f"{key}.params: expected a table")
    slot_fields: dict[str, Any] = {}
    for name_ in ARM_SLOT_FIELDS:
        value = raw.get(name_)
        if value is None:
            continue
        expected = int if name_ == "limit" else str
        if isinstance(value, bool) or not isinstance(value, expected):
            raise ConfigError(f"{key}.{name_}: expected {expected.__name__}, got {value!r}")
        if isinstance(value, int) and not 1 <= value <= 48:
            raise ConfigError(f"{key}.limit: must be between 1 and 48, got {value}")
        slot_fields[name_] = value
    return Arm(
        name=name,
        weight=float(weight),
        params=MappingProxyType(dict(params)),
        slot_fields=MappingProxyType(slot_fields),
    )


def parse_experiment(raw: Any, key: str) -> Experiment:
    """One ``[[experiment]]`` table, checked; ``key`` prefixes every error."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key}: expected a table")
    unknown = sorted(set(raw) - EXPERIMENT_KEYS)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key")
    for name in ("id", "slot"):
        value = raw.get(name)
        if not isinstance(value, str) or not IDENTIFIER.match(value):
            raise ConfigError(
                f"{key}.{name}: expected 1-64 letters, digits or . _ : -, got {value!r}"
            )
    raw_arms = raw.get("arms")
    if not isinstance(raw_arms, list) or not raw_arms:
        raise ConfigError(f"{key}.arms: expected a list of arm tables")
    arms = [_arm(arm, f"{key}.arms[{index}]") for index, arm in enumerate(raw_arms)]
    holdout = _share(raw.get("holdout"), f"{key}.holdout", 0.0, 0.99, 0.0)
    if holdout > 0:
        if any(arm.name == HOLDOUT_ARM for arm in arms):
            raise ConfigError(f"{key}.arms: {HOLDOUT_ARM!r} is reserved when holdout is set")
        arms.append(Arm(HOLDOUT_ARM, 0.0, MappingProxyType({"holdout": True})))
    names = [arm.name for arm in arms]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate:
        raise ConfigError(f"{key}.arms: arm {duplicate!r} is defined twice")
    if len(arms) < 2:
        raise ConfigError(f"{key}.arms: an experiment needs at least two arms (or a holdout)")
    control = raw.get("control", arms[0].name)
    if control not in names:
        raise ConfigError(f"{key}.control: {control!r} is not one of the arms ({', '.join(names)})")
    start, stop = _epoch(raw.get("start"), f"{key}.start"), _epoch(raw.get("stop"), f"{key}.stop")
    if start is not None and stop is not None and stop <= start:
        raise ConfigError(f"{key}.stop: must be after start")
    total = sum(arm.weight for arm in arms)
    shares = {arm.name: (1 - holdout) * arm.weight / total for arm in arms if arm.weight > 0}
    if holdout > 0:
        shares[HOLDOUT_ARM] = holdout
    return Experiment(
        id=raw["id"],
        slot=raw["slot"],
        arms=tuple(arms),
        control=control,
        holdout=holdout,
        traffic=_share(raw.get("traffic"), f"{key}.traffic", 0.0, 1.0, 1.0),
        start=start,
        stop=stop,
        policy=_choice(raw.get("policy"), f"{key}.policy", POLICIES),
        reward=_choice(raw.get("reward"), f"{key}.reward", REWARDS),
        shares=MappingProxyType(shares),
    )


def _overlap(a: Experiment, b: Experiment) -> bool:
    a_start, b_start = a.start or float("-inf"), b.start or float("-inf")
    a_stop, b_stop = a.stop or float("inf"), b.stop or float("inf")
    return a_start < b_stop and b_start < a_stop


def parse_experiments(data: Mapping[str, Any], where: str) -> tuple[Experiment, ...]:
    """Every ``[[experiment]]`` of a parsed file; ids unique, one experiment per slot at a
    time (two experiments on one slot must not overlap in time)."""
    unknown = sorted(set(data) - {"experiment"})
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]}: unknown key (expected [[experiment]] tables)")
    raw = data.get("experiment", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: experiment: expected [[experiment]] tables")
    experiments = tuple(
        parse_experiment(item, f"{where}: experiment[{index}]") for index, item in enumerate(raw)
    )
    for index, experiment in enumerate(experiments):
        for other in experiments[:index]:
            if other.id == experiment.id:
                raise ConfigError(f"{where}: experiment[{index}].id: {experiment.id!r} twice")
            if other.slot == experiment.slot and _overlap(other, experiment):
                raise ConfigError(
                    f"{where}: experiment[{index}].slot: {experiment.id!r} and {other.id!r} "
                    f"both run on slot {experiment.slot!r} at the same time"
                )
    return experiments


def load_experiments(config: AppConfig) -> tuple[Experiment, ...]:
    """The experiments of ``[experiments] file``; none when the setting is empty."""
    if not config.experiments.file:
        return ()
    path = config.resolve_path(config.experiments.file)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"experiments.file: not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: invalid TOML: {exc}") from None
    return parse_experiments(data, path.name)
