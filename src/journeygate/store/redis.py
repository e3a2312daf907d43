"""Redis profile store: one connection pool, every request one round trip (a pipeline or
one Lua script over keys of a single hash slot), and the calls of concurrent requests sent
together (``journeygate.store.batching``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import hiredis
import orjson
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from journeygate.config import EventsConfig, StoreConfig
from journeygate.model import StoredVisitor
from journeygate.store import keys
from journeygate.store.base import (
    Applied,
    MergeStart,
    RawVisitor,
    StageTransition,
    StoreUnavailable,
    erasure_time,
    floor_ms,
    past_erasure,
)
from journeygate.store.batching import Command, CommandBatcher
from journeygate.store.decay import DecayedScore
from journeygate.store.scripting import script_sha
from journeygate.store.scripts import (
    BEGIN_MERGE_SCRIPT,
    BLEND_SCRIPT,
    ERASE_SCRIPT,
    EVENTS_SCRIPT,
    LINK_MERGE_SCRIPT,
    LOAD_VISITOR_SCRIPT,
    MERGE_LATEST_SCRIPT,
    RECORD_TIMES_SCRIPT,
    STAGE_SCRIPT,
)

MAX_ALIAS_DEPTH = 4


class _HiredisPacking:
    """Packs commands with hiredis, as redis-py's synchronous client does; its asyncio
    connections pack them in Python (10 µs for the 16 arguments of the decide script's
    EVALSHA against 1 µs, on every decision). The bytes are the same.

    Straight to ``hiredis.pack_command`` when the command name is one word (redis-py's
    serializer first splits "SCRIPT LOAD" and converts buffers, a pass over every argument
    that cost more than the packing); anything else, or an argument hiredis refuses, goes
    through the serializer, whose error names the argument."""

    _serializer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        if type(name) is str and " " not in name:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        packed: list[bytes] = self._serializer.pack(*args)
        return packed


def _with_hiredis_packing(client: aioredis.Redis) -> aioredis.Redis:
    """``client``, its pool making connections of its own class (plain, TLS or Unix socket,
    as the URL chose) that pack with hiredis."""
    pool = client.connection_pool
    base: type[AbstractConnection] = pool.connection_class
    pool.connection_class = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})
    return client


class RedisProfileStore:
    """Profiles in Redis hashes and capped lists, every key with a TTL (see ``keys``)."""

    backend = "redis"

    def __init__(self, config: StoreConfig, events: EventsConfig | None = None) -> None:
        self.config = config
        self.events = events or EventsConfig()
        self._timeout = config.timeout_ms / 1000
        self.client: aioredis.Redis = _with_hiredis_packing(
            aioredis.Redis.from_url(
                config.redis_url,
                decode_responses=True,
                # Every call below runs under asyncio.timeout(self._timeout), which bounds
                # the whole call (pool, send, reply). A socket timeout on top would cost
                # each call a task (asyncio.wait_for around the send) and a second timer.
                socket_timeout=None,
                socket_connect_timeout=self._timeout,
                retry_on_timeout=False,
                # A pooled connection that died with a Redis restart is replaced once, at once,
                # instead of failing the first request after the restart.
                retry=Retry(NoBackoff(), 1),
                retry_on_error=[RedisConnectionError],
                # No CLIENT SETINFO handshake: a connection dropped by a timed-out call (redis-py
                # closes it rather than read a late reply) is replaced with a bare connect, no
                # extra round trip, which matters when a loaded gateway drops several at once.
                driver_info=None,
            )
        )
        self._batcher = CommandBatcher(self.client, self._timeout)

    async def _execute(self, pipe: Any, raise_on_error: bool = True) -> list[Any]:
        """Send the commands recorded in ``pipe`` (a redis-py pipeline used as a recorder)
        together with the other calls of this loop iteration (see ``batching``)."""
        replies = await self._batcher.execute(pipe.command_stack)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise StoreUnavailable(f"redis: {reply.__class__.__name__}: {reply}")
        return replies

    async def load_visitor(
        self, visitor_id: str, session_id: str | None, page_view: str | None = None
    ) -> StoredVisitor:
        cfg = self.config
        session = session_id or ""
        profile_id = visitor_id
        for _ in range(MAX_ALIAS_DEPTH):
            result = await self._eval(
                LOAD_VISITOR_SCRIPT,
                (
                    keys.profile(profile_id),
                    keys.views(profile_id),
                    keys.session(profile_id, session),
                    keys.session_views(profile_id, session),
                    keys.sessions(profile_id),
                    keys.visitor_key(profile_id, "alias"),
                    keys.visitor_key(profile_id, "consents"),
                ),
                (
                    cfg.history_max,
                    cfg.session_views_max,
                    cfg.profile_ttl_s,
                    cfg.session_ttl_s,
                    page_view or "",
                    session,
                    time.time(),
                ),
            )
            if len(result) == 1:  # merged into another profile: load that one
                profile_id = result[0]
                continue
            profile, views, pages, session_views, consents = result
            return StoredVisitor(
                profile={profile[i]: _field(profile[i + 1]) for i in range(0, len(profile), 2)},
                recent_views=tuple(views),
                session_pages=int(pages or 0),
                session_views=tuple(session_views),
                # each consent is stored as "1|<event time>" (granted) or "0|<event time>"
                consents={
                    consents[i]: consents[i + 1][0] == "1" for i in range(0, len(consents), 2)
                },
                profile_id=profile_id if profile_id != visitor_id else None,
            )
        raise StoreUnavailable(f"redis: alias chain of {visitor_id!r} is too long")

    async def update_profile(self, visitor_id: str, fields: Mapping[str, Any]) -> None:
        if not fields:
            return
        key = keys.profile(visitor_id)
        pipe = self.client.pipeline(transaction=False)  # sent together, in one write
        pipe.hset(key, mapping={name: json.dumps(value) for name, value in fields.items()})
        pipe.expire(key, self.config.profile_ttl_s)
        await self._execute(pipe)

    async def update_profiles(self, updates: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """One pipelined round trip (not a transaction: each visitor's keys are its own slot)."""
        pipe = self.client.pipeline(transaction=False)
        for visitor_id, fields in updates:
            if fields:
                key = keys.profile(visitor_id)
                pipe.hset(key, mapping={name: json.dumps(value) for name, value in fields.items()})
                pipe.expire(key, self.config.profile_ttl_s)
        if len(pipe):
            await self._execute(pipe)

    async def blend_score(self, visitor_id: str, score: DecayedScore) -> None:
        """One Lua call on the visitor's slot (and one more per merge it follows)."""
        encoded = _encoded(score)
        for _ in range(MAX_ALIAS_DEPTH):
            merged_into = await self._eval(
                BLEND_SCRIPT,
                keys.visitor_keys(visitor_id, ("profile", "alias")),
                (encoded, self.config.profile_ttl_s),
            )
            if not merged_into:
                return
            visitor_id = merged_into[0]
        raise StoreUnavailable(f"redis: alias chain of {visitor_id!r} is too long")

    async def record_times(
        self,
        visitor_id: str,
        field: str,
        names: Sequence[str],
        at: float,
        window_s: float,
        keep: int,
    ) -> None:
        """One Lua call on the visitor's profile hash."""
        if not names:
            return
        await self._eval(
            RECORD_TIMES_SCRIPT,
            (keys.profile(visitor_id),),
            (field, floor_ms(at), window_s, keep, self.config.profile_ttl_s, *names),
        )

    async def merge_latest(self, visitor_id: str, field: str, times: Mapping[str, float]) -> None:
        """One Lua call on the visitor's profile hash."""
        if not times:
            return
        pairs = [value for name, at in times.items() for value in (name, repr(float(at)))]
        await self._eval(
            MERGE_LATEST_SCRIPT,
            (keys.profile(visitor_id),),
            (field, self.config.profile_ttl_s, *pairs),
        )

    async def get_profile(self, visitor_id: str) -> dict[str, Any] | None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.profile(visitor_id))
        (raw,) = await self._execute(pipe)
        return {field: _field(value) for field, value in raw.items()} or None

    async def delete_visitor(self, visitor_id: str) -> bool:
        """Erase the visitor (one Lua call on its slot), then every id merged into it."""
        pending, removed, done = [visitor_id], 0, set()
        while pending:
            current = pending.pop()
            done.add(current)
            await self._erase_transitions(current)
            erased_at = erasure_time()
            count, aliases = await self._eval(
                ERASE_SCRIPT,
                self._erase_keys(current),
                ("erase", erased_at, self.events.erasure_ttl_s),
            )
            removed += int(count)
            pending += [alias for alias in aliases if alias not in done]
        await past_erasure(erased_at)  # the last id's tombstone is the latest
        return removed > 0

    async def merged_ids(self, visitor_id: str) -> list[str]:
        """One SMEMBERS round trip per generation of merges (usually one)."""
        found: list[str] = []
        level = [visitor_id]
        while level:
            pipe = self.client.pipeline(transaction=False)
            for current in level:
                pipe.smembers(keys.visitor_key(current, "aliases"))
            replies = await self._execute(pipe)
            level = []
            for aliases in replies:
                for alias in sorted(aliases):
                    if alias != visitor_id and alias not in found:
                        found.append(alias)
                        level.append(alias)
        return found

    # -- events (see keys.py for what each key holds) ---------------------------------------

    async def _load(self, script: str) -> None:
        """Load ``script`` into Redis, which lost it (a restart, ``SCRIPT FLUSH``)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.script_load(script)
        await self._execute(pipe)

    async def _erase_transitions(self, visitor_id: str) -> None:
        """Delete the visitor's entries from the global transitions stream (their ids are in
        the visitor's stage history)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.lrange(keys.stages(visitor_id), 0, -1)
        (history,) = await self._execute(pipe)
        entry_ids = [json.loads(raw).get("entry") for raw in history]
        if any(entry_ids):
            pipe = self.client.pipeline(transaction=False)
            pipe.xdel(keys.JOURNEY_TRANSITIONS, *filter(None, entry_ids))
            await self._execute(pipe)

    @staticmethod
    def _erase_keys(visitor_id: str) -> list[str]:
        return [
            *keys.visitor_keys(visitor_id, keys.ERASE_SCRIPT_KEYS),
            keys.event_session_prefix(visitor_id),
            keys.session_prefix(visitor_id),
        ]

    async def _eval(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a Lua script with one EVALSHA (loading it when Redis does not have it)."""
        for attempt in range(2):
            if attempt:
                await self._load(script)
            command: Command = (("EVALSHA", script_sha(script), len(keys), *keys, *args), {})
            (reply,) = await self._batcher.execute([command])
            if isinstance(reply, NoScriptError):
                continue  # Redis restarted or flushed its scripts: load it again
            if isinstance(reply, Exception):
                raise StoreUnavailable(f"redis: {reply.__class__.__name__}: {reply}")
            return reply
        raise StoreUnavailable("redis: the script could not be loaded")  # pragma: no cover

    def _event_settings(self) -> bytes:
        cfg = self.events
        return orjson.dumps(
            {
                "now": time.time(),
                "gap": cfg.session_gap_s,
                "items": cfg.session_items_max,
                "sessions": cfg.sessions_max,
                "session_ttl": cfg.session_retention_s,
                "categories": cfg.categories_max,
                "purchased": cfg.purchased_max,
                "orders": cfg.orders_max,
                "dedupe_ttl": cfg.dedupe_ttl_s,
                "dedupe_max": cfg.dedupe_max,
                "log_max": cfg.anonymous_log_max,
                "profile_ttl": self.config.profile_ttl_s,
            }
        )

    async def apply_events(
        self, batches: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]
    ) -> list[Applied]:
        """One Lua call per visitor (atomic on its slot), all in one pipelined round trip."""
        if not batches:
            return []
        settings = self._event_settings()
        payloads = [
            (visitor_id, [orjson.dumps(event) for event in events])
            for visitor_id, events in batches
        ]
        sha = script_sha(EVENTS_SCRIPT)
        for attempt in range(2):
            if attempt:
                await self._load(EVENTS_SCRIPT)
            pipe = self.client.pipeline(transaction=False)
            for visitor_id, encoded in payloads:
                script_keys = keys.visitor_keys(visitor_id, keys.EVENT_SCRIPT_KEYS)
                script_keys.append(keys.event_session_prefix(visitor_id))
                pipe.evalsha(sha, len(script_keys), *script_keys, settings, *encoded)
            results = await self._execute(pipe, raise_on_error=False)
            if any(isinstance(result, NoScriptError) for result in results):
                continue  # applying again is safe: every event is applied once
            for result in results:
                if isinstance(result, Exception) and not _rejects_events(result):
                    raise StoreUnavailable(f"redis: {result.__class__.__name__}: {result}")
            return [
                Applied(visitor_id, error=str(result))
                if isinstance(result, Exception)
                else Applied(visitor_id, redirect=result[1:])
                if result.startswith("@")
                else Applied(
                    visitor_id,
                    flags=tuple(flag == "1" for flag in result),
                    duplicates=tuple(flag == "0" for flag in result),
                )
                for (visitor_id, _), result in zip(payloads, results, strict=True)
            ]
        raise StoreUnavailable("redis: the events script could not be loaded")  # pragma: no cover

    async def resolve_visitor(self, visitor_id: str) -> str:
        for _ in range(MAX_ALIAS_DEPTH):
            pipe = self.client.pipeline(transaction=False)
            pipe.get(keys.visitor_key(visitor_id, "alias"))
            (target,) = await self._execute(pipe)
            if not target:
                break
            visitor_id = target
        return visitor_id

    async def begin_merge(self, anonymous_id: str, user_id: str, received: float) -> MergeStart:
        status, value = await self._eval(
            BEGIN_MERGE_SCRIPT,
            keys.visitor_keys(anonymous_id, ("alias", "log", "erased")),
            (user_id, self.config.profile_ttl_s, received),
        )
        if status == "erased":
            return MergeStart(erased=True)
        if status == "conflict":
            return MergeStart(merged_into=value)
        return MergeStart(events=[orjson.loads(raw) for raw in reversed(value)])

    async def finish_merge(
        self,
        anonymous_id: str,
        user_id: str,
        received: float,
        scores: Sequence[DecayedScore] = (),
    ) -> None:
        linked = await self._eval(
            LINK_MERGE_SCRIPT,
            keys.visitor_keys(user_id, ("aliases", "erased", "profile")),
            (anonymous_id, self.config.profile_ttl_s, received, *map(_encoded, scores)),
        )
        if not int(linked):
            await self.delete_visitor(anonymous_id)
            return
        await self._eval(ERASE_SCRIPT, self._erase_keys(anonymous_id), ("merged",))

    async def load_events_profile(self, visitor_id: str) -> RawVisitor | None:
        """What the worker built for ``visitor_id`` (two round trips), or None."""
        v = visitor_id
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.profile(v))
        pipe.hgetall(keys.visitor_key(v, "channels"))
        pipe.zrevrange(keys.visitor_key(v, "categories"), 0, -1, withscores=True)
        pipe.zrevrange(keys.visitor_key(v, "purchased"), 0, -1, withscores=True)
        pipe.hgetall(keys.visitor_key(v, "consents"))
        pipe.hgetall(keys.visitor_key(v, "cart"))
        pipe.smembers(keys.visitor_key(v, "aliases"))
        pipe.zrevrange(keys.visitor_key(v, "esessions"), 0, -1)
        (
            profile,
            channels,
            categories,
            purchased,
            consents,
            cart,
            aliases,
            session_ids,
        ) = await self._execute(pipe)
        if not profile and not session_ids and not cart:
            return None
        pipe = self.client.pipeline(transaction=False)
        for sid in session_ids:
            pipe.hgetall(keys.event_session(v, sid))
            pipe.zrevrange(keys.event_session(v, sid, ":products"), 0, -1, withscores=True)
            pipe.zrevrange(keys.event_session(v, sid, ":categories"), 0, -1, withscores=True)
            pipe.zrange(keys.event_session(v, sid, ":pages"), 0, -1, withscores=True)
            pipe.lrange(keys.event_session(v, sid, ":searches"), 0, -1)
        results = await self._execute(pipe) if session_ids else []
        sessions = []
        for index, sid in enumerate(session_ids):
            fields, products, session_categories, pages, searches = results[
                5 * index : 5 * index + 5
            ]
            if not fields:
                continue  # expired
            sessions.append(
                {
                    "id": sid,
                    "fields": {name: float(value) for name, value in fields.items()},
                    "products": products,
                    "categories": session_categories,
                    "pages": [(member.split("\t")[:2], at) for member, at in pages],
                    "searches": searches,
                }
            )
        parsed_consents = {}
        for name, value in consents.items():
            granted, _, at = value.partition("|")
            parsed_consents[name] = (granted == "1", float(at))
        return RawVisitor(
            profile={name: _field(value) for name, value in profile.items()},
            channels={name: int(count) for name, count in channels.items()},
            categories=categories,
            purchased=purchased,
            consents=parsed_consents,
            cart=_cart(cart),
            aliases=sorted(aliases),
            sessions=sessions,
        )

    async def record_stage(
        self, visitor_id: str, stage: str, at: float, decision_id: str
    ) -> StageTransition | None:
        """The compare-and-set on the visitor's slot; only when the stage changed (a few times
        in a visitor's life), the entry in the global stream, then the visitor's history entry
        that remembers the stream entry's id (so that an erasure can delete it)."""
        at = round(at, 3)
        result = await self._eval(
            STAGE_SCRIPT,
            (keys.profile(visitor_id),),
            (json.dumps(stage), f"{at:.3f}", self.config.profile_ttl_s),
        )
        if not result:
            return None
        before = json.loads(result[0]) if result[0] else None
        transition = StageTransition(
            visitor_id, before if isinstance(before, str) else None, stage, at, decision_id
        )
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(
            keys.JOURNEY_TRANSITIONS,
            {
                "v": visitor_id,
                "from": transition.from_stage or "",
                "to": stage,
                "at": f"{at:.3f}",
                "d": decision_id,
            },
            maxlen=self.events.transitions_maxlen,
            approximate=True,
        )
        (entry_id,) = await self._execute(pipe)
        history = keys.stages(visitor_id)
        record = {"from": transition.from_stage, "to": stage, "at": at, "decision_id": decision_id}
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(history, json.dumps(record | {"entry": entry_id}))
        pipe.ltrim(history, 0, self.events.stage_history_max - 1)
        pipe.expire(history, self.config.profile_ttl_s)
        await self._execute(pipe)
        return transition

    async def journey_transitions(
        self, since: float, until: float, limit: int
    ) -> list[StageTransition]:
        """XRANGE over the stream ids (recording times, in ms), in pages."""
        transitions: list[StageTransition] = []
        start, end = str(int(since * 1000)), str(int(until * 1000))
        while len(transitions) < limit:
            pipe = self.client.pipeline(transaction=False)
            pipe.xrange(
                keys.JOURNEY_TRANSITIONS, start, end, count=min(5000, limit - len(transitions))
            )
            (page,) = await self._execute(pipe)
            transitions += [
                StageTransition(
                    fields["v"],
                    fields["from"] or None,
                    fields["to"],
                    float(fields["at"]),
                    fields["d"],
                )
                for _, fields in page
            ]
            if len(page) < 5000:
                break
            start = "(" + page[-1][0]
        return transitions

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                return bool(await self.client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        await self._batcher.aclose()
        await self.client.aclose()


# Errors of Redis itself (out of memory, a failover, a busy script, cluster resharding): the
# events are fine, the store is not; anything else a script raises is about the events.
UNAVAILABLE_ERRORS = (
    "OOM",
    "READONLY",
    "BUSY",
    "LOADING",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "MISCONF",
    "NOREPLICAS",
    "MOVED",
    "ASK",
)


def _rejects_events(error: Exception) -> bool:
    """True when the events script failed because of the events it was given."""
    message = str(error)
    return (
        isinstance(error, ResponseError)
        and not isinstance(error, NoScriptError)
        and ("INVALIDEVENT" in message or "user_script" in message)
        and not message.startswith(UNAVAILABLE_ERRORS)
    )


def _encoded(score: DecayedScore) -> bytes:
    """A score as ``BLEND_FUNCTION`` reads it; its detail fields as JSON text, as profile
    fields are stored."""
    details = {name: json.dumps(value) for name, value in score.details.items()}
    return orjson.dumps(
        {"f": score.field, "v": score.value, "t": score.at, "h": score.half_life_s, "d": details}
    )


def _cart(raw: Mapping[str, str]) -> dict[str, tuple[int, float | None]]:
    """``q:PID`` quantities and ``p:PID`` prices: the products with a positive quantity."""
    cart: dict[str, tuple[int, float | None]] = {}
    for name, value in raw.items():
        if name.startswith("q:") and int(value) > 0:
            price = raw.get("p:" + name[2:])
            cart[name[2:]] = (int(value), float(price) if price is not None else None)
    return cart


def _field(value: str) -> Any:
    """One profile field's JSON value: orjson (read on every decision, about three times
    faster), the standard parser for what orjson refuses (NaN, integers over 64 bits)."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return json.loads(value)
