"""Helpers of the webhook tests: a recording receiver (a real aiohttp server), messages,
waiting for conditions, running a dispatcher in the background."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

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


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


class Receiver:
    """An email/CRM tool stand-in: a real aiohttp server that records every request and
    answers from ``script`` (status, headers) in order, then ``default`` (200); ``delay_s``
    holds each answer back; ``first_attempt_status`` answers every delivery's attempt 1."""

    def __init__(self, server: TestServer) -> None:
        self.server = server
        self.requests: list[Received] = []
        self.script: deque[tuple[int, dict[str, str]]] = deque()
        self.default = 200
        self.delay_s = 0.0
        self.first_attempt_status: int | None = None
        self.arrived = asyncio.Event()

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Received(request.path, dict(request.headers), body, time.time()))
        self.arrived.set()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status, headers = self.script.popleft() if self.script else (self.default, {})
        if self.first_attempt_status and json.loads(body)["attempt"] == 1:
            status = self.first_attempt_status
        return web.Response(status=status, headers=headers, text="nope" if status >= 300 else "")

    def ids(self) -> list[str]:
        return [r.headers["Journeygate-Delivery"] for r in self.requests]

    async def wait_for(self, count: int, timeout_s: float = 20.0) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.requests) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def settle(condition: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` until true (fails the test after ``timeout_s``)."""
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.01)


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
