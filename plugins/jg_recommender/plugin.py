"""The recommender as a gateway plugin: serves the trained artifact for six slot strategies.

The model is held in memory and scored in the gateway's executor, never on the event loop;
rankings are cached per model (similar items of a product, a basket's companions, trending
per category, a search query, an anonymous session's neighbours repeat across visitors), so
the executor is only used when an answer is new;
search queries go through the micro-batching encoder so concurrent queries share one forward
pass. A watcher picks up a newly trained artifact (``CURRENT`` changes) and swaps it in
without a restart: the new model is loaded off the loop and replaces the reference in one
assignment, so in-flight requests finish on the model they started with.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from jg_recommender.interaction_log import InteractionLog
from jg_recommender.model import HybridRecommender
from jg_recommender.training import (
    add_arguments_evaluate,
    add_arguments_train,
    evaluate_command,
    train_command,
)
from journeygate import hookimpl
from journeygate.artifacts import latest_artifact
from journeygate.catalog import Catalog
from journeygate.config import AppConfig
from journeygate.encoder import MicroBatchEncoder
from journeygate.events.schema import Event
from journeygate.model import Candidate, DecisionContext, SlotRequest

log = logging.getLogger(__name__)

PLUGIN_NAME = "recommender"
RANKING_DEPTH = 60  # candidates asked from the model: room for rules, cart and other blocks
WARM_CHUNK = 200  # similar-items rankings computed per background step after a model load
STRATEGIES = (
    "for_you",
    "similar_items",
    "bought_together",
    "trending",
    "search",
    "recently_viewed",
)
Ranking = list[tuple[str, float, str]]


@dataclass(frozen=True)
class RecommenderSettings:
    """``[plugin.recommender]`` settings, validated at startup."""

    artifacts: str = "var/models/recommender"
    reload_interval_s: float = 2.0
    exclude_purchased: bool = True
    max_per_family: int = 2
    search: bool = True
    cache_size: int = 20_000  # rankings kept per model (item-keyed strategies repeat a lot)
    warm_similar_items: bool = True  # precompute every product's similar items after a load
    record_interactions: bool = True  # log applied events for `journeygate train --from-events`
    interactions_dir: str = "var/interactions"
    interactions_retention_days: int = 400

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> RecommenderSettings:
        known = cls.__dataclass_fields__
        for key, value in settings.items():
            if key not in known:
                raise ValueError(f"plugin.{PLUGIN_NAME}.{key}: unknown setting")
            expected = type(getattr(cls(), key))
            valid = isinstance(value, expected) or (
                expected is float and isinstance(value, int) and not isinstance(value, bool)
            )
            if not valid or (isinstance(value, int | float) and value < 0):
                raise ValueError(
                    f"plugin.{PLUGIN_NAME}.{key}: expected a non-negative "
                    f"{expected.__name__}, got {value!r}"
                )
        return cls(**settings)


@dataclass(frozen=True)
class ModelCall:
    """A model method and its arguments; also the key of its cached ranking."""

    method: str
    args: tuple[Any, ...]

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.method, *self.args)


def title_family(title: str) -> str:
    """Two leading words of a title: variants of one product ("Lunch Bag Red Retrospot",
    "Lunch Bag Black Skull") share it, so a block can cap how many it shows."""
    words = re.findall(r"[a-z]+", title.lower())
    return " ".join(words[:2])


class RecommenderPlugin:
    """Answers recommendation slots from the latest trained :class:`HybridRecommender`."""

    def __init__(self) -> None:
        self.settings = RecommenderSettings()
        self.catalog = Catalog(())
        self.model: HybridRecommender | None = None
        self.model_path: Path | None = None
        self.encoder: MicroBatchEncoder | None = None
        self.executor: Executor | None = None
        self.artifacts = Path(self.settings.artifacts)
        self._tasks: list[asyncio.Task[None]] = []
        self._cache_model: HybridRecommender | None = None
        self._families: dict[str, str] = {}  # product id -> title family, built as needed
        self._cache: OrderedDict[tuple[Any, ...], Ranking] = OrderedDict()
        # A cached ranking after the rules, per (model call, category filter, length): the
        # rules depend on nothing else, and the same product pages come back all the time.
        self._ruled: dict[tuple[Any, ...], tuple[Candidate, ...]] = {}
        self.interactions: InteractionLog | None = None
        # Set when this process serves slots: the pipeline asks for the strategies before
        # startup (hookspecs), the event worker never does.
        self.serving = False

    # -- lifecycle -------------------------------------------------------------------

    @hookimpl
    async def journeygate_startup(
        self, config: AppConfig, catalog: Catalog, executor: Executor
    ) -> None:
        self.settings = RecommenderSettings.from_mapping(config.plugin_config(PLUGIN_NAME).settings)
        if self.settings.record_interactions:
            self.interactions = InteractionLog(
                config.resolve_path(self.settings.interactions_dir),
                self.settings.interactions_retention_days,
            )
            self.interactions.start()
        if not self.serving:
            # An event worker starts the plugin only to observe events: no model, encoder,
            # watcher or cache warm-up (seconds of CPU and the model's memory) is needed.
            log.info("recommender: recording interactions only (this process serves no slots)")
            return
        # Scoring is many small matrix products on the executor's threads: one BLAS thread
        # each avoids oversubscribing the cores, which showed up as 10-16 ms p99 spikes.
        threadpool_limits(1, "blas")
        self.catalog = catalog
        self.executor = executor
        self.artifacts = config.resolve_path(self.settings.artifacts)
        if not await self.reload():
            log.warning(
                "no recommender artifact in %s yet (run `journeygate train`); "
                "slots fall back until one appears",
                self.artifacts,
            )
        if self.settings.reload_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._watch()))
        if self.settings.search:
            self.encoder = MicroBatchEncoder(executor=executor)

    @hookimpl
    async def journeygate_shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.encoder is not None:
            await self.encoder.close()
        if self.interactions is not None:
            await self.interactions.close()

    @hookimpl
    def journeygate_slot_strategies(self) -> Sequence[str]:
        self.serving = True
        return STRATEGIES

    @hookimpl
    def journeygate_observe_event(self, event: Event) -> None:
        """Buffer the event's interactions for the log (written off the loop, see
        :mod:`jg_recommender.interaction_log`); training reads them with ``--from-events``."""
        if self.interactions is not None:
            self.interactions.record(event)

    @hookimpl
    def journeygate_register_commands(
        self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]
    ) -> None:
        train = subparsers.add_parser("train", help="train the recommender and write an artifact")
        add_arguments_train(train)
        train.set_defaults(handler=train_command)
        evaluate = subparsers.add_parser(
            "evaluate", help="evaluate recommenders on an Online Retail file (temporal split)"
        )
        add_arguments_evaluate(evaluate)
        evaluate.set_defaults(handler=evaluate_command)

    # -- hot reload ------------------------------------------------------------------

    async def reload(self) -> bool:
        """Load the artifact ``CURRENT`` points at, if it is not the one being served.

        Reading and deserialising happen off the event loop; the swap is one assignment.
        Returns True when a model is being served afterwards.
        """
        # Loading runs on its own thread, not the scoring executor, so requests in flight are
        # never queued behind a model load.
        path = await asyncio.to_thread(latest_artifact, self.artifacts)
        if path is None or path == self.model_path:
            return self.model is not None
        try:
            model = await asyncio.to_thread(HybridRecommender.load, path)
        except Exception:
            log.exception("could not load recommender artifact %s; keeping the current one", path)
            return self.model is not None
        self.model, self.model_path = model, path
        if self.settings.warm_similar_items and self.settings.cache_size:
            self._tasks = [task for task in self._tasks if not task.done()]
            self._tasks.append(asyncio.create_task(self._warm(model)))
        log.info("recommender serving %s", path.name)
        return True

    async def _warm(self, model: HybridRecommender) -> None:
        """Fill the ranking cache with every product's similar items, a chunk at a time on a
        background thread, so product pages never wait for the executor. Stops early when a
        newer model replaced this one."""
        items = model.item_ids[: self.settings.cache_size]
        for start in range(0, len(items), WARM_CHUNK):
            if self.model is not model:
                return
            chunk = items[start : start + WARM_CHUNK]
            rankings = await asyncio.to_thread(
                lambda chunk=chunk: {
                    ("similar_items", item, RANKING_DEPTH): model.similar_items(item, RANKING_DEPTH)
                    for item in chunk
                }
            )
            self._use_caches_of(model)
            self._cache.update(rankings)
        log.info("recommender: similar items of %d products cached", len(items))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                await self.reload()
            except Exception:
                log.exception("recommender reload check failed")

    # -- answering slots ---------------------------------------------------------------

    @hookimpl
    def journeygate_candidates(
        self, context: DecisionContext, slot: SlotRequest
    ) -> Sequence[Candidate] | Awaitable[Sequence[Candidate] | None] | None:
        """Answered synchronously from the ranking cache; only a new answer returns an
        awaitable that scores in the executor (the pipeline awaits it under the budget)."""
        if slot.strategy not in STRATEGIES:
            return None
        if slot.strategy == "recently_viewed":
            return self._recently_viewed(context)
        model = self.model
        if model is None:
            return None
        # A fixed minimum keeps cache keys the same across slot limits and cart sizes.
        wanted = max(slot.limit * 3 + len(context.context.cart) + 2, RANKING_DEPTH)
        call = self._model_call(model, context, slot, wanted)
        if call is None:
            return None
        self._use_caches_of(model)
        ranking = self._cache.get(call.key)
        if ranking is None:
            return self._score_and_cache(model, call, slot, context)
        self._cache.move_to_end(call.key)
        return self._apply_rules(model, call, ranking, slot, context)

    def _use_caches_of(self, model: HybridRecommender) -> None:
        """Start empty caches when ``model`` is not the one they were filled from."""
        if self._cache_model is not model:
            self._cache_model, self._cache, self._ruled = model, OrderedDict(), {}

    async def _score_and_cache(
        self, model: HybridRecommender, call: ModelCall, slot: SlotRequest, context: DecisionContext
    ) -> Sequence[Candidate] | None:
        ranking = await self._score(model, call)
        if ranking is None:
            return None
        if self.settings.cache_size and self._cache_model is model:
            self._cache[call.key] = ranking
            if len(self._cache) > self.settings.cache_size:
                self._cache.popitem(last=False)
        return self._apply_rules(model, call, ranking, slot, context)

    def _model_call(
        self, model: HybridRecommender, context: DecisionContext, slot: SlotRequest, n: int
    ) -> ModelCall | None:
        """Which model method answers this slot, with which arguments (None: no answer)."""
        request = context.context
        params = slot.params
        product_id = str(params.get("product_id") or request.page.product_id or "")
        cart_ids = tuple(item.product_id for item in request.cart)
        strategy = slot.strategy
        if strategy == "for_you":
            session = dict.fromkeys([*context.stored.session_views, *cart_ids])
            session_items = tuple(dict.fromkeys([product_id, *session]) if product_id else session)
            stored = context.stored
            user_id = str(
                stored.profile_id or stored.profile.get("customer_id") or context.visitor_id
            )
            if not model.has_user(user_id):
                # Everything an unknown visitor gets depends on the session alone, so
                # visitors with the same session share one cached answer.
                return ModelCall("recommend_for_items", (session_items, n))
            return ModelCall(
                "recommend_for_user",
                (user_id, n, (), session_items, not self.settings.exclude_purchased),
            )
        if strategy == "similar_items":
            return ModelCall("similar_items", (product_id, n)) if product_id else None
        if strategy == "bought_together":
            basket = cart_ids or ((product_id,) if product_id else ())
            return ModelCall("bought_together", (tuple(sorted(basket)), n)) if basket else None
        if strategy == "trending":
            category = params.get("category") or request.page.category
            return ModelCall("trending", (n, (), category))
        if strategy == "search":
            query = " ".join(str(params.get("query") or request.page.query or "").split())
            if not query or self.encoder is None or not model.has_content:
                return None
            return ModelCall("search", (query.lower(), n))
        return None

    async def _score(self, model: HybridRecommender, call: ModelCall) -> Ranking | None:
        """Run the model call in the executor (the query embedding first, for search)."""
        args = call.args
        if call.method == "search":
            assert self.encoder is not None
            args = (await self.encoder.encode(args[0]), *args[1:])
        method = getattr(model, call.method)
        loop = asyncio.get_running_loop()
        ranking: Ranking = await loop.run_in_executor(self.executor, lambda: method(*args))
        return ranking

    def _recently_viewed(self, context: DecisionContext) -> list[Candidate]:
        views = dict.fromkeys(context.stored.recent_views)
        count = len(views)
        return [
            Candidate(product_id, score=1.0 - index / max(count, 1), reason="recently viewed")
            for index, product_id in enumerate(views)
        ]

    def _apply_rules(
        self,
        model: HybridRecommender,
        call: ModelCall,
        ranking: Ranking,
        slot: SlotRequest,
        context: DecisionContext,
    ) -> tuple[Candidate, ...]:
        """Business rules after scoring: category filter and per-block diversity. Exclusion of
        the cart, the page's product, unavailable products and repeats across blocks is done
        by the pipeline for every plugin; enough candidates are kept for it to have room.
        The cached tuple itself is returned: the pipeline then resolves its items once."""
        category = slot.params.get("category")
        page_slots = sum(s.limit for s in context.request.slots if s.kind == "recommendations")
        enough = slot.limit + page_slots + len(context.context.cart) + 1
        key = (call.key, category, enough)
        kept = self._ruled.get(key)
        if kept is None:
            kept = self._diversify(ranking, category, enough)
            if self.settings.cache_size and self._cache_model is model:
                if len(self._ruled) >= self.settings.cache_size:
                    del self._ruled[next(iter(self._ruled))]  # the oldest entry
                self._ruled[key] = kept
        return kept

    def _diversify(self, ranking: Ranking, category: Any, enough: int) -> tuple[Candidate, ...]:
        """The first ``enough`` available products of ``ranking`` in ``category`` (when given),
        at most ``max_per_family`` of one title family."""
        cap = self.settings.max_per_family
        families: dict[str, int] = {}
        kept: list[Candidate] = []
        for product_id, score, reason in ranking:
            product = self.catalog.get(product_id)
            if product is None or not product.available:
                continue
            if category and product.category != category:
                continue
            family = self._families.get(product_id)
            if family is None:
                family = self._families[product_id] = title_family(product.title)
            if cap and families.get(family, 0) >= cap:
                continue
            families[family] = families.get(family, 0) + 1
            kept.append(Candidate(product_id, score=score, reason=reason))
            if len(kept) >= enough:
                break
        return tuple(kept)
