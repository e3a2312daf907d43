"""The request envelope: metrics, CORS, JSON errors, and the API-key contract for admin routes.

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


def _error_response(request: web.Request, exc: Exception) -> web.Response:
    """The JSON error response for an exception, or re-raise one that is not an error
    (a redirect, say)."""
    if isinstance(exc, GatewayError):
        return error_response(exc)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = request.app[appkeys.CONFIG].server.max_body_bytes
        return error_response(PayloadTooLarge(f"request body exceeds {limit} bytes"))
    if isinstance(exc, web.HTTPNotFound):
        return error_response(NotFound(f"no route for {request.method} {request.path}"))
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        response = error_response(
            MethodNotAllowed(f"{request.method} is not allowed here; use {allowed}")
        )
        response.headers["Allow"] = allowed
        return response
    if isinstance(exc, web.HTTPException):
        raise exc
    log.exception("unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return error_response(GatewayError("internal error; see the server log"))


def _check_api_key(request: web.Request) -> None:
    """Enforce :func:`requires_api_key` on the matched handler."""
    if not getattr(request.match_info.handler, API_KEY_ATTRIBUTE, False):
        return
    keys = request.app[appkeys.CONFIG].server.api_keys
    presented = request.headers.get(API_KEY_HEADER)
    authorization = request.headers.get("Authorization", "")
    if presented is None and authorization.startswith("Bearer "):
        presented = authorization.removeprefix("Bearer ").strip()
    if not presented or not any(
        hmac.compare_digest(presented.encode(), key.encode()) for key in keys
    ):
        raise Unauthorized(f"a valid API key is required ({API_KEY_HEADER} header)")


class CorsPolicy:
    """Browsers on the configured storefront origins (``*`` allows any) may call the API."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.allow_any = "*" in origins
        self.origins = frozenset(origins)

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self.allow_any or origin in self.origins)

    def preflight(self, origin: str | None) -> web.Response:
        if not self.allows(origin):
            return error_response(Unauthorized(f"origin {origin!r} is not allowed"))
        response = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, X-API-Key, Authorization"
        response.headers["Access-Control-Max-Age"] = "600"
        return response

    def decorate(self, response: web.StreamResponse, origin: str | None) -> None:
        if self.allows(origin):
            response.headers["Access-Control-Allow-Origin"] = origin or "*"
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers.add("Vary", "Origin")


def gateway_middleware(origins: tuple[str, ...]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Every request's envelope, in one layer (each middleware layer costs every request):
    metrics per route, CORS, the API-key check of marked routes, and JSON errors."""
    cors = CorsPolicy(origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            origin = request.headers.get("Origin")
            response: web.StreamResponse
            if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
                response = cors.preflight(origin)
            else:
                try:
                    _check_api_key(request)
                    response = await handler(request)
                except Exception as exc:
                    response = _error_response(request, exc)
            cors.decorate(response, origin)
            status = response.status
            return response
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            request.app[appkeys.METRICS].observe_request(
                route, request.method, status, time.perf_counter() - started
            )

    return middleware
