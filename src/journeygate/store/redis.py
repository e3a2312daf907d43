"""Redis profile store: one connection pool, every request one pipelined round trip."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from journeygate.config import StoreConfig
from journeygate.model import StoredVisitor
from journeygate.store import keys
from journeygate.store.base import StoreUnavailable


class RedisProfileStore:
    """Profiles in Redis hashes and capped lists, every key with a TTL (see ``keys``)."""

    backend = "redis"

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self._timeout = config.timeout_ms / 1000
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            config.redis_url,
            decode_responses=True,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry_on_timeout=False,
        )

    async def _execute(self, pipe: Any) -> list[Any]:
        try:
            async with asyncio.timeout(self._timeout):
                result: list[Any] = await pipe.execute()
                return result
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis: {exc.__class__.__name__}: {exc}") from exc

    async def load_visitor(
        self, visitor_id: str, session_id: str | None, page_view: str | None = None
    ) -> StoredVisitor:
        cfg = self.config
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.profile(visitor_id))
        pipe.lrange(keys.views(visitor_id), 0, cfg.history_max - 1)
        if session_id:
            session_key = keys.session(visitor_id, session_id)
            session_views_key = keys.session_views(visitor_id, session_id)
            pipe.hget(session_key, "pages")
            pipe.lrange(session_views_key, 0, cfg.session_views_max - 1)
        if page_view:
            pipe.lpush(keys.views(visitor_id), page_view)
            pipe.ltrim(keys.views(visitor_id), 0, cfg.history_max - 1)
            pipe.expire(keys.views(visitor_id), cfg.profile_ttl_s)
        if session_id:
            now = time.time()
            pipe.hincrby(session_key, "pages", 1)
            pipe.hsetnx(session_key, "started", now)
            pipe.hset(session_key, "last", now)
            pipe.expire(session_key, cfg.session_ttl_s)
            if page_view:
                pipe.lpush(session_views_key, page_view)
                pipe.ltrim(session_views_key, 0, cfg.session_views_max - 1)
                pipe.expire(session_views_key, cfg.session_ttl_s)
            sessions_key = keys.sessions(visitor_id)
            pipe.zadd(sessions_key, {session_id: now})
            pipe.zremrangebyrank(sessions_key, 0, -cfg.history_max - 1)
            pipe.expire(sessions_key, cfg.profile_ttl_s)
        results = await self._execute(pipe)
        profile = {field: json.loads(value) for field, value in results[0].items()}
        return StoredVisitor(
            profile=profile,
            recent_views=tuple(results[1]),
            session_pages=int(results[2] or 0) if session_id else 0,
            session_views=tuple(results[3]) if session_id else (),
        )

    async def update_profile(self, visitor_id: str, fields: Mapping[str, Any]) -> None:
        if not fields:
            return
        key = keys.profile(visitor_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping={name: json.dumps(value) for name, value in fields.items()})
        pipe.expire(key, self.config.profile_ttl_s)
        await self._execute(pipe)

    async def get_profile(self, visitor_id: str) -> dict[str, Any] | None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.profile(visitor_id))
        (raw,) = await self._execute(pipe)
        return {field: json.loads(value) for field, value in raw.items()} or None

    async def delete_visitor(self, visitor_id: str) -> bool:
        pipe = self.client.pipeline(transaction=False)
        pipe.zrange(keys.sessions(visitor_id), 0, -1)
        (session_ids,) = await self._execute(pipe)
        doomed = [keys.profile(visitor_id), keys.views(visitor_id), keys.sessions(visitor_id)]
        for session_id in session_ids:
            doomed += [keys.session(visitor_id, session_id)]
            doomed += [keys.session_views(visitor_id, session_id)]
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(*doomed)
        (removed,) = await self._execute(pipe)
        return bool(removed)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                return bool(await self.client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        await self.client.aclose()
