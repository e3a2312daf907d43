"""Helpers shared by test modules in several folders. Import them from here, never from
``conftest``: with several ``conftest.py`` files, ``import conftest`` finds whichever was
loaded first."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from journeygate.config import PROJECT_ROOT

SAMPLE = PROJECT_ROOT / "data" / "sample" / "online_retail_sample.csv.gz"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def settle(condition: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    """Poll ``condition`` until true (fails the test after ``timeout_s``, an upper bound)."""
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.01)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


class Receiver:
    """The email/CRM tool webhooks go to: a real aiohttp server that records every request
    and answers from ``script`` (status, headers) in order, then ``default`` (200);
    ``delay_s`` holds each answer back; ``first_attempt_status`` answers every delivery's
    attempt 1. Made by the ``receiver`` fixture."""

    def __init__(self, server: TestServer) -> None:
        self.server = server
        self.requests: list[Received] = []
        self.script: deque[tuple[int, dict[str, str]]] = deque()
        self.default = 200
        self.delay_s = 0.0
        self.first_attempt_status: int | None = None
        self.arrived = asyncio.Event()

    def url(self, path: str = "/crm") -> str:
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

    def payloads(self, trigger: str | None = None) -> list[dict[str, Any]]:
        """The ``data`` of every webhook received (of one trigger's, when given)."""
        data = [r.json["data"] for r in self.requests]
        return [d for d in data if trigger is None or d["trigger"] == trigger]

    async def wait_for(self, count: int, timeout_s: float = 20.0) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.requests) < count:
                self.arrived.clear()
                await self.arrived.wait()
