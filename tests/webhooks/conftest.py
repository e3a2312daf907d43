"""Webhook fixtures: configs with small timings, outboxes over the in-process store and over
a real Redis (the ``{webhooks/}`` keys cleared around each test), and receivers that are real
aiohttp servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis
from hookkit import SECRET

from journeygate.config import AppConfig
from journeygate.store import open_store
from journeygate.webhooks.model import WebhookQueue, webhook_queue


def clear_webhook_keys(client: redis.Redis) -> None:
    doomed = list(client.scan_iter(match="jg:{webhooks/}:*", count=1000))
    if doomed:
        client.delete(*doomed)


@pytest.fixture
def clean_webhooks(redis_client: redis.Redis) -> Iterator[redis.Redis]:
    """The session Redis without any webhook keys, before and after the test."""
    clear_webhook_keys(redis_client)
    yield redis_client
    clear_webhook_keys(redis_client)


@pytest.fixture
def webhook_config(make_config: Callable[..., AppConfig]) -> Callable[..., AppConfig]:
    """A config with endpoints ``crm`` and ``email`` (URLs from ``urls``) and small timings;
    keyword arguments override ``[webhooks]`` keys, ``store`` the store section."""

    def factory(
        urls: dict[str, str] | None = None, store: dict[str, Any] | None = None, **hooks: Any
    ) -> AppConfig:
        urls = urls or {"crm": "http://127.0.0.1:9/crm", "email": "http://127.0.0.1:9/email"}
        section: dict[str, Any] = {
            "timeout_ms": 500,
            "max_attempts": 3,
            "backoff_base_ms": 20,
            "backoff_max_ms": 80,
            "lease_ms": 1000,
            "claim_idle_ms": 1000,
            "poll_interval_ms": 10,
            "endpoints": {name: {"url": url, "secret": SECRET} for name, url in urls.items()},
        }
        section.update(hooks)
        return make_config(webhooks=section, store=store or {})

    return factory


@pytest.fixture(params=["memory", "redis"])
async def queue_factory(
    request: pytest.FixtureRequest, webhook_config: Callable[..., AppConfig]
) -> AsyncIterator[Callable[..., WebhookQueue]]:
    """Builds outboxes of one backend (the test runs once per backend): in process, or in
    the session Redis, cleared of webhook keys."""
    backend = request.param
    stores = []
    if backend == "redis":
        request.getfixturevalue("clean_webhooks")
        redis_url = request.getfixturevalue("redis_url")

    def factory(**kwargs: Any) -> WebhookQueue:
        if backend == "redis":
            kwargs["store"] = {"backend": "redis", "redis_url": redis_url, "timeout_ms": 2000}
        config = webhook_config(**kwargs)
        store = open_store(config.store, config.store_backend, config.events)
        stores.append(store)
        queue = webhook_queue(store, config)
        assert queue is not None
        return queue

    yield factory
    for store in stores:
        await store.close()
