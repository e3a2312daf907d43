"""The pipeline through real decisions: budgets, isolation, ordering, offloading, merging."""

import asyncio
import threading
import time

from journeygate import hookimpl, offload
from journeygate.model import Candidate, Offer
from testkit import settle

PRODUCT_PAGE = {"page": {"type": "product", "product_id": "85123A"}}


def decide_body(*slots, explain=True, visitor_id="v-pipe", context=None):
    return {
        "visitor_id": visitor_id,
        "session_id": "s-pipe",
        "context": context or PRODUCT_PAGE,
        "slots": list(slots) or [{"id": "recs", "kind": "recommendations", "limit": 4}],
        "explain": explain,
    }


async def decide(client, body):
    response = await client.post("/v1/decide", json=body)
    assert response.status == 200, await response.text()
    return await response.json()


class Picks:
    """Answers strategy `picks` with fixed products."""

    def __init__(self, products=("22423", "84879", "47566", "20725", "22720")):
        self.products = products

    @hookimpl
    def journeygate_slot_strategies(self):
        return ["picks"]

    @hookimpl
    def journeygate_candidates(self, slot):
        if slot.strategy != "picks":
            return None
        return [
            Candidate(p, score=1.0 / (i + 1), reason="picked") for i, p in enumerate(self.products)
        ]


class SlowPicks(Picks):
    @hookimpl
    async def journeygate_candidates(self, slot):
        await asyncio.sleep(2)
        return [Candidate("22423")]


class CrashingPicks(Picks):
    @hookimpl
    def journeygate_candidates(self, slot):
        raise RuntimeError("model file is corrupt")


class BlockingPicks(Picks):
    """A synchronous plugin that overruns: it cannot be interrupted, but its answer is dropped."""

    @hookimpl
    def journeygate_candidates(self, slot):
        time.sleep(0.08)
        return [Candidate("22423")]


PICKS_SLOT = {"id": "picks", "kind": "recommendations", "strategy": "picks", "limit": 3}


async def test_plugin_answer_is_resolved_against_the_catalog(gateway):
    client = await gateway(
        extra_plugins=[("picks", Picks(products=("22423", "NOPE", "85123A", "84879")))]
    )
    body = await decide(client, decide_body(PICKS_SLOT))
    (block,) = body["blocks"]
    assert block["source"] == "picks"
    # Unknown products and the product on the page are dropped; titles come from the catalog.
    assert [item["product_id"] for item in block["items"]] == ["22423", "84879"]
    assert block["items"][0]["title"] == "Regency Cakestand 3 Tier"
    assert block["items"][0]["reason"] == "picked"


async def test_cart_items_are_not_recommended(gateway):
    client = await gateway(extra_plugins=[("picks", Picks())])
    context = {**PRODUCT_PAGE, "cart": {"items": [{"product_id": "22423", "quantity": 2}]}}
    body = await decide(client, decide_body(PICKS_SLOT, context=context))
    assert "22423" not in [item["product_id"] for item in body["blocks"][0]["items"]]


async def test_slow_plugin_is_cut_off_and_the_fallback_answers(gateway):
    client = await gateway(
        extra_plugins=[("slow", SlowPicks())], plugin={"slow": {"budget_ms": 30}}
    )
    started = time.perf_counter()
    body = await decide(client, decide_body({**PICKS_SLOT, "limit": 5}))
    assert time.perf_counter() - started < 1.0
    (block,) = body["blocks"]
    assert block["source"] == "fallback"
    assert block["fallback_reason"] == "slow: timeout"
    assert len(block["items"]) == 5
    calls = [c for c in body["explain"]["calls"] if c.get("plugin") == "slow"]
    assert calls[0]["outcome"] == "timeout"
    metrics = await (await client.get("/metrics")).text()
    failures = 'journeygate_plugin_failures_total{hook="journeygate_candidates",plugin="slow"'
    assert f'{failures},reason="timeout"}} 1.0' in metrics
    assert 'journeygate_fallback_blocks_total{kind="recommendations"} 1.0' in metrics


async def test_crashing_plugin_is_isolated(gateway, caplog):
    client = await gateway(extra_plugins=[("crash", CrashingPicks())])
    for _ in range(3):
        body = await decide(client, decide_body(PICKS_SLOT))
        assert body["blocks"][0]["source"] == "fallback"
        assert body["blocks"][0]["fallback_reason"] == "crash: error"
    metrics = await (await client.get("/metrics")).text()
    assert 'plugin="crash",reason="error"} 3.0' in metrics
    # Logged once with its traceback, then only counted: no log flood at full traffic.
    logged = [r for r in caplog.records if "crash raised" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


async def test_overrunning_sync_plugin_answer_is_discarded(gateway):
    client = await gateway(
        extra_plugins=[("blocking", BlockingPicks())], plugin={"blocking": {"budget_ms": 20}}
    )
    body = await decide(client, decide_body(PICKS_SLOT))
    assert body["blocks"][0]["source"] == "fallback"
    assert body["blocks"][0]["fallback_reason"] == "blocking: timeout"


async def test_decision_deadline_skips_remaining_plugins(gateway):
    client = await gateway(
        extra_plugins=[("slow", SlowPicks()), ("picks", Picks())],
        decide={"deadline_ms": 40},
        plugin={"slow": {"budget_ms": 1000}},
    )
    started = time.perf_counter()
    body = await decide(client, decide_body(PICKS_SLOT))
    assert time.perf_counter() - started < 0.5
    block = body["blocks"][0]
    assert block["source"] == "fallback"
    assert block["fallback_reason"] == "slow: timeout; picks: deadline"


class OffloadedPicks(Picks):
    def __init__(self):
        super().__init__()
        self.threads = []

    @hookimpl
    @offload
    def journeygate_candidates(self, slot):
        self.threads.append(threading.current_thread().name)
        return [Candidate("22423", score=0.5)]


async def test_offloaded_plugin_runs_in_the_executor(gateway):
    plugin = OffloadedPicks()
    client = await gateway(extra_plugins=[("offloaded", plugin)])
    body = await decide(client, decide_body(PICKS_SLOT))
    assert body["blocks"][0]["source"] == "offloaded"
    assert plugin.threads and all(name.startswith("jg-plugin") for name in plugin.threads)


async def test_first_registered_plugin_wins_and_order_config_changes_it(gateway):
    first, second = Picks(products=("22423",)), Picks(products=("84879",))
    client = await gateway(extra_plugins=[("first", first), ("second", second)])
    body = await decide(client, decide_body(PICKS_SLOT))
    assert body["blocks"][0]["source"] == "first"
    client = await gateway(
        extra_plugins=[("first", first), ("second", second)],
        plugins={"order": ["second"]},
    )
    body = await decide(client, decide_body(PICKS_SLOT))
    assert body["blocks"][0]["source"] == "second"
    body = await decide(client, decide_body({**PICKS_SLOT, "plugin": "first"}))
    assert body["blocks"][0]["source"] == "first"


class StageScorer:
    @hookimpl
    def journeygate_enrich_visitor(self, context):
        stage = "decision" if context.context.cart else "consideration"
        return {
            "stage": stage,
            "intent": "comparing",
            "explain": {"cart_items": len(context.context.cart)},
        }


class SegmentScorer:
    @hookimpl
    async def journeygate_enrich_visitor(self, context):
        await asyncio.sleep(0)
        return {
            "segment": "gift-buyer",
            "stage": "awareness",
            "pages_seen": context.stored.session_pages,
        }


async def test_enrichment_merges_all_plugins_first_called_wins(gateway):
    client = await gateway(extra_plugins=[("stage", StageScorer()), ("segment", SegmentScorer())])
    body = await decide(client, decide_body({"id": "hero", "kind": "offer"}))
    assert body["visitor"]["stage"] == "consideration"  # both set it; `stage` is called first
    assert body["visitor"]["segment"] == "gift-buyer"
    assert body["visitor"]["intent"] == "comparing"
    assert body["visitor"]["pages_seen"] == 0
    explained = [c for c in body["explain"]["calls"] if "explanations" in c]
    assert explained[0]["explanations"] == {"stage": {"cart_items": 0}}


async def test_stored_profile_seeds_the_visitor_state(gateway, redis_url, visitor_id):
    from journeygate.config import StoreConfig
    from journeygate.store import open_store

    store = open_store(StoreConfig(redis_url=redis_url), "redis")
    await store.update_profile(visitor_id, {"segment": "wholesale", "sentiment": 0.4})
    await store.close()
    client = await gateway(store={"redis_url": redis_url})
    body = await decide(client, decide_body({"id": "hero", "kind": "offer"}, visitor_id=visitor_id))
    assert body["visitor"]["segment"] == "wholesale"
    assert body["visitor"]["sentiment"] == 0.4


class SeasonalOffer:
    @hookimpl
    def journeygate_choose_offer(self, context, slot):
        if context.context.cart_value > 50:
            return Offer(id="bundle-10", title="10% off bundles", reason="cart over £50")
        return None


async def test_offer_plugin_or_default_offer(gateway):
    client = await gateway(extra_plugins=[("offers", SeasonalOffer())])
    slot = {"id": "hero", "kind": "offer"}
    big_cart = {"cart": {"items": [{"product_id": "22423", "quantity": 5, "price": 12.75}]}}
    body = await decide(client, decide_body(slot, context=big_cart))
    assert body["blocks"][0]["source"] == "offers"
    assert body["blocks"][0]["offer"]["id"] == "bundle-10"
    assert 'data-jg-offer="bundle-10"' in body["blocks"][0]["html"]
    body = await decide(client, decide_body(slot))
    assert body["blocks"][0]["source"] == "fallback"
    assert body["blocks"][0]["offer"]["id"] == "free-delivery"
    assert "fallback_reason" not in body["blocks"][0]


class QuietOffer:
    """Leaves the hero slot empty on the cart page, and says what it considered."""

    @hookimpl
    def journeygate_choose_offer(self, context, slot):
        considered = {"considered": ["bundle-10"], "why": "nothing upsells on the cart page"}
        if context.context.page.type == "cart":
            return Offer.nothing("cart page", explain=considered)
        return Offer(id="bundle-10", title="10% off bundles", explain=considered)


async def test_an_offer_can_hide_its_slot_and_explain_its_choice(gateway):
    client = await gateway(extra_plugins=[("quiet", QuietOffer())])
    slot = {"id": "hero", "kind": "offer"}
    body = await decide(client, decide_body(slot, context={"page": {"type": "cart"}}))
    (block,) = body["blocks"]
    assert block["source"] == "quiet" and block["html"] == ""
    assert block["offer"] == {
        "id": "",
        "title": "",
        "body": "",
        "cta_label": None,
        "cta_url": None,
        "reason": "cart page",
        "hidden": True,
    }
    assert not [c for c in body["explain"]["calls"] if c["hook"] == "render_block"]
    (explained,) = [c for c in body["explain"]["calls"] if "explanations" in c]
    assert explained == {
        "hook": "choose_offer",
        "slot": "hero",
        "explanations": {
            "quiet": {"considered": ["bundle-10"], "why": "nothing upsells on the cart page"}
        },
    }
    body = await decide(client, decide_body(slot, explain=False))
    assert "explain" not in body and body["blocks"][0]["offer"]["id"] == "bundle-10"
    assert body["blocks"][0]["html"]
    response = await client.get("/v1/blocks/hero?kind=offer&page_type=cart&visitor_id=v-esi")
    assert response.status == 200 and await response.text() == ""


class Badger:
    @hookimpl
    async def journeygate_postprocess_block(self, block):
        for item in block.items:
            item["badge"] = "new"


class BrokenPostprocessor:
    @hookimpl(tryfirst=True)
    def journeygate_postprocess_block(self, block):
        block.items.clear()
        raise ValueError("half-way through")


async def test_postprocess_changes_apply_and_failed_changes_are_rolled_back(gateway):
    client = await gateway(extra_plugins=[("badger", Badger()), ("broken", BrokenPostprocessor())])
    body = await decide(client, decide_body())
    items = body["blocks"][0]["items"]
    assert len(items) == 4
    assert all(item["badge"] == "new" for item in items)


class CachedPicks(Picks):
    """Answers from a cache of its own: the same tuple every time (as the recommender does)."""

    def __init__(self):
        super().__init__()
        self.answer = tuple(
            Candidate(p, score=1.0 / (i + 1), reason="picked") for i, p in enumerate(self.products)
        )

    @hookimpl
    def journeygate_candidates(self, slot):
        return self.answer if slot.strategy == "picks" else None


class Stamper:
    """Changes every item in place: a list it appends to would grow across decisions if
    they shared item dicts."""

    @hookimpl
    def journeygate_postprocess_block(self, context, block):
        for item in block.items:
            item.setdefault("seen_by", []).append(context.visitor_id)


async def test_a_cached_candidate_tuple_gives_fresh_items_and_this_decisions_exclusions(gateway):
    client = await gateway(extra_plugins=[("picks", CachedPicks()), ("stamper", Stamper())])
    first = await decide(client, decide_body(PICKS_SLOT, visitor_id="v-one"))
    cart = {"items": [{"product_id": "84879", "quantity": 1}]}
    second = await decide(
        client, decide_body(PICKS_SLOT, visitor_id="v-two", context={**PRODUCT_PAGE, "cart": cart})
    )
    third = await decide(client, decide_body(PICKS_SLOT, visitor_id="v-three"))
    ids = [
        [item["product_id"] for item in body["blocks"][0]["items"]]
        for body in (first, second, third)
    ]
    assert ids == [
        ["22423", "84879", "47566"],
        ["22423", "47566", "20725"],  # the cart's product left out of this decision only
        ["22423", "84879", "47566"],
    ]
    # the postprocessor's changes stay in the decision it changed
    for body, visitor in ((first, "v-one"), (second, "v-two"), (third, "v-three")):
        assert [item["seen_by"] for item in body["blocks"][0]["items"]] == [[visitor]] * 3


class PlainRenderer:
    @hookimpl
    def journeygate_render_block(self, block, renderer):
        if block.slot.kind != "recommendations":
            return None
        return renderer.render(
            "list", block=block, slot=block.slot, items=block.items, decision_id="d"
        )


async def test_render_hook_first_result_wins(gateway):
    client = await gateway(extra_plugins=[("plain", PlainRenderer())])
    body = await decide(
        client, decide_body({"id": "r", "kind": "recommendations"}, {"id": "o", "kind": "offer"})
    )
    assert body["blocks"][0]["html"].startswith('<ol class="jg-block jg-list"')
    assert body["blocks"][1]["html"].startswith('<aside class="jg-block jg-offer"')


class Observer:
    def __init__(self):
        self.seen = []
        self.done = asyncio.Event()

    @hookimpl
    async def journeygate_observe_decision(self, context, blocks):
        self.seen.append((context.decision_id, [b.slot.id for b in blocks]))
        self.done.set()


async def test_observers_see_each_served_decision(gateway):
    observer = Observer()
    client = await gateway(extra_plugins=[("observer", observer)])
    body = await decide(client, decide_body())
    await asyncio.wait_for(observer.done.wait(), 2)
    assert observer.seen == [(body["decision_id"], ["recs"])]


class PlainObserver:
    """A synchronous observer that returns an awaitable only for some decisions."""

    def __init__(self):
        self.seen = []
        self.awaited = asyncio.Event()

    @hookimpl
    def journeygate_observe_decision(self, context):
        self.seen.append(context.visitor_id)
        if context.visitor_id == "v-write":
            return self._write()
        if context.visitor_id == "v-slow":
            return asyncio.sleep(5)
        return None

    async def _write(self):
        self.awaited.set()


class RaisingObserver:
    @hookimpl
    def journeygate_observe_decision(self, context):
        raise RuntimeError(f"cannot observe {context.visitor_id}")


async def test_observer_awaitables_and_failures_are_isolated_and_counted(gateway, caplog):
    plain = PlainObserver()
    client = await gateway(
        extra_plugins=[("plain", plain), ("raising", RaisingObserver())],
        plugin={"plain": {"budget_ms": 50}},
    )
    for visitor in ("v-none", "v-write", "v-slow"):
        body = await decide(client, decide_body(visitor_id=visitor))
        assert body["blocks"][0]["items"]
    await asyncio.wait_for(plain.awaited.wait(), 2)
    assert plain.seen == ["v-none", "v-write", "v-slow"]

    async def counted():
        metrics = await (await client.get("/metrics")).text()
        hook = 'journeygate_plugin_failures_total{hook="journeygate_observe_decision"'
        return (
            f'{hook},plugin="plain",reason="timeout"}} 1.0' in metrics
            and f'{hook},plugin="raising",reason="error"}} 3.0' in metrics
        )

    await settle(counted)
    logged = [r for r in caplog.records if "raising raised" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


class WritingObserver:
    """Called first; its write takes a while."""

    def __init__(self):
        self.written = []

    @hookimpl(tryfirst=True)
    def journeygate_observe_decision(self, context):
        return self._write(context.decision_id)

    async def _write(self, decision_id):
        await asyncio.sleep(0.02)
        self.written.append(decision_id)


class FollowingObserver:
    """Called after the writer: what it sees of the writer's work shows the order."""

    def __init__(self, writer):
        self.writer = writer
        self.saw = []
        self.done = asyncio.Event()

    @hookimpl(trylast=True)
    def journeygate_observe_decision(self, context):
        self.saw.append(list(self.writer.written))
        self.done.set()


async def test_observers_run_one_after_the_other_including_their_writes(gateway):
    writer = WritingObserver()
    following = FollowingObserver(writer)
    client = await gateway(extra_plugins=[("writer", writer), ("following", following)])
    body = await decide(client, decide_body())
    await asyncio.wait_for(following.done.wait(), 2)
    assert following.saw == [[body["decision_id"]]]


class Lifecycle:
    def __init__(self):
        self.events = []

    @hookimpl
    async def journeygate_startup(self, config, catalog):
        self.events.append(("startup", len(catalog)))

    @hookimpl
    def journeygate_shutdown(self):
        self.events.append(("shutdown",))


async def test_startup_and_shutdown_hooks(gateway):
    plugin = Lifecycle()
    client = await gateway(extra_plugins=[("life", plugin)])
    assert plugin.events[0][0] == "startup" and plugin.events[0][1] > 3000
    await client.close()
    assert plugin.events[-1] == ("shutdown",)


class BrokenStartup:
    @hookimpl
    def journeygate_startup(self):
        raise FileNotFoundError("model.npz")

    @hookimpl
    def journeygate_candidates(self):
        raise AssertionError("never called: the plugin was unregistered")


async def test_failed_startup_unregisters_plugin_and_readyz_reports_it(gateway):
    client = await gateway(extra_plugins=[("broken", BrokenStartup())])
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["plugins"]["failed"] == {"broken": "FileNotFoundError: model.npz"}
    body = await decide(client, decide_body())
    assert body["blocks"][0]["source"] == "fallback"


async def test_blocks_of_one_page_do_not_repeat_products(gateway):
    client = await gateway(extra_plugins=[("picks", Picks())])
    body = await decide(
        client,
        decide_body(
            {"id": "a", "kind": "recommendations", "strategy": "picks", "limit": 2},
            {"id": "b", "kind": "recommendations", "strategy": "picks", "limit": 2},
            {"id": "c", "kind": "recommendations", "limit": 6},
        ),
    )
    ids = [item["product_id"] for block in body["blocks"] for item in block["items"]]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert {b["slot"]: b["source"] for b in body["blocks"]} == {
        "a": "picks",
        "b": "picks",
        "c": "fallback",
    }


class BadStrategies:
    @hookimpl
    async def journeygate_slot_strategies(self):
        raise RuntimeError("cannot list")


class FailingRecommender(Picks):
    @hookimpl
    def journeygate_startup(self):
        raise OSError("no artifact")


async def test_strategy_errors_and_failed_startups_never_break_the_gateway(gateway):
    client = await gateway(extra_plugins=[("bad", BadStrategies()), ("recs", FailingRecommender())])
    ready = await (await client.get("/readyz")).json()
    assert ready["plugins"]["failed"] == {
        "bad": "RuntimeError: cannot list",
        "recs": "OSError: no artifact",
    }
    # The failed plugin's strategy is still known, so the fallback answers it.
    body = await decide(client, decide_body(PICKS_SLOT))
    assert body["blocks"][0]["source"] == "fallback"
