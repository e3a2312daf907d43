"""Helpers shared by the experiment tests (a module, not a conftest: a second conftest.py
would shadow the root one)."""

from __future__ import annotations

import base64
import dataclasses
import socket
import time
from pathlib import Path
from typing import Any

import jsonschema
import redis
from aiohttp.test_utils import TestClient

from journeygate import appkeys
from journeygate.events.apply import Applier
from journeygate.events.streams import EventStreams
from journeygate.events.worker import Worker
from journeygate.store import open_store

WRITE_KEY = "wk-experiments"
ADMIN = {"X-API-Key": "test-admin-key"}
EXPERIMENTS_DB = 8

HERO = """
[[experiment]]
id = "hero-test"
slot = "hero"
holdout = 0.2

[[experiment.arms]]
name = "default"

[[experiment.arms]]
name = "ten-off"
params = { offer_id = "ten-off" }
"""


def write_experiments(directory: Path, text: str = HERO) -> str:
    path = directory / "experiments.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fresh_redis_url(redis_url: str, db: int = EXPERIMENTS_DB) -> str:
    """A Redis database of its own, emptied (streams and counters are shared keys)."""
    url = f"{redis_url.rsplit('/', 1)[0]}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


def overrides(backend: str, url: str, experiments_file: str, **experiments: Any) -> dict[str, Any]:
    store = {"redis_url": url, "timeout_ms": 1000} if backend == "redis" else {"backend": "memory"}
    return {
        "store": store,
        "events": {"write_keys": [WRITE_KEY], "stream_shards": 2},
        "experiments": {"file": experiments_file, "flush_interval_ms": 10, **experiments},
    }


def basic() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


async def send_events(client: TestClient, events: list[dict[str, Any]]) -> None:
    response = await client.post("/v1/events", json={"events": events}, headers=basic())
    body = await response.json()
    assert response.status == 200, body
    assert body["rejected"] == [], body["rejected"]


async def apply_pending(client: TestClient) -> int:
    """With Redis, run a worker in this process until the streams are drained (without
    Redis the gateway applied everything already)."""
    app = client.app
    assert app is not None
    config = app[appkeys.CONFIG]
    if config.store_backend != "redis":
        return 0
    store = open_store(dataclasses.replace(config.store, timeout_ms=5000), "redis", config.events)
    streams = EventStreams(config.store.redis_url, config.events, 5.0)
    applier = Applier(store, config, app[appkeys.PLUGIN_MANAGER])
    worker = Worker(config, applier, streams, "experiments-test")
    try:
        await streams.ensure_groups()
        while entries := await streams.read("experiments-test"):
            await worker.process(entries)
    finally:
        await streams.close()
        await store.close()
    return worker.applied


def event(name: str, visitor: str, **properties: Any) -> dict[str, Any]:
    return {
        "event": name,
        "visitor_id": visitor,
        "timestamp": time.time(),
        "properties": properties,
    }


def response_schema(document: dict[str, Any], path: str, status: int) -> Any:
    content = document["paths"][path]["get"]["responses"][str(status)]["content"]
    return jsonschema.Draft202012Validator(
        {**content["application/json"]["schema"], "components": document["components"]}
    )
