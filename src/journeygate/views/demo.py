"""The demo storefront page: shows personalization working in a browser."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

DEMO_DIR = Path(__file__).resolve().parent.parent / "static" / "demo"


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(DEMO_DIR / "index.html")


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/demo/")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", redirect)
    app.router.add_get("/demo", redirect)
    app.router.add_get("/demo/", index)
