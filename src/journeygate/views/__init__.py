"""HTTP handlers, one module per area; :func:`add_routes` wires them into an application."""

from __future__ import annotations

from aiohttp import web

from journeygate.views import admin, decide, demo, events, experiments, feedback, ops


def add_routes(app: web.Application, with_demo: bool) -> None:
    app.router.add_post("/v1/decide", decide.decide)
    app.router.add_get("/v1/blocks/{slot}", decide.block_fragment)
    app.router.add_get("/v1/admin/plugins", admin.plugins)
    app.router.add_get("/v1/journey/transitions", admin.journey_transitions)
    app.router.add_post("/v1/events", events.events)
    app.router.add_post("/v1/batch", events.segment_batch)
    for message_type in ("track", "identify", "page", "screen", "alias"):
        app.router.add_post(f"/v1/{message_type}", events.segment_message(message_type))
    app.router.add_post("/v1/feedback", feedback.feedback)
    app.router.add_get("/v1/profiles/{visitor_id}", events.get_profile)
    app.router.add_delete("/v1/profiles/{visitor_id}", events.delete_profile)
    app.router.add_get("/v1/experiments/{experiment_id}/results", experiments.results)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
    app.router.add_get("/openapi.json", ops.openapi)
    if with_demo:
        demo.add_routes(app)
