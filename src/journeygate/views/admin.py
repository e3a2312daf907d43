"""Admin endpoints (API key required)."""

from __future__ import annotations

import dataclasses
import math
import time

from aiohttp import web

from journeygate import appkeys
from journeygate.errors import InvalidRequest, ServiceUnavailable
from journeygate.events.journey import journey_map
from journeygate.middleware import requires_api_key
from journeygate.registry import plugin_infos
from journeygate.store import StoreUnavailable

DAY_S = 24 * 3600


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


def _epoch(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise InvalidRequest(f"{name} must be a time in epoch seconds", name)
    return value


@requires_api_key
async def journey_transitions(request: web.Request) -> web.Response:
    """Journey stage transition counts (from -> to) between ``since`` and ``until`` (epoch
    seconds; default: the last 24 hours)."""
    until = _epoch(request, "until", time.time())
    since = _epoch(request, "since", until - DAY_S)
    if since > until:
        raise InvalidRequest("since must not be after until", "since")
    config = request.app[appkeys.CONFIG]
    try:
        found = await journey_map(
            request.app[appkeys.STORE], since, until, config.events.transitions_maxlen
        )
    except StoreUnavailable:
        raise ServiceUnavailable("the profile store is not reachable; retry") from None
    return web.json_response(found.as_json())
