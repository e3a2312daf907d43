"""The Redis outbox: durable across restarts, shared by every dispatcher.

Keys (all under the hash tag ``{webhooks/}``, so each step below is one atomic script on one
slot; bounds in ``journeygate.store.keys``):

- ``jg:{webhooks/}:outbox``: a stream of new deliveries (field ``d``: the delivery as JSON),
  read through the consumer group ``jg-webhooks``. An entry is acknowledged and deleted only
  when its delivery succeeded, was dead-lettered, or moved to the retries, in the same script,
  so the stream's length is the backlog. Entries a dispatcher read but did not complete for
  ``claim_idle_ms`` (it stopped) are taken over with XAUTOCLAIM.
- ``jg:{webhooks/}:retries`` (zset: delivery id, score: due time in ms) with the deliveries in
  ``jg:{webhooks/}:retrying`` (hash: id -> JSON). Claiming a due retry sets its score to the
  end of a lease (now + ``lease_ms``): a dispatcher that stops leaves it to come back.
- ``jg:{webhooks/}:dedupe:<key>``: SET NX with a TTL of ``dedupe_ttl_s``, in the same script
  as the XADD, so a message is queued once however many producers race.
- ``jg:{webhooks/}:visitor:<id>``: the visitor's pending deliveries (id -> stream entry id,
  or ``r`` while retrying), for :meth:`RedisOutbox.forget_visitor`.
- ``jg:{webhooks/}:dead-letters`` and ``jg:{webhooks/}:log``: trimmed streams.

Completing a claim is fenced: a stream entry must still be pending for this consumer, a
retry must still carry this lease's score. A dispatcher that lost its claim (it was too slow,
or the visitor was erased) records nothing, so the state never goes backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from redis.exceptions import ResponseError

from journeygate.config import WebhooksConfig
from journeygate.store import StoreUnavailable, keys
from journeygate.store.scripting import ScriptedPipelines
from journeygate.webhooks.model import (
    AttemptResult,
    Claim,
    DeadLetter,
    Delivery,
    LogEntry,
    OutboxFull,
    WebhookMessage,
    to_deliveries,
)

log = logging.getLogger(__name__)

GROUP = "jg-webhooks"
TIMEOUT_S = 2.0
ERROR_CHARS = 500

# KEYS: outbox, the messages' dedupe keys, then the index keys of the messages with a
# visitor. ARGV: count, dedupe TTL (s), outbox_maxlen, index TTL (s), then per message its
# delivery id, JSON and the position of its index key in KEYS (0: no visitor). Nothing is
# written when the new messages do not fit. Returns a flag per message (1: queued).
ENQUEUE_SCRIPT = """
local n = tonumber(ARGV[1])
local flags, seen, new = {}, {}, 0
for i = 1, n do
  local key = KEYS[1 + i]
  if seen[key] or redis.call('EXISTS', key) == 1 then
    flags[i] = 0
  else
    flags[i] = 1
    new = new + 1
  end
  seen[key] = true
end
local backlog = redis.call('XLEN', KEYS[1])
if new > 0 and backlog + new > tonumber(ARGV[3]) then
  return redis.error_reply('OUTBOXFULL the webhook outbox holds ' .. backlog .. ' messages')
end
for i = 1, n do
  if flags[i] == 1 then
    local base = 4 + 3 * (i - 1)
    local id = ARGV[base + 1]
    redis.call('SET', KEYS[1 + i], id, 'EX', ARGV[2])
    local entry = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'd', ARGV[base + 2])
    local index = tonumber(ARGV[base + 3])
    if index > 0 then
      redis.call('HSET', KEYS[index], id, entry)
      redis.call('EXPIRE', KEYS[index], ARGV[4])
    end
  end
end
return flags
"""

# KEYS: outbox, retries, retrying. ARGV: group, consumer, now (ms), lease end (ms),
# claim_idle_ms, count. Due retries first, then entries of stopped dispatchers, then new
# entries. Returns {source, handle, JSON, record id} per claim: source 'r' (handle: the lease
# end; record: the delivery id) or 's' (handle and record: the stream entry id).
CLAIM_SCRIPT = """
local group, consumer, count = ARGV[1], ARGV[2], tonumber(ARGV[6])
local out = {}
redis.pcall('XGROUP', 'CREATE', KEYS[1], group, '0', 'MKSTREAM')
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3], 'LIMIT', 0, count)) do
  local body = redis.call('HGET', KEYS[3], id)
  if body then
    redis.call('ZADD', KEYS[2], ARGV[4], id)
    out[#out + 1] = {'r', ARGV[4], body, id}
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
local function take(entries)
  for _, entry in ipairs(entries) do
    out[#out + 1] = {'s', entry[1], entry[2][2], entry[1]}
  end
end
if #out < count then
  take(redis.call('XAUTOCLAIM', KEYS[1], group, consumer, ARGV[5], '0-0',
                  'COUNT', count - #out)[2])
end
if #out < count then
  local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - #out,
                          'STREAMS', KEYS[1], '>')
  if read then
    take(read[1][2])
  end
end
return out
"""

# KEYS: outbox, retries, retrying, dead letters, log, and the visitor's index key when the
# delivery has a visitor. ARGV: source, handle, group, consumer, delivery id, outcome, due
# (ms), the JSON of the next attempt, retries cap, dead_letter_maxlen, log_maxlen, index TTL,
# error, status, attempt, endpoint, event type, latency (ms), now (s), the delivery's JSON,
# visitor id. Returns the outcome recorded, or nil when the claim is no longer this one's.
COMPLETE_SCRIPT = """
local source, handle, id = ARGV[1], ARGV[2], ARGV[5]
local outcome, err = ARGV[6], ARGV[13]
if source == 's' then
  local pending = redis.call('XPENDING', KEYS[1], ARGV[3], handle, handle, 1)
  if #pending == 0 or pending[1][2] ~= ARGV[4] then
    return false
  end
  redis.call('XACK', KEYS[1], ARGV[3], handle)
  if redis.call('XDEL', KEYS[1], handle) == 0 then
    return false
  end
  if outcome == 'retry' and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[9]) then
    outcome, err = 'dead_letter', 'retry set full; ' .. err
  end
else
  local score = redis.call('ZSCORE', KEYS[2], id)
  if not score or tonumber(score) ~= tonumber(handle) then
    return false
  end
  if outcome ~= 'retry' then
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
  end
end
if outcome == 'retry' then
  redis.call('ZADD', KEYS[2], ARGV[7], id)
  redis.call('HSET', KEYS[3], id, ARGV[8])
  if #KEYS == 6 then
    redis.call('HSET', KEYS[6], id, 'r')
    redis.call('EXPIRE', KEYS[6], ARGV[12])
  end
else
  if #KEYS == 6 then
    redis.call('HDEL', KEYS[6], id)
  end
  if outcome == 'dead_letter' then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[10], '*', 'd', ARGV[20], 'error', err,
               'status', ARGV[14], 'at', ARGV[19], 'v', ARGV[21])
  end
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[11], '*', 'id', id, 'endpoint', ARGV[16],
           'type', ARGV[17], 'outcome', outcome, 'attempt', ARGV[15], 'status', ARGV[14],
           'error', err, 'ms', ARGV[18], 'at', ARGV[19])
return outcome
"""

# KEYS: outbox, retries, retrying, the visitor's index key. Drops the visitor's queued and
# retrying deliveries; returns how many.
FORGET_SCRIPT = """
local dropped = 0
local pending = redis.call('HGETALL', KEYS[4])
for i = 1, #pending, 2 do
  local id, where = pending[i], pending[i + 1]
  if where == 'r' then
    dropped = dropped + redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
  else
    dropped = dropped + redis.call('XDEL', KEYS[1], where)
  end
end
redis.call('DEL', KEYS[4])
return dropped
"""

# KEYS: outbox, dead letters, and the visitor's index key when there is a visitor. ARGV: the
# dead letter's entry id, the delivery's JSON at attempt 1, its id, outbox_maxlen, index TTL.
# Returns 1 when moved, 0 when the dead letter is gone (moved by someone else).
REDELIVER_SCRIPT = """
local backlog = redis.call('XLEN', KEYS[1])
if backlog >= tonumber(ARGV[4]) then
  return redis.error_reply('OUTBOXFULL the webhook outbox holds ' .. backlog .. ' messages')
end
if redis.call('XDEL', KEYS[2], ARGV[1]) == 0 then
  return 0
end
local entry = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'd', ARGV[2])
if #KEYS == 3 then
  redis.call('HSET', KEYS[3], ARGV[3], entry)
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
return 1
"""

SCRIPTS = (ENQUEUE_SCRIPT, CLAIM_SCRIPT, COMPLETE_SCRIPT, FORGET_SCRIPT, REDELIVER_SCRIPT)
MAIN_KEYS = (
    keys.WEBHOOK_OUTBOX,
    keys.WEBHOOK_RETRIES,
    keys.WEBHOOK_RETRYING,
    keys.WEBHOOK_DEAD_LETTERS,
    keys.WEBHOOK_LOG,
)


def index_ttl_s(config: WebhooksConfig) -> int:
    """How long a visitor's index outlives its last write: the dedupe window plus the longest
    retry schedule, so it covers a delivery for as long as one can stay pending."""
    return config.dedupe_ttl_s + config.max_attempts * config.backoff_max_ms // 1000 + 1


class RedisOutbox:
    """The outbox on a ``decode_responses`` Redis client (the profile store's pool)."""

    def __init__(self, client: Any, config: WebhooksConfig) -> None:
        self.client = client
        self.config = config
        self._index_ttl = index_ttl_s(config)
        self.pipelines = ScriptedPipelines(client, SCRIPTS, TIMEOUT_S, _unavailable)
        self._guard = self.pipelines.guard
        self._run = self.pipelines.run
        self._queued = asyncio.Event()  # set when this process queues a message

    async def enqueue(self, messages: Sequence[WebhookMessage]) -> list[bool]:
        deliveries = to_deliveries(messages, self.config)
        if not deliveries:
            return []
        cfg = self.config
        script_keys = [keys.WEBHOOK_OUTBOX] + [
            keys.webhook_dedupe(d.dedupe_key) for d in deliveries
        ]
        args: list[Any] = [len(deliveries), cfg.dedupe_ttl_s, cfg.outbox_maxlen, self._index_ttl]
        for delivery in deliveries:
            position = 0
            if delivery.visitor_id is not None:
                script_keys.append(keys.webhook_visitor(delivery.visitor_id))
                position = len(script_keys)
            args += [delivery.id, delivery.encode(), position]
        (flags,) = await self._run(
            lambda pipe: pipe.evalsha(
                self.pipelines.sha(ENQUEUE_SCRIPT), len(script_keys), *script_keys, *args
            )
        )
        queued = [bool(flag) for flag in flags]
        if any(queued):
            self._queued.set()
        return queued

    async def forget_visitor(self, visitor_ids: Sequence[str]) -> int:
        if not visitor_ids:
            return 0

        def calls(pipe: Any) -> None:
            for visitor_id in visitor_ids:
                pipe.evalsha(
                    self.pipelines.sha(FORGET_SCRIPT),
                    4,
                    *MAIN_KEYS[:3],
                    keys.webhook_visitor(visitor_id),
                )

        dropped = sum(int(n) for n in await self._run(calls))
        await self._drop_dead_letters(set(visitor_ids))
        return dropped

    async def _drop_dead_letters(self, visitors: set[str]) -> None:
        """Delete the visitors' dead letters: a scan of the trimmed dead-letter stream, in
        chunks (an erasure is rare; the stream holds at most ``dead_letter_maxlen``)."""
        start = "-"
        while True:
            chunk = await self._guard(
                self.client.xrange(keys.WEBHOOK_DEAD_LETTERS, start, "+", count=500)
            )
            doomed = [entry_id for entry_id, fields in chunk if fields.get("v") in visitors]
            if doomed:
                await self._guard(self.client.xdel(keys.WEBHOOK_DEAD_LETTERS, *doomed))
            if len(chunk) < 500:
                return
            start = "(" + chunk[-1][0]

    async def claim(self, consumer: str, count: int) -> list[Claim]:
        if count < 1:
            return []
        now_ms = int(time.time() * 1000)
        args = (GROUP, consumer, now_ms, now_ms + self.config.lease_ms, self.config.claim_idle_ms)
        (found,) = await self._run(
            lambda pipe: pipe.evalsha(
                self.pipelines.sha(CLAIM_SCRIPT), 3, *MAIN_KEYS[:3], *args, count
            )
        )
        claims, unreadable = [], []
        for source, handle, body, record_id in found:
            try:
                claims.append(Claim(Delivery.decode(body), f"{source}:{handle}"))
            except (ValueError, KeyError, TypeError) as exc:
                log.error(
                    "webhook outbox record %s unreadable (%s), dropped: %s", record_id, exc, body
                )
                unreadable.append((source, record_id))
        if unreadable:
            await self._drop(unreadable)
        return claims

    async def _drop(self, records: Sequence[tuple[str, str]]) -> None:
        """Remove claimed records that are no delivery this code can read (written by hand,
        or by an incompatible version), so that they cannot block the outbox; each one was
        logged whole, to be queued again from the log if it matters."""
        pipe = self.client.pipeline(transaction=True)
        for source, record_id in records:
            if source == "s":
                pipe.xack(keys.WEBHOOK_OUTBOX, GROUP, record_id)
                pipe.xdel(keys.WEBHOOK_OUTBOX, record_id)
            else:
                pipe.zrem(keys.WEBHOOK_RETRIES, record_id)
                pipe.hdel(keys.WEBHOOK_RETRYING, record_id)
        await self._guard(pipe.execute())

    async def complete(self, consumer: str, claim: Claim, result: AttemptResult) -> str | None:
        delivery = claim.delivery
        cfg = self.config
        source, _, handle = claim.handle.partition(":")
        error = result.error[:ERROR_CHARS]
        script_keys = list(MAIN_KEYS)
        if delivery.visitor_id is not None:
            script_keys.append(keys.webhook_visitor(delivery.visitor_id))
        due_ms = int((result.retry_at or time.time()) * 1000)
        args = (
            source,
            handle,
            GROUP,
            consumer,
            delivery.id,
            result.outcome,
            due_ms,
            delivery.next_attempt(error).encode(),
            cfg.outbox_maxlen,
            cfg.dead_letter_maxlen,
            cfg.log_maxlen,
            self._index_ttl,
            error,
            "" if result.status is None else result.status,
            delivery.attempt,
            delivery.endpoint,
            delivery.event_type,
            round(result.latency_s * 1000, 3),
            f"{time.time():.3f}",
            delivery.encode(),
            delivery.visitor_id or "",
        )
        (outcome,) = await self._run(
            lambda pipe: pipe.evalsha(
                self.pipelines.sha(COMPLETE_SCRIPT), len(script_keys), *script_keys, *args
            )
        )
        return str(outcome) if outcome is not None else None

    async def idle(self, timeout_s: float) -> None:
        """Until this process queues a message (a trigger fired in this worker: delivered
        without waiting for the next poll), at most ``timeout_s``. What other processes
        queue, and retries falling due, wait for the next poll."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._queued.wait()
        self._queued.clear()

    async def log(self, count: int) -> list[LogEntry]:
        raw = await self._guard(self.client.xrevrange(keys.WEBHOOK_LOG, count=count))
        return [
            LogEntry(
                entry_id=entry_id,
                delivery_id=fields["id"],
                endpoint=fields["endpoint"],
                event_type=fields["type"],
                outcome=fields["outcome"],
                attempt=int(fields["attempt"]),
                status=int(fields["status"]) if fields["status"] else None,
                error=fields["error"],
                latency_ms=float(fields["ms"]),
                at=float(fields["at"]),
            )
            for entry_id, fields in raw
        ]

    async def dead_letters(self, count: int) -> list[DeadLetter]:
        raw = await self._guard(self.client.xrevrange(keys.WEBHOOK_DEAD_LETTERS, count=count))
        return [_dead_letter(entry_id, fields) for entry_id, fields in raw]

    async def redeliver(self, entry_ids: Sequence[str] | None) -> list[str]:
        moved: list[str] = []
        if entry_ids is not None:
            pipe = self.client.pipeline(transaction=False)
            for entry_id in entry_ids:
                pipe.xrange(keys.WEBHOOK_DEAD_LETTERS, entry_id, entry_id, count=1)
            found = [entry for result in await self._guard(pipe.execute()) for entry in result]
            return await self._move_back(found)
        start = "-"
        while True:  # every dead letter, oldest first, in chunks
            chunk = await self._guard(
                self.client.xrange(keys.WEBHOOK_DEAD_LETTERS, start, "+", count=100)
            )
            moved += await self._move_back(chunk)
            if len(chunk) < 100:
                return moved
            start = "(" + chunk[-1][0]

    async def _move_back(self, entries: Sequence[tuple[str, dict[str, str]]]) -> list[str]:
        letters = [_dead_letter(entry_id, fields) for entry_id, fields in entries]
        if not letters:
            return []
        cfg = self.config

        def calls(pipe: Any) -> None:
            for letter in letters:
                delivery = replace(letter.delivery, attempt=1, last_error="")
                script_keys = [keys.WEBHOOK_OUTBOX, keys.WEBHOOK_DEAD_LETTERS]
                if delivery.visitor_id is not None:
                    script_keys.append(keys.webhook_visitor(delivery.visitor_id))
                pipe.evalsha(
                    self.pipelines.sha(REDELIVER_SCRIPT),
                    len(script_keys),
                    *script_keys,
                    letter.entry_id,
                    delivery.encode(),
                    delivery.id,
                    cfg.outbox_maxlen,
                    self._index_ttl,
                )

        results = await self._run(calls)
        return [letter.entry_id for letter, moved in zip(letters, results, strict=True) if moved]


def _unavailable(exc: BaseException) -> StoreUnavailable:
    if isinstance(exc, ResponseError) and str(exc).startswith("OUTBOXFULL"):
        return OutboxFull(str(exc).removeprefix("OUTBOXFULL "))
    return StoreUnavailable(f"redis: {exc.__class__.__name__}: {exc}")


def _dead_letter(entry_id: str, fields: dict[str, str]) -> DeadLetter:
    return DeadLetter(
        entry_id=entry_id,
        delivery=Delivery.decode(fields["d"]),
        error=fields["error"],
        status=int(fields["status"]) if fields["status"] else None,
        at=float(fields["at"]),
    )
