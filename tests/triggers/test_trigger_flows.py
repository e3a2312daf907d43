"""Triggers through the real worker path: events ingested by the gateway, applied by
`journeygate worker`s (Redis streams, Applier, the plugin's observer and scheduler), sent
through the webhook outbox by a dispatcher to a receiver that is a real aiohttp server."""

from __future__ import annotations

import asyncio
import time

import redis
from triggerkit import SECRET, consent, ev, send

from journeygate.webhooks import verify_signature
from testkit import settle

pytest_plugins = ["triggerfixtures"]  # url, receiver, stack

CART = {"cart_abandonment": {"delay_s": 0.4}}


def timers(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return sum(client.zcard(key) for key in client.scan_iter(match="jg:{triggers/*}:due"))
    finally:
        client.close()


async def test_an_abandoned_cart_fires_once_with_two_workers_racing(stack, receiver):
    deployment = await stack(CART, workers=2)
    abandoned = [f"gone-{i}" for i in range(8)]
    bought = [f"bought-{i}" for i in range(4)]
    events = []
    for visitor in abandoned + bought:
        events += [consent(visitor), ev("Product Added", visitor, product_id="P1", quantity=2)]
    events += [ev("Checkout Started", visitor, order_id=f"O-{visitor}") for visitor in bought]
    await send(deployment.client, *events)
    await receiver.wait_for(len(abandoned))
    await asyncio.sleep(0.8)  # past every delay: a second webhook would have arrived by now
    payloads = receiver.payloads("cart_abandonment")
    assert sorted(p["visitor_id"] for p in payloads) == sorted(abandoned)
    for request in receiver.requests:
        assert verify_signature(SECRET, request.headers["Journeygate-Signature"], request.body)
        assert request.headers["Journeygate-Event"] == "trigger.cart_abandonment"
    first = payloads[0]
    assert first["data"]["products"] == ["P1"] and first["data"]["quantity"] == 2
    assert first["occurrence_id"].startswith(f"cart_abandonment:{first['visitor_id']}:")
    outcomes = await deployment.outcomes()
    assert sorted(outcomes) == sorted(("cart_abandonment", v, "sent") for v in abandoned)
    fired = [p.scheduler.fired.get("sent", 0) for p in deployment.plugins.values() if p.scheduler]
    assert sum(fired) == len(abandoned)


async def test_timers_survive_restarts_and_a_crashed_scheduler_sends_nothing_twice(
    stack, receiver, url
):
    deployment = await stack({"cart_abandonment": {"delay_s": 0.5}}, workers=1)
    await send(
        deployment.client,
        *[consent(v) for v in ("v1", "v2")],
        *[ev("Product Added", v, product_id="P9") for v in ("v1", "v2")],
    )
    await settle(lambda: _is(timers(url), 2))
    await deployment.stop_worker("worker-0")  # before the timers come due
    await asyncio.sleep(0.6)
    assert receiver.requests == []
    # A scheduler claims both due timers, sends v1's and dies before finishing either.
    crashed = deployment.gateway_plugin()
    assert crashed.store is not None and crashed.engine is not None
    now = time.time()
    claimed = await crashed.store.claim(now, now + 1.0, 10)
    assert sorted(held.timer.visitor for held in claimed) == ["v1", "v2"]
    (v1,) = [held for held in claimed if held.timer.visitor == "v1"]
    assert await crashed.engine.fire_timer(v1) == "sent"
    # A new worker gets both back when the lease runs out.
    deployment.start_worker("worker-1")
    await settle(lambda: _logged(deployment, 3))
    await receiver.wait_for(2)
    assert sorted(p["visitor_id"] for p in receiver.payloads()) == ["v1", "v2"]
    outcomes = await deployment.outcomes()
    assert sorted(outcomes) == [
        ("cart_abandonment", "v1", "duplicate"),  # the outbox already had it: not sent again
        ("cart_abandonment", "v1", "sent"),
        ("cart_abandonment", "v2", "sent"),
    ]
    assert outcomes[0] == ("cart_abandonment", "v1", "sent")
    assert timers(url) == 0
    await asyncio.sleep(0.3)
    assert len(receiver.requests) == 2


async def test_checkout_before_the_delay_cancels_and_an_identified_checkout_counts(
    stack, receiver, url
):
    deployment = await stack({"cart_abandonment": {"delay_s": 0.5}}, workers=1)
    anonymous, customer = "anon-7", "cust-7"
    await send(
        deployment.client,
        consent(anonymous),
        ev("Product Added", anonymous, product_id="P1"),
        ev("Product Added", "quick", product_id="P2"),
        ev("Order Completed", "quick", order_id="O-quick", revenue=9.5),
    )
    # the anonymous visitor signs in and checks out as the customer: its cart timer (set for
    # the anonymous id) finds the customer's checkout when it comes due
    await send(
        deployment.client,
        {**ev("identify", anonymous), "user_id": customer},
        {**ev("Checkout Started", anonymous), "user_id": customer},
    )
    await asyncio.sleep(1.0)
    await settle(lambda: _is(timers(url), 0))
    assert receiver.requests == []
    assert await deployment.outcomes() == []


async def test_views_dwell_searches_and_a_rare_big_order_fire_at_once(stack, receiver):
    deployment = await stack(
        {
            "repeated_product_interest": {"views": 3, "window_s": 3600},
            "long_dwell": {"threshold_s": 60, "products": False, "paths": ["/pricing*"]},
            "search_no_results": {},
            "search_pattern": {"patterns": [r"\bcancel"], "marketing": False},
            "high_value_infrequent": {"min_average_order_value": 200, "max_orders_per_year": 2},
        },
        workers=1,
    )
    visitor, now = "browser-1", time.time()
    year = 365 * 86400
    await send(
        deployment.client,
        consent(visitor),
        *[ev("Product Viewed", visitor, product_id="P1") for _ in range(3)],
        *[ev("Product Viewed", visitor, product_id="P2") for _ in range(2)],
        ev("page_view", visitor, now - 100, path="/pricing/teams"),
        ev("page_view", visitor, now - 10, path="/signup"),  # 90 s on the pricing page
        ev("Products Searched", visitor, query="purple teapot", results=0),
        ev("Products Searched", visitor, query="white mug", results=12),
        ev("Products Searched", "no-consent", query="how do I cancel my order"),
        consent("big-spender"),
        ev("Order Completed", "big-spender", now - 1.5 * year, order_id="B1", revenue=320.0),
        ev("Order Completed", "big-spender", now - 5, order_id="B2", revenue=480.0),
    )
    await receiver.wait_for(5)
    await asyncio.sleep(0.2)
    interest = receiver.payloads("repeated_product_interest")
    assert [p["data"]["product_id"] for p in interest] == ["P1"]
    assert interest[0]["data"]["views"] == 3
    (dwell,) = receiver.payloads("long_dwell")
    assert dwell["data"] == {"product_id": None, "path": "/pricing/teams", "dwell_s": 90.0}
    (search,) = receiver.payloads("search_no_results")
    assert search["data"] == {"query": "purple teapot", "results": 0}
    (pattern,) = receiver.payloads("search_pattern")
    assert pattern["visitor_id"] == "no-consent" and pattern["marketing"] is False
    assert pattern["data"]["pattern"] == r"\bcancel"
    (vip,) = receiver.payloads("high_value_infrequent")  # the old order fired nothing
    assert vip["visitor_id"] == "big-spender" and vip["data"]["order_id"] == "B2"
    assert vip["data"]["average_order_value"] == 400.0 and vip["data"]["orders"] == 2


async def test_a_first_big_order_fires_once_and_a_frequent_buyers_never(stack, receiver):
    deployment = await stack(
        {"high_value_infrequent": {"min_average_order_value": 200, "max_orders_per_year": 2}},
        workers=1,
    )
    now, day = time.time(), 86400
    first = ev("Order Completed", "newcomer", now - 5, order_id="N1", revenue=900.0)
    await send(
        deployment.client,
        *[consent(visitor) for visitor in ("newcomer", "regular", "another")],
        # too old to fire anything, but they make the regular a frequent buyer
        *[
            ev("Order Completed", "regular", now - days * day, order_id=f"R{days}", revenue=300.0)
            for days in (200, 150, 100, 50)
        ],
        first,
    )
    await receiver.wait_for(1)
    await send(deployment.client, {**first, "timestamp": now - 4})  # the order sent again
    await settle(lambda: _logged(deployment, 2))
    await send(
        deployment.client,
        ev("Order Completed", "newcomer", now - 3, order_id="N2", revenue=600.0),
        ev("Order Completed", "regular", now - 3, order_id="R0", revenue=300.0),
        ev("Order Completed", "another", now - 2, order_id="A1", revenue=250.0),
    )
    await receiver.wait_for(2)
    await asyncio.sleep(0.3)  # a fire for the newcomer's second order would have come by now
    fired = [(p["visitor_id"], p["data"]) for p in receiver.payloads("high_value_infrequent")]
    assert fired == [
        (
            "newcomer",
            {"order_id": "N1", "revenue": 900.0, "average_order_value": 900.0, "orders": 1}
            | {"orders_per_year": 1.0},
        ),
        (
            "another",
            {"order_id": "A1", "revenue": 250.0, "average_order_value": 250.0, "orders": 1}
            | {"orders_per_year": 1.0},
        ),
    ]
    assert await deployment.outcomes() == [
        ("high_value_infrequent", "newcomer", "sent"),
        ("high_value_infrequent", "newcomer", "duplicate"),
        ("high_value_infrequent", "another", "sent"),
    ]


async def test_an_order_sets_both_post_purchase_follow_ups(stack, receiver):
    deployment = await stack(
        {
            "post_purchase_1d": {"type": "post_purchase", "delay_s": 0.3, "marketing": False},
            "post_purchase_7d": {"type": "post_purchase", "delay_s": 0.7},
        },
        workers=1,
    )
    ordered = time.time()
    await send(
        deployment.client,
        consent("buyer"),
        ev(
            "Order Completed",
            "buyer",
            ordered,
            order_id="O-55",
            revenue=42.0,
            products=[{"product_id": "P1", "price": 21.0, "quantity": 2}],
        ),
    )
    await receiver.wait_for(2)
    first, second = receiver.payloads()
    assert (first["trigger"], second["trigger"]) == ("post_purchase_1d", "post_purchase_7d")
    for payload in (first, second):
        assert payload["data"]["order_id"] == "O-55" and payload["data"]["products"] == ["P1"]
        assert payload["occurrence_id"] == f"{payload['trigger']}:buyer:O-55"
    arrived = [request.headers for request in receiver.requests]
    assert len(arrived) == 2
    sent_1d, sent_7d = await deployment.log()
    assert sent_1d.at >= ordered + 0.3 and sent_7d.at >= ordered + 0.7


async def test_inactivity_counts_from_the_last_visit(stack, receiver):
    deployment = await stack({"inactivity": {"delay_s": 0.6, "min_events": 2}}, workers=1)
    await send(deployment.client, consent("idle"), ev("page_view", "idle", path="/"))
    await asyncio.sleep(0.35)
    last_visit = time.time()
    await send(deployment.client, ev("Product Viewed", "idle", last_visit, product_id="P1"))
    await asyncio.sleep(0.4)  # the first visit's timer came due: re-armed, nothing sent
    assert receiver.requests == []
    await receiver.wait_for(1)
    (payload,) = receiver.payloads("inactivity")
    assert payload["data"]["last_seen"] == round(last_visit, 3)
    (record,) = await deployment.log()
    assert record.at >= last_visit + 0.6 and record.outcome == "sent"


async def _logged(deployment, count: int) -> bool:
    return len(await deployment.log()) >= count


async def _is(value: int, expected: int) -> bool:
    return value == expected
