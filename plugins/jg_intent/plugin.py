"""The intent scorer as a gateway plugin: journey stage and intent tier for every decision.

``journeygate_enrich_visitor`` is synchronous and does no I/O: it reads the stored profile
aggregates and session the pipeline already loaded, and the request's page and cart. Rules
and weights live in :mod:`jg_intent.rules`; settings come from ``[plugin.intent]``.

``journeygate_observe_decision`` (after the answer was sent) records a stage transition
when the decision's stage differs from the one stored on the profile, through the profile
store (``ProfileStore.record_stage``): no round trip at all while the stage stays the same.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import Executor
from typing import Any

from jg_intent.rules import (
    PLUGIN_NAME,
    IntentSettings,
    journey_stage,
    score_intent,
    signal_values,
)
from journeygate import hookimpl
from journeygate.catalog import Catalog
from journeygate.config import AppConfig
from journeygate.model import Block, DecisionContext
from journeygate.store import ProfileStore


class IntentPlugin:
    """Sets ``stage``, ``intent`` and ``intent_score`` on the visitor, with an explanation."""

    def __init__(self) -> None:
        self.settings = IntentSettings()
        self.store: ProfileStore | None = None

    @hookimpl
    def journeygate_startup(
        self, config: AppConfig, catalog: Catalog, executor: Executor, store: ProfileStore
    ) -> None:
        self.settings = IntentSettings.from_mapping(config.plugin_config(PLUGIN_NAME).settings)
        self.store = store

    @hookimpl
    def journeygate_enrich_visitor(self, context: DecisionContext) -> dict[str, Any]:
        return evaluate(self.settings, context, explain=context.request.explain)

    @hookimpl
    def journeygate_observe_decision(
        self, context: DecisionContext, blocks: Sequence[Block]
    ) -> Awaitable[Any] | None:
        """Record the stage transition, if the decision's stage is new for the visitor.

        Not a coroutine function: most decisions keep the stage, and for those nothing is
        awaited (the pipeline then needs no timer for this call)."""
        stage = context.visitor.stage
        stored = context.stored
        if (
            self.store is None
            or stage is None
            or not context.request.track
            or not stored.store_available  # the stored stage is unknown, not absent
            or stored.profile.get("stage") == stage
        ):
            return None
        return self.store.record_stage(
            stored.profile_id or context.visitor_id, stage, time.time(), context.decision_id
        )


def evaluate(settings: IntentSettings, context: DecisionContext, explain: bool) -> dict[str, Any]:
    """Stage, intent tier and score of one decision, with ``explain`` showing every step (only
    when ``explain``: the pipeline shows it only to requests that ask)."""
    values = signal_values(context)
    score, tier, contributions = score_intent(settings, values, explain)
    stage = journey_stage(settings, context, tier, values)
    result: dict[str, Any] = {"stage": stage["stage"], "intent": tier, "intent_score": score}
    if explain:
        result["explain"] = {
            "intent": contributions,
            "intent_score": score,
            "thresholds": {
                "comparing": settings.comparing_threshold,
                "ready_to_buy": settings.ready_to_buy_threshold,
            },
            "stage": {"rule": stage["rule"], "because": stage["because"]},
        }
    return result
