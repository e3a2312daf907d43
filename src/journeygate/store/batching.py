"""Automatic pipelining: the Redis commands that concurrent requests issue during one
event-loop iteration go to Redis as one pipeline.

A decision costs the gateway one or two Redis round trips, and on a loaded gateway most of a
round trip's CPU is the write and read system calls and redis-py's per-call bookkeeping, not
Redis. Thirty-two concurrent decisions sending their calls one by one make thirty-two writes
and reads; sent together they make one of each (measured in ``bench/decide.py``). A lone
request waits for nothing: its batch is sent at the end of the current loop iteration.

Waiting for a batch is also what keeps connections: a caller that runs out of time stops
waiting, but the batch is not interrupted (cancelling redis-py mid-reply makes it drop the
connection, and replacing connections under load costs more than the calls), so its
connection goes back to the pool when the late reply comes. A batch still unanswered
``LATE_BATCH_GRACE_S`` after the timeout (Redis unreachable) is abandoned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from journeygate.store.base import StoreUnavailable

# One command as redis-py's pipelines record it: (arguments, options).
Command = tuple[tuple[Any, ...], dict[str, Any]]

# How long an abandoned batch may still finish in the background.
LATE_BATCH_GRACE_S = 2.0
# A batch this long is sent at once rather than at the end of the loop iteration.
MAX_BATCH_COMMANDS = 1024


class CommandBatcher:
    """Collects commands and sends them as one non-transactional pipeline per loop iteration.

    Commands of one caller are sent together and in order, so a caller's commands on one
    visitor's keys (one hash slot) stay as they would in a pipeline of its own. Callers must
    not rely on atomicity across their commands: use one Lua script for that.
    """

    def __init__(self, client: aioredis.Redis, timeout_s: float) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self._batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]] = []
        self._batch_commands = 0
        self._sending: set[asyncio.Task[None]] = set()

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """The replies to ``commands`` in order; a command Redis refused is its exception
        object in the list (as with ``raise_on_error=False``). Raises ``StoreUnavailable``
        when Redis cannot be reached or has not answered within the timeout."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[list[Any]] = loop.create_future()
        if not self._batch:
            # The round trip's task first runs in the next loop iteration and takes every
            # command queued until then. One timer per batch, not one per caller: callers
            # join a batch within one loop iteration, so they share its deadline (cancelled
            # when the replies come).
            deadline = loop.call_later(self.timeout_s, self._expire, self._batch)
            task = loop.create_task(self._round_trip(self._batch, deadline))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        self._batch.append((commands, reply))
        self._batch_commands += len(commands)
        if self._batch_commands >= MAX_BATCH_COMMANDS:
            self._close_batch()  # sent as it is; the next caller starts another
        # a caller that stops waiting cancels its reply only, never the batch
        return await reply

    def _expire(self, batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]]) -> None:
        """The batch's deadline: its callers still waiting get ``StoreUnavailable`` (the
        batch itself goes on, see the module docstring)."""
        for _, reply in batch:
            if not reply.done():
                reply.set_exception(
                    StoreUnavailable(f"redis: no reply within {self.timeout_s * 1000:.0f} ms")
                )

    def _close_batch(self) -> None:
        """Let callers from now on start a new batch: the open one goes as it is."""
        self._batch, self._batch_commands = [], 0

    async def _round_trip(
        self,
        batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]],
        deadline: asyncio.TimerHandle,
    ) -> None:
        if batch is self._batch:
            self._close_batch()
        pipe = self.client.pipeline(transaction=False)
        for commands, _ in batch:
            for args, options in commands:
                pipe.execute_command(*args, **options)
        try:
            async with asyncio.timeout(self.timeout_s + LATE_BATCH_GRACE_S):
                replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            failure: Exception = exc
            if isinstance(exc, RedisError | OSError | TimeoutError):
                failure = StoreUnavailable(f"redis: {exc.__class__.__name__}: {exc}")
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(failure)
            return
        finally:
            deadline.cancel()  # a timer left to fire would wake an idle loop for nothing
        start = 0
        for commands, reply in batch:
            end = start + len(commands)
            if not reply.done():
                reply.set_result(replies[start:end])
            start = end
