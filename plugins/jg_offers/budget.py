"""Offer budgets: total redemptions per offer, counted from events, read without I/O.

With Redis, redemptions are zsets shared by every gateway and worker process
(``jg:offer:{OFFER_ID}:redemptions``, see ``journeygate.store.keys``): whoever observes the
event adds it, and each gateway refreshes the counts its request path reads in the
background, every ``budget_refresh_s`` (one pipelined round trip), so a decision never waits
on Redis for a budget. Without Redis, events are applied in the gateway process and the
counts are kept there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from journeygate.store import keys

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 1.0


class Redemptions:
    """Redemption counts of the offers that have a budget (``offer id -> budget``)."""

    def __init__(self, budgets: Mapping[str, int], redis_url: str | None, ttl_s: int) -> None:
        self.budgets = dict(budgets)
        self.ttl_s = ttl_s
        self._counts: dict[str, int] = dict.fromkeys(self.budgets, 0)
        self._members: dict[str, dict[str, float]] = {offer_id: {} for offer_id in self.budgets}
        self._client: aioredis.Redis | None = None
        if redis_url and self.budgets:
            self._client = aioredis.Redis.from_url(
                redis_url,
                decode_responses=True,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
            )
        self._refresher: asyncio.Task[None] | None = None

    def count(self, offer_id: str) -> int:
        """Redemptions counted so far (as of the last refresh with Redis). No I/O."""
        return self._counts.get(offer_id, 0)

    async def record(self, offer_id: str, redemption_id: str, at: float) -> None:
        """Count one redemption of ``offer_id``; the same ``redemption_id`` counts once."""
        budget = self.budgets.get(offer_id)
        if budget is None:
            return
        if self._client is None:
            members = self._members[offer_id]
            if redemption_id not in members and len(members) < budget:
                members[redemption_id] = at
            self._counts[offer_id] = len(members)
            return
        key = keys.offer_redemptions(offer_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {redemption_id: at}, nx=True)
            pipe.zremrangebyrank(key, 0, -budget - 1)  # past the budget, only the count matters
            pipe.expire(key, self.ttl_s)
            pipe.zcard(key)
            *_, count = await pipe.execute()
        self._counts[offer_id] = min(int(count), budget)

    async def refresh(self) -> None:
        """Read every budgeted offer's count in one round trip (Redis only)."""
        if self._client is None:
            return
        offer_ids = list(self.budgets)
        async with self._client.pipeline(transaction=False) as pipe:
            for offer_id in offer_ids:
                pipe.zcard(keys.offer_redemptions(offer_id))
            counts = await pipe.execute()
        for offer_id, count in zip(offer_ids, counts, strict=True):
            self._counts[offer_id] = min(int(count), self.budgets[offer_id])

    async def start(self, interval_s: float) -> None:
        """Read the counts once, then keep them fresh in the background."""
        if self._client is None:
            return
        try:
            await self.refresh()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("offer budgets: redis unavailable, counting from 0 for now: %s", exc)
        self._refresher = asyncio.create_task(self._refresh_every(interval_s))

    async def _refresh_every(self, interval_s: float) -> None:
        task = asyncio.current_task()
        failing = False
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
                failing = False
            except (RedisError, OSError, TimeoutError) as exc:
                if not failing:  # log when it starts failing, not on every interval
                    log.warning("offer budgets: refresh failed, keeping the last counts: %s", exc)
                failing = True
            if task is not None and task.cancelling():
                # close() cancelled the refresh, and the Redis client swallowed it: Python
                # 3.11's asyncio.wait_for (redis-py's socket timeout) returns a reply that
                # arrived with the cancellation. Stop anyway, or close() waits forever.
                raise asyncio.CancelledError

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._client is not None:
            await self._client.aclose()
