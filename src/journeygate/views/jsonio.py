"""JSON request bodies and responses for every view: one content-type rule, one parser whose
errors say where the JSON broke, one fast serialiser."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from journeygate.errors import InvalidJson, PayloadTooLarge, UnsupportedMediaType

# text/plain is accepted so that browsers can send JSON without a CORS preflight.
JSON_TYPES = ("application/json", "text/plain")


async def read_json(request: web.Request, limit: int | None = None) -> Any:
    """The request body as JSON. ``limit`` caps the body in bytes (after transfer decoding)
    for routes whose limit differs from the server-wide ``client_max_size``."""
    if request.content_type not in JSON_TYPES:
        raise UnsupportedMediaType(
            f"send JSON with Content-Type: application/json, not {request.content_type!r}"
        )
    if limit is None:
        raw = await request.read()
    else:
        too_large = PayloadTooLarge(f"request body exceeds {limit} bytes")
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        chunks, size = [], 0
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        raw = b"".join(chunks)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response serialised with orjson (several times faster than the json module)."""
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )
