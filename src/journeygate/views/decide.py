"""``POST /v1/decide`` (JSON for storefront code) and ``GET /v1/blocks/{slot}`` (ESI HTML)."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

from aiohttp import web

from journeygate import appkeys
from journeygate.errors import InvalidRequest
from journeygate.pipeline import Pipeline
from journeygate.validation import parse_decide_request
from journeygate.views.jsonio import json_response, read_json

IDENTITY_COOKIE_MAX_AGE = 365 * 24 * 3600


async def decide(request: web.Request) -> web.Response:
    body = await read_json(request)
    decide_request = parse_decide_request(body, request.app[appkeys.LIMITS])
    decision = await request.app[appkeys.PIPELINE].decide(decide_request)
    return json_response(
        decision.as_json(decide_request.explain), headers={"Cache-Control": "no-store"}
    )


# Query parameters of the ESI endpoint, and the decide-body field each one fills.
BLOCK_QUERY_FIELDS = {
    "visitor_id": "visitor_id",
    "session_id": "session_id",
    "kind": "slots[0].kind",
    "strategy": "slots[0].strategy",
    "limit": "slots[0].limit",
    "template": "slots[0].template",
    "plugin": "slots[0].plugin",
    "page_type": "context.page.type",
    "product_id": "context.page.product_id",
    "category": "context.page.category",
    "query": "context.page.query",
    "url": "context.page.url",
    "channel": "context.channel",
    "device": "context.device",
    "locale": "context.locale",
    "cart": "context.cart.items",
}


def _block_body(request: web.Request, visitor_id: str) -> dict[str, Any]:
    query = request.query
    slot: dict[str, Any] = {
        "id": request.match_info["slot"],
        "kind": query.get("kind", "recommendations"),
    }
    for name in ("strategy", "template", "plugin"):
        if name in query:
            slot[name] = query[name]
    if "limit" in query:
        try:
            slot["limit"] = int(query["limit"])
        except ValueError:
            raise InvalidRequest("limit must be an integer", "limit") from None
    page = {
        key: query[param]
        for param, key in (
            ("page_type", "type"),
            ("product_id", "product_id"),
            ("category", "category"),
            ("query", "query"),
            ("url", "url"),
        )
        if param in query
    }
    context: dict[str, Any] = {"page": page}
    for name in ("channel", "device", "locale"):
        if name in query:
            context[name] = query[name]
    if query.get("cart"):
        context["cart"] = {"items": [{"product_id": p} for p in query["cart"].split(",") if p]}
    body: dict[str, Any] = {"visitor_id": visitor_id, "slots": [slot], "context": context}
    if "session_id" in query:
        body["session_id"] = query["session_id"]
    return body


def _query_field(field: str | None) -> str | None:
    """Report errors in the names the caller used: query parameters, not body fields."""
    for param, body_field in BLOCK_QUERY_FIELDS.items():
        if field is not None and field.startswith(body_field):
            return param
    return field


async def block_fragment(request: web.Request) -> web.Response:
    config = request.app[appkeys.CONFIG]
    cookie_name = config.decide.cookie_name
    known_id = request.query.get("visitor_id") or request.cookies.get(cookie_name)
    visitor_id = known_id or secrets.token_hex(12)
    try:
        decide_request = parse_decide_request(
            _block_body(request, visitor_id), request.app[appkeys.LIMITS]
        )
    except InvalidRequest as error:
        error.field = _query_field(error.field)
        raise
    if known_id is None:
        # An include without identity: a one-off anonymous decision that records nothing,
        # so a shared cache may serve its answer to everybody without losing page views.
        decide_request = dataclasses.replace(decide_request, track=False)
    pipeline: Pipeline = request.app[appkeys.PIPELINE]
    decision = await pipeline.decide(decide_request)
    (block,) = decision.blocks
    response = web.Response(text=block.html, content_type="text/html", charset="utf-8")
    response.headers["X-Journeygate-Decision"] = decision.context.decision_id
    response.headers["X-Journeygate-Source"] = block.source
    response.headers["Vary"] = "Cookie"
    if known_id is None and not block.personalized:
        response.headers["Cache-Control"] = "public, max-age=60"
        return response
    # Anything tied to a visitor must never be stored by a shared cache (CDN, ESI processor).
    response.headers["Cache-Control"] = "private, no-store"
    if known_id is None:
        response.set_cookie(
            cookie_name, visitor_id, max_age=IDENTITY_COOKIE_MAX_AGE, httponly=True, samesite="Lax"
        )
    return response
