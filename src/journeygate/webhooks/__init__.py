"""Signed webhook delivery: producers (behavioral triggers) queue :class:`WebhookMessage`s
in a durable outbox; a dispatcher POSTs each one, signed with HMAC-SHA256, to its configured
endpoint, retries with backoff, dead-letters after the last attempt, and records every
outcome in a log. Receivers check requests with :func:`verify_signature`.
"""

from journeygate.webhooks.model import (
    OutboxFull,
    WebhookMessage,
    WebhookOutbox,
    webhook_outbox,
)
from journeygate.webhooks.signing import verify_signature

__all__ = ["OutboxFull", "WebhookMessage", "WebhookOutbox", "verify_signature", "webhook_outbox"]
