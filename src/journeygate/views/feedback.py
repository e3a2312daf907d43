"""``POST /v1/feedback``: free-text feedback (a review, a survey or NPS answer, a support
message) from a visitor, optionally about a product or an order.

Feedback is an event like any other (kind ``feedback``, name ``Feedback Submitted``), so it is
as durable as events: with Redis it is in a stream before the client gets its ``202`` and the
worker applies it; without Redis it is applied in-process. Plugins that observe events (the
sentiment plugin) score it and write what they learn to the profile.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from journeygate import appkeys
from journeygate.errors import InvalidRequest, ServiceUnavailable
from journeygate.events.apply import BatchNotObserved
from journeygate.events.ingest import parse_batch
from journeygate.events.schema import parse_native
from journeygate.middleware import error_response
from journeygate.store import StoreUnavailable
from journeygate.views.events import RETRY_AFTER_S, authorize_write
from journeygate.views.jsonio import json_response, read_json

FEEDBACK_EVENT = "Feedback Submitted"
ENVELOPE_FIELDS = frozenset(
    {"visitor_id", "anonymous_id", "user_id", "session_id", "timestamp", "channel", "message_id"}
)
PROPERTY_FIELDS = frozenset({"text", "type", "rating", "product_id", "order_id"})


class InvalidFeedback(InvalidRequest):
    """A 400 whose code says exactly what is wrong (``missing_field``, ``invalid_id`` …)."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, field)
        self.code = code


def _event(body: Any) -> dict[str, Any]:
    """The feedback body as a native event (``POST /v1/events`` shape)."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("body must be an object with visitor_id and text")
    unknown = sorted(set(body) - ENVELOPE_FIELDS - PROPERTY_FIELDS)
    if unknown:
        raise InvalidFeedback("unknown_field", f"unknown field {unknown[0]!r}", unknown[0])
    event = {name: body[name] for name in ENVELOPE_FIELDS if name in body}
    event["event"] = FEEDBACK_EVENT
    event["properties"] = {name: body[name] for name in PROPERTY_FIELDS if name in body}
    return event


def _field(path: str) -> str | None:
    """``[0].properties.text`` -> ``text``: the field as the client named it."""
    return path.removeprefix("[0]").lstrip(".").removeprefix("properties.") or None


async def feedback(request: web.Request) -> web.Response:
    """Validate, turn into one event and ingest it; ``202`` with its message id."""
    authorize_write(request)
    config = request.app[appkeys.CONFIG].events
    # One feedback is one event: the body is held to the size of one event.
    body = await read_json(request, config.max_event_bytes)
    received = time.time()
    batch = parse_batch([_event(body)], "", parse_native, config, 0.0, received)
    if batch.rejected:
        error = batch.rejected[0]
        field = _field(error["field"])
        message = error["message"].replace("[0].properties.", "", 1).replace("[0].", "", 1)
        raise InvalidFeedback(error["code"], message, field)
    try:
        await request.app[appkeys.INGESTOR].submit(batch)
    except StoreUnavailable:
        response = error_response(
            ServiceUnavailable("feedback cannot be stored right now; retry (nothing was accepted)")
        )
        response.headers["Retry-After"] = RETRY_AFTER_S
        return response
    except BatchNotObserved:  # the in-process store: applied, a batch observer needs it again
        response = error_response(
            ServiceUnavailable(
                "feedback applied but not yet observed by every plugin; send it again with "
                f"message_id {batch.accepted[0]['id']!r} (a message id is applied once)"
            )
        )
        response.headers["Retry-After"] = RETRY_AFTER_S
        return response
    event = batch.accepted[0]
    return json_response(
        {"accepted": True, "message_id": event["id"], "profile_id": event["v"]}, status=202
    )
