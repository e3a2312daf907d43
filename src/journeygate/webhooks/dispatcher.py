"""The dispatcher: claims due deliveries from the outbox and sends them, at most
``webhooks.concurrency`` at a time.

Run it beside the event worker (``journeygate worker``, Redis: as many as there are workers;
the outbox gives each delivery to one of them) or in the embedded gateway (in-process store).
A failed attempt goes back to the outbox with exponential backoff and jitter (at least what
the receiver asked for with ``Retry-After``, at most ``backoff_max_ms``); after
``max_attempts`` attempts, or at once on a permanent failure, it is dead-lettered. Stopping
lets the deliveries in flight finish (each is bounded by its request timeout); one cancelled
meanwhile goes back to the retries, due at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from journeygate.config import WebhooksConfig
from journeygate.metrics import WebhookMetrics
from journeygate.store import StoreUnavailable
from journeygate.webhooks.model import AttemptResult, Claim, Delivery, WebhookQueue
from journeygate.webhooks.sender import Sender, SendResult

log = logging.getLogger(__name__)

MAX_EXPONENT = 32


class Dispatcher:
    """One dispatcher (``consumer`` names it in the outbox)."""

    def __init__(
        self,
        queue: WebhookQueue,
        config: WebhooksConfig,
        consumer: str,
        metrics: WebhookMetrics | None = None,
        sender: Sender | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.queue = queue
        self.config = config
        self.consumer = consumer
        self.metrics = metrics
        self.sender = sender or Sender(config)
        self.rng = rng or random.Random()
        self.outcomes: dict[str, int] = {"delivered": 0, "retry": 0, "dead_letter": 0}
        self._tasks: set[asyncio.Task[None]] = set()

    def backoff_s(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1 = the first): the exponential ceiling
        ``backoff_base_ms * 2**(attempt - 1)`` capped at ``backoff_max_ms``, jittered over
        its upper half so that retries of many deliveries spread out."""
        cfg = self.config
        exponent = min(attempt - 1, MAX_EXPONENT)
        ceiling = min(cfg.backoff_max_ms, cfg.backoff_base_ms * (1 << exponent)) / 1000
        return ceiling / 2 + self.rng.random() * ceiling / 2

    def judge(self, delivery: Delivery, sent: SendResult, now: float) -> AttemptResult:
        """What the outbox records for an attempt: delivered, retry (when) or dead letter."""
        if sent.outcome == "delivered":
            return AttemptResult("delivered", sent.status, "", sent.latency_s)
        if sent.outcome == "permanent":
            return AttemptResult("dead_letter", sent.status, sent.error, sent.latency_s)
        if delivery.attempt >= self.config.max_attempts:
            error = f"gave up after {delivery.attempt} attempts: {sent.error}"
            return AttemptResult("dead_letter", sent.status, error, sent.latency_s)
        wait = self.backoff_s(delivery.attempt)
        if sent.retry_after_s is not None:
            wait = max(wait, min(sent.retry_after_s, self.config.backoff_max_ms / 1000))
        return AttemptResult("retry", sent.status, sent.error, sent.latency_s, now + wait)

    async def _complete(self, claim: Claim, result: AttemptResult) -> None:
        delivery = claim.delivery
        try:
            outcome = await self.queue.complete(self.consumer, claim, result)
        except StoreUnavailable as exc:
            # the claim stays leased: it is delivered again once the lease runs out
            log.warning("webhook %s: outcome not recorded (%s)", delivery.id, exc)
            return
        if outcome is None:
            log.info("webhook %s: claim lost (lease ran out or visitor erased)", delivery.id)
            return
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if self.metrics is not None:
            self.metrics.webhook_deliveries.labels(delivery.endpoint, outcome).inc()
        if outcome == "dead_letter":
            log.error(
                "webhook %s (%s to %s) dead-lettered at attempt %d: %s",
                delivery.id,
                delivery.event_type,
                delivery.endpoint,
                delivery.attempt,
                result.error,
            )
        elif outcome == "retry":
            log.info(
                "webhook %s to %s: attempt %d failed (%s); next in %.1f s",
                delivery.id,
                delivery.endpoint,
                delivery.attempt,
                result.error,
                (result.retry_at or 0) - time.time(),
            )

    async def deliver(self, claim: Claim) -> None:
        """One attempt of one claimed delivery, recorded in the outbox."""
        delivery = claim.delivery
        try:
            sent = await self.sender.send(delivery)
        except asyncio.CancelledError:
            stopped = AttemptResult("retry", None, "dispatcher stopped", 0.0, time.time())
            await self._complete(claim, stopped)
            raise
        except Exception as exc:  # a bug, not the receiver's doing: retry rather than lose it
            log.exception("webhook %s: sending failed", delivery.id)
            sent = SendResult("retry", None, f"{exc.__class__.__name__}: {exc}", 0.0)
        if self.metrics is not None and delivery.endpoint in self.config.endpoints:
            self.metrics.webhook_seconds.labels(delivery.endpoint).observe(sent.latency_s)
        await self._complete(claim, self.judge(delivery, sent, time.time()))

    async def _wait(self, stop: asyncio.Event, busy: bool) -> None:
        """Until a slot frees up (``busy``) or work may be due, or ``stop``."""
        waiter: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        others: set[asyncio.Future[Any]] = set(self._tasks) if busy else set()
        if not busy:
            idle = self.queue.idle(self.config.poll_interval_ms / 1000)
            others.add(asyncio.ensure_future(idle))
        try:
            await asyncio.wait({waiter, *others}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not busy:
                for future in others:
                    future.cancel()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, then let the deliveries in flight finish. When the
        run is cancelled instead, the deliveries in flight are cancelled and go back to the
        retries (due at once, for this or another dispatcher)."""
        await self.sender.start()
        log.info(
            "webhook dispatcher %s: %d endpoints, concurrency %d",
            self.consumer,
            len(self.config.endpoints),
            self.config.concurrency,
        )
        outage = False
        try:
            while not stop.is_set():
                free = self.config.concurrency - len(self._tasks)
                claims: list[Claim] = []
                if free > 0:
                    try:
                        claims = await self.queue.claim(self.consumer, free)
                        if outage:
                            log.info("webhook outbox reachable again")
                        outage = False
                    except StoreUnavailable as exc:
                        if not outage:  # once per outage, not once per poll
                            log.warning("webhook outbox unavailable, retrying: %s", exc)
                        outage = True
                for claim in claims:
                    task = asyncio.create_task(self.deliver(claim))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                await self._wait(stop, busy=free <= len(claims))
            await asyncio.gather(*self._tasks)
        except asyncio.CancelledError:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            await self.sender.close()
            log.info("webhook dispatcher %s stopped: %s", self.consumer, self.outcomes)
