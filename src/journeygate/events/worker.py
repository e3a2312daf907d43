"""``journeygate worker``: applies the events in the Redis streams to profiles and sessions,
and, when webhook endpoints are configured, delivers the webhooks queued in Redis
(``journeygate.webhooks.dispatcher``; every worker runs a dispatcher, the outbox gives each
delivery to one of them).

Every worker joins the consumer group of every stream shard and loops: reclaim entries
another worker read but did not acknowledge for ``claim_idle_ms`` (it died), read new
entries (``read_count`` per shard, one round trip), apply them (one Lua call per visitor,
one round trip), let plugins observe them (each event, then the batch), and only then
acknowledge them. Applying is idempotent per message id, so an entry applied by a worker that
died before acknowledging it is applied again by another worker without counting anything
twice, and its events are observed again by the batch observers (which are idempotent), not
by the per-event ones.

An entry that cannot be applied (unreadable, or its events rejected by the store; Redis
being unreachable is not the entry's fault and is simply retried, see :class:`Outage`) is
isolated: a failing batch is applied again entry by entry, the failing entry stays pending
and is delivered again after ``claim_idle_ms``, and after ``max_deliveries`` deliveries it is
moved to the dead-letter stream and acknowledged, so it neither blocks its shard nor comes
back forever.
A batch a batch observer asked for again (``RetryBatch``) is not acknowledged either: all its
entries take that same path, applied but pending, and the redelivery is observed again.
Every ``trim_interval_ms`` a worker trims what all consumer groups are done with (see
``journeygate.events.streams``). A worker that finds its consumer group gone (NOGROUP: Redis
restarted without its data, a stream or the group deleted) creates it again and goes on.
With ``events.worker_metrics_port`` set, the worker serves its metrics and ``/healthz``
(``journeygate.events.monitor``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import os
import signal
import socket
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import pluggy

from journeygate.catalog import Catalog, load_catalog
from journeygate.config import AppConfig
from journeygate.events.apply import Applier, BatchNotObserved
from journeygate.events.monitor import start_monitor
from journeygate.events.streams import Entry, EventStreams, GroupMissing
from journeygate.hookspecs import ROLE_WORKER
from journeygate.metrics import WorkerMetrics
from journeygate.store import EventsRejected, ProfileStore, StoreUnavailable, open_store
from journeygate.webhooks.dispatcher import Dispatcher
from journeygate.webhooks.model import webhook_queue

log = logging.getLogger(__name__)

# The worker's Redis calls carry whole batches; they get more time than a decision's reads.
MIN_WORKER_TIMEOUT_MS = 5000
# While Redis cannot be reached: the longest wait between two rounds, and how often the log
# says it still cannot.
MAX_RETRY_SLEEP_S = 1.0
OUTAGE_LOG_INTERVAL_S = 10.0


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Outage:
    """The worker loop's rounds that failed on Redis since the last one that went through.

    An outage must neither flood the log (a round every ``idle_sleep_ms``) nor spin: the first
    failure is logged, then a line at most every ``OUTAGE_LOG_INTERVAL_S`` with the rounds
    failed since, and one when Redis answers again; the wait before the next round
    (:attr:`sleep_s`) doubles from ``idle_sleep_ms`` up to ``MAX_RETRY_SLEEP_S``."""

    def __init__(self, idle_sleep_s: float) -> None:
        self.idle_sleep_s = idle_sleep_s
        self.sleep_s = idle_sleep_s
        self.started: float | None = None
        self.rounds = 0
        self.logged_at = 0.0
        self.logged_rounds = 0

    def failed(self, exc: StoreUnavailable) -> None:
        now = time.monotonic()
        self.rounds += 1
        if self.started is None:
            self.started = self.logged_at = now
            self.logged_rounds = self.rounds
            log.warning("redis unavailable, retrying: %s", exc)
            return
        self.sleep_s = min(self.sleep_s * 2, max(MAX_RETRY_SLEEP_S, self.idle_sleep_s))
        if now - self.logged_at >= OUTAGE_LOG_INTERVAL_S:
            log.warning(
                "redis still unavailable after %.1f s (%d more failed rounds): %s",
                now - self.started,
                self.rounds - self.logged_rounds,
                exc,
            )
            self.logged_at = now
            self.logged_rounds = self.rounds

    def recovered(self) -> None:
        if self.started is None:
            return
        log.warning(
            "redis reachable again after %.1f s (%d failed rounds)",
            time.monotonic() - self.started,
            self.rounds,
        )
        self.started = None
        self.rounds = 0
        self.sleep_s = self.idle_sleep_s


class Worker:
    """One consumer of the event streams; it counts what it does in ``metrics``."""

    def __init__(
        self,
        config: AppConfig,
        applier: Applier,
        streams: EventStreams,
        consumer: str,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.config = config
        self.applier = applier
        self.streams = streams
        self.consumer = consumer
        self.metrics = metrics or WorkerMetrics(streams.high_water)
        self.applied = 0
        self.dead_lettered = 0

    def _count_applied(self, count: int) -> None:
        self.applied += count
        self.metrics.events_applied.inc(count)

    async def process(self, entries: list[Entry]) -> int:
        """Apply the entries' events, then acknowledge the entries; entries that cannot be
        applied, or whose batch a batch observer needs again, are left pending or
        dead-lettered (:meth:`failed`). Raises ``StoreUnavailable`` (nothing acknowledged)
        when Redis cannot be reached."""
        readable = [entry for entry in entries if entry.error is None]
        failures = [(entry, entry.error) for entry in entries if entry.error is not None]
        before = self.applied
        started = time.perf_counter()
        try:
            self._count_applied(await self.applier.apply(_events(readable)))
            done = readable
        except StoreUnavailable:
            raise
        except BatchNotObserved as exc:
            # applied, not observed: applying them one by one would observe nothing better
            self._count_applied(exc.applied)
            failures += [(entry, f"not observed: {exc}") for entry in readable]
            done = []
        except Exception as exc:
            if isinstance(exc, EventsRejected):
                self._count_applied(exc.applied)  # the others of the batch, not applied again
            if len(readable) == 1:
                failures.append((readable[0], _describe(exc)))
                done = []
            else:
                log.warning(
                    "a batch of %d entries failed (%s); applying them one by one",
                    len(readable),
                    _describe(exc),
                )
                done = []
                for entry in readable:
                    try:
                        self._count_applied(await self.applier.apply(entry.events))
                        done.append(entry)
                    except StoreUnavailable:
                        raise
                    except BatchNotObserved as entry_exc:
                        self._count_applied(entry_exc.applied)
                        failures.append((entry, f"not observed: {entry_exc}"))
                    except Exception as entry_exc:
                        failures.append((entry, _describe(entry_exc)))
        await self.streams.ack(done)
        if failures:
            await self.failed(failures)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        return self.applied - before

    async def failed(self, failures: Sequence[tuple[Entry, str | None]]) -> None:
        """Dead-letter the failed entries delivered ``max_deliveries`` times; leave the others
        pending, to be delivered again after ``claim_idle_ms``."""
        limit = self.config.events.max_deliveries
        self.metrics.entries_failed.inc(len(failures))
        deliveries = await self.streams.deliveries([entry for entry, _ in failures])
        for (entry, error), count in zip(failures, deliveries, strict=True):
            where = f"{entry.stream} {entry.entry_id.decode()}"
            if count >= limit:
                await self.streams.dead_letter(entry, error or "", count, self.consumer)
                self.dead_lettered += 1
                self.metrics.entries_dead_lettered.inc()
                log.error("entry %s dead-lettered after %d deliveries: %s", where, count, error)
            else:
                log.warning("entry %s failed (delivery %d of %d): %s", where, count, limit, error)

    async def recreate_groups(self) -> None:
        """Create the consumer groups found missing again, saying so once for the shards this
        worker created them on (another worker may have been first on the others)."""
        created = await self.streams.ensure_groups()
        if created:
            log.warning(
                "consumer group %s re-created on %s (it was missing: Redis restarted without "
                "its data, or a stream or the group was deleted); the entries in these streams "
                "now are applied, events accepted before Redis lost its data are gone with it",
                self.config.events.consumer_group,
                ", ".join(created),
            )

    async def _start(self) -> list[Entry]:
        """The consumer groups, then the entries this consumer name read before a restart
        (they come first)."""
        await self.streams.ensure_groups()
        log.info(
            "worker %s consuming %d stream shards (group %s)",
            self.consumer,
            len(self.streams.names),
            self.config.events.consumer_group,
        )
        return await self.streams.read(self.consumer, pending=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``. Redis out of reach, at the start too, is waited for (see
        :class:`Outage`), never a reason to exit."""
        cfg = self.config.events
        backlog: list[Entry] = []
        started = False
        last_claim = last_trim = 0.0
        outage = Outage(cfg.idle_sleep_ms / 1000)
        group_missing = False
        # The next read, sent while a batch is applied: Redis serves it (and runs the batch's
        # scripts) while this process decodes, instead of the two taking turns.
        ahead: asyncio.Task[list[Entry]] | None = None
        try:
            while not stop.is_set():
                try:
                    # Whether Redis answered a call sent after the last failure (the read sent
                    # ahead may have been answered before Redis went away): only then is an
                    # outage over.
                    answered = outage.started is None
                    if not started:
                        backlog = await self._start()
                        started = answered = True
                    if group_missing:
                        await self.recreate_groups()
                        group_missing, answered = False, True
                    entries = backlog
                    backlog = []
                    if time.monotonic() - last_trim >= cfg.trim_interval_ms / 1000:
                        last_trim = time.monotonic()
                        await self.streams.trim_acknowledged()
                        answered = True
                    if time.monotonic() - last_claim >= cfg.claim_interval_ms / 1000:
                        last_claim = time.monotonic()
                        claimed = await self.streams.claim(self.consumer)
                        answered = True
                        if claimed:
                            log.info("reclaimed %d entries from stopped workers", len(claimed))
                            self.metrics.entries_reclaimed.inc(len(claimed))
                        entries += claimed
                    if ahead is not None:
                        read, ahead = ahead, None
                        entries += await read
                    else:
                        entries += await self.streams.read(self.consumer)
                        answered = True
                    if entries:
                        ahead = asyncio.create_task(self.streams.read(self.consumer))
                        await self.process(entries)
                        answered = True
                    if answered:
                        outage.recovered()
                    if entries:
                        continue
                except GroupMissing:
                    outage.recovered()  # Redis answers; the groups are created next round
                    group_missing = True
                except StoreUnavailable as exc:
                    outage.failed(exc)
                    self.metrics.redis_errors.inc()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), outage.sleep_s)
        finally:
            if ahead is not None and stop.is_set():
                await self._apply_read_ahead(ahead)
            elif ahead is not None:  # cancelled, or failed: the entries stay pending
                ahead.cancel()

    async def _apply_read_ahead(self, ahead: asyncio.Task[list[Entry]]) -> None:
        """On the way out, apply what the read sent ahead got: left pending, those entries
        would wait ``claim_idle_ms`` for another worker to reclaim them."""
        try:
            entries = await ahead
            if entries:
                await self.process(entries)
        except StoreUnavailable as exc:
            log.warning("entries read ahead are left pending for another worker: %s", exc)


def _events(entries: list[Entry]) -> list[dict[str, Any]]:
    return [event for entry in entries for event in entry.events]


def _describe(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}"


def _observers(pm: pluggy.PluginManager) -> set[str]:
    """The plugins that observe events (per event or per batch) or carry scores at merges."""
    hooks = (
        pm.hook.journeygate_observe_event,
        pm.hook.journeygate_observe_events,
        pm.hook.journeygate_merge_scores,
    )
    return {impl.plugin_name for hook in hooks for impl in hook.get_hookimpls()}


async def _start_plugins(
    pm: pluggy.PluginManager, config: AppConfig, store: ProfileStore, executor: Executor
) -> None:
    """Start the plugins that take part in applying events (``_observers``), as the gateway
    does, so an observer has what its startup set up (``executor`` stays open until the
    worker stops, as in the gateway: observers keep it for their CPU work). Other plugins
    (recommenders with models to load) are not started."""
    observers = _observers(pm)
    if not observers:
        return
    path = config.resolve_path(config.catalog.path)
    catalog = await asyncio.to_thread(load_catalog, path) if path.exists() else Catalog(())
    kwargs = {
        "config": config,
        "catalog": catalog,
        "executor": executor,
        "store": store,
        "role": ROLE_WORKER,
    }
    for impl in reversed(pm.hook.journeygate_startup.get_hookimpls()):
        if impl.plugin_name not in observers:
            continue
        try:
            result = impl.function(*(kwargs[name] for name in impl.argnames))
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("plugin %s failed to start; it is disabled", impl.plugin_name)
            pm.unregister(name=impl.plugin_name)


async def _stop_plugins(pm: pluggy.PluginManager) -> None:
    observers = _observers(pm)
    for impl in reversed(pm.hook.journeygate_shutdown.get_hookimpls()):
        if impl.plugin_name not in observers:
            continue
        try:
            result = impl.function()
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("plugin %s failed to shut down", impl.plugin_name)


async def serve(
    config: AppConfig,
    pm: pluggy.PluginManager | None = None,
    consumer: str | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run one worker until ``stop`` is set (without one: until SIGTERM or SIGINT)."""
    from journeygate.registry import build_plugin_manager

    pm = pm or build_plugin_manager(config)
    if stop is None:  # a process of its own: stop on SIGTERM/SIGINT
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
    timeout_ms = max(
        config.store.timeout_ms, config.events.ingest_timeout_ms, MIN_WORKER_TIMEOUT_MS
    )
    consumer = consumer or consumer_name()
    streams = EventStreams(config.store.redis_url, config.events, timeout_ms / 1000)
    metrics = WorkerMetrics(streams.high_water)
    try:  # first, so that a port already taken stops the worker before anything started
        monitor = await start_monitor(config.events, metrics, streams, consumer)
    except OSError:
        await streams.close()
        raise
    store = open_store(
        dataclasses.replace(config.store, timeout_ms=timeout_ms), "redis", config.events
    )
    executor = ThreadPoolExecutor(max_workers=config.plugins.executor_workers)
    await _start_plugins(pm, config, store, executor)
    worker = Worker(config, Applier(store, config, pm), streams, consumer, metrics)
    webhooks = webhook_queue(store, config)
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(worker.run(stop))
            if webhooks is not None:  # endpoints configured: deliver webhooks beside the events
                dispatcher = Dispatcher(webhooks, config.webhooks, worker.consumer, metrics)
                tasks.create_task(dispatcher.run(stop))
    finally:
        log.info(
            "worker %s stopping after %d events applied, %d entries dead-lettered",
            worker.consumer,
            worker.applied,
            worker.dead_lettered,
        )
        await _stop_plugins(pm)
        executor.shutdown(wait=False, cancel_futures=True)
        if monitor is not None:
            await monitor.cleanup()
        await streams.close()
        await store.close()
    return 0


def run_worker(
    config: AppConfig, pm: pluggy.PluginManager | None = None, consumer: str | None = None
) -> int:
    """The ``journeygate worker`` command."""
    if config.store_backend != "redis":
        raise ValueError(
            "the worker applies events from Redis streams: set REDIS_URL (or store.redis_url)"
        )
    return asyncio.run(serve(config, pm, consumer))
