"""Prometheus metrics of one gateway process, in a registry of its own (no global state)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

WEBHOOK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Counters and histograms the gateway updates; ``render()`` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "journeygate_http_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "journeygate_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.plugin_seconds = Histogram(
            "journeygate_plugin_duration_seconds",
            "Time one plugin hook implementation took.",
            ["plugin", "hook"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
