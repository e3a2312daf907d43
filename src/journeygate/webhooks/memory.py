"""The in-process outbox of the embedded gateway (no Redis): the same behaviour as the Redis
outbox, not durable across restarts.

Bounded like it: at most ``outbox_maxlen`` queued deliveries and as many retrying, the log and
the dead letters capped at ``log_maxlen`` and ``dead_letter_maxlen``, dedupe keys kept for
``dedupe_ttl_s``. Every method runs without awaiting, so each is atomic on the event loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

from journeygate.config import WebhooksConfig
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


@dataclass
class _Lease:
    delivery: Delivery
    handle: str
    deadline: float
    consumer: str


class MemoryOutbox:
    """Queued deliveries in insertion order, retries in a heap by due time, claimed ones
    leased (a lease that runs out makes the delivery claimable again)."""

    def __init__(self, config: WebhooksConfig) -> None:
        self.config = config
        self._queued: OrderedDict[str, Delivery] = OrderedDict()
        self._retrying: dict[str, Delivery] = {}
        self._due: list[tuple[float, int, str]] = []  # (due, seq, delivery id), lazily pruned
        self._due_at: dict[str, float] = {}
        self._leases: dict[str, _Lease] = {}
        self._dedupe: OrderedDict[str, float] = OrderedDict()  # key -> expiry, oldest first
        self._log: deque[LogEntry] = deque(maxlen=config.log_maxlen)
        self._dead: deque[DeadLetter] = deque(maxlen=config.dead_letter_maxlen)
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()

    def _entry_id(self) -> str:
        return f"{int(time.time() * 1000)}-{next(self._seq)}"

    async def enqueue(self, messages: Sequence[WebhookMessage]) -> list[bool]:
        deliveries = to_deliveries(messages, self.config)
        now = time.time()
        while self._dedupe and next(iter(self._dedupe.values())) <= now:
            self._dedupe.popitem(last=False)
        seen: set[str] = set()
        flags = []
        for delivery in deliveries:
            new = delivery.dedupe_key not in self._dedupe and delivery.dedupe_key not in seen
            seen.add(delivery.dedupe_key)
            flags.append(new)
        if len(self._queued) + sum(flags) > self.config.outbox_maxlen:
            raise OutboxFull(f"webhook outbox holds {len(self._queued)} undelivered messages")
        for delivery, new in zip(deliveries, flags, strict=True):
            if new:
                self._dedupe[delivery.dedupe_key] = now + self.config.dedupe_ttl_s
                self._queued[delivery.id] = delivery
        if any(flags):
            self._wakeup.set()
        return flags

    async def forget_visitor(self, visitor_ids: Sequence[str]) -> int:
        visitors = set(visitor_ids)
        dropped = 0
        for pool in (self._queued, self._retrying):
            for delivery_id in [i for i, d in pool.items() if d.visitor_id in visitors]:
                del pool[delivery_id]
                self._due_at.pop(delivery_id, None)
                self._leases.pop(delivery_id, None)
                dropped += 1
        kept = [letter for letter in self._dead if letter.delivery.visitor_id not in visitors]
        self._dead.clear()
        self._dead.extend(kept)
        return dropped

    def _lease(self, delivery: Delivery, consumer: str, now: float) -> Claim:
        handle = f"{consumer}:{next(self._seq)}"
        self._leases[delivery.id] = _Lease(
            delivery, handle, now + self.config.lease_ms / 1000, consumer
        )
        return Claim(delivery, handle)

    async def claim(self, consumer: str, count: int) -> list[Claim]:
        now = time.time()
        claims: list[Claim] = []
        for lease in list(self._leases.values()):  # held by a dispatcher that stopped
            if len(claims) < count and lease.deadline <= now:
                claims.append(self._lease(lease.delivery, consumer, now))
        while len(claims) < count and self._due and self._due[0][0] <= now:
            due, _, delivery_id = heapq.heappop(self._due)
            if self._due_at.get(delivery_id) == due and delivery_id not in self._leases:
                claims.append(self._lease(self._retrying[delivery_id], consumer, now))
        for delivery_id, delivery in self._queued.items():
            if len(claims) >= count:
                break
            if delivery_id not in self._leases:
                claims.append(self._lease(delivery, consumer, now))
        return claims

    async def complete(self, consumer: str, claim: Claim, result: AttemptResult) -> str | None:
        delivery = claim.delivery
        lease = self._leases.get(delivery.id)
        if lease is None or lease.handle != claim.handle:
            return None
        del self._leases[delivery.id]
        queued = delivery.id in self._queued
        outcome, error = result.outcome, result.error
        if outcome == "retry" and queued and len(self._retrying) >= self.config.outbox_maxlen:
            outcome, error = "dead_letter", f"retry set full; {error}"
        self._queued.pop(delivery.id, None)
        if outcome == "retry":
            due = result.retry_at if result.retry_at is not None else time.time()
            self._retrying[delivery.id] = delivery.next_attempt(error)
            self._due_at[delivery.id] = due
            heapq.heappush(self._due, (due, next(self._seq), delivery.id))
        else:
            self._retrying.pop(delivery.id, None)
            self._due_at.pop(delivery.id, None)
        now = time.time()
        if outcome == "dead_letter":
            self._dead.append(DeadLetter(self._entry_id(), delivery, error, result.status, now))
        self._log.append(
            LogEntry(
                entry_id=self._entry_id(),
                delivery_id=delivery.id,
                endpoint=delivery.endpoint,
                event_type=delivery.event_type,
                outcome=outcome,
                attempt=delivery.attempt,
                status=result.status,
                error=error,
                latency_ms=round(result.latency_s * 1000, 3),
                at=now,
            )
        )
        return outcome

    async def idle(self, timeout_s: float) -> None:
        if self._due:
            timeout_s = min(timeout_s, max(0.0, self._due[0][0] - time.time()))
        if self._leases:
            soonest = min(lease.deadline for lease in self._leases.values())
            timeout_s = min(timeout_s, max(0.0, soonest - time.time()))
        try:
            async with asyncio.timeout(timeout_s):
                await self._wakeup.wait()
        except TimeoutError:
            pass
        self._wakeup.clear()

    async def log(self, count: int) -> list[LogEntry]:
        return list(reversed(self._log))[:count]

    async def dead_letters(self, count: int) -> list[DeadLetter]:
        return list(reversed(self._dead))[:count]

    async def redeliver(self, entry_ids: Sequence[str] | None) -> list[str]:
        wanted = None if entry_ids is None else set(entry_ids)
        moved = [letter for letter in self._dead if wanted is None or letter.entry_id in wanted]
        if len(self._queued) + len(moved) > self.config.outbox_maxlen:
            raise OutboxFull(f"webhook outbox holds {len(self._queued)} undelivered messages")
        for letter in moved:
            self._dead.remove(letter)
            self._queued[letter.delivery.id] = replace(letter.delivery, attempt=1, last_error="")
        if moved:
            self._wakeup.set()
        return [letter.entry_id for letter in moved]
