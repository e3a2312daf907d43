"""Helpers of the trigger tests: trigger files, a recording receiver (a real aiohttp server),
deployments (a gateway and `journeygate worker`s run in the test's event loop, which
deliver the webhooks), and waiting. The fixtures are in ``triggerfixtures``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from jg_triggers.plugin import TriggersPlugin
from jg_triggers.store import LogRecord
from journeygate import appkeys
from journeygate.config import AppConfig
from journeygate.events.worker import serve
from journeygate.registry import build_plugin_manager

WRITE_KEY = "wk-triggers"
UNREACHABLE = "http://127.0.0.1:9/crm"  # nothing listens: deliveries fail and wait to retry
ADMIN = {"X-API-Key": "test-admin-key"}
SECRET = "trigger-test-secret"
TRIGGERS_DB = 9
# Timings small enough for tests: timers are polled every 20 ms, a claim is held 1 s.
FAST = {"scheduler": {"poll_interval_ms": 20, "lease_s": 1.0, "shards": 4, "batch": 50}}


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(_value(v) for v in value) + "]"


def toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """Enough TOML for trigger files: scalars, lists of scalars, nested tables."""
    lines = [
        f"{key} = {_value(value)}" for key, value in data.items() if not isinstance(value, Mapping)
    ]
    for key, value in data.items():
        if isinstance(value, Mapping):
            name = f"{prefix}{key}"
            lines += ["", f"[{name}]", toml(value, f"{name}.")]
    return "\n".join(lines)


def write_triggers(path: Path, triggers: Mapping[str, Mapping[str, Any]], **top: Any) -> Path:
    """A trigger file with ``triggers`` (each sent to endpoint ``crm`` unless it says
    otherwise) and fast scheduler timings."""
    data: dict[str, Any] = {**FAST, **top}
    data["triggers"] = {name: {"endpoint": "crm", **table} for name, table in triggers.items()}
    path.write_text(toml(data) + "\n", encoding="utf-8")
    return path


def overrides(
    backend: str, url: str, receiver_url: str | None, trigger_file: Path, **extra: Any
) -> dict[str, Any]:
    """Config sections for a gateway and workers with triggers, webhooks and fast timings."""
    store = {"redis_url": url, "timeout_ms": 1000} if backend == "redis" else {"backend": "memory"}
    endpoints = {"crm": {"url": receiver_url, "secret": SECRET}} if receiver_url else {}
    sections: dict[str, Any] = {
        "store": store,
        "events": {
            "write_keys": [WRITE_KEY],
            "stream_shards": 2,
            "idle_sleep_ms": 10,
            "claim_interval_ms": 200,
        },
        "webhooks": {
            "timeout_ms": 500,
            "backoff_base_ms": 20,
            "backoff_max_ms": 80,
            "lease_ms": 1000,
            "claim_idle_ms": 1000,
            "poll_interval_ms": 10,
            "endpoints": endpoints,
        },
        "plugin": {"triggers": {"file": str(trigger_file)}},
    }
    for name, section in extra.items():
        sections[name] = {**sections.get(name, {}), **section}
    return sections


def ev(name: str, visitor: str, at: float | None = None, **properties: Any) -> dict[str, Any]:
    return {
        "event": name,
        "visitor_id": visitor,
        "timestamp": time.time() if at is None else at,
        "properties": properties,
    }


def consent(visitor: str, granted: bool = True) -> dict[str, Any]:
    return ev("consent", visitor, consents={"marketing_email": granted})


async def send(client: TestClient, *events: Mapping[str, Any]) -> None:
    response = await client.post(
        "/v1/events", json={"events": list(events)}, headers={"X-API-Key": WRITE_KEY}
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["rejected"] == [], body["rejected"]


@dataclass
class Stack:
    """A deployment in the test's loop: the gateway (``client``) and ``journeygate worker``s,
    each with its own triggers plugin (and scheduler) and webhook dispatcher (with the
    in-process store, the gateway runs both)."""

    client: TestClient
    config: AppConfig
    tasks: dict[str, tuple[asyncio.Event, asyncio.Task[int]]] = field(default_factory=dict)
    plugins: dict[str, TriggersPlugin] = field(default_factory=dict)
    # more plugins for each worker (a fresh instance per worker)
    worker_plugins: Callable[[], list[tuple[str, object]]] = list

    @property
    def redis(self) -> bool:
        return self.config.store_backend == "redis"

    def start_worker(self, name: str) -> TriggersPlugin:
        """Start a worker named ``name`` (applies events, runs a scheduler)."""
        plugin = TriggersPlugin()
        pm = build_plugin_manager(
            self.config,
            load_entrypoints=False,
            extra_plugins=(("triggers", plugin), *self.worker_plugins()),
        )
        stop = asyncio.Event()
        self.tasks[name] = (stop, asyncio.create_task(serve(self.config, pm, name, stop)))
        self.plugins[name] = plugin
        return plugin

    async def stop_worker(self, name: str) -> None:
        stop, task = self.tasks.pop(name)
        stop.set()
        assert await task == 0

    def gateway_plugin(self) -> TriggersPlugin:
        assert self.client.app is not None
        plugin = self.client.app[appkeys.PLUGIN_MANAGER].get_plugin("triggers")
        assert isinstance(plugin, TriggersPlugin)
        return plugin

    async def log(self, count: int = 100) -> list[LogRecord]:
        """The trigger log, oldest first."""
        store = self.gateway_plugin().store
        assert store is not None
        return list(reversed(await store.read_log(count)))

    async def outcomes(self, trigger: str | None = None) -> list[tuple[str, str, str]]:
        return [
            (r.trigger, r.visitor, r.outcome)
            for r in await self.log()
            if trigger is None or r.trigger == trigger
        ]

    async def close(self) -> None:
        for name in list(self.tasks):
            await self.stop_worker(name)
