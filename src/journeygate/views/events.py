"""Event ingestion (journeygate's ``POST /v1/events`` and the Segment Tracking API) and the
profiles built from events (``GET``/``DELETE /v1/profiles/{id}``)."""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from aiohttp import web

from journeygate import appkeys
from journeygate.errors import (
    ErasureIncomplete,
    InvalidRequest,
    NotFound,
    Overloaded,
    ServiceUnavailable,
    Unauthorized,
)
from journeygate.events.apply import BatchNotObserved
from journeygate.events.ingest import Batch, parse_batch
from journeygate.events.profile import build_profile
from journeygate.events.schema import (
    IDENTIFIER,
    EventError,
    clock_offset,
    parse_native,
    parse_segment,
)
from journeygate.events.streams import Backpressure
from journeygate.middleware import API_KEY_HEADER, error_response, requires_api_key
from journeygate.pipeline import PluginFailed
from journeygate.store import StoreUnavailable
from journeygate.views.jsonio import json_response, read_json

RETRY_AFTER_S = "1"


def _presented_key(request: web.Request) -> str | None:
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Basic "):
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    if authorization.startswith("Bearer "):
        return authorization[7:].strip() or None
    return request.headers.get(API_KEY_HEADER)


def authorize_write(request: web.Request, body_key: Any = None) -> None:
    """A write key (or an API key) as the basic auth user name, a bearer token, X-API-Key, or
    (Segment) ``writeKey`` in the body."""
    config = request.app[appkeys.CONFIG]
    presented = _presented_key(request) or (body_key if isinstance(body_key, str) else None)
    if presented:
        candidate = presented.encode()
        for key in (*config.events.write_keys, *config.server.api_keys):
            if hmac.compare_digest(candidate, key.encode()):
                return
    raise Unauthorized(
        "a valid write key is required (HTTP basic auth user name, or the X-API-Key header)"
    )


async def _read_json(request: web.Request) -> Any:
    """The body as JSON, within ``events.max_body_bytes`` (after gzip decoding)."""
    return await read_json(request, request.app[appkeys.CONFIG].events.max_body_bytes)


def _offset(sent_at: Any, received: float, field: str) -> float:
    try:
        return clock_offset(sent_at, received, field)
    except EventError as error:
        raise InvalidRequest(error.message, error.field) from None


def _items(value: Any, field: str, max_batch: int) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"{field} must be a non-empty array", field)
    if len(value) > max_batch:
        raise InvalidRequest(f"{field} has more than {max_batch} events", field)
    return value


async def _submit(request: web.Request, batch: Batch, **extra: Any) -> web.Response:
    """Store the accepted events, or answer 503 with Retry-After (Segment libraries retry
    5xx answers), the same for every ingestion endpoint."""
    try:
        await request.app[appkeys.INGESTOR].submit(batch)
    except StoreUnavailable:
        error: ServiceUnavailable = ServiceUnavailable(
            "events cannot be stored right now; retry (nothing was accepted)"
        )
        retry_after = RETRY_AFTER_S
    except BatchNotObserved:
        # the in-process store: applied, but a batch observer needs them again
        error = ServiceUnavailable(
            "events applied but not yet observed by every plugin; send them again (each "
            "message id is applied once)"
        )
        retry_after = RETRY_AFTER_S
    except Backpressure:
        error = Overloaded("the event workers are behind; retry later (nothing was accepted)")
        retry_after = str(request.app[appkeys.CONFIG].events.backpressure_retry_after_s)
    else:
        return json_response(extra | batch.as_json())
    response = error_response(error)
    response.headers["Retry-After"] = retry_after
    return response


async def events(request: web.Request) -> web.Response:
    """``POST /v1/events``: ``{"events": [...], "sent_at": optional}``."""
    authorize_write(request)
    body = await _read_json(request)
    if not isinstance(body, Mapping):
        raise InvalidRequest("body must be an object with an events array")
    config = request.app[appkeys.CONFIG].events
    received = time.time()
    items = _items(body.get("events"), "events", config.max_batch)
    offset = _offset(body.get("sent_at"), received, "sent_at")
    batch = parse_batch(items, "events", parse_native, config, offset, received)
    return await _submit(request, batch)


async def segment_batch(request: web.Request) -> web.Response:
    """``POST /v1/batch`` of the Segment Tracking API: ``{"batch": [...], "sentAt", ...}``."""
    body = await _read_json(request)
    if not isinstance(body, Mapping):
        raise InvalidRequest("body must be an object with a batch array")
    authorize_write(request, body.get("writeKey"))
    config = request.app[appkeys.CONFIG].events
    received = time.time()
    items = _items(body.get("batch"), "batch", config.max_batch)
    context = body.get("context")
    if isinstance(context, Mapping):
        items = [
            {**item, "context": {**context, **(item.get("context") or {})}}
            if isinstance(item, Mapping)
            else item
            for item in items
        ]
    offset = _offset(body.get("sentAt"), received, "sentAt")
    batch = parse_batch(items, "batch", parse_segment, config, offset, received)
    return await _submit(request, batch, success=True)


def segment_message(message_type: str) -> Any:
    """``POST /v1/track`` and friends: one Segment message, its type given by the path."""

    async def handler(request: web.Request) -> web.Response:
        body = await _read_json(request)
        if not isinstance(body, Mapping):
            raise InvalidRequest("body must be an object")
        authorize_write(request, body.get("writeKey"))
        config = request.app[appkeys.CONFIG].events
        received = time.time()
        offset = _offset(body.get("sentAt"), received, "sentAt")
        parse = partial(parse_segment, message_type=message_type)
        batch = parse_batch([body], "", parse, config, offset, received)
        if batch.rejected:
            error = batch.rejected[0]
            field = error["field"].removeprefix("[0]").lstrip(".") or None
            raise InvalidRequest(error["message"].replace("[0].", "", 1), field)
        return await _submit(request, batch, success=True)

    handler.__name__ = f"segment_{message_type}"
    return handler


def _visitor_id(request: web.Request) -> str:
    visitor_id = request.match_info["visitor_id"]
    if not IDENTIFIER.match(visitor_id):
        raise InvalidRequest(
            "visitor id must be 1-128 characters of letters, digits and . _ : @ + -",
            "visitor_id",
        )
    return visitor_id


@requires_api_key
async def get_profile(request: web.Request) -> web.Response:
    """The merged profile: aggregates, sessions, cart, consents (ids merged into it resolve
    to it)."""
    visitor_id = _visitor_id(request)
    store = request.app[appkeys.STORE]
    config = request.app[appkeys.CONFIG]
    try:
        profile_id = await store.resolve_visitor(visitor_id)
        raw = await store.load_events_profile(profile_id)
    except StoreUnavailable:
        raise ServiceUnavailable("the profile store is not reachable; retry") from None
    if raw is None:
        raise NotFound(f"no profile for {visitor_id!r}", "visitor_id")
    body = build_profile(raw, visitor_id, profile_id, config.events.session_gap_s)
    return json_response(body, headers={"Cache-Control": "no-store"})


@requires_api_key
async def delete_profile(request: web.Request) -> web.Response:
    """Erase the visitor everywhere: first what plugins keep outside the profile (timers,
    logs), the webhooks not delivered yet (with their dead letters) and its events in the
    event dead letters, then its profile (the merged one when it was merged), the ids merged
    into it, sessions, histories and dedupe keys. Events received before now that are still
    queued are dropped when the worker reaches them (the erasure marker). A plugin that
    fails leaves the profile in place and the answer is 503, so a retry finds every merged id
    again."""
    visitor_id = _visitor_id(request)
    store = request.app[appkeys.STORE]
    webhooks = request.app.get(appkeys.WEBHOOKS)
    try:
        profile_id = await store.resolve_visitor(visitor_id)
        ids = list(dict.fromkeys([visitor_id, profile_id, *await store.merged_ids(profile_id)]))
    except StoreUnavailable:
        raise ServiceUnavailable("the profile store is not reachable; retry") from None
    try:
        plugins = await request.app[appkeys.PIPELINE].forget_visitor(ids)
    except PluginFailed as exc:
        raise ErasureIncomplete(
            f"not erased, retry: a plugin failed to forget the visitor ({exc})"
        ) from None
    try:
        dropped = await webhooks.forget_visitor(ids) if webhooks is not None else 0
        streams = request.app[appkeys.INGESTOR].streams
        dead_letters = await streams.forget_dead_letters(ids) if streams is not None else 0
        erased = await store.delete_visitor(profile_id)
        if profile_id != visitor_id:
            erased = await store.delete_visitor(visitor_id) or erased
    except StoreUnavailable:
        raise ServiceUnavailable("the profile store is not reachable; retry") from None
    body = {
        "visitor_id": visitor_id,
        "profile_id": profile_id,
        "erased": erased
        or bool(dropped or dead_letters)
        or any(any(c.values()) for c in plugins.values()),
        "ids": ids,
        "plugins": plugins,
        "webhooks": dropped,
        "dead_letters": dead_letters,
    }
    return web.json_response(body)
