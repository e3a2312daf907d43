"""The behavioral triggers plugin: rules over observed events, durable timers, guardrails, and
signed webhooks to the email/CRM tool through the webhook outbox.

* ``journeygate_startup``: reads ``[plugin.triggers] file`` (``config/triggers.toml``) and
  opens the trigger store (Redis, or in process for the embedded gateway). With no
  ``[webhooks.endpoints]`` configured the triggers are inactive: the plugin starts, says so
  once, and does nothing. The timer scheduler runs in ``worker`` and ``embedded`` processes
  only; a gateway with Redis leaves events and timers to the workers.
* ``journeygate_observe_events``: the engine (:mod:`jg_triggers.engine`) applies the rules
  to the batch the worker applied, in a few round trips, before the worker acknowledges it
  (``worker`` and ``embedded`` processes are the only ones that observe events). When the
  trigger store is unavailable the plugin raises ``RetryBatch``: the batch is delivered
  again, and what the first pass did is recognised, so nothing is lost or done twice.
* ``journeygate_forget_visitor``: drops the visitors' trigger state, timers and log entries
  (the gateway drops their undelivered webhooks).
* ``journeygate_register_commands``: ``journeygate triggers list|log``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence

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
from journeygate import RetryBatch, hookimpl
from journeygate.config import AppConfig
from journeygate.events.schema import Event
from journeygate.hookspecs import ROLE_EMBEDDED, ROLE_WORKER
from journeygate.store import ProfileStore, StoreUnavailable
from journeygate.webhooks import WebhookOutbox, webhook_outbox

log = logging.getLogger(__name__)

# The trigger store's Redis calls: a fire is a handful of small round trips, off the request
# path (workers, erasures), so it waits longer than a decision's store reads.
MIN_REDIS_TIMEOUT_S = 2.0


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
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.store is not None:
            await self.store.close()

    @hookimpl
    async def journeygate_observe_events(self, events: Sequence[Event]) -> None:
        """The batch in a few round trips, before the worker acknowledges it; the batch
        again when the trigger store could not take it."""
        if self.engine is None:
            return
        watched = [event for event in events if event.kind in self.engine.kinds]
        if not watched:
            return
        try:
            await self.engine.observe(watched)
        except StoreUnavailable as exc:
            raise RetryBatch(f"the trigger store is unavailable: {exc}") from exc

    @hookimpl
    async def journeygate_forget_visitor(self, visitor_ids: Sequence[str]) -> Mapping[str, int]:
        """Trigger state, timers and log entries; the gateway itself drops the visitors'
        undelivered webhooks."""
        if self.store is None:
            return {}
        return await self.store.forget(visitor_ids)
