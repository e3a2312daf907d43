"""Experiment results (API key required)."""

from __future__ import annotations

from aiohttp import web

from journeygate import appkeys
from journeygate.errors import NotFound, ServiceUnavailable
from journeygate.experiments.report import experiment_results
from journeygate.middleware import requires_api_key
from journeygate.store import StoreUnavailable
from journeygate.views.jsonio import json_response


@requires_api_key
async def results(request: web.Request) -> web.Response:
    """Per-arm exposures, conversions, revenue, lifts against control with 95% intervals,
    and the sample-ratio check of one experiment."""
    runner = request.app[appkeys.EXPERIMENTS]
    experiment_id = request.match_info["experiment_id"]
    experiment = runner.experiments.get(experiment_id)
    if experiment is None:
        raise NotFound(f"no experiment {experiment_id!r}", "experiment_id")
    try:
        counts = await runner.store.arm_counts([experiment_id])
    except StoreUnavailable:
        raise ServiceUnavailable("the experiment store is not reachable; retry") from None
    body = experiment_results(experiment, counts.get(experiment_id, {}))
    return json_response(body, headers={"Cache-Control": "no-store"})
