"""The Redis Streams that make ingestion durable, and what the worker does with them.

``jg:events:{shard-K}`` (K < ``events.stream_shards``): a visitor's events always go to shard
``crc32(visitor_id) % stream_shards`` (see ``journeygate.store.keys``). One request becomes
one entry per shard it touches, all added in one pipelined round trip, each stream trimmed
with ``MAXLEN ~ events.stream_maxlen``. Workers share the consumer group
``events.consumer_group`` of every shard; stream commands touch one stream each, so the same
code runs on Redis Cluster.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from journeygate.config import EventsConfig
from journeygate.store import StoreUnavailable, keys


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry read by a worker: the events of one request for one shard."""

    stream: str
    entry_id: bytes
    events: list[dict[str, Any]]


class EventStreams:
    """Append events (the gateway) and consume them (the worker), over one connection pool."""

    def __init__(self, redis_url: str, config: EventsConfig, timeout_s: float) -> None:
        self.config = config
        self.timeout_s = timeout_s
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            redis_url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
        )
        self.names = [keys.event_stream(shard) for shard in range(config.stream_shards)]
        self._maxlen = str(config.stream_maxlen)

    def shard(self, visitor_id: str) -> int:
        return zlib.crc32(visitor_id.encode()) % len(self.names)

    async def _execute(self, pipe: Any) -> list[Any]:
        try:
            async with asyncio.timeout(self.timeout_s):
                result: list[Any] = await pipe.execute()
                return result
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis: {exc.__class__.__name__}: {exc}") from exc

    async def append(self, events: Sequence[tuple[str, bytes]]) -> None:
        """Add serialized events (visitor id, JSON) to their shards: one XADD per shard, one
        round trip. Returns once Redis has them; raises :class:`StoreUnavailable` otherwise."""
        by_shard: dict[int, list[bytes]] = {}
        for visitor_id, encoded in events:
            by_shard.setdefault(self.shard(visitor_id), []).append(encoded)
        pipe = self.client.pipeline(transaction=False)
        for shard, encoded_events in by_shard.items():
            payload = b"[" + b",".join(encoded_events) + b"]"
            pipe.execute_command(
                "XADD", self.names[shard], "MAXLEN", "~", self._maxlen, "*", "e", payload
            )
        await self._execute(pipe)

    # -- the worker's side ------------------------------------------------------------------

    async def ensure_groups(self) -> None:
        """Create the consumer group on every shard (from the first entry) when missing."""
        for name in self.names:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self.client.xgroup_create(
                        name, self.config.consumer_group, id="0", mkstream=True
                    )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise StoreUnavailable(f"redis: {exc}") from exc
            except (RedisError, OSError, TimeoutError) as exc:
                raise StoreUnavailable(f"redis: {exc.__class__.__name__}: {exc}") from exc

    @staticmethod
    def _entries(name: str, raw: Sequence[Any]) -> list[Entry]:
        entries = []
        for entry_id, fields in raw:
            if fields is None:
                continue  # trimmed while pending
            entries.append(Entry(name, entry_id, orjson.loads(fields[b"e"])))
        return entries

    async def read(self, consumer: str, pending: bool = False) -> list[Entry]:
        """New entries for ``consumer`` from every shard (``pending``: its own unacknowledged
        ones, after a restart under the same name); one round trip, no blocking."""
        pipe = self.client.pipeline(transaction=False)
        for name in self.names:
            pipe.xreadgroup(
                self.config.consumer_group,
                consumer,
                {name: "0" if pending else ">"},
                count=self.config.read_count,
            )
        entries = []
        for result in await self._execute(pipe):
            for name, raw in result or ():
                entries += self._entries(name.decode(), raw)
        return entries

    async def claim(self, consumer: str) -> list[Entry]:
        """Entries other consumers read but did not acknowledge for ``claim_idle_ms``
        (a worker that died), now owned by ``consumer``."""
        pipe = self.client.pipeline(transaction=False)
        for name in self.names:
            pipe.xautoclaim(
                name,
                self.config.consumer_group,
                consumer,
                min_idle_time=self.config.claim_idle_ms,
                start_id="0-0",
                count=self.config.read_count,
            )
        entries = []
        for name, result in zip(self.names, await self._execute(pipe), strict=True):
            entries += self._entries(name, result[1])
        return entries

    async def ack(self, entries: Sequence[Entry]) -> None:
        by_stream: dict[str, list[bytes]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.entry_id)
        if not by_stream:
            return
        pipe = self.client.pipeline(transaction=False)
        for name, ids in by_stream.items():
            pipe.xack(name, self.config.consumer_group, *ids)
        await self._execute(pipe)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                return bool(await self.client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        await self.client.aclose()
