"""Redis profile store: one connection pool, every request one round trip (a pipeline or
one Lua script over keys of a single hash slot)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from journeygate.config import StoreConfig
from journeygate.model import StoredVisitor
from journeygate.store import keys
from journeygate.store.base import StoreUnavailable

LOAD_VISITOR_LUA = (Path(__file__).parent / "load_visitor.lua").read_text(encoding="utf-8")


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
        self._load_script = self.client.register_script(LOAD_VISITOR_LUA)

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
        session = session_id or ""
        try:
            async with asyncio.timeout(self._timeout):
                profile, views, pages, session_views = await self._load_script(
                    keys=[
                        keys.profile(visitor_id),
                        keys.views(visitor_id),
                        keys.session(visitor_id, session),
                        keys.session_views(visitor_id, session),
                        keys.sessions(visitor_id),
                    ],
                    args=[
                        cfg.history_max,
                        cfg.session_views_max,
                        cfg.profile_ttl_s,
                        cfg.session_ttl_s,
                        page_view or "",
                        session,
                        time.time(),
                    ],
                )
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis: {exc.__class__.__name__}: {exc}") from exc
        return StoredVisitor(
            profile={profile[i]: json.loads(profile[i + 1]) for i in range(0, len(profile), 2)},
            recent_views=tuple(views),
            session_pages=int(pages or 0),
            session_views=tuple(session_views),
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
