"""Offer selection through real decisions: each eligibility dimension, priority, schedule,
what happens when nothing is eligible, explain, experiment params and escaping."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from zoneinfo import ZoneInfo

import pytest
from offerkit import DEFAULT_OFFER, Clock, decide, eventkit, plugin_of, set_profile, start

import jg_offers.plugin as offers_plugin
from jg_offers.plugin import OffersPlugin
from journeygate import appkeys, hookimpl
from journeygate.validation import parse_decide_request

ONE_OFFER = """
[[offers]]
id = "x"
kind = "discount"
title = "X"
[offers.eligibility]
{rule}
"""

# dimension -> (rule, how to pass, how to fail); a setup sets profile fields (as the intent,
# personas, sentiment and triggers producers write them), the request's context, or consents
# through real consent events.
CART_60 = {"cart": {"items": [{"product_id": "22423", "quantity": 4, "price": 15.0}]}}
NOW = time.time()
DIMENSIONS = {
    "stage": ('stages = ["decision"]', {"profile": {"stage": "decision"}}, {}),
    "intent": (
        'intents = ["ready_to_buy"]',
        {"profile": {"intent": "ready_to_buy"}},
        {"profile": {"intent": "browsing"}},
    ),
    "persona": (
        'personas = ["frequent bargain hunters"]',
        {"profile": {"persona": "frequent bargain hunters"}},
        {"profile": {"persona": "high-value, infrequent"}},
    ),
    "segment": (
        'segments = ["vip"]',
        {"profile": {"segments": ["big-basket", "vip"]}},
        {"profile": {"segment": "newcomer"}},
    ),
    "sentiment_min": ("sentiment_min = 0.4", {"profile": {"sentiment": 0.7}}, {}),
    "sentiment_max": (
        "sentiment_max = -0.3",
        {"profile": {"sentiment": -0.8}},
        {"profile": {"sentiment": -0.1}},
    ),
    "cart_value": ("cart_value_min = 50\ncart_value_max = 100", {"context": CART_60}, {}),
    "channel": (
        'channels = ["app"]',
        {"context": {"channel": "app"}},
        {"context": {"channel": "web"}},
    ),
    "orders": (
        "orders_min = 1\norders_max = 3",
        {"profile": {"orders": 2}},
        {"profile": {"orders": 5}},
    ),
    "consent": (
        'consents = ["marketing_email"]',
        {"consents": {"email": True}},
        {"consents": {"email": False}},
    ),
    "trigger": (
        'triggers = ["cart_abandonment"]\ntrigger_window_minutes = 30',
        {"profile": {"triggers": {"cart_abandonment": NOW - 600}}},
        {"profile": {"triggers": {"cart_abandonment": NOW - 3600, "inactivity": NOW}}},
    ),
}


async def apply_setup(client, visitor, setup):
    if "profile" in setup:
        await set_profile(client, visitor, **setup["profile"])
    if "consents" in setup:
        body = {"events": [eventkit.event("consent", visitor, consents=setup["consents"])]}
        response = await client.post("/v1/events", json=body, headers=eventkit.basic())
        assert response.status == 200, await response.text()
    return setup.get("context")


@pytest.mark.parametrize("dimension", list(DIMENSIONS))
async def test_each_eligibility_dimension(gateway, tmp_path, dimension):
    rule, passing, failing = DIMENSIONS[dimension]
    client = await start(gateway, tmp_path, ONE_OFFER.format(rule=rule))
    context = await apply_setup(client, "v-pass", passing)
    block = await decide(client, "v-pass", context)
    assert block["offer"]["id"] == "x", block
    assert block["source"] == "offers" and block["offer"]["kind"] == "discount"
    context = await apply_setup(client, "v-fail", failing)
    block = await decide(client, "v-fail", context, explain=True)
    assert block["offer"]["id"] == DEFAULT_OFFER
    (explained,) = explanations(block)["considered"]
    assert explained["outcome"] == "ineligible" and explained["rejected"]


async def test_reason_names_the_rules_that_matched(gateway, tmp_path):
    client = await start(
        gateway,
        tmp_path,
        ONE_OFFER.format(rule='stages = ["decision"]\ncart_value_min = 50\nchannels = ["web"]'),
    )
    await set_profile(client, "v1", stage="decision")
    block = await decide(client, "v1", CART_60)
    assert block["offer"]["reason"] == (
        "priority 0; stage decision; channel web; cart value 60 ≥ 50"
    )


def explanations(block):
    (entry,) = [c for c in block["_body"]["explain"]["calls"] if "explanations" in c]
    assert entry["hook"] == "choose_offer" and entry["slot"] == "hero"
    return entry["explanations"]["offers"]


PRIORITIES = """
[[offers]]
id = "low"
kind = "content"
title = "Low"
priority = 10

[[offers]]
id = "high"
kind = "discount"
title = "High"
priority = 90

[[offers]]
id = "high-too"
kind = "bundle"
title = "High too"
priority = 90

[[offers]]
id = "vip-only"
kind = "vip_preview"
title = "VIP"
priority = 100
[offers.eligibility]
segments = ["vip"]
"""


async def test_the_highest_priority_eligible_offer_wins_and_explain_lists_the_rest(
    gateway, tmp_path
):
    client = await start(gateway, tmp_path, PRIORITIES)
    block = await decide(client, "v1", explain=True)
    # vip-only outranks everything but is not eligible; of the two at 90 the first listed wins
    assert block["offer"]["id"] == "high"
    assert block["offer"]["reason"] == "priority 90 (highest of 3 eligible)"
    explained = explanations(block)
    assert explained["chosen"] == "high"
    outcomes = {e["id"]: (e["outcome"], e.get("rejected")) for e in explained["considered"]}
    assert outcomes == {
        "low": ("outranked", ["high won (priority 90)"]),
        "high": ("chosen", None),
        "high-too": ("outranked", ["high won (priority 90)"]),
        "vip-only": ("ineligible", ["segment unknown not in [vip]"]),
    }
    # Without explain the answer carries no trace of the alternatives.
    block = await decide(client, "v1")
    assert "explain" not in block["_body"] and block["offer"]["id"] == "high"
    await set_profile(client, "v2", segment="vip")
    assert (await decide(client, "v2"))["offer"]["id"] == "vip-only"


SCHEDULED = """
[[offers]]
id = "march-daytime"
kind = "discount"
title = "March, office hours"
[offers.schedule]
start = 2026-03-01
end = 2026-03-31
hours = [9, 17]

[[offers]]
id = "late-night"
kind = "content"
title = "Night owls"
[offers.schedule]
start = "2026-03-01T00:00:00+00:00"
hours = [22, 6]
"""


@pytest.mark.parametrize(
    ("moment", "eligible"),
    [
        ("2026-02-28T10:00", []),  # before the start
        ("2026-03-10T10:00", ["march-daytime"]),
        ("2026-03-10T17:00", []),  # after office hours
        ("2026-03-31T16:59", ["march-daytime"]),  # the end date is included
        ("2026-04-01T09:30", []),  # ended
        ("2026-03-10T23:30", ["late-night"]),  # hours wrap past midnight
        ("2026-03-11T05:59", ["late-night"]),
    ],
)
async def test_schedule_dates_and_hours_in_the_configured_timezone(
    gateway, tmp_path, moment, eligible
):
    london = dt.datetime.fromisoformat(moment).replace(tzinfo=ZoneInfo("Europe/London"))
    clock = Clock(london.timestamp())
    client = await start(
        gateway,
        tmp_path,
        SCHEDULED,
        clock=clock,
        timezone="Europe/London",
        when_none_eligible="hidden",
    )
    block = await decide(client, "v1", explain=True)
    chosen = [block["offer"]["id"]] if not block["offer"].get("hidden") else []
    assert chosen == eligible, explanations(block)


async def test_no_eligible_offer_is_hidden_or_the_default_as_configured(gateway, tmp_path):
    catalog = ONE_OFFER.format(rule='stages = ["advocacy"]')
    hidden = await start(gateway, tmp_path, catalog, when_none_eligible="hidden")
    block = await decide(hidden, "v1", explain=True)
    assert block["source"] == "offers" and block["html"] == ""
    assert block["offer"]["hidden"] is True
    assert block["offer"]["reason"] == "no eligible offer: the slot is hidden"
    assert explanations(block)["when_none_eligible"] == "hidden"
    default = await start(gateway, tmp_path, catalog, when_none_eligible="default")
    block = await decide(default, "v1")
    assert block["offer"]["id"] == DEFAULT_OFFER and "hidden" not in block["offer"]
    assert block["offer"]["reason"] == "no eligible offer: the default offer"
    assert "Free UK delivery" in block["html"]


EXPERIMENT = """
[[offers]]
id = "a"
kind = "discount"
title = "A"
priority = 50

[[offers]]
id = "b"
kind = "free_shipping"
title = "B"
priority = 40

[[offers]]
id = "c"
kind = "bundle"
title = "C"
priority = 30

[[offers]]
id = "members"
kind = "vip_preview"
title = "Members"
priority = 10
[offers.eligibility]
orders_min = 1
"""


async def test_experiment_params_pick_restrict_or_hold_out(gateway, tmp_path):
    client = await start(gateway, tmp_path, EXPERIMENT)
    block = await decide(client, "v1", params={"offer_id": "c"})
    assert block["offer"]["id"] == "c"
    assert block["offer"]["reason"].startswith("requested by slot.params.offer_id; priority 30")
    # an ineligible or unknown request: normal selection, and the reason says why
    block = await decide(client, "v1", params={"offer_id": "members"})
    assert block["offer"]["id"] == "a"
    assert block["offer"]["reason"].startswith(
        "requested offer members not eligible (orders 0 below 1); priority 50"
    )
    block = await decide(client, "v1", params={"offer_id": "zzz"})
    assert block["offer"]["id"] == "a" and "'zzz' is not in the catalog" in block["offer"]["reason"]
    # a pool restricts the choice to those offers
    block = await decide(client, "v1", params={"offers": ["b", "c"]}, explain=True)
    assert block["offer"]["id"] == "b"
    assert [e["id"] for e in explanations(block)["considered"]] == ["b", "c"]
    block = await decide(client, "v1", params={"offers": ["members"]})
    assert block["offer"]["id"] == DEFAULT_OFFER
    # holdout: the plugin answers nothing and the default content is served
    block = await decide(client, "v1", params={"holdout": True, "offer_id": "a"})
    assert block["source"] == "fallback" and block["offer"]["id"] == DEFAULT_OFFER


async def decide_slots(client, slots, explain=False):
    """One decision for several offer slots: {slot id: its block}, and the whole answer."""
    body = {
        "visitor_id": "v1",
        "session_id": "s-1",
        "context": {"page": {"type": "home"}},
        "slots": slots,
        "explain": explain,
    }
    response = await client.post("/v1/decide", json=body)
    assert response.status == 200, await response.text()
    answer = await response.json()
    return {block["slot"]: block for block in answer["blocks"]}, answer


async def test_offer_slots_of_one_decision_get_different_offers(gateway, tmp_path):
    client = await start(gateway, tmp_path, EXPERIMENT)
    slots = [{"id": "hero", "kind": "offer"}, {"id": "side", "kind": "offer"}]
    blocks, answer = await decide_slots(client, slots, explain=True)
    assert blocks["hero"]["offer"]["id"] == "a"
    assert blocks["side"]["offer"]["id"] == "b"  # the next best, not "a" again
    (side,) = [
        c["explanations"]["offers"]
        for c in answer["explain"]["calls"]
        if "explanations" in c and c["slot"] == "side"
    ]
    taken = {e["id"]: e for e in side["considered"]}["a"]
    assert (taken["outcome"], taken["rejected"]) == ("taken", ["chosen for slot hero"])
    # the next decision starts afresh; a slot that pins an offer gets it even when taken
    pinned = {"id": "footer", "kind": "offer", "params": {"offer_id": "a"}}
    blocks, _ = await decide_slots(client, [*slots, {"id": "third", "kind": "offer"}, pinned])
    chosen = {slot: block["offer"]["id"] for slot, block in blocks.items()}
    assert chosen == {"hero": "a", "side": "b", "third": "c", "footer": "a"}
    # nothing eligible left for a slot: the usual answer when none is eligible
    blocks, _ = await decide_slots(
        client, [*slots, {"id": "only-a", "kind": "offer", "params": {"offers": ["a"]}}]
    )
    assert blocks["only-a"]["offer"]["id"] == DEFAULT_OFFER


async def test_offers_taken_by_unobserved_decisions_stay_bounded(gateway, tmp_path, monkeypatch):
    """A decision whose observation never comes (its observer failed) leaves what its slots
    took behind: only the newest MAX_OPEN_DECISIONS are kept, and each decision's slots still
    get different offers."""
    monkeypatch.setattr(offers_plugin, "MAX_OPEN_DECISIONS", 4)
    client = await start(gateway, tmp_path, EXPERIMENT)
    assert client.app is not None
    slots = [{"id": "hero", "kind": "offer"}, {"id": "side", "kind": "offer"}]
    body = {"visitor_id": "v1", "context": {"page": {"type": "home"}}, "slots": slots}
    request = parse_decide_request(body, client.app[appkeys.LIMITS])
    context = (await client.app[appkeys.PIPELINE].decide(request)).context
    plugin = plugin_of(client)
    for n in range(10):  # choose_offer alone: nothing observes these decisions
        decision = dataclasses.replace(context, decision_id=f"d{n}")
        chosen = [plugin.journeygate_choose_offer(decision, slot).id for slot in request.slots]
        assert chosen == ["a", "b"]
    assert list(plugin._taken) == ["d6", "d7", "d8", "d9"]


async def test_offer_text_is_escaped_in_html(gateway, tmp_path):
    client = await start(
        gateway,
        tmp_path,
        """
        [[offers]]
        id = "xss"
        kind = "content"
        title = "<script>alert(1)</script> & more"
        body = "<img src=x onerror=alert(2)>"
        cta_url = "/sale?a=1&b=<2>"
        """,
    )
    block = await decide(client, "v1")
    html = block["html"]
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    assert 'href="/sale?a=1&amp;b=&lt;2&gt;"' in html
    assert block["offer"]["title"] == "<script>alert(1)</script> & more"  # JSON stays raw


async def test_the_shipped_catalog_answers_to_sentiment(gateway, tmp_path):
    """config/offers.toml: negative sentiment suppresses upsells and brings service recovery;
    positive sentiment after a purchase makes the referral ask eligible."""
    client = await start(gateway, tmp_path, None)
    basket = {"cart": {"items": [{"product_id": "22423", "quantity": 3, "price": 12.75}]}}
    block = await decide(client, "happy-browser", basket)
    assert block["offer"]["id"] == "free-shipping-nudge"  # an upsell, sentiment neutral
    await set_profile(client, "unhappy", sentiment=-0.7)
    block = await decide(client, "unhappy", basket, explain=True)
    assert block["offer"]["id"] == "service-recovery"
    assert "sentiment -0.7 ≤ -0.3" in block["offer"]["reason"]
    considered = {e["id"]: e for e in explanations(block)["considered"]}
    assert considered["free-shipping-nudge"]["rejected"] == ["upsell: sentiment -0.7 below -0.3"]
    await set_profile(client, "fan", sentiment=0.8, orders=2, stage="retention")
    block = await decide(client, "fan")
    assert block["offer"]["id"] == "refer-a-friend"
    await set_profile(client, "fan-without-orders", sentiment=0.8)
    block = await decide(client, "fan-without-orders")
    assert block["offer"]["id"] == DEFAULT_OFFER


class Personas:
    """Stands in for the personas and sentiment plugins: visitor state for this decision."""

    @hookimpl
    def journeygate_enrich_visitor(self, context):
        return {"persona": "frequent bargain hunters", "segments": ["vip"], "sentiment": 0.6}


async def test_visitor_state_from_other_plugins_wins_over_the_profile(gateway, tmp_path):
    catalog = ONE_OFFER.format(
        rule='personas = ["frequent bargain hunters"]\nsegments = ["vip"]\nsentiment_min = 0.5'
    )
    path = tmp_path / "offers.toml"
    path.write_text(catalog, encoding="utf-8")
    client = await gateway(
        extra_plugins=[("personas", Personas()), ("offers", OffersPlugin(Clock()))],
        plugin={"offers": {"catalog": str(path)}},
    )
    await set_profile(client, "v1", persona="high-value, infrequent", sentiment=-0.9)
    block = await decide(client, "v1")
    assert block["offer"]["id"] == "x"
    assert block["offer"]["reason"] == (
        "priority 0; persona frequent bargain hunters; segment vip; sentiment 0.6 ≥ 0.5"
    )
