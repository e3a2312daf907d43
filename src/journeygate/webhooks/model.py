"""The webhook contract: what producers (behavioral triggers) queue, and the records the
outbox keeps for the dispatcher, the log and the dead letters.

Producers see :class:`WebhookMessage`, :class:`WebhookOutbox` and :func:`webhook_outbox`;
the dispatcher and the ``journeygate webhooks`` commands use the rest of
:class:`WebhookQueue`, which both outboxes (Redis, in process) implement.
"""

from __future__ import annotations

import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson

from journeygate.config import AppConfig, WebhooksConfig
from journeygate.store.base import StoreUnavailable

if TYPE_CHECKING:
    from journeygate.store import ProfileStore

Outcome = Literal["delivered", "retry", "dead_letter"]


class OutboxFull(StoreUnavailable):
    """The outbox already holds ``webhooks.outbox_maxlen`` undelivered messages; nothing was
    queued. A :class:`StoreUnavailable`, so producers retry it like an outage."""


@dataclass(frozen=True, slots=True)
class WebhookMessage:
    """One action to send to an email/CRM tool, as a producer queues it.

    ``endpoint`` names a configured ``[webhooks.endpoints.NAME]``; ``payload`` (JSON-
    serialisable) is sent as the body's ``data``; a second message with the same
    ``dedupe_key`` within ``webhooks.dedupe_ttl_s`` is not queued; ``visitor_id`` lets an
    erasure drop the visitor's pending deliveries."""

    endpoint: str
    event_type: str
    payload: Mapping[str, Any]
    dedupe_key: str
    visitor_id: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """A queued message with its stable id (the ``Journeygate-Delivery`` header, the same on
    every attempt, so receivers can drop a repeat) and the attempt it is at (1 = first)."""

    id: str
    endpoint: str
    event_type: str
    payload: Mapping[str, Any]
    dedupe_key: str
    visitor_id: str | None
    created_at: float
    attempt: int = 1
    last_error: str = ""

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "endpoint": self.endpoint,
                "type": self.event_type,
                "data": self.payload,
                "dedupe": self.dedupe_key,
                "visitor": self.visitor_id,
                "created_at": self.created_at,
                "attempt": self.attempt,
                "error": self.last_error,
            }
        )

    @classmethod
    def decode(cls, raw: str | bytes) -> Delivery:
        fields = orjson.loads(raw)
        return cls(
            id=fields["id"],
            endpoint=fields["endpoint"],
            event_type=fields["type"],
            payload=fields["data"],
            dedupe_key=fields["dedupe"],
            visitor_id=fields["visitor"],
            created_at=float(fields["created_at"]),
            attempt=int(fields["attempt"]),
            last_error=fields.get("error", ""),
        )

    def next_attempt(self, error: str) -> Delivery:
        return replace(self, attempt=self.attempt + 1, last_error=error)


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery a dispatcher holds (alone, until it completes it or its lease runs out);
    ``handle`` is the outbox's proof of ownership, opaque to the dispatcher."""

    delivery: Delivery
    handle: str


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt came to. ``retry_at`` (epoch seconds) is set for ``retry``;
    ``status`` is the HTTP status when there was an answer."""

    outcome: Outcome
    status: int | None = None
    error: str = ""
    latency_s: float = 0.0
    retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One recorded action outcome (the log holds no payload and no visitor id)."""

    entry_id: str
    delivery_id: str
    endpoint: str
    event_type: str
    outcome: str
    attempt: int
    status: int | None
    error: str
    latency_ms: float
    at: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A delivery given up on: after its last attempt, or at once on a permanent failure."""

    entry_id: str
    delivery: Delivery
    error: str
    status: int | None
    at: float


class WebhookOutbox(Protocol):
    """Where producers queue webhook messages."""

    async def enqueue(self, messages: Sequence[WebhookMessage]) -> list[bool]:
        """Queue messages; per message True when newly queued, False when its
        ``dedupe_key`` was already queued within ``webhooks.dedupe_ttl_s``. Raises
        ``ValueError`` naming an unknown endpoint or a bad message (nothing queued),
        :class:`StoreUnavailable` when Redis is down (:class:`OutboxFull` when the outbox
        holds ``outbox_maxlen`` messages)."""
        ...

    async def forget_visitor(self, visitor_ids: Sequence[str]) -> int:
        """Drop the queued and retrying deliveries (and the dead letters) of these visitors;
        returns how many queued or retrying deliveries were dropped."""
        ...


class WebhookQueue(WebhookOutbox, Protocol):
    """The outbox as the dispatcher and the ``journeygate webhooks`` commands see it."""

    async def claim(self, consumer: str, count: int) -> list[Claim]:
        """Up to ``count`` deliveries that are due (new ones, due retries, and those whose
        dispatcher stopped holding them), each leased to ``consumer`` alone."""
        ...

    async def complete(self, consumer: str, claim: Claim, result: AttemptResult) -> str | None:
        """Record an attempt: delivered (gone), retry (back at ``result.retry_at``, attempt
        + 1) or dead letter; log the outcome. Returns the outcome recorded (a retry becomes a
        dead letter when the retry set is full), or None when the claim was no longer this
        consumer's (its lease ran out, or the visitor was erased meanwhile)."""
        ...

    async def idle(self, timeout_s: float) -> None:
        """Wait until work may be due, at most ``timeout_s``."""
        ...

    async def log(self, count: int) -> list[LogEntry]:
        """The newest ``count`` outcomes, newest first."""
        ...

    async def dead_letters(self, count: int) -> list[DeadLetter]:
        """The newest ``count`` dead letters, newest first."""
        ...

    async def redeliver(self, entry_ids: Sequence[str] | None) -> list[str]:
        """Put dead letters (all of them with None) back into the outbox at attempt 1, with
        their delivery ids; returns the entry ids moved."""
        ...


def to_deliveries(messages: Sequence[WebhookMessage], config: WebhooksConfig) -> list[Delivery]:
    """Check messages against the configured endpoints and give each a delivery id; raises
    ``ValueError`` (naming the endpoint or the dedupe key) for the first bad one."""
    now = time.time()
    deliveries = []
    for message in messages:
        if message.endpoint not in config.endpoints:
            known = ", ".join(sorted(config.endpoints)) or "none"
            raise ValueError(f"unknown webhook endpoint {message.endpoint!r} (configured: {known})")
        if not message.dedupe_key:
            raise ValueError(f"webhook message of type {message.event_type!r}: empty dedupe_key")
        if not message.event_type:
            raise ValueError(f"webhook message {message.dedupe_key!r}: empty event_type")
        try:
            orjson.dumps(message.payload)
        except TypeError as exc:
            raise ValueError(
                f"webhook message {message.dedupe_key!r}: payload is not JSON: {exc}"
            ) from None
        deliveries.append(
            Delivery(
                id=uuid.uuid4().hex,
                endpoint=message.endpoint,
                event_type=message.event_type,
                payload=message.payload,
                dedupe_key=message.dedupe_key,
                visitor_id=message.visitor_id,
                created_at=now,
            )
        )
    return deliveries


# One queue per store, so that the producers of a process (the triggers plugin) and its
# dispatcher share it: the dispatcher wakes up when this process queues a message.
_QUEUES: weakref.WeakKeyDictionary[Any, WebhookQueue] = weakref.WeakKeyDictionary()


def webhook_queue(store: ProfileStore, config: AppConfig) -> WebhookQueue | None:
    """:func:`webhook_outbox` with the dispatcher's side too."""
    if not config.webhooks.endpoints:
        return None
    from journeygate.store.redis import RedisProfileStore

    queue = _QUEUES.get(store)
    if queue is None:
        if isinstance(store, RedisProfileStore):
            from journeygate.webhooks.redis import RedisOutbox

            queue = RedisOutbox(store.client, config.webhooks)
        else:
            from journeygate.webhooks.memory import MemoryOutbox

            queue = MemoryOutbox(config.webhooks)
        _QUEUES[store] = queue
    return queue


def webhook_outbox(store: ProfileStore, config: AppConfig) -> WebhookOutbox | None:
    """The outbox of this process's store, in Redis on the store's connection pool or in
    process; one per store, so that a process's producers and its dispatcher share it (a
    message queued here is sent without waiting for the dispatcher's next poll). None when
    no endpoint is configured (nothing to send to)."""
    return webhook_queue(store, config)
