"""Automatic pipelining: the Redis commands that concurrent requests issue during one
event-loop iteration go to Redis as one pipeline.

A decision costs the gateway one or two Redis round trips, and on a loaded gateway most of a
round trip's CPU is the write and read system calls and redis-py's per-call bookkeeping, not
Redis. Thirty-two concurrent decisions sending their calls one by one make thirty-two writes
and reads; sent together they make one of each (measured in ``bench/decide.py``). A lone
request waits for nothing: its batch is sent at the end of the current loop iteration.

A batch goes out on a connection of the batcher's own (made by the client's pool, so with
its URL, TLS and password), written at once and its replies read in order: redis-py's
pipeline object adds a pool lock, retry and observability wrappers and a reset to every
round trip, 115 against 62 µs of CPU for a two-command round trip on these machines. At most
``MAX_CONNECTIONS`` batches are in flight; the next one waits for a connection and takes
every call made meanwhile.

Waiting for a batch is also what keeps connections: a caller that runs out of time stops
waiting, but the batch is not interrupted (cancelling redis-py mid-reply makes it drop the
connection, and replacing connections under load costs more than the calls), so its
connection is used again when the late reply comes. A batch still unanswered
``LATE_BATCH_GRACE_S`` after the timeout (Redis unreachable) is abandoned.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from journeygate.store.base import StoreUnavailable

# One command as redis-py's pipelines record it: (arguments, options).
Command = tuple[tuple[Any, ...], dict[str, Any]]

# How long an abandoned batch may still finish in the background.
LATE_BATCH_GRACE_S = 2.0
# A batch this long is sent at once rather than at the end of the loop iteration.
MAX_BATCH_COMMANDS = 1024
# Batches in flight at once, a connection each; more wait for one (and grow meanwhile).
MAX_CONNECTIONS = 16


class CommandBatcher:
    """Collects commands and sends them as one non-transactional pipeline per loop iteration.

    Commands of one caller are sent together and in order, so a caller's commands on one
    visitor's keys (one hash slot) stay as they would in a pipeline of its own. Callers must
    not rely on atomicity across their commands: use one Lua script for that.
    """

    def __init__(
        self, client: aioredis.Redis, timeout_s: float, max_connections: int = MAX_CONNECTIONS
    ) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]] = []
        self._batch_commands = 0
        self._sending: set[asyncio.Task[None]] = set()
        self._idle: list[AbstractConnection] = []
        self._opened = 0
        self._waiters: deque[asyncio.Future[AbstractConnection]] = deque()

    def execute(self, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        """The replies to ``commands`` in order, to await; a command Redis refused is its
        exception object in the list (as with ``raise_on_error=False``). Raises
        ``StoreUnavailable`` when Redis cannot be reached or has not answered within the
        timeout. A future, not a coroutine: one object fewer per call."""
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
        return reply

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
        try:
            async with asyncio.timeout(self.timeout_s + LATE_BATCH_GRACE_S):
                connection = await self._acquire()
                # Callers joined the batch until now (more of them when every connection
                # was busy): from here on they start the next one.
                if batch is self._batch:
                    self._close_batch()
                commands = [command for calls, _ in batch for command in calls]
                try:
                    replies = await self._exchange(connection, commands)
                finally:
                    self._release(connection)
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
        for calls, reply in batch:
            end = start + len(calls)
            if not reply.done():
                reply.set_result(replies[start:end])
            start = end

    async def _exchange(self, connection: AbstractConnection, commands: list[Command]) -> list[Any]:
        """Write every command at once, then read their replies in order. A connection Redis
        closed (a restart) fails at the write or the first reply, before any command ran:
        those are sent once more, on a fresh connection."""
        packed = connection.pack_commands([args for args, _ in commands])
        # typed for Connection, it reads with what every connection class has (read_response)
        reader = cast(Connection, connection)
        replies: list[Any] = []
        for attempt in (1, 2):
            try:
                await connection.send_packed_command(packed, check_health=False)
                for args, options in commands:
                    try:
                        replies.append(await self.client.parse_response(reader, args[0], **options))
                    except ResponseError as exc:
                        replies.append(exc)
                return replies
            except RedisConnectionError:
                # redis-py has disconnected it; the next write connects again
                if replies or attempt == 2:
                    raise
            except BaseException:
                # replies left unread would answer the connection's next batch
                await connection.disconnect(nowait=True)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _acquire(self) -> AbstractConnection:
        """An idle connection of the batcher's own, a new one while fewer than
        ``max_connections`` exist, or else the first one released."""
        if self._idle:
            return self._idle.pop()
        if self._opened < self.max_connections:
            self._opened += 1
            # connected by its first write, with the client's settings (URL, TLS, password)
            pool = self.client.connection_pool
            return pool.connection_class(**pool.connection_kwargs)
        waiter: asyncio.Future[AbstractConnection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(waiter.result())  # handed over just as the caller gave up
            raise

    def _release(self, connection: AbstractConnection) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._idle.append(connection)

    async def aclose(self) -> None:
        """Wait for the batches in flight (each bounded by its timeout), then disconnect."""
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        idle, self._idle = self._idle, []
        self._opened -= len(idle)
        for connection in idle:
            await connection.disconnect()
