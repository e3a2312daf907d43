"""The closed-loop load of the in-process benchmarks (``encoder.py``, ``sentiment.py``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any


async def drive(
    call: Callable[[str], Awaitable[Any]], texts: Sequence[str], concurrency: int
) -> tuple[list[float], float]:
    """``concurrency`` clients share ``texts``, each awaiting ``call(text)`` and then taking
    the next text. Returns every call's latency (seconds) and the wall time of the whole."""
    queue = list(reversed(texts))
    latencies: list[float] = []

    async def client() -> None:
        while queue:
            text = queue.pop()
            started = time.perf_counter()
            await call(text)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started
