"""The worker's HTTP endpoints for operators: ``GET /metrics`` (Prometheus) and ``GET /healthz``.

``journeygate worker --metrics-port PORT`` (or ``[events] worker_metrics_port``; 0, the
default, serves nothing) starts a small aiohttp server inside the worker process, on
``worker_metrics_host`` (127.0.0.1 unless set), opened before the worker starts consuming and
closed after it stopped. Every worker on one host needs a port of its own; a port already
taken stops the worker at startup with a message saying so.

The backlog gauges come from Redis (``XINFO GROUPS``, one pipelined round trip for every
shard), read when ``/metrics`` is scraped and at most once per second, so neither the
batches nor several scrapers add Redis load. Every worker reports the same group backlog:
aggregate it with ``max``, not ``sum``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from aiohttp import web

from journeygate.config import EventsConfig
from journeygate.events.streams import EventStreams
from journeygate.metrics import CONTENT_TYPE, WorkerMetrics
from journeygate.store import StoreUnavailable, keys

log = logging.getLogger(__name__)

BACKLOG_INTERVAL_S = 1.0
# a scrape in flight when the worker stops gets this long to finish
SHUTDOWN_TIMEOUT_S = 1.0


class BacklogSampler:
    """Sets the worker's backlog gauges from Redis, at most once per ``interval_s``."""

    def __init__(
        self, streams: EventStreams, metrics: WorkerMetrics, interval_s: float = BACKLOG_INTERVAL_S
    ) -> None:
        self.streams = streams
        self.metrics = metrics
        self.interval_s = interval_s
        self._read_at = -interval_s
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Read the backlog again unless it was read less than ``interval_s`` ago (however
        many scrapes ask at once). When Redis cannot be read the gauges are removed rather
        than left at values that are no longer true."""
        async with self._lock:
            if time.monotonic() - self._read_at < self.interval_s:
                return
            metrics = self.metrics
            try:
                shards, dead_letters = await self.streams.group_backlog()
            except StoreUnavailable as exc:
                log.warning("stream backlog not read for /metrics: %s", exc)
                for gauge in (
                    metrics.stream_backlog,
                    metrics.stream_pending,
                    metrics.stream_lag,
                    metrics.dead_letters,
                ):
                    gauge.clear()
                return
            finally:
                self._read_at = time.monotonic()
            for shard in shards:
                metrics.stream_backlog.labels(shard.stream).set(shard.backlog)
                metrics.stream_pending.labels(shard.stream).set(shard.pending)
                metrics.stream_lag.labels(shard.stream).set(shard.lag)
            metrics.dead_letters.labels(keys.DEAD_LETTER_STREAM).set(dead_letters)


METRICS = web.AppKey("metrics", WorkerMetrics)
SAMPLER = web.AppKey("sampler", BacklogSampler)
CONSUMER = web.AppKey("consumer", str)


async def _healthz(request: web.Request) -> web.Response:
    """The worker process is alive (says nothing about Redis: see the metrics)."""
    return web.json_response({"status": "ok", "consumer": request.app[CONSUMER]})


async def _metrics(request: web.Request) -> web.Response:
    await request.app[SAMPLER].refresh()
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def monitor_app(metrics: WorkerMetrics, sampler: BacklogSampler, consumer: str) -> web.Application:
    """The worker's operations application (no network until it is started)."""
    app = web.Application()
    app[METRICS] = metrics
    app[SAMPLER] = sampler
    app[CONSUMER] = consumer
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


async def start_monitor(
    config: EventsConfig, metrics: WorkerMetrics, streams: EventStreams, consumer: str
) -> web.AppRunner | None:
    """Serve the worker's ``/metrics`` and ``/healthz`` on ``worker_metrics_host:port``
    (None when the port is 0); ``cleanup()`` the runner to stop. Raises ``OSError`` with a
    message naming the port when it cannot be bound (another worker on the host has it)."""
    if not config.worker_metrics_port:
        return None
    host, port = config.worker_metrics_host, config.worker_metrics_port
    app = monitor_app(metrics, BacklogSampler(streams, metrics), consumer)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OSError(
            f"worker metrics: cannot listen on {host}:{port}: {reason}; every worker on a "
            "host needs its own --metrics-port (events.worker_metrics_port)"
        ) from exc
    log.info("worker %s serving /metrics and /healthz on http://%s:%d/", consumer, host, port)
    return runner
