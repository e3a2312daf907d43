"""Operations endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from journeygate import appkeys
from journeygate.metrics import CONTENT_TYPE
from journeygate.openapi import openapi_document


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and serving (says nothing about its dependencies)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the profile store answers and every enabled plugin started."""
    store = request.app[appkeys.STORE]
    pipeline = request.app[appkeys.PIPELINE]
    reachable = await store.ping()
    ready = reachable and not pipeline.startup_failures
    body = {
        "status": "ready" if ready else "unavailable",
        "store": {"backend": store.backend, "reachable": reachable},
        "plugins": {
            "started": sorted(pipeline.plugin_names),
            "failed": pipeline.startup_failures,
        },
        "catalog": {"products": len(request.app[appkeys.CATALOG])},
    }
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[appkeys.METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app[appkeys.CONFIG]))
