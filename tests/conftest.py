"""Shared fixtures: a real redis-server, the catalog built from the bundled sample, and a
factory for gateway test clients (real aiohttp server, real plugin manager)."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from journeygate.app import create_app
from journeygate.catalog import build_catalog_file
from journeygate.config import AppConfig, load_config
from journeygate.registry import build_plugin_manager
from testkit import SAMPLE, Receiver, free_port


class RedisServer:
    """A ``redis-server`` process of the tests' own on a free port, to start and kill."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.fail("redis-server is not installed and REDIS_URL is not set")
        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        options += ["no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(
            [server, *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        self.kill()
                        pytest.fail("redis-server did not start")
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: ``REDIS_URL`` when set, else a private ``redis-server`` on a free port."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.kill()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for one test, which it may kill and start again (outage tests)."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def catalog_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The catalog built from the bundled Online Retail sample, once per test session."""
    path = tmp_path_factory.mktemp("catalog") / "catalog.csv"
    build_catalog_file(SAMPLE, path)
    return path


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what imports and collection allocated (torch, pandas, scikit-learn, the
    plugins), as ``journeygate serve`` freezes its startup objects: the test process's full
    garbage collections, which paused a running test's gateway for up to 0.5 s, stay shorter
    (0.33 s at most in the same tests)."""
    gc.collect()
    gc.freeze()


@pytest.fixture
def visitor_id() -> str:
    """A fresh visitor id, so tests never see each other's data in a shared Redis."""
    return f"t-{uuid.uuid4().hex[:16]}"


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def make_config(catalog_path: Path) -> Callable[..., AppConfig]:
    """Config from the bundled TOML with the test catalog; keyword overrides per section."""

    def factory(**overrides: Any) -> AppConfig:
        # Tests check which plugin answered, not how fast: with the production budgets (50
        # ms a call, 250 ms a decision) a full garbage collection of the test process (torch,
        # pandas; `journeygate serve` freezes its startup objects against that) or a pause
        # of the loaded CI machine handed a slot to the fallback now and then (and once made
        # an ingestion time out). Budgets and timeouts are tested where they are the subject,
        # with their own values.
        base: dict[str, Any] = {
            "catalog": {"path": str(catalog_path)},
            "plugins": {"load_entrypoints": False, "default_budget_ms": 2000},
            "decide": {"deadline_ms": 5000},
            "events": {"ingest_timeout_ms": 5000},
            "server": {"api_keys": ["test-admin-key"], "cors_origins": ["https://shop.example"]},
        }
        return load_config(environ={}, overrides=merge(base, overrides))

    return factory


GatewayFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def gateway(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_config: Callable[..., AppConfig],
) -> GatewayFactory:
    """Start a real gateway: ``await gateway(extra_plugins=[("name", obj)], store={...})``;
    keyword arguments other than these two override config sections."""

    async def factory(
        extra_plugins: tuple[tuple[str, object], ...] | list[tuple[str, object]] = (),
        load_entrypoints: bool = False,
        **overrides: Any,
    ) -> TestClient:
        config = make_config(**overrides)
        pm = build_plugin_manager(
            config, load_entrypoints=load_entrypoints, extra_plugins=tuple(extra_plugins)
        )
        return await aiohttp_client(create_app(config, plugin_manager=pm))

    return factory


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Receiver:
    """A webhook receiver (:class:`testkit.Receiver`) on a real aiohttp server."""
    app = web.Application()
    holder: list[Receiver] = []

    async def handle(request: web.Request) -> web.Response:
        return await holder[0].handle(request)

    app.router.add_post("/{path:.*}", handle)
    holder.append(Receiver(await aiohttp_server(app)))
    return holder[0]
