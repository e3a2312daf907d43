"""The application factory: synchronous, touches no network; resources open in cleanup_ctx."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pluggy
from aiohttp import web

from journeygate import appkeys
from journeygate.catalog import load_catalog
from journeygate.config import AppConfig
from journeygate.events.apply import Applier
from journeygate.events.ingest import Ingestor
from journeygate.events.streams import EventStreams
from journeygate.events.worker import consumer_name
from journeygate.experiments.config import load_experiments
from journeygate.experiments.runner import ExperimentRunner
from journeygate.experiments.storage import experiment_store
from journeygate.metrics import Metrics
from journeygate.middleware import gateway_middleware
from journeygate.pipeline import Pipeline
from journeygate.registry import build_plugin_manager
from journeygate.render import Renderer
from journeygate.store import open_store
from journeygate.validation import Limits
from journeygate.views import add_routes
from journeygate.webhooks.dispatcher import Dispatcher
from journeygate.webhooks.model import webhook_queue

log = logging.getLogger(__name__)


async def _executor_ctx(app: web.Application) -> AsyncIterator[None]:
    """One thread pool for CPU-heavy plugin work, so it never runs on the event loop."""
    workers = app[appkeys.CONFIG].plugins.executor_workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jg-plugin") as executor:
        app[appkeys.EXECUTOR] = executor
        yield


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[appkeys.CONFIG]
    store = open_store(config.store, config.store_backend, config.events)
    app[appkeys.STORE] = store
    if not await store.ping():
        log.warning(
            "profile store (%s) is not reachable yet; deciding without profiles", store.backend
        )
    yield
    await store.close()


async def _catalog_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[appkeys.CONFIG]
    path = config.resolve_path(config.catalog.path)
    loop = asyncio.get_running_loop()
    app[appkeys.CATALOG] = await loop.run_in_executor(app[appkeys.EXECUTOR], load_catalog, path)
    yield


async def _renderer_ctx(app: web.Application) -> AsyncIterator[None]:
    templates = app[appkeys.CONFIG].templates
    directories = [app[appkeys.CONFIG].resolve_path(templates.dir)]
    if templates.override_dir:
        directories.insert(0, app[appkeys.CONFIG].resolve_path(templates.override_dir))
    app[appkeys.RENDERER] = Renderer(directories, cache_size=templates.cache_size)
    yield


async def _pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start the plugins (load models) and build the pipeline that serves decisions."""
    config = app[appkeys.CONFIG]
    experiments = ExperimentRunner(
        load_experiments(config),
        experiment_store(app[appkeys.STORE], config.experiments, config.store.memory_max_visitors),
        config.experiments,
        app[appkeys.EXECUTOR],
    )
    app[appkeys.EXPERIMENTS] = experiments
    pipeline = Pipeline(
        pm=app[appkeys.PLUGIN_MANAGER],
        config=config,
        catalog=app[appkeys.CATALOG],
        store=app[appkeys.STORE],
        renderer=app[appkeys.RENDERER],
        metrics=app[appkeys.METRICS],
        executor=app[appkeys.EXECUTOR],
        experiments=experiments if experiments.experiments else None,
    )
    await pipeline.start()
    await experiments.start()
    app[appkeys.PIPELINE] = pipeline
    app[appkeys.LIMITS] = Limits(
        max_slots=config.decide.max_slots,
        max_limit=config.decide.max_limit,
        default_limit=config.decide.default_limit,
        default_strategy=config.decide.default_strategy,
        strategies=pipeline.strategies,
        plugins=pipeline.plugin_names,
        has_template=app[appkeys.RENDERER].has_template,
    )
    yield
    await experiments.stop()
    await pipeline.stop()


async def _events_ctx(app: web.Application) -> AsyncIterator[None]:
    """Event ingestion: into the Redis streams (applied by ``journeygate worker``), or, with
    the in-process store, applied at once in this process."""
    config = app[appkeys.CONFIG]
    if config.store_backend == "redis":
        timeout_s = config.events.ingest_timeout_ms / 1000
        streams = EventStreams(config.store.redis_url, config.events, timeout_s)
        app[appkeys.INGESTOR] = Ingestor(streams, None)
        # what the backpressure check last read; the worker's /metrics has the exact backlog
        app[appkeys.METRICS].watch_backlog(
            streams.names, lambda: streams.backlog, streams.high_water
        )
    else:
        applier = Applier(
            app[appkeys.STORE], config, app[appkeys.PLUGIN_MANAGER], app[appkeys.METRICS]
        )
        app[appkeys.INGESTOR] = Ingestor(None, applier)
    yield
    await app[appkeys.INGESTOR].close()


async def _webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """The webhook outbox, when endpoints are configured; with the in-process store this
    process delivers its webhooks too (with Redis, ``journeygate worker`` does). On shutdown
    the deliveries in flight finish, or, past the longest request timeout, go back to the
    retries."""
    config = app[appkeys.CONFIG]
    queue = webhook_queue(app[appkeys.STORE], config)
    if queue is None:
        yield
        return
    app[appkeys.WEBHOOKS] = queue
    if config.store_backend == "redis":
        yield
        return
    dispatcher = Dispatcher(queue, config.webhooks, consumer_name(), app[appkeys.METRICS])
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    yield
    stop.set()
    longest = max(map(config.webhooks.endpoint_timeout_ms, config.webhooks.endpoints))
    try:
        await asyncio.wait_for(task, longest / 1000 + 1)
    except TimeoutError:
        log.warning("webhook deliveries still in flight at shutdown went back to the retries")


def create_app(
    config: AppConfig, plugin_manager: pluggy.PluginManager | None = None
) -> web.Application:
    """Build the gateway application. Plugins are loaded here (imports only); they start,
    and the store and catalog open, when the application starts."""
    app = web.Application(
        client_max_size=config.server.max_body_bytes,
        middlewares=[gateway_middleware(config.server.cors_origins)],
    )
    app[appkeys.CONFIG] = config
    app[appkeys.METRICS] = Metrics()
    app[appkeys.PLUGIN_MANAGER] = plugin_manager or build_plugin_manager(config)
    app.cleanup_ctx.extend(
        [
            _executor_ctx,
            _store_ctx,
            _catalog_ctx,
            _renderer_ctx,
            _pipeline_ctx,
            _events_ctx,
            _webhooks_ctx,
        ]
    )
    add_routes(app, with_demo=config.server.demo)
    return app
