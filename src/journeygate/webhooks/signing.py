"""Webhook signatures: ``Journeygate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``.

The HMAC (key: the endpoint's secret) covers ``f"{t}.{raw body}"``: the body cannot be
changed without the key, and the timestamp lets a receiver refuse a request replayed later
than its tolerance. :func:`verify_signature` accepts a header with several ``v1=`` values
when one matches. To rotate a secret, a receiver verifies with the old and the new one until
journeygate's config carries the new one.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Journeygate-Signature"
EVENT_HEADER = "Journeygate-Event"
DELIVERY_HEADER = "Journeygate-Delivery"
SCHEME = "v1"


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``Journeygate-Signature`` header value for ``body`` (the exact bytes sent)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},{SCHEME}={_mac(secret, t, body)}"


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """True when ``header`` (the ``Journeygate-Signature`` value) signs ``body`` (the raw
    request body, before any JSON parsing) with ``secret`` and its timestamp is within
    ``tolerance_s`` of ``now`` (default: the current time). Comparison in constant time."""
    timestamp: int | None = None
    macs = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == SCHEME and value:
            macs.append(value)
    if timestamp is None or not macs:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _mac(secret, timestamp, body)
    return any(hmac.compare_digest(expected, mac) for mac in macs)
