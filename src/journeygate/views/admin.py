"""Admin endpoints (API key required)."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from journeygate import appkeys
from journeygate.middleware import requires_api_key
from journeygate.registry import plugin_infos


@requires_api_key
async def plugins(request: web.Request) -> web.Response:
    """The running plugins in call order, with the hooks they implement and their budgets."""
    config = request.app[appkeys.CONFIG]
    pipeline = request.app[appkeys.PIPELINE]
    body = {
        "plugins": [
            dataclasses.asdict(info) | {"budget_ms": round(config.budget_s(info.name) * 1000)}
            for info in plugin_infos(request.app[appkeys.PLUGIN_MANAGER])
        ],
        "failed": pipeline.startup_failures,
        "strategies": sorted(pipeline.strategies),
    }
    return web.json_response(body)
