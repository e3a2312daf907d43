"""Typed application state: every ``app[...]`` access goes through one of these keys."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pluggy
from aiohttp import web

from journeygate.catalog import Catalog
from journeygate.config import AppConfig
from journeygate.events.ingest import Ingestor
from journeygate.experiments.runner import ExperimentRunner
from journeygate.metrics import Metrics
from journeygate.pipeline import Pipeline
from journeygate.render import Renderer
from journeygate.store import ProfileStore
from journeygate.validation import Limits
from journeygate.webhooks.model import WebhookQueue

CONFIG = web.AppKey("config", AppConfig)
METRICS = web.AppKey("metrics", Metrics)
PLUGIN_MANAGER = web.AppKey("plugin_manager", pluggy.PluginManager)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
STORE = web.AppKey("store", ProfileStore)
CATALOG = web.AppKey("catalog", Catalog)
RENDERER = web.AppKey("renderer", Renderer)
PIPELINE = web.AppKey("pipeline", Pipeline)
LIMITS = web.AppKey("limits", Limits)
INGESTOR = web.AppKey("ingestor", Ingestor)
EXPERIMENTS = web.AppKey("experiments", ExperimentRunner)
# set only when webhook endpoints are configured
WEBHOOKS = web.AppKey("webhooks", WebhookQueue)
