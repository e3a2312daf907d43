"""One signed POST per attempt, and what its answer means.

2xx: delivered. 408, 425, 429 and 5xx, timeouts and connection errors: worth retrying (with
the answer's ``Retry-After``, if any). Any other status (other 4xx, and 3xx: redirects are not
followed, a moved endpoint is a configuration matter): permanent, dead-lettered at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import aiohttp
import orjson

from journeygate import __version__
from journeygate.config import WebhooksConfig
from journeygate.webhooks.model import Delivery
from journeygate.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign

RETRYABLE_STATUSES = frozenset({408, 425, 429})
ERROR_BODY_BYTES = 200


@dataclass(frozen=True, slots=True)
class SendResult:
    """One attempt's answer: ``permanent`` failures are not retried."""

    outcome: Literal["delivered", "retry", "permanent"]
    status: int | None
    error: str
    latency_s: float
    retry_after_s: float | None = None


def request_body(delivery: Delivery) -> bytes:
    """The JSON body receivers get: the delivery id, event type, when the message was
    queued (UTC), which attempt this is, and the producer's payload as ``data``."""
    created = datetime.fromtimestamp(delivery.created_at, UTC)
    return orjson.dumps(
        {
            "id": delivery.id,
            "type": delivery.event_type,
            "created_at": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "attempt": delivery.attempt,
            "data": delivery.payload,
        }
    )


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delay seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Sender:
    """POSTs deliveries over one connection pool (``webhooks.concurrency`` connections)."""

    def __init__(self, config: WebhooksConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.config.concurrency),
            headers={"User-Agent": f"journeygate-webhooks/{__version__}"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, delivery: Delivery) -> SendResult:
        endpoint = self.config.endpoints.get(delivery.endpoint)
        if endpoint is None:
            return SendResult(
                "permanent", None, f"endpoint {delivery.endpoint!r} not configured", 0
            )
        assert self._session is not None, "Sender.start() was not called"
        body = request_body(delivery)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(endpoint.secret, body),
            EVENT_HEADER: delivery.event_type,
            DELIVERY_HEADER: delivery.id,
        }
        timeout = aiohttp.ClientTimeout(
            total=self.config.endpoint_timeout_ms(delivery.endpoint) / 1000
        )
        started = time.perf_counter()
        try:
            async with self._session.post(
                endpoint.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                status = response.status
                latency = time.perf_counter() - started
                if 200 <= status < 300:
                    return SendResult("delivered", status, "", latency)
                snippet = (await response.content.read(ERROR_BODY_BYTES)).decode(errors="replace")
                error = f"HTTP {status}: {snippet.strip()}" if snippet.strip() else f"HTTP {status}"
                if status >= 500 or status in RETRYABLE_STATUSES:
                    wait = retry_after_s(response.headers.get("Retry-After"))
                    return SendResult("retry", status, error, latency, wait)
                return SendResult("permanent", status, error, latency)
        except TimeoutError:
            return SendResult("retry", None, "timed out", time.perf_counter() - started)
        except (aiohttp.ClientError, OSError) as exc:
            error = f"{exc.__class__.__name__}: {exc}"
            return SendResult("retry", None, error, time.perf_counter() - started)
