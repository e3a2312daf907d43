"""Helpers of the webhook tests: a recording receiver (a real aiohttp server), messages,
waiting for conditions, running a dispatcher in the background."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from journeygate.webhooks import WebhookMessage
from journeygate.webhooks.dispatcher import Dispatcher

SECRET = "test-secret"


def message(key: str, visitor: str | None = None, endpoint: str = "crm") -> WebhookMessage:
    return WebhookMessage(
        endpoint=endpoint,
        event_type="trigger.cart_abandonment",
        payload={"visitor_id": visitor, "cart_value": 38.25, "key": key},
        dedupe_key=key,
        visitor_id=visitor,
    )


@asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[asyncio.Event]:
    """Run ``dispatcher`` in the background; stop it (cleanly) on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await task
