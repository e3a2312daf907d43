"""Helpers shared by the event tests (a module, not a conftest: tests import
``conftest`` by name, so a second conftest.py would shadow the root one)."""

from __future__ import annotations

import base64
import dataclasses
import time
from typing import Any

import redis
from aiohttp.test_utils import TestClient

from journeygate import appkeys
from journeygate.events.apply import Applier
from journeygate.events.streams import EventStreams
from journeygate.events.worker import Worker
from journeygate.store import open_store

WRITE_KEY = "wk-test"
ADMIN = {"X-API-Key": "test-admin-key"}
EVENTS_DB = 7


def basic(key: str = WRITE_KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def fresh_redis_url(redis_url: str, db: int = EVENTS_DB) -> str:
    """A Redis database of its own, emptied: the event streams are shared by all visitors,
    so each test starts without the streams and consumer groups of the previous one."""
    url = f"{redis_url.rsplit('/', 1)[0]}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


def overrides(backend: str, url: str, **events: Any) -> dict[str, Any]:
    store = {"redis_url": url, "timeout_ms": 1000} if backend == "redis" else {"backend": "memory"}
    return {"store": store, "events": {"write_keys": [WRITE_KEY], "stream_shards": 4, **events}}


async def apply_pending(client: TestClient, consumer: str = "test-worker") -> int:
    """With Redis, run a worker in this process until the streams are drained (without
    Redis the gateway has already applied everything). Returns the events applied."""
    app = client.app
    assert app is not None
    config = app[appkeys.CONFIG]
    if config.store_backend != "redis":
        return 0
    store = open_store(dataclasses.replace(config.store, timeout_ms=5000), "redis", config.events)
    streams = EventStreams(config.store.redis_url, config.events, 5.0)
    worker = Worker(config, Applier(store, config, app[appkeys.PLUGIN_MANAGER]), streams, consumer)
    try:
        await streams.ensure_groups()
        while entries := await streams.read(consumer):
            await worker.process(entries)
    finally:
        await streams.close()
        await store.close()
    return worker.applied


def event(name: str, visitor: str, at: float | None = None, **properties: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"event": name, "visitor_id": visitor, "properties": properties}
    body["timestamp"] = time.time() if at is None else at
    return body


def dead_letter_settings(url):
    """One stream shard, two deliveries, quick reclaims: poison entries reach the dead
    letters within a second."""
    return overrides(
        "redis",
        url,
        stream_shards=1,
        max_deliveries=2,
        claim_idle_ms=100,
        claim_interval_ms=50,
        trim_interval_ms=50,
    )


def internal(message_id, visitor, **fields):
    """An event as the gateway stores it (journeygate.events.schema), possibly malformed."""
    now = round(time.time(), 3)
    body = {"id": message_id, "n": "Product Added", "k": "cart_add", "t": now, "r": now}
    return body | {"c": "web", "v": visitor, "x": {"pid": "P1", "qty": 1}, "p": {}} | fields
