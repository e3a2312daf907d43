"""Typed, frozen configuration loaded from TOML with environment overrides.

Every key is checked at startup: an unknown key or a value of the wrong type fails with
a :class:`ConfigError` that names the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config" / "journeygate.toml"
ENV_PREFIX = "JOURNEYGATE_"
ENDPOINT_NAME = re.compile(r"[a-z][a-z0-9_]*")


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the offending key."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 64 * 1024
    cors_origins: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = ()
    demo: bool = True


@dataclass(frozen=True)
class DecideConfig:
    max_slots: int = 10
    max_limit: int = 48
    default_limit: int = 8
    deadline_ms: int = 250
    default_strategy: str = "popular"
    record_page_views: bool = True
    cookie_name: str = "jg_vid"


@dataclass(frozen=True)
class StoreConfig:
    backend: str = "auto"
    redis_url: str = ""
    timeout_ms: int = 50
    profile_ttl_s: int = 90 * 24 * 3600
    session_ttl_s: int = 30 * 60
    history_max: int = 50
    session_views_max: int = 20
    memory_max_visitors: int = 100_000


@dataclass(frozen=True)
class EventsConfig:
    """``[events]``: ingestion limits, the Redis Streams behind it, and what the worker keeps."""

    write_keys: tuple[str, ...] = ()
    max_batch: int = 500
    max_body_bytes: int = 512 * 1024
    max_event_bytes: int = 32 * 1024
    max_future_skew_s: int = 300
    ingest_timeout_ms: int = 1000
    stream_shards: int = 8
    stream_maxlen: int = 200_000
    consumer_group: str = "jg-workers"
    read_count: int = 50
    idle_sleep_ms: int = 20
    claim_idle_ms: int = 60_000
    claim_interval_ms: int = 5_000
    session_gap_s: int = 30 * 60
    session_retention_s: int = 30 * 24 * 3600
    sessions_max: int = 20
    session_items_max: int = 50
    categories_max: int = 50
    purchased_max: int = 100
    orders_max: int = 200
    dedupe_ttl_s: int = 24 * 3600
    dedupe_max: int = 5000
    anonymous_log_max: int = 200
    erasure_ttl_s: int = 7 * 24 * 3600
    # backpressure and dead letters (see journeygate.events.streams)
    backlog_high_water_pct: int = 50
    backlog_refresh_ms: int = 250
    backpressure_retry_after_s: int = 2
    trim_interval_ms: int = 1000
    max_deliveries: int = 3
    dead_letter_maxlen: int = 10_000
    # the worker's /metrics and /healthz (journeygate.events.monitor); port 0 = not served
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = 0
    # journey stage transitions (recorded by the intent plugin)
    stage_history_max: int = 20
    transitions_maxlen: int = 100_000


@dataclass(frozen=True)
class CatalogConfig:
    path: str = "var/catalog.csv"
    sample_interactions: str = "data/sample/online_retail_sample.csv.gz"
    currency: str = "GBP"
    product_url: str = "/products/{product_id}"


@dataclass(frozen=True)
class TemplatesConfig:
    dir: str = "config/templates"
    override_dir: str = ""
    cache_size: int = 4096


@dataclass(frozen=True)
class OfferConfig:
    id: str = "free-delivery"
    title: str = "Free UK delivery on orders over £50"
    body: str = ""
    cta_label: str = "Shop now"
    cta_url: str = "/"


@dataclass(frozen=True)
class FallbackConfig:
    default_offer: OfferConfig = field(default_factory=OfferConfig)


@dataclass(frozen=True)
class ExperimentsConfig:
    """``[experiments]``: where experiments are defined, and what recording them keeps."""

    file: str = "config/experiments.toml"
    visitor_ttl_s: int = 30 * 24 * 3600
    results_ttl_s: int = 180 * 24 * 3600
    visitor_decisions_max: int = 50
    decision_log_max: int = 100_000
    attribution_window_s: int = 7 * 24 * 3600
    clock_skew_s: int = 300
    flush_interval_ms: int = 50
    pending_max: int = 50_000
    bandit_refresh_s: int = 5
    bandit_draws: int = 20_000
    bandit_min_propensity: float = 0.01


@dataclass(frozen=True)
class WebhookEndpointConfig:
    """``[webhooks.endpoints.NAME]``: one receiver (an email or CRM tool). ``url`` and
    ``secret`` are required; ``timeout_ms`` overrides ``[webhooks] timeout_ms``."""

    url: str = ""
    secret: str = ""
    timeout_ms: int | None = None


@dataclass(frozen=True)
class WebhooksConfig:
    """``[webhooks]``: signed webhook delivery (see ``journeygate.webhooks``). No endpoint
    configured: nothing is queued and no dispatcher runs."""

    timeout_ms: int = 5000
    max_attempts: int = 12
    backoff_base_ms: int = 2000
    backoff_max_ms: int = 3600 * 1000
    concurrency: int = 16
    lease_ms: int = 60_000
    claim_idle_ms: int = 60_000
    poll_interval_ms: int = 200
    dedupe_ttl_s: int = 24 * 3600
    outbox_maxlen: int = 100_000
    log_maxlen: int = 100_000
    dead_letter_maxlen: int = 10_000
    endpoints: Mapping[str, WebhookEndpointConfig] = field(
        default_factory=lambda: types.MappingProxyType({})
    )

    def endpoint_timeout_ms(self, name: str) -> int:
        """The request timeout of one endpoint (its own, else the section's)."""
        own = self.endpoints[name].timeout_ms
        return own if own is not None else self.timeout_ms


@dataclass(frozen=True)
class PluginConfig:
    """Per-plugin section ``[plugin.NAME]``: reserved keys plus the plugin's own settings."""

    enabled: bool = True
    budget_ms: int | None = None
    batch_budget_ms: int | None = None
    settings: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))


@dataclass(frozen=True)
class PluginsConfig:
    default_budget_ms: int = 50
    # a batch observer's call (journeygate_observe_events); unset: half of claim_idle_ms
    default_batch_budget_ms: int | None = None
    load_entrypoints: bool = True
    order: tuple[str, ...] = ()
    executor_workers: int = 2


@dataclass(frozen=True)
class AppConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    decide: DecideConfig = field(default_factory=DecideConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    templates: TemplatesConfig = field(default_factory=TemplatesConfig)
    fallback: FallbackConfig = field(default_factory=FallbackConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    experiments: ExperimentsConfig = field(default_factory=ExperimentsConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    plugin: Mapping[str, PluginConfig] = field(default_factory=lambda: types.MappingProxyType({}))

    def plugin_config(self, name: str) -> PluginConfig:
        """The ``[plugin.NAME]`` section, or defaults when the deployment has none."""
        return self.plugin.get(name, PluginConfig())

    def budget_s(self, plugin_name: str) -> float:
        """Time budget of one plugin call, in seconds."""
        budget_ms = self.plugin_config(plugin_name).budget_ms
        return (budget_ms if budget_ms is not None else self.plugins.default_budget_ms) / 1000

    def batch_budget_s(self, plugin_name: str) -> float:
        """Time budget of one batch observer call (``journeygate_observe_events``), in
        seconds."""
        budget_ms = self.plugin_config(plugin_name).batch_budget_ms
        if budget_ms is None:
            budget_ms = self.plugins.default_batch_budget_ms
        if budget_ms is None:  # a batch must be done with before another worker claims it
            return self.events.claim_idle_ms / 2000
        return budget_ms / 1000

    def resolve_path(self, path: str) -> Path:
        """Relative paths in the config are relative to the project root."""
        candidate = Path(path)
        return candidate if candidate.is_absolute() else PROJECT_ROOT / candidate

    @property
    def store_backend(self) -> str:
        """``redis`` or ``memory``, with ``auto`` resolved by whether a Redis URL is set."""
        if self.store.backend == "auto":
            return "redis" if self.store.redis_url else "memory"
        return self.store.backend


T = TypeVar("T")


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a dataclass field type, converting TOML shapes to frozen ones."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin is types.UnionType or origin is typing.Union:
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, options[0], key)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        return _build(annotation, value, key)  # type: ignore[arg-type]
    if origin is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        item_type = typing.get_args(annotation)[0]
        return tuple(_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is not None and issubclass(origin, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        value_type = typing.get_args(annotation)[1]
        return types.MappingProxyType(
            {k: _convert(v, value_type, f"{key}.{k}") for k, v in value.items()}
        )
    if annotation is bool:
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "0", "false", "no"}:
            return value.lower() in {"1", "true", "yes"}
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {annotation!r}")  # pragma: no cover


def _build(cls: type[T], data: Mapping[str, Any], prefix: str) -> T:
    if cls is PluginConfig:
        reserved = {f.name for f in dataclasses.fields(PluginConfig)} - {"settings"}
        own = {k: v for k, v in data.items() if k not in reserved}
        data = {k: v for k, v in data.items() if k in reserved} | {"settings": own}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown config key")
    kwargs = {
        name: _convert(value, hints[name], f"{prefix}.{name}" if prefix else name)
        for name, value in data.items()
    }
    for name, value in kwargs.items():
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"{prefix}.{name}: must not be negative, got {value}")
    return cls(**kwargs)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``JOURNEYGATE_SECTION__KEY=value`` and ``REDIS_URL`` as a nested mapping."""
    overrides: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    if environ.get("REDIS_URL"):
        overrides.setdefault("store", {})["redis_url"] = environ["REDIS_URL"]
    return overrides


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _validate(config: AppConfig) -> None:
    if config.store.backend not in {"auto", "memory", "redis"}:
        raise ConfigError(
            f"store.backend: expected auto, memory or redis, got {config.store.backend!r}"
        )
    if config.store_backend == "redis" and not config.store.redis_url:
        raise ConfigError("store.redis_url: backend is redis but no URL is set (or REDIS_URL)")
    if config.decide.default_limit > config.decide.max_limit:
        raise ConfigError("decide.default_limit: larger than decide.max_limit")
    if not 1 <= config.server.port <= 65535:
        raise ConfigError(f"server.port: out of range: {config.server.port}")
    if config.server.workers < 1:
        raise ConfigError("server.workers: must be at least 1")
    for name in ("max_batch", "max_body_bytes", "max_event_bytes", "stream_shards", "read_count"):
        if getattr(config.events, name) < 1:
            raise ConfigError(f"events.{name}: must be at least 1")
    if config.events.session_gap_s < 1:
        raise ConfigError("events.session_gap_s: must be at least 1")
    for name in ("visitor_decisions_max", "flush_interval_ms", "bandit_refresh_s"):
        if getattr(config.experiments, name) < 1:
            raise ConfigError(f"experiments.{name}: must be at least 1")
    if config.experiments.bandit_draws < 100:
        raise ConfigError("experiments.bandit_draws: must be at least 100")
    if not 0 <= config.experiments.bandit_min_propensity < 0.5:
        raise ConfigError("experiments.bandit_min_propensity: must be in [0, 0.5)")
    if not 1 <= config.events.backlog_high_water_pct <= 90:
        # above 90% the margin before MAXLEN trimming is too thin for requests in flight
        raise ConfigError("events.backlog_high_water_pct: must be between 1 and 90")
    for name in ("max_deliveries", "dead_letter_maxlen", "stage_history_max", "transitions_maxlen"):
        if getattr(config.events, name) < 1:
            raise ConfigError(f"events.{name}: must be at least 1")
    metrics_port = config.events.worker_metrics_port
    if not 0 <= metrics_port <= 65535:
        raise ConfigError(f"events.worker_metrics_port: out of range (0 = off): {metrics_port}")
    if metrics_port and not config.events.worker_metrics_host:
        raise ConfigError("events.worker_metrics_host: empty (the address /metrics listens on)")
    _validate_batch_budgets(config)
    _validate_webhooks(config.webhooks)


def _validate_batch_budgets(config: AppConfig) -> None:
    """A batch observer must finish (or be cut off) before another worker may claim the batch
    it is observing as abandoned."""
    budgets = [("plugins.default_batch_budget_ms", config.plugins.default_batch_budget_ms)]
    budgets += [
        (f"plugin.{name}.batch_budget_ms", section.batch_budget_ms)
        for name, section in config.plugin.items()
    ]
    for key, budget_ms in budgets:
        if budget_ms is None:
            continue
        if budget_ms < 1:
            raise ConfigError(f"{key}: must be at least 1")
        if budget_ms >= config.events.claim_idle_ms:
            raise ConfigError(
                f"{key}: must be shorter than events.claim_idle_ms "
                f"({config.events.claim_idle_ms} ms), or another worker claims the batch"
            )


def _validate_webhooks(hooks: WebhooksConfig) -> None:
    for name in (
        "timeout_ms",
        "max_attempts",
        "backoff_base_ms",
        "concurrency",
        "poll_interval_ms",
        "dedupe_ttl_s",
        "outbox_maxlen",
        "log_maxlen",
        "dead_letter_maxlen",
    ):
        if getattr(hooks, name) < 1:
            raise ConfigError(f"webhooks.{name}: must be at least 1")
    if hooks.backoff_max_ms < hooks.backoff_base_ms:
        raise ConfigError("webhooks.backoff_max_ms: smaller than webhooks.backoff_base_ms")
    longest = hooks.timeout_ms
    for name, endpoint in hooks.endpoints.items():
        where = f"webhooks.endpoints.{name}"
        if not ENDPOINT_NAME.fullmatch(name):
            # environment overrides are lower-cased: JOURNEYGATE_WEBHOOKS__ENDPOINTS__CRM__SECRET
            # sets webhooks.endpoints.crm.secret, so only lower-case names can be overridden
            raise ConfigError(f"{where}: endpoint names are lower-case letters, digits and _")
        scheme, _, rest = endpoint.url.partition("://")
        if scheme.lower() not in {"http", "https"} or not rest.strip("/"):
            raise ConfigError(
                f"{where}.url: expected an http:// or https:// URL, got {endpoint.url!r}"
            )
        if not endpoint.secret:
            raise ConfigError(f"{where}.secret: required (the HMAC key receivers verify with)")
        if endpoint.timeout_ms is not None:
            if endpoint.timeout_ms < 1:
                raise ConfigError(f"{where}.timeout_ms: must be at least 1")
            longest = max(longest, endpoint.timeout_ms)
    # a delivery in flight must never look abandoned, or a second dispatcher would send it too
    for name in ("lease_ms", "claim_idle_ms"):
        if getattr(hooks, name) <= longest:
            raise ConfigError(
                f"webhooks.{name}: must be longer than the longest endpoint timeout ({longest} ms)"
            )


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AppConfig:
    """Load the TOML file (``JOURNEYGATE_CONFIG`` or the bundled default), apply environment
    overrides, then explicit ``overrides`` (used by tests and the CLI), and validate."""
    environ = os.environ if environ is None else environ
    config_path = Path(path or environ.get("JOURNEYGATE_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        data: dict[str, Any] = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {config_path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: invalid TOML: {exc}") from None
    data = _merge(data, _env_overrides(environ))
    data = _merge(data, overrides or {})
    config = _build(AppConfig, data, "")
    _validate(config)
    return config
