"""The decide pipeline: runs the hooks of one decision under time budgets.

This is the one place where hook implementations are called during a request. Each call is
awaited when it returns an awaitable, runs in the executor when marked with
:func:`journeygate.offload`, is cut off when it exceeds its plugin's budget, and is isolated:
a failure is logged, counted and recorded in the explanation, and the next plugin (finally the
built-in fallback) answers instead.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import Executor
from dataclasses import dataclass, field
from time import perf_counter
from types import GeneratorType
from typing import Any

import pluggy

from journeygate import OFFLOAD_ATTRIBUTE
from journeygate.catalog import Catalog, Product
from journeygate.config import AppConfig
from journeygate.experiments.runner import ExperimentRunner
from journeygate.hookspecs import FORGET_MIN_BUDGET_S, ROLE_EMBEDDED, ROLE_GATEWAY
from journeygate.metrics import Metrics
from journeygate.model import (
    Block,
    Candidate,
    DecideRequest,
    DecisionContext,
    Offer,
    SlotRequest,
    StoredVisitor,
    VisitorState,
)
from journeygate.render import Renderer
from journeygate.store import ProfileStore, StoreUnavailable

log = logging.getLogger(__name__)

VISITOR_FIELDS = ("stage", "intent", "segment", "sentiment")
FALLBACK_PLUGIN = "fallback"
# Built-ins that answer when nothing else did: a late answer from them is kept, because the
# alternative is an empty block.
WARNING_INTERVAL_S = 10.0
# Candidate tuples whose items are kept (see Pipeline._resolved_tuple): about 8 KB each for
# the recommender's 18-27 candidates, so at most ~32 MB.
RESOLVED_CACHE_SIZE = 4096
LAST_RESORT_PLUGINS = frozenset({FALLBACK_PLUGIN, "renderer"})
SLOT_HOOKS = (
    "journeygate_candidates",
    "journeygate_choose_offer",
    "journeygate_postprocess_block",
    "journeygate_render_block",
)
OBSERVE_DECISION = "journeygate_observe_decision"
DECISION_HOOKS = (
    "journeygate_enrich_visitor",
    "journeygate_candidates",
    "journeygate_choose_offer",
    "journeygate_postprocess_block",
    "journeygate_render_block",
    "journeygate_observe_decision",
)


@dataclass(frozen=True, slots=True)
class _Impl:
    """One hook implementation, prepared once at startup for fast calling."""

    plugin: str
    hook: str
    function: Callable[..., Any]
    argnames: tuple[str, ...]
    offloaded: bool
    budget: float
    last_resort: bool  # a built-in whose late answer is still better than none
    duration: Any  # the plugin's latency histogram for this hook


class PluginFailed(RuntimeError):
    """A plugin failed an operation that must not be skipped (an erasure)."""


@dataclass(slots=True)
class CallOutcome:
    """What happened when one plugin's implementation was called."""

    plugin: str
    ok: bool
    result: Any = None
    reason: str | None = None


@dataclass
class Decision:
    """A finished decision: the context plugins saw, the blocks, and the trace."""

    context: DecisionContext
    blocks: list[Block]
    trace: list[dict[str, Any]] = field(default_factory=list)
    duration_ms: float = 0.0

    def as_json(self, explain: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "decision_id": self.context.decision_id,
            "visitor": self.context.visitor.as_json(),
            "blocks": [block.as_json(self.context.decision_id) for block in self.blocks],
        }
        if explain:
            body["explain"] = {
                "duration_ms": round(self.duration_ms, 3),
                "store": {"available": self.context.stored.store_available},
                "calls": self.trace,
            }
        return body


class Pipeline:
    """Runs the decision hooks of a started plugin manager."""

    def __init__(
        self,
        pm: pluggy.PluginManager,
        config: AppConfig,
        catalog: Catalog,
        store: ProfileStore,
        renderer: Renderer,
        metrics: Metrics,
        executor: Executor,
        experiments: ExperimentRunner | None = None,
    ) -> None:
        self.pm = pm
        self.config = config
        self.catalog = catalog
        self.store = store
        self.renderer = renderer
        self.metrics = metrics
        self.executor = executor
        self.experiments = experiments
        self.strategies: frozenset[str] = frozenset()
        self.startup_failures: dict[str, str] = {}
        self._impls: dict[str, tuple[_Impl, ...]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._last_warning: dict[tuple[str, ...], float] = {}
        self._slots_concurrent = True
        self._concurrent_hooks: frozenset[str] = frozenset()
        self._item_bases: dict[str, dict[str, Any]] = {}
        self._plain_types: set[type] = set()
        self._resolved: dict[
            int, tuple[tuple[Candidate, ...], tuple[tuple[str, dict[str, Any]], ...]]
        ] = {}

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Collect the declared strategies, then call every startup hook; a plugin whose
        startup fails is unregistered. Strategies are collected first so that slots asking
        for a failed plugin's strategy are answered by the fallback, not rejected."""
        self.startup_failures.update(getattr(self.pm, "journeygate_load_failures", {}))
        strategies: set[str] = set()
        for impl in self._prepare("journeygate_slot_strategies"):
            try:
                declared = await _await_maybe(self._invoke(impl, {}))
                strategies.update(str(name) for name in declared or ())
            except Exception as exc:
                log.exception("plugin %s failed to declare its strategies", impl.plugin)
                self.startup_failures[impl.plugin] = f"{exc.__class__.__name__}: {exc}"
        self.strategies = frozenset(strategies)
        for impl in self._prepare("journeygate_startup"):
            if impl.plugin in self.startup_failures:
                continue
            try:
                await _await_maybe(
                    self._invoke(
                        impl,
                        {
                            "config": self.config,
                            "catalog": self.catalog,
                            "executor": self.executor,
                            "store": self.store,
                            "role": self.role,
                        },
                    )
                )
            except Exception as exc:
                log.exception("plugin %s failed to start; it is disabled", impl.plugin)
                self.startup_failures[impl.plugin] = f"{exc.__class__.__name__}: {exc}"
        for name in self.startup_failures:
            if self.pm.has_plugin(name):
                self.pm.unregister(name=name)
        self._impls = {name: self._prepare(name) for name in DECISION_HOOKS}
        self._concurrent_hooks = frozenset(
            name
            for name, impls in self._impls.items()
            if len(impls) > 1
            and any(impl.offloaded or inspect.iscoroutinefunction(impl.function) for impl in impls)
        )
        self._slots_concurrent = any(
            impl.offloaded or inspect.iscoroutinefunction(impl.function)
            for name in SLOT_HOOKS
            for impl in self._impls[name]
        )
        self.metrics.plugins_started.set(len(self.pm.list_name_plugin()))

    async def stop(self) -> None:
        """Wait for background observers, then call every shutdown hook."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for impl in self._prepare("journeygate_shutdown"):
            try:
                await _await_maybe(self._invoke(impl, {}))
            except Exception:
                log.exception("plugin %s failed to shut down", impl.plugin)

    @property
    def role(self) -> str:
        """The ``role`` plugins start with: a gateway with Redis leaves events to workers."""
        return ROLE_GATEWAY if self.config.store_backend == "redis" else ROLE_EMBEDDED

    async def forget_visitor(self, visitor_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Call every ``journeygate_forget_visitor`` implementation, one after the other, each
        under its plugin's budget (at least ``FORGET_MIN_BUDGET_S``). Returns each plugin's
        counts; raises :class:`PluginFailed` naming every plugin that failed, after all of
        them were called (an erasure is retried as a whole)."""
        erased: dict[str, dict[str, int]] = {}
        failed: list[str] = []
        for impl in self._prepare("journeygate_forget_visitor"):
            budget = max(impl.budget, FORGET_MIN_BUDGET_S)
            try:
                async with asyncio.timeout(budget):
                    counts = await _await_maybe(self._invoke(impl, {"visitor_ids": visitor_ids}))
            except TimeoutError:
                log.error("plugin %s did not erase within %.0f s", impl.plugin, budget)
                failed.append(f"{impl.plugin}: timeout")
                continue
            except Exception as exc:
                log.exception("plugin %s failed to erase %s", impl.plugin, list(visitor_ids))
                failed.append(f"{impl.plugin}: {exc.__class__.__name__}: {exc}")
                continue
            if counts:
                erased[impl.plugin] = {str(kind): int(n) for kind, n in counts.items()}
        if failed:
            raise PluginFailed("; ".join(failed))
        return erased

    @property
    def plugin_names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.pm.list_name_plugin())

    def _prepare(self, hook_name: str) -> tuple[_Impl, ...]:
        caller = getattr(self.pm.hook, hook_name)
        # pluggy calls the implementations in the reverse order of get_hookimpls().
        return tuple(
            _Impl(
                plugin=impl.plugin_name,
                hook=hook_name,
                function=impl.function,
                argnames=tuple(impl.argnames),
                offloaded=bool(getattr(impl.function, OFFLOAD_ATTRIBUTE, False)),
                budget=self.config.budget_s(impl.plugin_name),
                last_resort=impl.plugin_name in LAST_RESORT_PLUGINS,
                duration=self.metrics.plugin_seconds.labels(impl.plugin_name, hook_name),
            )
            for impl in reversed(caller.get_hookimpls())
        )

    def _first_in_interval(self, key: tuple[str, ...]) -> bool:
        """True at most once per ``WARNING_INTERVAL_S`` for ``key``: a failure that repeats on
        every request is logged once and counted in the metrics, not logged thousands of
        times a second."""
        now = time.monotonic()
        if now - self._last_warning.get(key, -WARNING_INTERVAL_S) < WARNING_INTERVAL_S:
            return False
        self._last_warning[key] = now
        return True

    def _invoke(self, impl: _Impl, kwargs: Mapping[str, Any]) -> Any:
        return impl.function(*map(kwargs.__getitem__, impl.argnames))

    # -- calling one implementation ------------------------------------------------------

    async def call(
        self,
        impl: _Impl,
        hook: str,
        kwargs: Mapping[str, Any],
        trace: list[dict[str, Any]] | None,
        slot: str | None = None,
        deadline: float | None = None,
    ) -> CallOutcome:
        """Call one implementation under its plugin's budget (cut to the decision's deadline,
        when one is given), isolating any failure."""
        begun = self._begin(impl, hook, kwargs, trace, slot, deadline)
        return begun if isinstance(begun, CallOutcome) else await begun

    def _begin(
        self,
        impl: _Impl,
        hook: str,
        kwargs: Mapping[str, Any],
        trace: list[dict[str, Any]] | None,
        slot: str | None = None,
        deadline: float | None = None,
    ) -> CallOutcome | Coroutine[Any, Any, CallOutcome]:
        """Start one call: its outcome when the implementation answered at once, else the
        coroutine that awaits its answer (an awaitable it returned, or its run in the
        executor when offloaded) under the rest of its budget."""
        started = perf_counter()
        budget = impl.budget
        if deadline is not None and deadline - started < budget:
            budget = max(deadline - started, 0.0)
        try:
            if impl.offloaded:
                args = [kwargs[name] for name in impl.argnames]
                result = asyncio.get_running_loop().run_in_executor(
                    self.executor, lambda: impl.function(*args)
                )
            else:
                result = impl.function(*map(kwargs.__getitem__, impl.argnames))
        except Exception as exc:
            return self._outcome(impl, hook, started, budget, trace, slot, error=exc)
        if type(result) not in self._plain_types and not self._is_plain(result):
            return self._settle(impl, hook, result, started, budget, trace, slot)
        elapsed = perf_counter() - started
        if trace is None and (elapsed <= budget or impl.last_resort):
            # the usual answer, recorded here rather than in _outcome: most calls end so
            impl.duration.observe(elapsed)
            return CallOutcome(impl.plugin, True, result)
        return self._outcome(impl, hook, started, budget, trace, slot, result)

    def _is_plain(self, result: Any) -> bool:
        """Whether a hook's result is a value rather than something to await (a type not
        seen before: ``_begin`` first looks ``type(result)`` up in ``_plain_types``, because
        ``inspect.isawaitable`` is an ABC check, slow on every call). A generator's type is
        never remembered (only some generators are coroutines)."""
        kind = type(result)
        if inspect.isawaitable(result):
            return False
        if kind is not GeneratorType:
            self._plain_types.add(kind)
        return True

    async def _settle(
        self,
        impl: _Impl,
        hook: str,
        pending: Awaitable[Any],
        started: float,
        budget: float,
        trace: list[dict[str, Any]] | None,
        slot: str | None,
    ) -> CallOutcome:
        """Await what an implementation returned under the rest of its budget."""
        try:
            async with asyncio.timeout(max(budget - (perf_counter() - started), 0)):
                result = await pending
        except Exception as exc:
            return self._outcome(impl, hook, started, budget, trace, slot, error=exc)
        return self._outcome(impl, hook, started, budget, trace, slot, result)

    def _outcome(
        self,
        impl: _Impl,
        hook: str,
        started: float,
        budget: float,
        trace: list[dict[str, Any]] | None,
        slot: str | None,
        result: Any = None,
        error: Exception | None = None,
    ) -> CallOutcome:
        """Record a finished call (its latency, a failure, the explanation's entry)."""
        elapsed = perf_counter() - started
        if error is None and elapsed > budget and not impl.last_resort:
            # A synchronous implementation cannot be interrupted; its late answer is still
            # discarded so that budgets mean the same for every plugin.
            error = TimeoutError()
        if error is None:
            outcome = CallOutcome(impl.plugin, True, result)
        elif isinstance(error, TimeoutError):
            outcome = CallOutcome(impl.plugin, False, None, "timeout")
            self._failed(impl, hook, budget)
        else:
            outcome = CallOutcome(impl.plugin, False, None, "error")
            self._failed(impl, hook, budget, error)
        impl.duration.observe(elapsed)
        if trace is not None:
            entry: dict[str, Any] = {
                "hook": hook.removeprefix("journeygate_"),
                "plugin": impl.plugin,
                "ms": round(elapsed * 1000, 3),
                "outcome": "ok" if outcome.ok else outcome.reason,
            }
            if slot is not None:
                entry["slot"] = slot
            trace.append(entry)
        return outcome

    def _failed(
        self, impl: _Impl, hook: str, budget: float, error: Exception | None = None
    ) -> None:
        """Count a call that ran out of its budget (``error`` None) or raised, and log it once
        per ``WARNING_INTERVAL_S``."""
        reason = "timeout" if error is None else "error"
        self.metrics.plugin_failures.labels(impl.plugin, hook, reason).inc()
        if not self._first_in_interval((impl.plugin, hook, reason)):
            return
        if error is None:
            log.warning(
                "plugin %s exceeded its %.0f ms budget in %s (repeats within %.0f s are "
                "counted in journeygate_plugin_failures_total, not logged)",
                impl.plugin,
                budget * 1000,
                hook,
                WARNING_INTERVAL_S,
            )
        else:
            log.error("plugin %s raised in %s: %s", impl.plugin, hook, error, exc_info=error)

    async def call_first(
        self,
        hook: str,
        kwargs: Mapping[str, Any],
        trace: list[dict[str, Any]] | None,
        accept: Callable[[Any], Any] = lambda result: result,
        only: str | None = None,
        slot: str | None = None,
        deadline: float | None = None,
    ) -> tuple[Any, str | None, list[str]]:
        """Await implementations in call order until ``accept(result)`` is truthy.

        Returns the accepted value, the plugin that produced it, and the reasons of the plugins
        that failed before it (``"name: timeout"``). ``only`` restricts the call to one plugin
        and the fallback. Once ``deadline`` has passed only the fallback is still asked, and it
        is asked under its own budget only, so that a slot is not left empty.
        """
        failures: list[str] = []
        for impl in self._impls[hook]:
            is_fallback = impl.plugin == FALLBACK_PLUGIN
            if only is not None and impl.plugin not in (only, FALLBACK_PLUGIN):
                continue
            if deadline is not None and not is_fallback and perf_counter() >= deadline:
                failures.append(f"{impl.plugin}: deadline")
                continue
            # _begin, not call: one coroutine less per call, when it answered at once
            outcome = self._begin(
                impl, hook, kwargs, trace, slot, None if is_fallback else deadline
            )
            if not isinstance(outcome, CallOutcome):
                outcome = await outcome
            if not outcome.ok:
                failures.append(f"{impl.plugin}: {outcome.reason}")
                continue
            accepted = accept(outcome.result) if outcome.result is not None else None
            if accepted:
                return accepted, impl.plugin, failures
        return None, None, failures

    async def call_all(
        self,
        hook: str,
        kwargs: Mapping[str, Any],
        trace: list[dict[str, Any]] | None,
        slot: str | None = None,
    ) -> list[CallOutcome]:
        """Run every implementation, concurrently when one of them can wait (a coroutine or
        offloaded function); outcomes come back in call order. Synchronous implementations
        are called one after the other: a task each would add overhead and no concurrency."""
        impls = self._impls[hook]
        if hook in self._concurrent_hooks:
            return list(
                await asyncio.gather(
                    *(self.call(impl, hook, kwargs, trace, slot) for impl in impls)
                )
            )
        outcomes = []
        for impl in impls:
            outcome = self._begin(impl, hook, kwargs, trace, slot)
            outcomes.append(outcome if isinstance(outcome, CallOutcome) else await outcome)
        return outcomes

    # -- one decision -----------------------------------------------------------------------

    async def load_visitor(self, request: DecideRequest) -> StoredVisitor:
        """The stored state, or an empty one when the store is down (the decision goes on)."""
        if not request.track:
            return StoredVisitor()
        page = request.context.page
        record = self.config.decide.record_page_views and page.type == "product"
        page_view = page.product_id if record else None
        try:
            return await self.store.load_visitor(request.visitor_id, request.session_id, page_view)
        except StoreUnavailable as exc:
            self.metrics.store_errors.labels("load_visitor").inc()
            if self._first_in_interval(("store", "load_visitor")):
                log.warning(
                    "profile store unavailable, deciding without profiles (repeats are "
                    "counted in journeygate_store_errors_total, not logged): %s",
                    exc,
                )
            return StoredVisitor(store_available=False)

    async def decide(self, request: DecideRequest) -> Decision:
        started = perf_counter()
        deadline = started + self.config.decide.deadline_ms / 1000
        trace: list[dict[str, Any]] | None = [] if request.explain else None
        stored = await self.load_visitor(request)
        context = DecisionContext(
            decision_id=new_decision_id(),
            request=request,
            stored=stored,
            visitor=_state_from_profile(stored.profile),
        )
        context = await self._enrich(context, trace)
        shown: set[str] = set()
        slots = self.experiments.prepare(context, trace) if self.experiments else request.slots
        answers = (self._answer(context, slot, trace, deadline, shown) for slot in slots)
        if self._slots_concurrent:
            blocks = list(await asyncio.gather(*answers))
        else:
            # Every slot hook is synchronous: tasks would add overhead and no concurrency.
            blocks = [await answer for answer in answers]
        decision = Decision(context=context, blocks=blocks, trace=trace or [])
        decision.duration_ms = (perf_counter() - started) * 1000
        if self.experiments:
            self.experiments.observe(context, blocks)
        if self._impls[OBSERVE_DECISION]:
            self._observe(context, blocks)
        return decision

    async def _enrich(
        self, context: DecisionContext, trace: list[dict[str, Any]] | None
    ) -> DecisionContext:
        outcomes = await self.call_all("journeygate_enrich_visitor", {"context": context}, trace)
        merged: dict[str, Any] = {}
        explanations: dict[str, Any] = {}
        # The plugin called first wins a contested key, so apply the others before it.
        for outcome in reversed(outcomes):
            result = outcome.result
            if not outcome.ok or not (type(result) is dict or isinstance(result, Mapping)):
                continue
            if "explain" in result:
                result = dict(result)
                explanations[outcome.plugin] = result.pop("explain")
            merged.update(result)
        if not merged:
            return context
        state = context.visitor
        attributes = {k: v for k, v in merged.items() if k not in VISITOR_FIELDS}
        if state.attributes:
            attributes = {**state.attributes, **attributes}
        # built directly: dataclasses.replace inspects the fields on every call
        state = VisitorState(
            stage=merged.get("stage", state.stage),
            intent=merged.get("intent", state.intent),
            segment=merged.get("segment", state.segment),
            sentiment=merged.get("sentiment", state.sentiment),
            attributes=attributes,
        )
        if trace is not None and explanations:
            trace.append({"hook": "enrich_visitor", "explanations": explanations})
        return DecisionContext(context.decision_id, context.request, context.stored, state)

    async def _answer(
        self,
        context: DecisionContext,
        slot: SlotRequest,
        trace: list[dict[str, Any]] | None,
        deadline: float,
        shown: set[str],
    ) -> Block:
        kwargs = {"context": context, "slot": slot}
        if slot.kind == "offer":
            offer, plugin, failures = await self.call_first(
                "journeygate_choose_offer",
                kwargs,
                trace,
                accept=_offer_or_none,
                only=slot.plugin,
                slot=slot.id,
                deadline=deadline,
            )
            block = Block(slot=slot, source=plugin or FALLBACK_PLUGIN, offer=offer)
            if trace is not None and offer is not None and offer.explain:
                trace.append(
                    {
                        "hook": "choose_offer",
                        "slot": slot.id,
                        "explanations": {block.source: dict(offer.explain)},
                    }
                )
        else:
            items, plugin, failures = await self.call_first(
                "journeygate_candidates",
                kwargs,
                trace,
                accept=lambda result: self.resolve_items(context, slot, result, shown),
                only=slot.plugin,
                slot=slot.id,
                deadline=deadline,
            )
            block = Block(slot=slot, source=plugin or FALLBACK_PLUGIN, items=items or [])
        if block.source == FALLBACK_PLUGIN:
            block.personalized = False
            if failures:
                block.fallback_reason = "; ".join(failures)
                self.metrics.fallback_blocks.labels(slot.kind).inc()
        if self._impls["journeygate_postprocess_block"]:
            await self._postprocess(context, block, trace)
        if block.offer is not None and block.offer.hidden:
            return block  # a slot answered with nothing to show: no HTML
        html, _, _ = await self.call_first(
            "journeygate_render_block",
            {"context": context, "block": block, "renderer": self.renderer},
            trace,
            accept=_text_or_none,
            slot=slot.id,
        )
        block.html = html or ""
        return block

    async def _postprocess(
        self, context: DecisionContext, block: Block, trace: list[dict[str, Any]] | None
    ) -> None:
        for impl in self._impls["journeygate_postprocess_block"]:
            saved_items, saved_offer = [dict(item) for item in block.items], block.offer
            outcome = await self.call(
                impl,
                "journeygate_postprocess_block",
                {"context": context, "block": block},
                trace,
                block.slot.id,
            )
            if not outcome.ok:
                block.items, block.offer = saved_items, saved_offer

    def _observe(self, context: DecisionContext, blocks: Sequence[Block]) -> None:
        """Call the decision observers in turn, now: most return nothing to wait for, and a
        task per decision would cost more than they do. From the first that has something
        to wait for (a store write, a run in the executor) on, the rest runs in a background
        task nobody waits for, so the observers still run one after the other."""
        kwargs = {"context": context, "blocks": blocks}
        impls = self._impls[OBSERVE_DECISION]
        for index, impl in enumerate(impls):
            begun = self._begin(impl, OBSERVE_DECISION, kwargs, None)
            if not isinstance(begun, CallOutcome):
                self._in_background(begun, impls[index + 1 :], kwargs)
                return

    def _in_background(
        self,
        settling: Awaitable[CallOutcome],
        impls: Sequence[_Impl],
        kwargs: Mapping[str, Any],
    ) -> None:
        """Finish ``settling`` (an observer's pending call), then call ``impls`` in turn, in a
        task that ``stop`` waits for."""

        async def observe() -> None:
            await settling
            for impl in impls:
                await self.call(impl, OBSERVE_DECISION, kwargs, None)

        task = asyncio.create_task(observe())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _item_base(self, product: Product) -> dict[str, Any]:
        """The catalog part of an item, built once per product and copied per request."""
        currency = self.config.catalog.currency
        return {
            "product_id": product.product_id,
            "title": product.title,
            "price": product.price,
            "currency": currency,
            "price_display": f"{product.price:.2f} {currency}",
            "category": product.category,
            "url": self.config.catalog.product_url.format(product_id=product.product_id),
        }

    def resolve_items(
        self,
        context: DecisionContext,
        slot: SlotRequest,
        candidates: Sequence[Candidate],
        shown: set[str],
    ) -> list[dict[str, Any]]:
        """Turn candidates into JSON items: known, available products only, nothing already
        in the cart, on the page or in another block of this page (``shown``, which this
        updates; slots claim products in the order their answers arrive), at most
        ``slot.limit``. Each item is a fresh dict: plugins may change it in place."""
        request = context.context
        excluded = {item.product_id for item in request.cart}
        excluded.update(shown)
        if request.page.product_id:
            excluded.add(request.page.product_id)
        if type(candidates) is tuple:
            resolved: Iterable[tuple[str, dict[str, Any]]] = self._resolved_tuple(candidates)
        else:
            resolved = self._resolve(candidates)
        items: list[dict[str, Any]] = []
        limit = slot.limit
        for product_id, item in resolved:
            if product_id in excluded:
                continue
            excluded.add(product_id)
            shown.add(product_id)
            items.append(item.copy())
            if len(items) >= limit:
                break
        return items

    def _resolved_tuple(
        self, candidates: tuple[Candidate, ...]
    ) -> tuple[tuple[str, dict[str, Any]], ...]:
        """:meth:`_resolve` of a tuple, kept: a tuple cannot change, and a plugin that
        answers from a cache of its own hands over the same one again (the recommender
        does), so its items are built once. Keyed by identity; the entry holds the tuple,
        so that its id is not reused while it is cached."""
        entry = self._resolved.get(id(candidates))
        if entry is not None and entry[0] is candidates:
            return entry[1]
        resolved = tuple(self._resolve(candidates))
        if len(self._resolved) >= RESOLVED_CACHE_SIZE:
            del self._resolved[next(iter(self._resolved))]  # the oldest entry
        self._resolved[id(candidates)] = (candidates, resolved)
        return resolved

    def _resolve(self, candidates: Iterable[Candidate]) -> Iterator[tuple[str, dict[str, Any]]]:
        """Each candidate that is a known, available product, with its item (catalog fields,
        score, reason), in order; other values a plugin returned are skipped."""
        bases = self._item_bases
        for candidate in candidates:
            if not isinstance(candidate, Candidate):
                continue
            product_id = candidate.product_id
            base = bases.get(product_id)
            if base is None:
                product = self.catalog.get(product_id)
                if product is None or not product.available:
                    continue
                base = bases[product_id] = self._item_base(product)
            item = {**base, "score": round(float(candidate.score), 6)}
            if candidate.reason:
                item["reason"] = candidate.reason
            yield product_id, item


def new_decision_id() -> str:
    """32 random hex digits, like ``uuid4().hex`` without its system call: the module's
    generator is seeded from the OS and reseeded in every forked worker."""
    return f"{random.getrandbits(128):032x}"


def _offer_or_none(result: Any) -> Offer | None:
    return result if isinstance(result, Offer) else None


def _text_or_none(result: Any) -> str | None:
    return result if isinstance(result, str) else None


async def _await_maybe(value: Any) -> Any:
    """Await ``value`` when a hook implementation returned an awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value


def _state_from_profile(profile: Mapping[str, Any]) -> VisitorState:
    """The stored profile's own view of the visitor, which enrich plugins may refine."""
    sentiment = profile.get("sentiment")
    return VisitorState(
        profile.get("stage"),
        profile.get("intent"),
        profile.get("segment"),
        float(sentiment) if isinstance(sentiment, int | float) else None,
    )
