"""The durable timer loop: claims due timers and fires them. It runs in ``journeygate
worker`` processes (with Redis, as many as there are workers) and in the embedded gateway.

A claim moves each due timer to the end of a lease in the same atomic step, so two
schedulers never hold one timer; a timer is removed only once it was fired (or found not to
hold), and only if it is still as claimed. A scheduler that dies, or a Redis outage in the
middle of a fire, leaves the timer to come due again when the lease runs out; what was
already done for it is recognised then (see :mod:`jg_triggers.engine`), so it is sent once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from jg_triggers.engine import TriggerEngine
from jg_triggers.settings import SchedulerSettings
from jg_triggers.store import Claimed, TriggerStore
from journeygate.store import StoreUnavailable

log = logging.getLogger(__name__)


class Scheduler:
    """One scheduler over every timer shard."""

    def __init__(
        self,
        store: TriggerStore,
        engine: TriggerEngine,
        settings: SchedulerSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.fired: dict[str, int] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> int:
        """Claim the due timers and fire them; returns how many were claimed."""
        now = self.clock()
        claimed = await self.store.claim(now, now + self.settings.lease_s, self.settings.batch)
        done: list[Claimed] = []
        for held in claimed:
            try:
                outcome = await self.engine.fire_timer(held)
            except StoreUnavailable as exc:
                log.warning("timer %s: %s; it comes back after its lease", held.timer.id, exc)
                continue
            except Exception:
                # a fault in the timer itself would fail again on every lease: drop it
                log.exception("timer %s failed and is dropped", held.timer.id)
                outcome = "failed"
            self.fired[outcome] = self.fired.get(outcome, 0) + 1
            done.append(held)
        await self.store.finish(done)
        return len(claimed)

    async def run(self) -> None:
        """Until :meth:`stop`: claim, fire, and sleep ``poll_interval_s`` when nothing more
        is due."""
        failing = False
        while not self._stop.is_set():
            claimed = 0
            try:
                claimed = await self.run_once()
                failing = False
            except StoreUnavailable as exc:
                if not failing:  # once per outage, not once per poll
                    log.warning("trigger timers unavailable, retrying: %s", exc)
                failing = True
            if claimed < self.settings.batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.settings.poll_interval_s)

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        """Stop after the timer being fired (one not finished comes back after its lease)."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
