"""Fixtures of the trigger tests, loaded by each test module with
``pytest_plugins = ["triggerfixtures"]`` (a conftest.py here would replace the root one for
the tests that import ``conftest`` by name): a Redis database of their own, a receiver that
is a real aiohttp server, and deployments built from a trigger file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from triggerkit import TRIGGERS_DB, UNREACHABLE, Stack, overrides, write_triggers

from jg_triggers.plugin import TriggersPlugin
from testkit import Receiver


@pytest.fixture
def url(redis_url: str) -> str:
    """A database of the session Redis for triggers tests, emptied: timers, the log and the
    event streams are shared by all visitors."""
    url = f"{redis_url.rsplit('/', 1)[0]}/{TRIGGERS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def stack(
    gateway: Callable[..., Awaitable[Any]],
    make_config: Callable[..., Any],
    receiver: Receiver,
    url: str,
    tmp_path: Path,
) -> AsyncIterator[StackFactory]:
    """``await stack(triggers, backend="redis", workers=1, **top)``: a gateway with the
    triggers plugin (and ``gateway_plugins``), ``workers`` workers (with the triggers plugin
    and ``worker_plugins()``); webhooks go to endpoint ``crm``: ``receiver``, or an address
    where nothing listens (``deliver=False``), or is not configured (``endpoints=False``).
    ``top`` goes to the trigger file, ``sections`` to the config."""
    built: list[Stack] = []

    async def factory(
        triggers: Mapping[str, Mapping[str, Any]],
        backend: str = "redis",
        workers: int = 1,
        deliver: bool = True,
        endpoints: bool = True,
        sections: Mapping[str, Any] | None = None,
        gateway_plugins: Sequence[tuple[str, object]] = (),
        worker_plugins: Callable[[], list[tuple[str, object]]] = list,
        **top: Any,
    ) -> Stack:
        path = write_triggers(tmp_path / "triggers.toml", triggers, **top)
        receiver_url = (receiver.url() if deliver else UNREACHABLE) if endpoints else None
        config_sections = overrides(backend, url, receiver_url, path, **(sections or {}))
        plugins = [("triggers", TriggersPlugin()), *gateway_plugins]
        client = await gateway(extra_plugins=plugins, **config_sections)
        built.append(Stack(client, make_config(**config_sections), worker_plugins=worker_plugins))
        for index in range(workers if backend == "redis" else 0):
            built[-1].start_worker(f"worker-{index}")
        return built[-1]

    yield factory
    for deployment in built:
        await deployment.close()
