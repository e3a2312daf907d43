"""Exposure and outcome storage: Redis (sharing the profile store's connection pool) or in
process (next to the in-process profile store).

Per visitor (under the visitor's hash tag, TTL ``visitor_ttl_s``): which arms of which
experiment the visitor saw and when, whether it converted and its revenue there, and its
recent decisions (capped at ``visitor_decisions_max``) so that a click or an order can be
credited through its decision id. Per experiment: one hash of counters per arm (bounded by
the number of arms) and the decision log, a stream trimmed to about ``decision_log_max``
entries, each holding a decision id, arm and propensity. Key names: ``journeygate.store.keys``.

Counters are what the statistics need: unique exposed visitors, converting visitors, clicks,
orders, the sum and the sum of squares of per-visitor revenue, decisions and bandit rewards.
A visitor's record and the arm counters live in different hash slots, so the first is
updated by one Lua script (which says what changed) and the counters are then incremented in
one pipelined round trip.
"""

from __future__ import annotations

import json
import time
import weakref
from collections import OrderedDict, defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from journeygate.config import ExperimentsConfig
from journeygate.store import ProfileStore, keys
from journeygate.store.scripting import ScriptedPipelines

SCRIPT = Path(__file__).with_name("experiments.lua").read_text(encoding="utf-8")
TIMEOUT_S = 2.0
FLOAT_COUNTERS = frozenset({"revenue", "revenue_sq"})


@dataclass(slots=True)
class ArmCounts:
    """Counters of one arm."""

    decisions: int = 0
    exposed: int = 0
    clicks: int = 0
    converted: int = 0
    orders: int = 0
    revenue: float = 0.0
    revenue_sq: float = 0.0
    rewards: int = 0

    def add(self, other: ArmCounts) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


COUNTERS = tuple(f.name for f in fields(ArmCounts))


@dataclass(frozen=True, slots=True)
class Exposure:
    """One slot of one decision shown under an experiment's arm."""

    experiment: str
    arm: str
    visitor_id: str
    decision_id: str
    slot: str
    propensity: float
    at: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """A click on a block or an order, to credit to the arm the visitor saw."""

    kind: str  # "click" or "order"
    visitor_id: str
    at: float
    decision_id: str | None = None
    slot: str | None = None
    revenue: float = 0.0
    order_id: str | None = None


@dataclass(frozen=True, slots=True)
class Credit:
    """What one outcome changed for one experiment's arm (see ``experiments.lua``)."""

    experiment: str
    arm: str
    first_click: bool = False
    new_converter: bool = False
    revenue: float = 0.0
    revenue_sq: float = 0.0
    first_conversion: bool = False


class ExperimentStore(Protocol):
    """Where exposures and outcomes are recorded and the arm counters read from."""

    async def record_exposures(self, exposures: Sequence[Exposure]) -> None:
        """Record exposures: per visitor, then the arm counters and the decision logs."""
        ...

    async def attribute(
        self, outcomes: Sequence[Outcome], rewards: Mapping[str, str]
    ) -> list[Credit]:
        """Credit outcomes to the arms their visitors saw (through the decision id when the
        outcome has one, else the visitor's latest arm) and count them. ``rewards`` maps
        every experiment id to its bandit reward (``click`` or ``conversion``)."""
        ...

    async def arm_counts(self, experiment_ids: Sequence[str]) -> dict[str, dict[str, ArmCounts]]:
        """The counters of every arm of each experiment (one round trip)."""
        ...

    async def decision_log(self, experiment_id: str, count: int) -> list[dict[str, Any]]:
        """The latest ``count`` decisions of an experiment, oldest first."""
        ...


def _increments(
    credits: Sequence[tuple[Outcome, Credit]], rewards: Mapping[str, str]
) -> dict[str, dict[str, ArmCounts]]:
    """Counter increments per experiment and arm for credited outcomes."""
    totals: dict[str, dict[str, ArmCounts]] = defaultdict(lambda: defaultdict(ArmCounts))
    for outcome, credit in credits:
        counts = totals[credit.experiment][credit.arm]
        reward = rewards.get(credit.experiment)
        if outcome.kind == "click":
            counts.clicks += 1
            counts.rewards += int(reward == "click" and credit.first_click)
        else:
            counts.orders += 1
            counts.converted += int(credit.new_converter)
            counts.revenue += credit.revenue
            counts.revenue_sq += credit.revenue_sq
            counts.rewards += int(reward == "conversion" and credit.first_conversion)
    return totals


def _exposure_increments(
    exposures: Sequence[Exposure], new: Sequence[bool]
) -> dict[str, dict[str, ArmCounts]]:
    totals: dict[str, dict[str, ArmCounts]] = defaultdict(lambda: defaultdict(ArmCounts))
    for exposure, is_new in zip(exposures, new, strict=True):
        counts = totals[exposure.experiment][exposure.arm]
        counts.decisions += 1
        counts.exposed += int(is_new)
    return totals


def _log_entry(exposure: Exposure) -> dict[str, Any]:
    return {
        "decision_id": exposure.decision_id,
        "visitor_id": exposure.visitor_id,
        "arm": exposure.arm,
        "slot": exposure.slot,
        "propensity": round(exposure.propensity, 6),
        "at": round(exposure.at, 3),
    }


class RedisExperimentStore:
    """Experiment records in Redis (keys: ``journeygate.store.keys``)."""

    def __init__(self, client: Any, settings: ExperimentsConfig) -> None:
        self.client = client
        self.settings = settings
        self.pipelines = ScriptedPipelines(client, (SCRIPT,), TIMEOUT_S)
        self._run = self.pipelines.run

    def _visitor_keys(self, visitor_id: str) -> tuple[str, str]:
        return keys.experiment_visitor(visitor_id), keys.experiment_visitor_recent(visitor_id)

    def _count(self, increments: Mapping[str, Mapping[str, ArmCounts]], pipe: Any) -> None:
        """Queue the counter increments (and refresh the counters' TTL) on ``pipe``."""
        for experiment_id, arms in increments.items():
            key = keys.experiment_arms(experiment_id)
            for arm, counts in arms.items():
                for name in COUNTERS:
                    value = getattr(counts, name)
                    if not value:
                        continue
                    if name in FLOAT_COUNTERS:
                        pipe.hincrbyfloat(key, f"{arm}|{name}", value)
                    else:
                        pipe.hincrby(key, f"{arm}|{name}", value)
            pipe.expire(key, self.settings.results_ttl_s)

    async def record_exposures(self, exposures: Sequence[Exposure]) -> None:
        if not exposures:
            return
        cfg = self.settings

        def expose(pipe: Any) -> None:
            for e in exposures:
                pipe.evalsha(
                    self.pipelines.sha(SCRIPT),
                    2,
                    *self._visitor_keys(e.visitor_id),
                    "expose",
                    e.experiment,
                    e.arm,
                    e.decision_id,
                    e.slot,
                    e.at,
                    cfg.visitor_ttl_s,
                    cfg.visitor_decisions_max,
                )

        new = [bool(flag) for flag in await self._run(expose, scripted=True)]
        increments = _exposure_increments(exposures, new)

        def count(pipe: Any) -> None:
            for e in exposures:
                pipe.xadd(
                    keys.experiment_decisions(e.experiment),
                    {"e": json.dumps(_log_entry(e))},
                    maxlen=cfg.decision_log_max,
                    approximate=True,
                )
            for experiment_id in increments:
                pipe.expire(keys.experiment_decisions(experiment_id), cfg.results_ttl_s)
            self._count(increments, pipe)

        await self._run(count)

    async def attribute(
        self, outcomes: Sequence[Outcome], rewards: Mapping[str, str]
    ) -> list[Credit]:
        if not outcomes or not rewards:
            return []
        cfg = self.settings
        experiment_ids = list(rewards)

        def credit(pipe: Any) -> None:
            for o in outcomes:
                visitor_keys = self._visitor_keys(o.visitor_id)
                if o.kind == "click":
                    pipe.evalsha(
                        self.pipelines.sha(SCRIPT),
                        2,
                        *visitor_keys,
                        "click",
                        o.decision_id or "",
                        o.slot or "",
                        cfg.visitor_ttl_s,
                    )
                else:
                    pipe.evalsha(
                        self.pipelines.sha(SCRIPT),
                        2,
                        *visitor_keys,
                        "order",
                        o.decision_id or "",
                        o.at,
                        o.revenue,
                        o.order_id or "",
                        cfg.attribution_window_s,
                        cfg.clock_skew_s,
                        cfg.visitor_ttl_s,
                        cfg.visitor_decisions_max,
                        *experiment_ids,
                    )

        results = await self._run(credit, scripted=True)
        credited = [
            (outcome, parsed)
            for outcome, raw in zip(outcomes, results, strict=True)
            for parsed in _parse_credits(outcome.kind, raw)
        ]
        increments = _increments(credited, rewards)
        if increments:
            await self._run(lambda pipe: self._count(increments, pipe))
        return [c for _, c in credited]

    async def arm_counts(self, experiment_ids: Sequence[str]) -> dict[str, dict[str, ArmCounts]]:
        if not experiment_ids:
            return {}

        def read(pipe: Any) -> None:
            for experiment_id in experiment_ids:
                pipe.hgetall(keys.experiment_arms(experiment_id))

        results = await self._run(read)
        return {
            experiment_id: _parse_counts(raw)
            for experiment_id, raw in zip(experiment_ids, results, strict=True)
        }

    async def decision_log(self, experiment_id: str, count: int) -> list[dict[str, Any]]:
        (entries,) = await self._run(
            lambda pipe: pipe.xrevrange(keys.experiment_decisions(experiment_id), count=count)
        )
        return [json.loads(fields_["e"]) for _, fields_ in reversed(entries)]


def _parse_credits(kind: str, raw: Sequence[Any]) -> list[Credit]:
    """The script's flat answer for one outcome (see ``experiments.lua``)."""
    if kind == "click":
        return [
            Credit(str(raw[i]), str(raw[i + 1]), first_click=bool(int(raw[i + 2])))
            for i in range(0, len(raw), 3)
        ]
    return [
        Credit(
            str(raw[i]),
            str(raw[i + 1]),
            new_converter=bool(int(raw[i + 2])),
            revenue=float(raw[i + 3]),
            revenue_sq=float(raw[i + 4]),
            first_conversion=bool(int(raw[i + 5])),
        )
        for i in range(0, len(raw), 6)
    ]


def _parse_counts(raw: Mapping[str, str]) -> dict[str, ArmCounts]:
    """``ARM|counter`` fields of an experiment's counters hash, per arm."""
    arms: dict[str, ArmCounts] = defaultdict(ArmCounts)
    for name, value in raw.items():
        arm, _, counter = name.rpartition("|")
        if counter in FLOAT_COUNTERS:
            setattr(arms[arm], counter, float(value))
        elif counter in COUNTERS:
            setattr(arms[arm], counter, int(value))
    return dict(arms)


@dataclass
class _VisitorRecord:
    """One visitor's experiment records in process (the Redis store's ``jg:{v}:xp``)."""

    expires: float
    # experiment -> {"arms": {arm: [first, last, converted, revenue]}, "last": [did, arm]}
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    decisions: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    orders: set[str] = field(default_factory=set)
    recent: deque[tuple[str, str]] = field(default_factory=deque)

    def remember(self, kind: str, name: str, cap: int) -> None:
        self.recent.appendleft((kind, name))
        while len(self.recent) > cap:
            old_kind, old = self.recent.pop()
            if old_kind == "d":
                self.decisions.pop(old, None)
            else:
                self.orders.discard(old)


class MemoryExperimentStore:
    """Experiment records in process, bounded like the Redis ones: at most ``max_visitors``
    visitors (least recently written evicted), the same caps and TTLs."""

    def __init__(self, settings: ExperimentsConfig, max_visitors: int) -> None:
        self.settings = settings
        self.max_visitors = max_visitors
        self._visitors: OrderedDict[str, _VisitorRecord] = OrderedDict()
        self._counts: dict[str, dict[str, ArmCounts]] = defaultdict(lambda: defaultdict(ArmCounts))
        self._logs: dict[str, deque[dict[str, Any]]] = {}

    def _visitor(self, visitor_id: str, create: bool) -> _VisitorRecord | None:
        now = time.time()
        record = self._visitors.get(visitor_id)
        if record is not None and record.expires <= now:
            del self._visitors[visitor_id]
            record = None
        if record is None and create:
            record = self._visitors[visitor_id] = _VisitorRecord(expires=now)
            while len(self._visitors) > self.max_visitors:
                self._visitors.popitem(last=False)
        if record is not None:
            self._visitors.move_to_end(visitor_id)
            record.expires = now + self.settings.visitor_ttl_s
        return record

    def _count(self, increments: Mapping[str, Mapping[str, ArmCounts]]) -> None:
        for experiment_id, arms in increments.items():
            for arm, counts in arms.items():
                self._counts[experiment_id][arm].add(counts)

    async def record_exposures(self, exposures: Sequence[Exposure]) -> None:
        cap = self.settings.visitor_decisions_max
        new = []
        for e in exposures:
            record = self._visitor(e.visitor_id, create=True)
            assert record is not None
            state = record.experiments.setdefault(e.experiment, {"arms": {}})
            arm = state["arms"].get(e.arm)
            new.append(arm is None)
            if arm is None:
                state["arms"][e.arm] = [e.at, e.at, 0, 0.0]
            else:
                arm[1] = max(arm[1], e.at)
            state["last"] = [e.decision_id, e.arm]
            if e.decision_id not in record.decisions:
                record.decisions[e.decision_id] = {}
                record.remember("d", e.decision_id, cap)
            record.decisions[e.decision_id].setdefault(e.slot, [e.experiment, e.arm, 0, 0])
            log = self._logs.setdefault(e.experiment, deque(maxlen=self.settings.decision_log_max))
            log.append(_log_entry(e))
        self._count(_exposure_increments(exposures, new))

    def _credit(self, o: Outcome, experiment_ids: Sequence[str]) -> list[Credit]:
        cfg = self.settings
        record = self._visitor(o.visitor_id, create=False)
        if record is None:
            return []
        if o.kind == "click":
            decision = record.decisions.get(o.decision_id or "", {})
            credits = []
            for slot, entry in decision.items():
                if not o.slot or slot == o.slot:
                    credits.append(Credit(entry[0], entry[1], first_click=entry[2] == 0))
                    entry[2] = 1
            return credits
        if o.order_id and o.order_id in record.orders:
            return []
        credited = {
            entry[0]: [o.decision_id, entry[1]]
            for entry in record.decisions.get(o.decision_id or "", {}).values()
        }
        credits = []
        for experiment_id in experiment_ids:
            state = record.experiments.get(experiment_id)
            if state is None:
                continue
            pick: list[Any] | None = credited.get(experiment_id) or state.get("last")
            if pick is None:
                continue
            arm = state["arms"].get(pick[1])
            if arm is None:
                continue
            if not arm[0] - cfg.clock_skew_s <= o.at <= arm[1] + cfg.attribution_window_s:
                continue
            before = arm[3]
            new_converter = arm[2] == 0
            arm[2], arm[3] = 1, before + o.revenue
            first = False
            for entry in record.decisions.get(pick[0], {}).values():
                if entry[0] == experiment_id and entry[3] == 0:
                    entry[3], first = 1, True
            credits.append(
                Credit(
                    experiment_id,
                    pick[1],
                    new_converter=new_converter,
                    revenue=o.revenue,
                    revenue_sq=arm[3] ** 2 - before**2,
                    first_conversion=first,
                )
            )
        if credits and o.order_id:
            record.orders.add(o.order_id)
            record.remember("o", o.order_id, cfg.visitor_decisions_max)
        return credits

    async def attribute(
        self, outcomes: Sequence[Outcome], rewards: Mapping[str, str]
    ) -> list[Credit]:
        experiment_ids = list(rewards)
        credited = [(o, c) for o in outcomes for c in self._credit(o, experiment_ids)]
        self._count(_increments(credited, rewards))
        return [c for _, c in credited]

    async def arm_counts(self, experiment_ids: Sequence[str]) -> dict[str, dict[str, ArmCounts]]:
        return {
            experiment_id: {
                arm: ArmCounts(**{n: getattr(c, n) for n in COUNTERS})
                for arm, c in self._counts.get(experiment_id, {}).items()
            }
            for experiment_id in experiment_ids
        }

    async def decision_log(self, experiment_id: str, count: int) -> list[dict[str, Any]]:
        log = list(self._logs.get(experiment_id, ()))
        return log[-count:] if count else []


_MEMORY_STORES: weakref.WeakKeyDictionary[Any, MemoryExperimentStore] = weakref.WeakKeyDictionary()


def experiment_store(
    profile_store: ProfileStore, settings: ExperimentsConfig, max_visitors: int
) -> ExperimentStore:
    """The experiment storage next to ``profile_store``: on its Redis connection pool, or,
    for the in-process store, one per profile store (the gateway's decisions and the events
    it applies in process share it)."""
    from journeygate.store.redis import RedisProfileStore

    if isinstance(profile_store, RedisProfileStore):
        return RedisExperimentStore(profile_store.client, settings)
    store = _MEMORY_STORES.get(profile_store)
    if store is None:
        store = _MEMORY_STORES[profile_store] = MemoryExperimentStore(settings, max_visitors)
    return store
