"""Automatic pipelining: the Redis commands that concurrent requests issue during one
event-loop iteration go to Redis as one pipeline.

A decision costs the gateway one or two Redis round trips, and on a loaded gateway most of a
round trip's CPU is the write and read system calls and redis-py's per-call bookkeeping, not
Redis. Thirty-two concurrent decisions sending their calls one by one make thirty-two writes
and reads; sent together they make one of each (measured in ``bench/decide.py``). A lone
request waits for nothing: its batch is sent at the end of the current loop iteration.

A batch goes out on a connection of the batcher's own, opened by the client's pool's
connection class (so with its URL, TLS, password and database) and then read by a protocol
of ours (:class:`_Link`): hiredis parses the replies as they arrive and the last one
completes the batch, with no stream reader and no coroutine per reply. The usual round trip
(an idle connection at hand) is a callback that writes and a callback that hands out the
replies, with no task: 84 µs of CPU for a lone one-command round trip on these machines,
against 99 µs with a task per batch (most of either is the write system call). (redis-py's pipeline
object added a pool lock, retry and observability wrappers and a reset to every round trip:
115 µs of CPU for a two-command round trip on these machines. Its connection read reply by
reply through three coroutines: 144 µs of CPU for a four-command batch sent alone through
``execute``, against 103 µs with this protocol.) At most ``MAX_CONNECTIONS`` batches are
in flight; the next one waits for a connection and takes every call made meanwhile. Replies
go through the client's response callbacks, as redis-py's would; commands are read with the
client's decoding (none of the store's asks otherwise).

Waiting for a batch is also what keeps connections: a caller that runs out of time stops
waiting, but the batch is not interrupted (cancelling redis-py mid-reply makes it drop the
connection, and replacing connections under load costs more than the calls), so its
connection is used again when the late reply comes. A batch still unanswered
``LATE_BATCH_GRACE_S`` after the timeout (Redis unreachable) is abandoned.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis._parsers import BaseParser
from redis.asyncio.connection import AbstractConnection
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisError, ResponseError

from journeygate.store.base import StoreUnavailable

# One command as redis-py's pipelines record it: (arguments, options).
Command = tuple[tuple[Any, ...], dict[str, Any]]
# The calls of one round trip: each caller's commands and the future of its replies.
Batch = list[tuple[Sequence[Command], asyncio.Future[list[Any]]]]

# Options a recorded command carries for reading its reply, not for its response callback.
PARSE_ONLY_OPTIONS = frozenset({EMPTY_RESPONSE, NEVER_DECODE, "keys"})
# How long an abandoned batch may still finish in the background.
LATE_BATCH_GRACE_S = 2.0
# A batch this long is sent at once rather than at the end of the loop iteration.
MAX_BATCH_COMMANDS = 1024
# Batches in flight at once, a connection each; more wait for one (and grow meanwhile).
MAX_CONNECTIONS = 16


def _commands(batch: Batch) -> list[Command]:
    """Every caller's commands of a batch, in order: what one round trip sends."""
    return [command for calls, _ in batch for command in calls]


class _Link(asyncio.Protocol):
    """A connection of the batcher's own, once redis-py opened it: batches are written to its
    transport, and their replies parsed by hiredis as they arrive into the batch's future."""

    def __init__(self, connection: AbstractConnection, writer: asyncio.StreamWriter) -> None:
        self.connection = connection  # opened the socket; packs commands, reads nothing
        # Kept while the socket is: a stream writer collected with its transport open
        # closes it.
        self.writer = writer
        self.transport = cast(asyncio.Transport, writer.transport)
        encoder = connection.encoder
        decoding = (
            {"encoding": encoder.encoding, "errors": encoder.encoding_errors}
            if encoder.decode_responses
            else {}
        )
        self.reader = hiredis.Reader(
            protocolError=InvalidResponse, replyError=BaseParser.parse_error, **decoding
        )
        self.replies: list[Any] = []
        self.expected = 0
        self.waiter: asyncio.Future[list[Any]] | None = None
        self.lost: Exception | None = None
        self.closed: Exception | None = None  # set when the batcher closed it
        self.transport.set_protocol(self)

    @classmethod
    async def open(cls, pool: aioredis.ConnectionPool) -> _Link:
        """Connect as the pool's connections do (TLS, AUTH, SELECT), then take the socket
        over from redis-py's stream reader (none of its replies is left unread then)."""
        connection = pool.connection_class(**pool.connection_kwargs)
        await connection.connect()  # type: ignore[no-untyped-call]
        writer = connection._writer
        if writer is None:  # pragma: no cover - connect() sets it or raises
            raise RedisConnectionError("redis-py opened no stream")
        # The socket is ours from here on: redis-py forgets it (it would warn of, or close, a
        # stream it no longer reads), and keeps packing commands for us.
        connection._reader = connection._writer = None
        return cls(connection, writer)

    def exchange(self, arguments: list[tuple[Any, ...]]) -> asyncio.Future[list[Any]]:
        """Write a batch of commands (packed as the client's connections pack them); the
        future's result is their replies."""
        if self.lost is not None:
            raise self.lost
        packed = self.connection.pack_commands(arguments)
        self.replies, self.expected = [], len(arguments)
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.writelines(packed)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # nothing was asked: the connection is out of step
            self.close()
            return
        self.reader.feed(data)
        replies = self.replies
        while len(replies) < self.expected:
            reply = self.reader.gets()
            if reply is False:
                return
            replies.append(reply)
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.closed or RedisConnectionError(
            f"Connection closed: {exc}" if exc else "Connection closed by server."
        )
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    @property
    def answered(self) -> bool:
        """Whether a reply of the batch in flight was read."""
        return bool(self.replies)

    def close(self) -> None:
        """Drop the connection; a batch still waiting on it fails at once (and is not sent
        again: the batcher closes a connection when it gives up on it)."""
        self.lost = self.closed = RedisConnectionError("Connection closed by the batcher.")
        self.transport.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)


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
        self._batch: Batch = []
        self._batch_commands = 0
        self._sending: set[asyncio.Task[None]] = set()
        self._in_flight: set[asyncio.Future[list[Any]]] = set()
        self._idle: list[_Link] = []
        self._opened = 0
        self._waiters: deque[asyncio.Future[_Link | None]] = deque()

    def execute(self, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        """The replies to ``commands`` in order, to await; a command Redis refused is its
        exception object in the list (as with ``raise_on_error=False``). Raises
        ``StoreUnavailable`` when Redis cannot be reached or has not answered within the
        timeout. A future, not a coroutine: one object fewer per call."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[list[Any]] = loop.create_future()
        if not self._batch:
            # The batch is sent in the next loop iteration and takes every command queued
            # until then. One timer per batch, not one per caller: callers join a batch
            # within one loop iteration, so they share its deadline (cancelled when the
            # replies come).
            sent_on: list[_Link] = []  # the connection, once the batch is written
            deadline = loop.call_later(self.timeout_s, self._expire, self._batch, sent_on)
            loop.call_soon(self._dispatch, self._batch, deadline, sent_on)
        self._batch.append((commands, reply))
        self._batch_commands += len(commands)
        if self._batch_commands >= MAX_BATCH_COMMANDS:
            self._close_batch()  # sent as it is; the next caller starts another
        # a caller that stops waiting cancels its reply only, never the batch
        return reply

    def _expire(self, batch: Batch, sent_on: list[_Link]) -> None:
        """The batch's deadline: its callers still waiting get ``StoreUnavailable`` (the
        batch itself goes on, see the module docstring). A batch :meth:`_dispatch` wrote
        (on the connection in ``sent_on``) is given up on after the grace."""
        for _, reply in batch:
            if not reply.done():
                reply.set_exception(
                    StoreUnavailable(f"redis: no reply within {self.timeout_s * 1000:.0f} ms")
                )
        for link in sent_on:
            if link.waiter is not None:
                asyncio.get_running_loop().call_later(
                    LATE_BATCH_GRACE_S, self._abandon, link, link.waiter
                )

    @staticmethod
    def _abandon(link: _Link, waiter: asyncio.Future[list[Any]]) -> None:
        if not waiter.done():
            link.close()

    def _close_batch(self) -> None:
        """Let callers from now on start a new batch: the open one goes as it is."""
        self._batch, self._batch_commands = [], 0

    def _dispatch(self, batch: Batch, deadline: asyncio.TimerHandle, sent_on: list[_Link]) -> None:
        """Send ``batch`` (the end of the loop iteration it was started in). The usual round
        trip is a write on an idle connection and a callback when the last reply is in: no
        task, no coroutine. A batch that must open a connection, wait for one, or be sent
        again goes through :meth:`_round_trip`."""
        link = self._idle.pop() if self._idle else None
        if link is not None and link.lost is None:
            if batch is self._batch:
                self._close_batch()
            commands = _commands(batch)
            try:
                sent = link.exchange([args for args, _ in commands])
            except Exception as exc:  # a command that cannot be packed: nothing was written
                self._release(link)
                deadline.cancel()
                self._fail(batch, exc)
                return
            sent_on.append(link)
            self._in_flight.add(sent)
            sent.add_done_callback(
                functools.partial(self._answered, batch, deadline, link, commands)
            )
            return
        if link is not None:
            self._release(link)  # lost while idle: the round trip opens a fresh one
        self._start_round_trip(batch, deadline)

    def _answered(
        self,
        batch: Batch,
        deadline: asyncio.TimerHandle,
        link: _Link,
        commands: list[Command],
        sent: asyncio.Future[list[Any]],
    ) -> None:
        """The replies of a batch sent by :meth:`_dispatch`, or why there are none."""
        self._in_flight.discard(sent)
        failure = RedisConnectionError("batch cancelled") if sent.cancelled() else sent.exception()
        if failure is None:
            self._release(link)
            deadline.cancel()
            try:
                replies = self._parsed(sent.result(), commands)
            except Exception as exc:
                self._fail(batch, exc)
                return
            self._answer(batch, replies)
            return
        retry = isinstance(failure, RedisConnectionError) and not link.answered and not link.closed
        self._release(link)
        if retry:  # Redis closed the connection before running anything: send it again
            self._start_round_trip(batch, deadline, fresh=True)
            return
        deadline.cancel()
        self._fail(batch, failure if isinstance(failure, Exception) else RedisError(failure))

    def _start_round_trip(
        self, batch: Batch, deadline: asyncio.TimerHandle, fresh: bool = False
    ) -> None:
        task = asyncio.get_running_loop().create_task(self._round_trip(batch, deadline, fresh))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _round_trip(
        self, batch: Batch, deadline: asyncio.TimerHandle, fresh: bool = False
    ) -> None:
        """A batch's round trip when :meth:`_dispatch` cannot send it at once: ``fresh``, a
        second attempt (on a new connection) of a batch Redis dropped unanswered."""
        try:
            async with asyncio.timeout(self.timeout_s + LATE_BATCH_GRACE_S):
                link = await self._acquire()
                # Callers joined the batch until now (more of them when every connection
                # was busy): from here on they start the next one.
                if batch is self._batch:
                    self._close_batch()
                commands = _commands(batch)
                try:
                    link, replies = await self._exchange(link, commands, 1 if fresh else 2)
                finally:
                    self._release(link)
        except Exception as exc:
            self._fail(batch, exc)
            return
        finally:
            deadline.cancel()  # a timer left to fire would wake an idle loop for nothing
        self._answer(batch, replies)

    @staticmethod
    def _answer(batch: Batch, replies: list[Any]) -> None:
        start = 0
        for calls, reply in batch:
            end = start + len(calls)
            if not reply.done():
                reply.set_result(replies[start:end])
            start = end

    @staticmethod
    def _fail(batch: Batch, exc: Exception) -> None:
        failure: Exception = exc
        if isinstance(exc, RedisError | OSError | TimeoutError):
            failure = StoreUnavailable(f"redis: {exc.__class__.__name__}: {exc}")
        for _, reply in batch:
            if not reply.done():
                reply.set_exception(failure)

    async def _exchange(
        self, link: _Link | None, commands: list[Command], attempts: int
    ) -> tuple[_Link, list[Any]]:
        """Write every command at once, then wait for their replies; returns the connection
        used with them. A connection Redis closed (a restart) fails at the write or before
        its first reply, before any command ran: those are sent again, on a fresh
        connection, while ``attempts`` last. ``link`` None: connect first."""
        arguments = [args for args, _ in commands]
        for attempt in range(1, attempts + 1):
            if link is None or link.lost is not None:
                link = await _Link.open(self.client.connection_pool)
            try:
                replies = await link.exchange(arguments)
            except RedisConnectionError:
                if link.answered or attempt == attempts:
                    raise
                continue
            except BaseException:
                link.close()  # replies left unread would answer the connection's next batch
                raise
            return link, self._parsed(replies, commands)
        raise AssertionError("unreachable")  # pragma: no cover

    def _parsed(self, replies: list[Any], commands: list[Command]) -> list[Any]:
        """Replies as ``client.parse_response`` makes them: an error reply stays an exception
        object (or ``EMPTY_RESPONSE``), others go through their command's response callback."""
        callbacks = self.client.response_callbacks
        parsed = []
        for reply, (args, options) in zip(replies, commands, strict=True):
            if isinstance(reply, ResponseError):
                reply = options.get(EMPTY_RESPONSE, reply)
            elif (callback := callbacks.get(args[0])) is not None:
                extra = {k: v for k, v in options.items() if k not in PARSE_ONLY_OPTIONS}
                reply = callback(reply, **extra)
            parsed.append(reply)
        return parsed

    async def _acquire(self) -> _Link | None:
        """An idle connection of the batcher's own, None while fewer than
        ``max_connections`` exist (the caller opens one), or else the first one released."""
        if self._idle:
            return self._idle.pop()
        if self._opened < self.max_connections:
            self._opened += 1
            return None
        waiter: asyncio.Future[_Link | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(waiter.result())  # handed over just as the caller gave up
            raise

    def _release(self, link: _Link | None) -> None:
        """Hand a connection (None: the right to open one) to the next waiting batch, or keep
        it for the next one."""
        if link is not None and link.lost is not None:
            link = None  # dead: the next batch opens a fresh one in its place
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(link)
                return
        if link is None:
            self._opened -= 1
        else:
            self._idle.append(link)

    async def aclose(self) -> None:
        """Wait for the batches in flight (each bounded by its timeout), then disconnect."""
        if self._sending or self._in_flight:
            await asyncio.gather(*self._sending, *self._in_flight, return_exceptions=True)
        idle, self._idle = self._idle, []
        self._opened -= len(idle)
        for link in idle:
            link.close()
