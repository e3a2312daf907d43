"""The behavioral triggers plugin: rules over observed events, durable timers, guardrails, and
signed webhooks to the email/CRM tool through the webhook outbox.

* ``journeygate_startup``: reads ``[plugin.triggers] file`` (``config/triggers.toml``) and
  opens the trigger store (Redis, or in process for the embedded gateway). With no
  ``[webhooks.endpoints]`` configured the triggers are inactive: the plugin starts, says so
  once, and does nothing. The timer scheduler runs in ``worker`` and ``embedded`` processes
  only; a gateway with Redis leaves events and timers to the workers.
* ``journeygate_observe_event``: queues the event for the engine, which applies the rules
  to batches of events (:class:`EventBatcher`, :mod:`jg_triggers.engine`), in ``worker``
  and ``embedded`` processes (the only ones that observe events).
* ``journeygate_forget_visitor``: drops the visitors' trigger state, timers and log entries
  (the gateway drops their undelivered webhooks).
* ``journeygate_register_commands``: ``journeygate triggers list|log``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from jg_triggers.commands import add_command
from jg_triggers.engine import TriggerEngine
from jg_triggers.memory_store import MemoryTriggerStore
from jg_triggers.redis_store import RedisTriggerStore
from jg_triggers.scheduler import Scheduler
from jg_triggers.settings import (
    PLUGIN_NAME,
    PluginSettings,
    TriggerConfigError,
    TriggerSettings,
    load_settings,
)
from jg_triggers.store import TriggerStore
from journeygate import hookimpl
from journeygate.config import AppConfig
from journeygate.events.schema import Event
from journeygate.hookspecs import ROLE_EMBEDDED, ROLE_WORKER
from journeygate.store import ProfileStore
from journeygate.webhooks import WebhookOutbox, webhook_outbox

log = logging.getLogger(__name__)

# The trigger store's Redis calls: a fire is a handful of small round trips, off the request
# path (workers, erasures), so it waits longer than a decision's store reads.
MIN_REDIS_TIMEOUT_S = 2.0
SHUTDOWN_WAIT_S = 10.0
MAX_BATCH = 500  # events per batch handed to the engine
MAX_QUEUED = 20_000  # observed events waiting for the engine; past it the observer waits


def open_trigger_store(config: AppConfig, settings: TriggerSettings) -> TriggerStore:
    """The trigger store for this deployment: Redis when the profile store is Redis."""
    scheduler = settings.scheduler
    if config.store_backend == "redis":
        timeout_s = max(config.store.timeout_ms / 1000, MIN_REDIS_TIMEOUT_S)
        return RedisTriggerStore(
            config.store.redis_url, scheduler.shards, scheduler.max_timers_per_shard, timeout_s
        )
    return MemoryTriggerStore(
        max_visitors=config.store.memory_max_visitors,
        max_timers=scheduler.shards * scheduler.max_timers_per_shard,
        log_maxlen=settings.log_maxlen,
    )


def check_endpoints(settings: TriggerSettings, config: AppConfig, file: str) -> None:
    """Every active trigger must name a configured endpoint (when any is configured)."""
    endpoints = config.webhooks.endpoints
    for spec in settings.active:
        if spec.endpoint not in endpoints:
            known = ", ".join(sorted(endpoints)) or "none"
            raise TriggerConfigError(
                f"{file}: triggers.{spec.name}.endpoint: no [webhooks.endpoints.{spec.endpoint}]"
                f" is configured (configured: {known})"
            )


class TriggersPlugin:
    """Behavioral triggers; see the module docstring."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.settings = TriggerSettings()
        self.store: TriggerStore | None = None
        self.outbox: WebhookOutbox | None = None
        self.engine: TriggerEngine | None = None
        self.scheduler: Scheduler | None = None
        self.batcher: EventBatcher | None = None

    @hookimpl
    def journeygate_register_commands(
        self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]
    ) -> None:
        add_command(subparsers)

    @hookimpl
    async def journeygate_startup(self, config: AppConfig, store: ProfileStore, role: str) -> None:
        file = PluginSettings.read(config.plugin_config(PLUGIN_NAME).settings).file
        path = config.resolve_path(file)
        self.settings = await asyncio.to_thread(load_settings, path)
        self.outbox = webhook_outbox(store, config)
        if self.outbox is not None:
            check_endpoints(self.settings, config, path.name)
        # opened when inactive too: an erasure still drops what an earlier run stored
        self.store = open_trigger_store(config, self.settings)
        if self.outbox is None:
            log.warning(
                "triggers inactive: no [webhooks.endpoints] configured to send %d triggers to",
                len(self.settings.active),
            )
            return
        self.engine = TriggerEngine(
            self.settings,
            self.store,
            store,
            self.outbox,
            config.events.session_gap_s,
            self.clock,
        )
        if role in (ROLE_WORKER, ROLE_EMBEDDED):
            self.batcher = EventBatcher(self.engine, MAX_BATCH, MAX_QUEUED)
            self.batcher.start()
            self.scheduler = Scheduler(self.store, self.engine, self.settings.scheduler, self.clock)
            self.scheduler.start()
        log.info(
            "%d triggers active (%s); timer scheduler %s",
            len(self.settings.active),
            ", ".join(spec.name for spec in self.settings.active),
            "running" if self.scheduler else f"not run by a {role}",
        )

    @hookimpl
    async def journeygate_shutdown(self) -> None:
        if self.batcher is not None:
            await self.batcher.close(SHUTDOWN_WAIT_S)
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.store is not None:
            await self.store.close()

    @hookimpl
    def journeygate_observe_event(self, event: Event) -> Awaitable[Any] | None:
        if self.batcher is None or self.engine is None or event.kind not in self.engine.kinds:
            return None
        return self.batcher.add(event)

    @hookimpl
    async def journeygate_forget_visitor(self, visitor_ids: Sequence[str]) -> Mapping[str, int]:
        """Trigger state, timers and log entries; the gateway itself drops the visitors'
        undelivered webhooks."""
        if self.store is None:
            return {}
        return await self.store.forget(visitor_ids)


class EventBatcher:
    """Hands observed events to the engine in batches, so that a batch costs the round trips
    one event would (see :meth:`TriggerEngine.observe`).

    The observer only queues the event and returns; a task of the plugin's own takes what
    is queued, up to ``max_batch`` events at a time, in the order observed. The queue holds
    at most ``max_queued`` events: past that the observer waits for room, which slows the
    worker down to what the triggers keep up with (the event is queued either way, so a
    wait cut short by the observer's budget loses nothing). Like any observer's work, what
    is queued when a worker dies is lost; a worker that stops drains its queue first."""

    def __init__(self, engine: TriggerEngine, max_batch: int, max_queued: int) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.max_queued = max_queued
        self._queue: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def add(self, event: Event) -> Awaitable[Any] | None:
        self._queue.append(event)
        self._idle.clear()
        self._wake.set()
        if len(self._queue) < self.max_queued:
            return None
        self._room.clear()
        return self._room.wait()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = [
                    self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))
                ]
                try:
                    await self.engine.observe(batch)
                except Exception:
                    log.exception("triggers: a batch of %d events failed", len(batch))
                if len(self._queue) < self.max_queued:
                    self._room.set()
            self._idle.set()

    async def close(self, timeout_s: float) -> None:
        """Process what is queued (for at most ``timeout_s``), then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        if self._queue:
            log.warning("triggers: %d observed events not processed at shutdown", len(self._queue))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
