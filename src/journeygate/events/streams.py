"""The Redis Streams that make ingestion durable, and what the worker does with them.

``jg:events:{shard-K}`` (K < ``events.stream_shards``): a visitor's events always go to shard
``crc32(visitor_id) % stream_shards`` (see ``journeygate.store.keys``). One request becomes
one entry per shard it touches, all added in one pipelined round trip, each stream trimmed
with ``MAXLEN ~ events.stream_maxlen``. Workers share the consumer group
``events.consumer_group`` of every shard; stream commands touch one stream each, so the same
code runs on Redis Cluster.

Why trimming never drops an entry a worker has not acknowledged, in normal operation:

1. Workers trim what every consumer group is done with: ``TRIM_SCRIPT`` runs every
   ``trim_interval_ms`` and trims each stream with ``XTRIM MINID ~`` up to the oldest entry
   any group still needs (its oldest pending entry, or the last one delivered to it). So a
   stream's length is its backlog: entries not yet delivered or not yet acknowledged, plus
   less than one radix-tree node of acknowledged ones (``~``), and nothing else.
2. Ingestion refuses (:class:`Backpressure`, HTTP 503 ``backpressure`` with Retry-After)
   while a shard the request touches holds ``backlog_high_water_pct`` % of ``stream_maxlen``
   entries or more. The length is read with ``XLEN`` in the same pipeline as every ``XADD``
   (no extra round trip), and re-read at most every ``backlog_refresh_ms`` while refusing, so
   ingestion resumes once the workers caught up.
3. ``MAXLEN ~ stream_maxlen`` removes entries only while a stream is longer than
   ``stream_maxlen`` (``~`` never cuts below it). A stream stops growing at the high-water
   mark, overshooting it only by the requests in flight when it was reached (one entry per
   request and shard), far less than the margin up to ``stream_maxlen`` (at least 10 %).
   MAXLEN trimming therefore never reaches a backlog entry; it stays as the hard bound on
   memory for what the workers cannot help: another consumer group stuck forever, say.

A poison entry (one whose events cannot be applied for a reason other than Redis being
unavailable) stays pending, is delivered again after ``claim_idle_ms``, and once delivered
``max_deliveries`` times goes to the dead-letter stream ``jg:events:{dead-letters}`` (with
the error, its stream and id) and is acknowledged; ``journeygate dead-letters`` lists and
requeues them. Until then it is the oldest entry its group needs, so trimming stops at it
for up to ``claim_idle_ms * (max_deliveries - 1)``: ``stream_maxlen`` should hold that many
minutes of traffic below the high-water mark, or ingestion pauses (503) meanwhile.

A Redis that restarts without its data (no persistence), or a stream or group deleted by
hand, leaves the workers without their consumer group: their reads fail with ``NOGROUP``
(:class:`GroupMissing`) and they create it again, from the stream's first entry, so that what
was added since (by the gateway's XADD, which creates the stream) is applied, not skipped.
Trimming refuses a stream without the group (NOGROUP too): it would trim up to what the other
groups need, below what the group created again reads.
"""

from __future__ import annotations

import asyncio
import re
import time
import zlib
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from journeygate.config import EventsConfig
from journeygate.store import StoreUnavailable, keys

# Trim one stream up to the oldest entry any consumer group still needs (see the module
# docstring). Atomic, so a group created meanwhile cannot lose entries. KEYS[1]: the stream;
# ARGV[1]: the workers' consumer group, without which nothing is trimmed (NOGROUP).
TRIM_SCRIPT = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return {tonumber(ms), tonumber(seq)}
end
local function older(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end
local missing = 'NOGROUP No consumer group ' .. ARGV[1] .. ' on ' .. KEYS[1]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply(missing)
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
local oldest, oldest_id, ours = nil, nil, false
for _, group in ipairs(groups) do
  local info = {}
  for i = 1, #group, 2 do
    info[group[i]] = group[i + 1]
  end
  ours = ours or info['name'] == ARGV[1]
  local needed_id = info['last-delivered-id']
  if info['pending'] > 0 then
    local first = redis.call('XPENDING', KEYS[1], info['name'])[2]
    if older(parse(first), parse(needed_id)) then
      needed_id = first
    end
  end
  if not oldest or older(parse(needed_id), oldest) then
    oldest, oldest_id = parse(needed_id), needed_id
  end
end
if not ours then
  return redis.error_reply(missing)
end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', oldest_id)
"""

# Fields every event in a stream entry has (journeygate.events.schema), with their types.
EVENT_FIELDS: Mapping[str, type | tuple[type, ...]] = {
    "id": str,
    "k": str,
    "v": str,
    "c": str,
    "t": (int, float),
    "r": (int, float),
}


# Dead letters read per round trip when an erasure looks for a visitor's (see
# EventStreams.forget_dead_letters).
DEAD_LETTER_PAGE = 500

# The fields of an event that name a visitor: its visitor id, user id, anonymous id.
VISITOR_FIELDS = ("v", "u", "a")


def _events_of_others(payload: bytes, visitor_ids: Collection[str]) -> list[Any] | None:
    """The events of a dead letter's payload that name none of ``visitor_ids``, or None
    when none of its events names one. An unreadable payload (that mentions one of the
    ids: the caller checked) gives an empty list: its events cannot be told apart, so it
    goes whole."""
    try:
        events = orjson.loads(payload)
    except ValueError:
        return []
    if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
        return []
    kept = [
        event
        for event in events
        if not any(
            isinstance(event.get(name), str) and event[name] in visitor_ids
            for name in VISITOR_FIELDS
        )
    ]
    return None if len(kept) == len(events) else kept


class GroupMissing(StoreUnavailable):
    """A stream command found no consumer group (``NOGROUP``): Redis lost its data, or the
    stream or group was deleted. The worker creates the groups again
    (:meth:`EventStreams.ensure_groups`); to anyone else it is Redis not being usable."""


class Backpressure(Exception):
    """Events refused because a stream shard's backlog passed the high-water mark."""

    def __init__(self, stream: str, backlog: int, high_water: int) -> None:
        super().__init__(f"{stream} holds {backlog} entries (high-water mark {high_water})")
        self.stream = stream


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry read by a worker: the events of one request for one shard, or the
    reason its payload is unreadable (``error``; then ``events`` is empty)."""

    stream: str
    entry_id: bytes
    events: list[dict[str, Any]]
    payload: bytes
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ShardBacklog:
    """What the consumer group has not acknowledged yet on one shard (XINFO GROUPS):
    ``pending`` entries were delivered to a worker, ``lag`` ones to none yet."""

    stream: str
    pending: int
    lag: int

    @property
    def backlog(self) -> int:
        return self.pending + self.lag


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry moved to the dead-letter stream."""

    dead_letter_id: str
    stream: str
    entry_id: str
    error: str
    deliveries: int
    consumer: str
    at: float
    payload: bytes


def decode_entry(stream: str, entry_id: bytes, payload: bytes) -> Entry:
    """The entry's events, or an entry carrying why they cannot be read."""
    try:
        events = orjson.loads(payload)
        if not isinstance(events, list):
            raise ValueError("the payload is not a JSON array")
        for index, event in enumerate(events):
            if not isinstance(event, dict):
                raise ValueError(f"event {index} is not an object")
            for name, kind in EVENT_FIELDS.items():
                if not isinstance(event.get(name), kind) or isinstance(event.get(name), bool):
                    raise ValueError(f"event {index}: field {name!r} is missing or mistyped")
    except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
        return Entry(stream, entry_id, [], payload, f"unreadable entry: {exc}")
    return Entry(stream, entry_id, events, payload)


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
        self.high_water = max(1, config.stream_maxlen * config.backlog_high_water_pct // 100)
        # each shard's length as last seen: its backlog (the workers trim the rest)
        self.backlog = [0] * len(self.names)
        self._backlog_read_at = 0.0
        self._backlog_lock = asyncio.Lock()
        self._trim_sha: str | None = None

    def shard(self, visitor_id: str) -> int:
        return zlib.crc32(visitor_id.encode()) % len(self.names)

    async def _execute(self, pipe: Any) -> list[Any]:
        """The pipeline's replies; its first error reply raised as :class:`GroupMissing`
        (NOGROUP) or :class:`StoreUnavailable`, the redis-py error as the cause. Replies are
        checked here, not by redis-py, which rewrites the message of the error it raises
        (the command first), so its code could not be read."""
        result = await self._replies(pipe)
        for reply in result:
            if isinstance(reply, ResponseError):
                error = GroupMissing if str(reply).startswith("NOGROUP") else StoreUnavailable
                raise error(f"redis: {reply.__class__.__name__}: {reply}") from reply
        return result

    async def _replies(self, pipe: Any) -> list[Any]:
        """The pipeline's replies, error replies included as exception objects; Redis out of
        reach (or slower than the timeout) raised as :class:`StoreUnavailable`."""
        try:
            async with asyncio.timeout(self.timeout_s):
                result: list[Any] = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis: {exc.__class__.__name__}: {exc}") from exc
        return result

    async def append(self, events: Sequence[tuple[str, bytes]]) -> None:
        """Add serialized events (visitor id, JSON) to their shards: one XADD per shard, one
        round trip. Returns once Redis has them; raises :class:`Backpressure` (nothing added)
        when a shard's backlog is at its high-water mark, :class:`StoreUnavailable` when Redis
        cannot be reached."""
        by_shard: dict[int, list[bytes]] = {}
        for visitor_id, encoded in events:
            by_shard.setdefault(self.shard(visitor_id), []).append(encoded)
        if any(self.backlog[shard] >= self.high_water for shard in by_shard):
            await self.refresh_backlog()
            for shard in by_shard:
                if self.backlog[shard] >= self.high_water:
                    raise Backpressure(self.names[shard], self.backlog[shard], self.high_water)
        pipe = self.client.pipeline(transaction=False)
        for shard, encoded_events in by_shard.items():
            payload = b"[" + b",".join(encoded_events) + b"]"
            pipe.execute_command(
                "XADD", self.names[shard], "MAXLEN", "~", self._maxlen, "*", "e", payload
            )
            pipe.xlen(self.names[shard])
        lengths = (await self._execute(pipe))[1::2]
        for shard, length in zip(by_shard, lengths, strict=True):
            self.backlog[shard] = int(length)

    async def refresh_backlog(self) -> None:
        """Read every shard's length again, at most once per ``backlog_refresh_ms`` however
        many requests ask at the same time."""
        async with self._backlog_lock:
            if time.monotonic() - self._backlog_read_at < self.config.backlog_refresh_ms / 1000:
                return
            pipe = self.client.pipeline(transaction=False)
            for name in self.names:
                pipe.xlen(name)
            self.backlog = [int(length) for length in await self._execute(pipe)]
            self._backlog_read_at = time.monotonic()

    # -- the worker's side ------------------------------------------------------------------

    async def ensure_groups(self) -> list[str]:
        """Create the consumer group on every shard where it is missing (and the stream, when
        missing too), from the stream's first entry; returns the shards it was created on.
        Workers may do this at the same time: the group one of them created is BUSYGROUP to
        the others, not an error."""
        pipe = self.client.pipeline(transaction=False)
        for name in self.names:
            pipe.xgroup_create(name, self.config.consumer_group, id="0", mkstream=True)
        results = await self._replies(pipe)
        created = []
        for name, result in zip(self.names, results, strict=True):
            if not isinstance(result, Exception):
                created.append(name)
            elif not str(result).startswith("BUSYGROUP"):
                raise StoreUnavailable(f"redis: {name}: {result}") from result
        return created

    @staticmethod
    def _entries(name: str, raw: Sequence[Any]) -> list[Entry]:
        entries = []
        for entry_id, fields in raw:
            if fields is None:
                continue  # deleted while pending (XAUTOCLAIM drops it from the group)
            entries.append(decode_entry(name, entry_id, fields.get(b"e", b"")))
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

    async def trim_acknowledged(self) -> int:
        """Trim from every shard the entries all consumer groups are done with (one
        pipelined round trip); returns how many were removed. :class:`GroupMissing` where a
        shard lacks the workers' group."""
        for attempt in range(2):
            if self._trim_sha is None or attempt:
                pipe = self.client.pipeline(transaction=False)
                pipe.script_load(TRIM_SCRIPT)
                (self._trim_sha,) = await self._execute(pipe)
            pipe = self.client.pipeline(transaction=False)
            for name in self.names:
                pipe.evalsha(self._trim_sha, 1, name, self.config.consumer_group)
            try:
                return sum(int(removed) for removed in await self._execute(pipe))
            except StoreUnavailable as exc:
                if not isinstance(exc.__cause__, NoScriptError):  # Redis lost it: load again
                    raise
        raise StoreUnavailable("redis: the trim script could not be loaded")  # pragma: no cover

    async def deliveries(self, entries: Sequence[Entry]) -> list[int]:
        """How many times each entry was delivered to the group (XPENDING), one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for entry in entries:
            pipe.xpending_range(
                entry.stream,
                self.config.consumer_group,
                min=entry.entry_id,
                max=entry.entry_id,
                count=1,
            )
        return [
            int(found[0]["times_delivered"]) if found else 0 for found in await self._execute(pipe)
        ]

    async def group_backlog(self) -> tuple[list[ShardBacklog], int]:
        """Every shard's backlog for the consumer group, and the dead letters waiting: one
        round trip (XINFO GROUPS and XLEN per shard, XLEN of the dead-letter stream). Where
        Redis cannot count the lag (an entry deleted from the middle of the stream), the
        stream's length stands in for the backlog (an upper bound: it also holds the few
        acknowledged entries trimming leaves); without the group, every entry is lag."""
        pipe = self.client.pipeline(transaction=False)
        for name in self.names:
            pipe.xinfo_groups(name)
            pipe.xlen(name)
        pipe.xlen(keys.DEAD_LETTER_STREAM)
        results = await self._replies(pipe)
        shards = []
        for index, name in enumerate(self.names):
            groups, length = results[2 * index], results[2 * index + 1]
            if isinstance(groups, ResponseError) and "no such key" in str(groups):
                groups = []  # the stream does not exist (yet): nothing to do
            for result in (groups, length):
                if isinstance(result, Exception):
                    raise StoreUnavailable(f"redis: {name}: {result}")
            group = next(
                (g for g in groups if g["name"].decode() == self.config.consumer_group), None
            )
            if group is None:
                shards.append(ShardBacklog(name, 0, int(length)))
                continue
            pending = int(group["pending"])
            lag = group["lag"]
            shards.append(
                ShardBacklog(
                    name, pending, int(lag) if lag is not None else max(0, length - pending)
                )
            )
        dead_letters = results[-1]
        if isinstance(dead_letters, Exception):
            raise StoreUnavailable(f"redis: {keys.DEAD_LETTER_STREAM}: {dead_letters}")
        return shards, int(dead_letters)

    async def dead_letter(self, entry: Entry, error: str, deliveries: int, consumer: str) -> None:
        """Move ``entry`` to the dead-letter stream, then acknowledge it (in that order, so a
        crash in between leaves a copy in both places rather than in neither)."""
        fields = {
            "stream": entry.stream,
            "id": entry.entry_id,
            "error": error[:2000],
            "deliveries": deliveries,
            "consumer": consumer,
            "at": f"{time.time():.3f}",
            "e": entry.payload,
        }
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(
            keys.DEAD_LETTER_STREAM,
            fields,  # type: ignore[arg-type]
            maxlen=self.config.dead_letter_maxlen,
            approximate=True,
        )
        pipe.xack(entry.stream, self.config.consumer_group, entry.entry_id)
        await self._execute(pipe)

    async def dead_letters(self, count: int) -> list[DeadLetter]:
        """The newest ``count`` dead letters, newest first."""
        pipe = self.client.pipeline(transaction=False)
        pipe.xrevrange(keys.DEAD_LETTER_STREAM, count=count)
        (raw,) = await self._execute(pipe)
        return [
            DeadLetter(
                dead_letter_id=entry_id.decode(),
                stream=fields[b"stream"].decode(),
                entry_id=fields[b"id"].decode(),
                error=fields[b"error"].decode(errors="replace"),
                deliveries=int(fields[b"deliveries"]),
                consumer=fields[b"consumer"].decode(errors="replace"),
                at=float(fields[b"at"]),
                payload=fields[b"e"],
            )
            for entry_id, fields in raw
        ]

    async def requeue(self, dead_letter_ids: Sequence[str]) -> list[str]:
        """Put dead letters back into the stream they came from (as new entries, which the
        workers apply like any other: already applied events are skipped), then delete them
        from the dead-letter stream. Returns the ids requeued (unknown ids are skipped).

        Requeued entries obey backpressure as ingestion does: when they would take a shard
        past its high-water mark, :class:`Backpressure` is raised and nothing is requeued
        (``MAXLEN`` trimming would otherwise drop entries no worker applied yet)."""
        pipe = self.client.pipeline(transaction=False)
        for dead_letter_id in dead_letter_ids:
            pipe.xrange(keys.DEAD_LETTER_STREAM, dead_letter_id, dead_letter_id, count=1)
        for name in self.names:
            pipe.xlen(name)
        replies = await self._execute(pipe)
        found = [
            (dead_letter_id, result[0][1])
            for dead_letter_id, result in zip(
                dead_letter_ids, replies[: len(dead_letter_ids)], strict=True
            )
            if result
        ]
        if not found:
            return []
        lengths = dict(zip(self.names, replies[len(dead_letter_ids) :], strict=True))
        adding = Counter(fields[b"stream"].decode() for _, fields in found)
        for name, count in adding.items():
            backlog = int(lengths.get(name, 0))
            if backlog + count > self.high_water:
                raise Backpressure(name, backlog, self.high_water)
        pipe = self.client.pipeline(transaction=False)
        for dead_letter_id, fields in found:
            pipe.execute_command(
                "XADD", fields[b"stream"], "MAXLEN", "~", self._maxlen, "*", "e", fields[b"e"]
            )
            pipe.xdel(keys.DEAD_LETTER_STREAM, dead_letter_id)
        await self._execute(pipe)
        return [dead_letter_id for dead_letter_id, _ in found]

    async def forget_dead_letters(self, visitor_ids: Collection[str]) -> int:
        """Remove the events of ``visitor_ids`` (as visitor, user or anonymous id) from the
        dead-letter stream, for an erasure; returns how many dead letters held any.

        The stream is bounded by ``dead_letter_maxlen`` (10,000 by default), so it is read
        whole, in pages of ``DEAD_LETTER_PAGE`` (one XRANGE round trip each): no index per
        visitor to keep in step. Only payloads that hold one of the ids as a JSON string are
        parsed, so a page costs the event loop little. A dead letter holding only these ids'
        events (or an unreadable payload naming one) is deleted; one that also holds other
        visitors' events is rewritten without them: a new entry with the same fields and the
        rest of its events (the ids named in its error replaced by ``(erased)``), and XDEL of
        the old, in one MULTI on the stream, so the others' events stay there to requeue
        (under the new dead-letter id)."""
        wanted = set(visitor_ids)
        if not wanted:
            return 0
        needles = [orjson.dumps(visitor_id) for visitor_id in wanted]
        # the ids where the error text names them, whole ("ID: reason" for a rejected
        # visitor; an id may hold ":", so a colon ends one only when no id character follows)
        named = re.compile(
            rb"(?<![\w.:@+-])(?:%b)(?![\w.@+-]|:[\w.:@+-])"
            % b"|".join(re.escape(visitor_id.encode()) for visitor_id in wanted)
        )
        removed, start = 0, "-"
        while True:
            pipe = self.client.pipeline(transaction=False)
            pipe.xrange(keys.DEAD_LETTER_STREAM, start, "+", count=DEAD_LETTER_PAGE)
            (page,) = await self._execute(pipe)
            deleted: list[bytes] = []
            for entry_id, fields in page:
                payload = fields.get(b"e", b"")
                if not any(needle in payload for needle in needles):
                    continue
                kept = _events_of_others(payload, wanted)
                if kept is None:
                    continue
                removed += 1
                if not kept:
                    deleted.append(entry_id)
                    continue
                rewrite = self.client.pipeline(transaction=True)
                error = named.sub(b"(erased)", fields.get(b"error", b""))
                rewrite.xadd(
                    keys.DEAD_LETTER_STREAM,
                    {**fields, b"error": error, b"e": orjson.dumps(kept)},
                    maxlen=self.config.dead_letter_maxlen,
                    approximate=True,
                )
                rewrite.xdel(keys.DEAD_LETTER_STREAM, entry_id)
                await self._execute(rewrite)
            if deleted:
                pipe = self.client.pipeline(transaction=False)
                pipe.xdel(keys.DEAD_LETTER_STREAM, *deleted)
                await self._execute(pipe)
            if len(page) < DEAD_LETTER_PAGE:
                return removed
            start = "(" + page[-1][0].decode()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                return bool(await self.client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        await self.client.aclose()
