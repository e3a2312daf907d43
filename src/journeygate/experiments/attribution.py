"""Attribution: clicks (``Block Clicked``) and orders (``Order Completed``) from the event
stream, credited to the experiment arms their visitors were shown.

Called where events are applied (the worker with Redis, the gateway in process otherwise),
with the events applied just now: a duplicate message id is never credited twice, and an
order id is credited once per visitor. A click carries the ``decision_id`` (and ``slot``)
of the block's tracking data and is credited to that decision's arm. An order is credited,
in every experiment the visitor was exposed to, to the arm of the decision it names
(``properties.decision_id``), else to the visitor's latest arm, when it happened between the
first exposure to that arm (less ``clock_skew_s``) and ``attribution_window_s`` after the
last. The visitor is the id the decisions were made for: the event's anonymous id
(``visitor_id``) when it has one, else its user id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from journeygate.config import AppConfig
from journeygate.experiments.config import Experiment, load_experiments
from journeygate.experiments.storage import Credit, ExperimentStore, Outcome, experiment_store
from journeygate.store import ProfileStore

CLICK_KIND = "block_click"
ORDER_KIND = "order"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def outcome_of(event: Mapping[str, Any]) -> Outcome | None:
    """The outcome an event (internal shape, ``journeygate.events.schema``) stands for."""
    kind = event["k"]
    if kind not in (CLICK_KIND, ORDER_KIND):
        return None
    props = event.get("p") or {}
    decision_id = _text(props.get("decision_id"))
    visitor_id = event.get("a") or event["v"]
    if kind == CLICK_KIND:
        if decision_id is None:
            return None
        return Outcome("click", visitor_id, event["t"], decision_id, _text(props.get("slot")))
    fields = event.get("x") or {}
    return Outcome(
        "order",
        visitor_id,
        event["t"],
        decision_id,
        revenue=float(fields.get("rev") or 0.0),
        order_id=_text(fields.get("oid")),
    )


class Attribution:
    """Credits applied events to the arms of the configured experiments."""

    def __init__(self, store: ExperimentStore, experiments: Sequence[Experiment]) -> None:
        self.store = store
        self.rewards = {experiment.id: experiment.reward for experiment in experiments}

    @classmethod
    def for_store(cls, profile_store: ProfileStore, config: AppConfig) -> Attribution | None:
        """Attribution for the experiments in ``config``, or None when there are none."""
        experiments = load_experiments(config)
        if not experiments:
            return None
        store = experiment_store(
            profile_store, config.experiments, config.store.memory_max_visitors
        )
        return cls(store, experiments)

    async def attribute(self, events: Sequence[Mapping[str, Any]]) -> list[Credit]:
        """Credit the clicks and orders among ``events`` (one or two round trips)."""
        outcomes = [outcome for event in events if (outcome := outcome_of(event)) is not None]
        if not outcomes:
            return []
        return await self.store.attribute(outcomes, self.rewards)
