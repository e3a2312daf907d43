"""Experiments in the decide pipeline: assign arms when slots are prepared, record exposures
when the decision is observed, and keep the bandits' choice probabilities fresh.

Nothing here waits on storage during a request: :meth:`ExperimentRunner.prepare` hashes ids
and reads in-memory probabilities; :meth:`ExperimentRunner.observe` appends to a queue that a
background task writes every ``flush_interval_ms`` (a few pipelined round trips per batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

from journeygate.config import ExperimentsConfig
from journeygate.experiments.assignment import in_traffic
from journeygate.experiments.config import HOLDOUT_ARM, Experiment
from journeygate.experiments.policy import FixedSplit, Policy, ThompsonSampling
from journeygate.experiments.storage import ArmCounts, ExperimentStore, Exposure
from journeygate.model import ArmAssignment, Block, DecisionContext, SlotRequest
from journeygate.store import StoreUnavailable

log = logging.getLogger(__name__)

FALLBACK_PLUGIN = "fallback"
FLUSH_CHUNK = 200  # exposures per write: bounds how long one write holds the event loop


class ExperimentRunner:
    """The running experiments of one gateway process."""

    def __init__(
        self,
        experiments: Sequence[Experiment],
        store: ExperimentStore,
        settings: ExperimentsConfig,
        executor: Executor | None = None,
    ) -> None:
        self.experiments = {experiment.id: experiment for experiment in experiments}
        self.store = store
        self.settings = settings
        self.executor = executor
        self.by_slot: dict[str, tuple[Experiment, ...]] = {}
        for experiment in experiments:
            self.by_slot[experiment.slot] = (*self.by_slot.get(experiment.slot, ()), experiment)
        self.policies: dict[str, Policy] = {}
        self.bandits: dict[str, ThompsonSampling] = {}
        for experiment in experiments:
            if experiment.policy == "thompson":
                bandit = ThompsonSampling(
                    experiment, settings.bandit_draws, settings.bandit_min_propensity
                )
                self.bandits[experiment.id] = bandit
                self.policies[experiment.id] = bandit
            else:
                self.policies[experiment.id] = FixedSplit(experiment)
        self.dropped = 0
        self._pending: list[Exposure] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._last_failure = 0.0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start writing exposures in the background, and refreshing the bandits."""
        if not self.experiments:
            return
        flush_every = self.settings.flush_interval_ms / 1000
        self._tasks.append(asyncio.create_task(self._every(flush_every, self.flush)))
        if self.bandits:
            try:
                await self.refresh()
            except StoreUnavailable as exc:  # decisions go on with uniform probabilities
                self._warn(f"experiments: bandit probabilities not loaded: {exc}")
            self._tasks.append(
                asyncio.create_task(self._every(self.settings.bandit_refresh_s, self.refresh))
            )

    async def stop(self) -> None:
        """Stop the background tasks and write what is still queued."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        try:
            await self.flush()
        except StoreUnavailable as exc:
            log.warning("experiments: %d exposures not written: %s", len(self._pending), exc)

    async def _every(self, interval: float, work: Any) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await work()
            except StoreUnavailable as exc:
                self._warn(f"experiment storage unavailable: {exc}")
            except Exception:
                log.exception("experiments: background work failed")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_failure >= 10.0:
            self._last_failure = now
            log.warning("%s (repeats within 10 s are not logged)", message)

    # -- the two calls of the pipeline ---------------------------------------------------

    def prepare(
        self, context: DecisionContext, trace: list[dict[str, Any]] | None
    ) -> tuple[SlotRequest, ...]:
        """The request's slots, those under a running experiment changed by their arm:
        params merged, strategy/limit/template/plugin replaced, the assignment attached (a
        holdout arm without a plugin of its own is answered by the fallback: default
        content)."""
        slots = context.request.slots
        if not self.by_slot or not context.request.track:
            return slots
        now = time.time()
        prepared = list(slots)
        for index, slot in enumerate(slots):
            for experiment in self.by_slot.get(slot.id, ()):
                if experiment.running(now) and in_traffic(experiment, context.visitor_id):
                    prepared[index] = self._apply(experiment, slot, context, trace)
                    break
        return tuple(prepared)

    def _apply(
        self,
        experiment: Experiment,
        slot: SlotRequest,
        context: DecisionContext,
        trace: list[dict[str, Any]] | None,
    ) -> SlotRequest:
        name, propensity = self.policies[experiment.id].choose(
            context.visitor_id, context.decision_id
        )
        arm = experiment.arm(name)
        fields: dict[str, Any] = dict(arm.slot_fields)
        if arm.params:
            fields["params"] = {**slot.params, **arm.params}
        if name == HOLDOUT_ARM and "plugin" not in fields:
            fields["plugin"] = FALLBACK_PLUGIN
        if trace is not None:
            trace.append(
                {
                    "hook": "experiment",
                    "slot": slot.id,
                    "experiment": experiment.id,
                    "arm": name,
                    "propensity": round(propensity, 6),
                    "policy": experiment.policy,
                }
            )
        return dataclasses.replace(
            slot, assignment=ArmAssignment(experiment.id, name, propensity), **fields
        )

    def observe(self, context: DecisionContext, blocks: Sequence[Block]) -> None:
        """Queue an exposure for every block shown under an experiment (written later)."""
        now = time.time()
        for block in blocks:
            assignment = block.slot.assignment
            if assignment is None:
                continue
            if len(self._pending) >= self.settings.pending_max:
                self.dropped += 1
                self._warn(f"experiments: exposure queue full, {self.dropped} dropped so far")
                continue
            self._pending.append(
                Exposure(
                    experiment=assignment.experiment,
                    arm=assignment.arm,
                    visitor_id=context.visitor_id,
                    decision_id=context.decision_id,
                    slot=block.slot.id,
                    propensity=assignment.propensity,
                    at=now,
                )
            )

    # -- background work -----------------------------------------------------------------

    async def flush(self) -> None:
        """Write the queued exposures in chunks of ``FLUSH_CHUNK`` (yielding to requests in
        between); on failure what was not written is queued again (up to the cap)."""
        batch, self._pending = self._pending, []
        for start in range(0, len(batch), FLUSH_CHUNK):
            try:
                await self.store.record_exposures(batch[start : start + FLUSH_CHUNK])
            except StoreUnavailable:
                unwritten = batch[start:]
                room = max(self.settings.pending_max - len(self._pending), 0)
                self._pending[:0] = unwritten[:room]
                self.dropped += len(unwritten) - room
                raise
            await asyncio.sleep(0)

    async def refresh(self) -> None:
        """Recompute every bandit's choice probabilities from the current counters."""
        if not self.bandits:
            return
        counts = await self.store.arm_counts(list(self.bandits))
        loop = asyncio.get_running_loop()
        for experiment_id, bandit in self.bandits.items():
            arms: Mapping[str, ArmCounts] = counts.get(experiment_id, {})
            probabilities = await loop.run_in_executor(self.executor, bandit.estimate, arms)
            bandit.update(probabilities)
