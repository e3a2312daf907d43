"""Request middlewares: metrics, CORS, JSON errors, and the API-key contract for admin routes.

Domain errors (:class:`~journeygate.errors.GatewayError`) and aiohttp's own HTTP errors are
translated to ``{"error": {"code", "message", "field"}}`` here and nowhere else.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from journeygate import appkeys
from journeygate.errors import (
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_KEY_ATTRIBUTE = "journeygate_requires_api_key"
API_KEY_HEADER = "X-API-Key"


def requires_api_key(handler: Handler) -> Handler:
    """Mark a write or admin handler: it answers only with a key from ``server.api_keys``.

    The key is sent as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``. A gateway with no
    keys configured refuses every marked route (closed by default).
    """
    setattr(handler, API_KEY_ATTRIBUTE, True)
    return handler


def error_response(error: GatewayError) -> web.Response:
    return web.json_response(error.as_json(), status=error.status)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        request.app[appkeys.METRICS].observe_request(
            name, request.method, status, time.perf_counter() - started
        )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as error:
        return error_response(error)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[appkeys.CONFIG].server.max_body_bytes
        return error_response(PayloadTooLarge(f"request body exceeds {limit} bytes"))
    except web.HTTPNotFound:
        return error_response(NotFound(f"no route for {request.method} {request.path}"))
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        response = error_response(
            MethodNotAllowed(f"{request.method} is not allowed here; use {allowed}")
        )
        response.headers["Allow"] = allowed
        return response
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(GatewayError("internal error; see the server log"))


def cors_middleware(origins: tuple[str, ...]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Allow browsers on the configured storefront origins (``*`` allows any) to call the API."""
    allow_any = "*" in origins
    allowed = frozenset(origins)

    def allow(origin: str | None) -> bool:
        return origin is not None and (allow_any or origin in allowed)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not allow(origin):
                return error_response(Unauthorized(f"origin {origin!r} is not allowed"))
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = (
                "Content-Type, X-API-Key, Authorization"
            )
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        if allow(origin):
            response.headers["Access-Control-Allow-Origin"] = origin or "*"
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers.add("Vary", "Origin")
        return response

    return middleware


@web.middleware
async def api_key_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route_handler = request.match_info.handler
    if getattr(route_handler, API_KEY_ATTRIBUTE, False):
        keys = request.app[appkeys.CONFIG].server.api_keys
        presented = request.headers.get(API_KEY_HEADER)
        authorization = request.headers.get("Authorization", "")
        if presented is None and authorization.startswith("Bearer "):
            presented = authorization.removeprefix("Bearer ").strip()
        if not presented or not any(
            hmac.compare_digest(presented.encode(), key.encode()) for key in keys
        ):
            raise Unauthorized(f"a valid API key is required ({API_KEY_HEADER} header)")
    return await handler(request)
