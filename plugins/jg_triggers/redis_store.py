"""The trigger store in Redis, shared by every worker (observers, schedulers) and gateway
(erasures, ``journeygate triggers log``). Keys: ``journeygate.store.keys`` (``trigger_*``);
scripts: :mod:`jg_triggers.scripts`. Every key has a TTL or a bound: visitor keys expire
``state_ttl_s`` after their last write, the log is trimmed to ``log_maxlen``, a timer shard
holds at most ``max_timers_per_shard`` timers and every timer leaves it when it fires."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from jg_triggers import scripts
from jg_triggers.store import (
    Claimed,
    GuardCheck,
    GuardResult,
    LogRecord,
    StateWrite,
    TimerEntry,
    VisitorState,
    shard_of,
)
from journeygate.store import keys
from journeygate.store.scripting import ScriptedPipelines

SCRIPTS = (
    scripts.SAVE_STATE,
    scripts.SET_TIMERS,
    scripts.CANCEL_TIMERS,
    scripts.CLAIM,
    scripts.FINISH,
    scripts.GUARD,
)

# A visitor's timer ids are only needed to erase its timers: ids of timers due longer ago
# than this have fired (or will be dropped when they do: an erased visitor has no state).
TIMER_IDS_GRACE_S = 86400.0
TIMER_IDS_KEPT = 1000
LOG_IDS_KEPT = 200


class RedisTriggerStore:
    """See :class:`jg_triggers.store.TriggerStore`."""

    def __init__(self, url: str, shards: int, max_timers_per_shard: int, timeout_s: float) -> None:
        self.shards = shards
        self.max_timers_per_shard = max_timers_per_shard
        self.timeout_s = timeout_s
        client = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        self.pipelines = ScriptedPipelines(client, SCRIPTS, timeout_s)
        self._run = self.pipelines.run

    def _eval(self, pipe: Any, script: str, keys: Sequence[str], args: Sequence[Any]) -> None:
        pipe.evalsha(self.pipelines.sha(script), len(keys), *keys, *args)

    def _shard_keys(self, shard: int) -> list[str]:
        return [keys.trigger_due(shard), keys.trigger_timers(shard)]

    # -- visitor state ---------------------------------------------------------------------

    async def load_states(self, visitor_ids: Sequence[str]) -> list[VisitorState]:
        def build(pipe: Any) -> None:
            for visitor_id in visitor_ids:
                pipe.hgetall(keys.trigger_state(visitor_id))

        states = []
        for raw in await self._run(build):
            version = int(raw.pop("version", 0))
            fields = {name: orjson.loads(value) for name, value in raw.items()}
            states.append(VisitorState(fields, version))
        return states

    async def save_states(self, writes: Sequence[StateWrite], ttl_s: float) -> list[bool]:
        if not writes:
            return []

        def build(pipe: Any) -> None:
            for write in writes:
                args: list[Any] = [write.version, int(ttl_s * 1000), len(write.fields)]
                for name, value in write.fields.items():
                    args += [name, orjson.dumps(value)]
                args += [len(write.delete), *write.delete]
                state = [keys.trigger_state(write.visitor)]
                self._eval(pipe, scripts.SAVE_STATE, state, args)

        return [bool(done) for done in await self._run(build)]

    # -- timers ----------------------------------------------------------------------------

    async def update_timers(
        self,
        timers: Sequence[TimerEntry],
        cancel: Sequence[tuple[str, str, str]],
        ttl_s: float,
    ) -> int:
        if not timers and not cancel:
            return 0
        now = time.time()
        cancelled: dict[int, list[str]] = defaultdict(list)
        for visitor_id, trigger, key in cancel:
            timer_id = TimerEntry(visitor_id, trigger, key, 0.0).id
            cancelled[shard_of(visitor_id, self.shards)].append(timer_id)
        by_shard: dict[int, list[Any]] = defaultdict(list)
        by_visitor: dict[str, dict[str, float]] = defaultdict(dict)
        for timer in timers:
            shard = shard_of(timer.visitor, self.shards)
            by_shard[shard] += [timer.id, repr(timer.due), timer.encode()]
            by_visitor[timer.visitor][timer.id] = timer.due

        def build(pipe: Any) -> None:
            for shard, ids in cancelled.items():
                self._eval(pipe, scripts.CANCEL_TIMERS, self._shard_keys(shard), ids)
            for visitor_id, trigger, key in cancel:
                timer_id = TimerEntry(visitor_id, trigger, key, 0.0).id
                pipe.zrem(keys.trigger_timer_ids(visitor_id), timer_id)
            for shard, entries in by_shard.items():
                args = [self.max_timers_per_shard, *entries]
                self._eval(pipe, scripts.SET_TIMERS, self._shard_keys(shard), args)
            for visitor_id, due in by_visitor.items():
                index = keys.trigger_timer_ids(visitor_id)
                pipe.zadd(index, due)
                pipe.zremrangebyscore(index, "-inf", now - TIMER_IDS_GRACE_S)
                pipe.zremrangebyrank(index, 0, -TIMER_IDS_KEPT - 1)
                pipe.pexpire(index, int(ttl_s * 1000))

        replies = await self._run(build)
        first = len(cancelled) + len(cancel)
        return sum(int(refused) for refused in replies[first : first + len(by_shard)])

    async def claim(self, now: float, lease_until: float, limit: int) -> list[Claimed]:
        args = [repr(now), repr(lease_until), limit]

        def build(pipe: Any) -> None:
            for shard in range(self.shards):
                self._eval(pipe, scripts.CLAIM, self._shard_keys(shard), args)

        replies = await self._run(build)
        return [
            Claimed(TimerEntry.decode(reply[i + 1]), lease_until)
            for reply in replies
            for i in range(0, len(reply), 2)
        ]

    async def finish(self, claimed: Sequence[Claimed]) -> None:
        if not claimed:
            return
        groups: dict[tuple[int, float], list[str]] = defaultdict(list)
        for held in claimed:
            groups[(shard_of(held.timer.visitor, self.shards), held.lease)].append(held.timer.id)

        def build(pipe: Any) -> None:
            for (shard, lease), ids in groups.items():
                args = [repr(lease), *ids]
                self._eval(pipe, scripts.FINISH, self._shard_keys(shard), args)

        await self._run(build)

    # -- guardrails and the log ------------------------------------------------------------

    async def guard(self, check: GuardCheck) -> GuardResult:
        args = [
            check.occurrence,
            check.trigger,
            check.action,
            repr(check.now),
            repr(check.debounce_s),
            check.cap_count,
            repr(check.cap_window_s),
            repr(check.keep_s),
            check.fires_kept,
            int(check.ttl_s * 1000),
        ]
        state = [keys.trigger_state(check.visitor)]
        ((outcome, last),) = await self._run(
            lambda pipe: self._eval(pipe, scripts.GUARD, state, args)
        )
        return GuardResult(outcome, orjson.loads(last))

    async def log(self, records: Sequence[LogRecord], maxlen: int, ttl_s: float) -> None:
        if not records:
            return

        def entries(pipe: Any) -> None:
            for record in records:
                pipe.xadd(keys.TRIGGER_LOG, record.fields(), maxlen=maxlen, approximate=True)

        entry_ids = await self._run(entries)

        def ids(pipe: Any) -> None:
            for record, entry_id in zip(records, entry_ids, strict=True):
                key = keys.trigger_log_ids(record.visitor)
                pipe.lpush(key, entry_id)
                pipe.ltrim(key, 0, LOG_IDS_KEPT - 1)
                pipe.pexpire(key, int(ttl_s * 1000))

        await self._run(ids)

    async def read_log(self, count: int) -> list[LogRecord]:
        (entries,) = await self._run(lambda pipe: pipe.xrevrange(keys.TRIGGER_LOG, count=count))
        return [LogRecord.from_fields(entry_id, fields) for entry_id, fields in entries]

    # -- erasure ---------------------------------------------------------------------------

    async def forget(self, visitor_ids: Sequence[str]) -> dict[str, int]:
        def lookup(pipe: Any) -> None:
            for visitor_id in visitor_ids:
                pipe.zrange(keys.trigger_timer_ids(visitor_id), 0, -1)
                pipe.lrange(keys.trigger_log_ids(visitor_id), 0, -1)

        found = await self._run(lookup)
        by_shard: dict[int, list[str]] = defaultdict(list)
        entry_ids: list[str] = []
        for index, visitor_id in enumerate(visitor_ids):
            by_shard[shard_of(visitor_id, self.shards)] += found[2 * index]
            entry_ids += found[2 * index + 1]
        shards = [shard for shard, ids in by_shard.items() if ids]

        def erase(pipe: Any) -> None:
            for shard in shards:
                self._eval(pipe, scripts.CANCEL_TIMERS, self._shard_keys(shard), by_shard[shard])
            if entry_ids:
                pipe.xdel(keys.TRIGGER_LOG, *entry_ids)
            for visitor_id in visitor_ids:
                pipe.delete(keys.trigger_state(visitor_id))
            for visitor_id in visitor_ids:
                pipe.delete(keys.trigger_timer_ids(visitor_id), keys.trigger_log_ids(visitor_id))

        replies = await self._run(erase)
        timers = sum(int(n) for n in replies[: len(shards)])
        rest = replies[len(shards) :]
        log_entries = int(rest.pop(0)) if entry_ids else 0
        states = sum(int(n) for n in rest[: len(visitor_ids)])
        return {"timers": timers, "log_entries": log_entries, "visitors": states}

    async def close(self) -> None:
        await self.pipelines.client.aclose()
