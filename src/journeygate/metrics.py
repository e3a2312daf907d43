"""Prometheus metrics of one process, in a registry of its own (no global state): the
gateway's (:class:`Metrics`) or the event worker's (:class:`WorkerMetrics`). Both run webhook
dispatchers, so both count webhook deliveries (:class:`WebhookMetrics`)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

WEBHOOK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# a worker batch: up to read_count entries per shard, one Lua call per visitor, observers
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class WebhookMetrics:
    """A process's registry with what its webhook dispatcher counts; ``render()`` is the
    ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.webhook_deliveries = Counter(
            "journeygate_webhook_deliveries",
            "Webhook delivery attempts by endpoint and recorded outcome "
            "(delivered, retry, dead_letter).",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.webhook_seconds = Histogram(
            "journeygate_webhook_delivery_duration_seconds",
            "Time from sending a webhook request to its answer (or its failure).",
            ["endpoint"],
            buckets=WEBHOOK_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Metrics(WebhookMetrics):
    """Counters and histograms the gateway updates."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = Counter(
            "journeygate_http_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = LoopHistogram(
            "journeygate_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ("route", "method"),
            LATENCY_BUCKETS,
            self.registry,
        )
        self.plugin_seconds = LoopHistogram(
            "journeygate_plugin_duration_seconds",
            "Time one plugin hook implementation took.",
            ("plugin", "hook"),
            LATENCY_BUCKETS,
            self.registry,
        )
        self.plugin_failures = Counter(
            "journeygate_plugin_failures",
            "Plugin calls skipped because they exceeded their budget or raised.",
            ["plugin", "hook", "reason"],
            registry=self.registry,
        )
        self.fallback_blocks = Counter(
            "journeygate_fallback_blocks",
            "Blocks answered by the built-in fallback although another plugin was asked first.",
            ["kind"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "journeygate_store_errors",
            "Profile store operations that failed or timed out.",
            ["operation"],
            registry=self.registry,
        )
        self.plugins_started = Gauge(
            "journeygate_plugins_started",
            "Plugins whose startup hook succeeded.",
            registry=self.registry,
        )

        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request; label lookups are cached (they are per request)."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.request_seconds.labels(route, method),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def watch_backlog(
        self, streams: Sequence[str], lengths: Callable[[], Sequence[int]], high_water: int
    ) -> None:
        """Report the event streams' lengths as ingestion last read them (``lengths()``, read
        at each scrape; no Redis call of its own) and the high-water mark it refuses at."""
        self.registry.register(_StreamLengths(streams, lengths, high_water))


class HistogramSeries:
    """One label set's buckets of a :class:`LoopHistogram`."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


class LoopHistogram(Collector):
    """A labelled Prometheus histogram for values observed on the event loop's thread.

    ``prometheus_client.Histogram`` takes a lock per bucket and per sum and walks the buckets
    in Python: about a microsecond per observation, and a decision observes one per plugin
    call. Here an observation is one bisection and two additions, with no lock: every caller
    runs on the loop (the exposition too), so nothing races. The exposition is the same."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        buckets: tuple[float, ...],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.bounds = tuple(sorted(buckets))
        self._series: dict[tuple[str, ...], HistogramSeries] = {}
        registry.register(self)

    def labels(self, *values: str) -> HistogramSeries:
        series = self._series.get(values)
        if series is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
            series = self._series[values] = HistogramSeries(self.bounds)
        return series

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        upper = [*map(floatToGoString, self.bounds), "+Inf"]
        for values, series in list(self._series.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(upper, series.counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric(list(values), buckets, sum_value=series.total)
        yield family


class _StreamLengths(Collector):
    """The gateway's view of the event stream shards (see :meth:`Metrics.watch_backlog`)."""

    def __init__(
        self, streams: Sequence[str], lengths: Callable[[], Sequence[int]], high_water: int
    ) -> None:
        self.streams = list(streams)
        self.lengths = lengths
        self.high_water = high_water

    def collect(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "journeygate_events_backlog",
            "Entries in each event stream shard as this gateway process last read them (with "
            "each append to the shard, and while refusing ingestion); stale while it appends "
            "nothing there, so alert on journeygate_worker_stream_backlog instead.",
            labels=["stream"],
        )
        for stream, length in zip(self.streams, self.lengths(), strict=True):
            backlog.add_metric([stream], length)
        yield backlog
        yield GaugeMetricFamily(
            "journeygate_events_backlog_high_water",
            "The backlog per shard at which ingestion answers 503 backpressure.",
            value=self.high_water,
        )


class WorkerMetrics(WebhookMetrics):
    """What ``journeygate worker`` counts: event consumption, the consumer group's backlog
    (read from Redis at most once per second, when scraped), and webhook deliveries."""

    def __init__(self, high_water: int) -> None:
        super().__init__()
        self.events_applied = Counter(
            "journeygate_worker_events_applied",
            "Events applied to profiles and sessions (an event already applied, on a "
            "redelivery, is not counted again).",
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "journeygate_worker_batch_duration_seconds",
            "Time to apply, let plugins observe and acknowledge one batch of stream entries "
            "(what one read of every shard returned); its count is the batches.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.entries_reclaimed = Counter(
            "journeygate_worker_entries_reclaimed",
            "Stream entries taken over after events.claim_idle_ms unacknowledged: those of "
            "stopped or stuck workers, and failed entries delivered again.",
            registry=self.registry,
        )
        self.entries_failed = Counter(
            "journeygate_worker_entries_failed",
            "Deliveries of stream entries that could not be applied (unreadable, or rejected "
            "by the store); the entry is delivered again until events.max_deliveries.",
            registry=self.registry,
        )
        self.entries_dead_lettered = Counter(
            "journeygate_worker_entries_dead_lettered",
            "Stream entries this worker moved to the dead-letter stream after "
            "events.max_deliveries failed deliveries.",
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "journeygate_worker_redis_errors",
            "Rounds of the worker loop that failed because Redis could not be reached "
            "(retried after events.idle_sleep_ms, doubling up to 1 s while it fails).",
            registry=self.registry,
        )
        self.stream_backlog = Gauge(
            "journeygate_worker_stream_backlog",
            "Entries of each stream shard the consumer group has not acknowledged yet "
            "(pending + lag); absent while Redis cannot be read.",
            ["stream"],
            registry=self.registry,
        )
        self.stream_pending = Gauge(
            "journeygate_worker_stream_pending",
            "Entries of each stream shard delivered to a worker and not acknowledged yet.",
            ["stream"],
            registry=self.registry,
        )
        self.stream_lag = Gauge(
            "journeygate_worker_stream_lag",
            "Entries of each stream shard not delivered to any worker of the group yet.",
            ["stream"],
            registry=self.registry,
        )
        self.dead_letters = Gauge(
            "journeygate_worker_dead_letters",
            "Entries in the dead-letter stream (every worker's, until requeued or trimmed); "
            "absent while Redis cannot be read.",
            ["stream"],
            registry=self.registry,
        )
        high_water_gauge = Gauge(
            "journeygate_worker_stream_backlog_high_water",
            "The backlog per shard at which the gateway refuses ingestion (503 backpressure).",
            registry=self.registry,
        )
        high_water_gauge.set(high_water)
