"""Segment Tracking API compatibility, driven by the real Segment Python library."""

import asyncio
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import redis
from eventkit import ADMIN, WRITE_KEY, apply_pending, basic, fresh_redis_url, overrides
from segment.analytics import Client

from journeygate.events.schema import SEGMENT_EVENTS
from journeygate.store import keys


@pytest.fixture
def url(redis_url):
    return fresh_redis_url(redis_url)


def send_with_library(host, write_key, calls, errors=None, max_retries=1):
    """Run the Segment client (threads, blocking HTTP) and wait until it delivered."""
    client = Client(
        write_key,
        host=host,
        upload_interval=0.05,
        max_retries=max_retries,
        on_error=(lambda error, batch: errors.append(error)) if errors is not None else None,
    )
    for method, kwargs in calls:
        getattr(client, method)(**kwargs)
    client.flush()
    client.shutdown()


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_events_of_a_real_segment_client_land_in_the_profile(gateway, url, backend):
    client = await gateway(**overrides(backend, url))
    anonymous, user = f"anon-{backend}-{time.time_ns()}", f"cust-{backend}-{time.time_ns()}"
    start = datetime.now(tz=UTC) - timedelta(minutes=20)
    product = {"product_id": "85123A", "category": "Lighting", "price": 2.55}

    def at(minutes):
        return start + timedelta(minutes=minutes)

    calls = [
        ("page", {"anonymous_id": anonymous, "name": "Home", "timestamp": at(0)}),
        (
            "track",
            {
                "anonymous_id": anonymous,
                "event": "Products Searched",
                "properties": {"query": "heart holder"},
                "timestamp": at(1),
            },
        ),
        (
            "track",
            {
                "anonymous_id": anonymous,
                "event": "Product Viewed",
                "properties": product,
                "timestamp": at(2),
            },
        ),
        (
            "track",
            {
                "anonymous_id": anonymous,
                "event": "Product Added",
                "properties": {**product, "quantity": 4},
                "timestamp": at(5),
            },
        ),
        (
            "identify",
            {
                "user_id": user,
                "anonymous_id": anonymous,
                "traits": {"consents": {"marketing_email": True, "marketing_sms": False}},
                "timestamp": at(6),
            },
        ),
        (
            "track",
            {
                "user_id": user,
                "event": "Checkout Started",
                "properties": {"products": [{**product, "quantity": 4}], "value": 10.2},
                "timestamp": at(7),
            },
        ),
        (
            "track",
            {
                "user_id": user,
                "event": "Order Completed",
                "properties": {
                    "order_id": "O-1",
                    "revenue": 10.2,
                    "products": [{**product, "quantity": 4}],
                },
                "timestamp": at(8),
            },
        ),
        ("screen", {"user_id": user, "name": "Thanks", "timestamp": at(9)}),
    ]
    host = str(client.make_url("/"))
    await asyncio.to_thread(send_with_library, host, WRITE_KEY, calls)
    await apply_pending(client)

    response = await client.get(f"/v1/profiles/{user}", headers=ADMIN)
    assert response.status == 200
    profile = await response.json()
    assert profile["profile_id"] == user and profile["merged_ids"] == [anonymous]
    aggregates = profile["aggregates"]
    assert aggregates["orders"] == 1 and aggregates["revenue"] == 10.2
    assert aggregates["average_order_value"] == 10.2
    assert aggregates["events"] == len(calls)
    assert aggregates["searches"] == 1 and aggregates["cart_adds"] == 1
    assert profile["purchased_products"] == ["85123A"]
    assert profile["cart"] == {"items": [], "value": 0}  # the order emptied it
    assert profile["consents"]["marketing_email"]["granted"] is True
    assert profile["consents"]["marketing_sms"]["granted"] is False
    assert profile["preferred_categories"][0]["category"] == "Lighting"
    assert profile["channels"] == {"web": len(calls) - 1, "app": 1}
    (session,) = profile["sessions"]  # 9 minutes of activity, one session
    assert session["searches"] == ["heart holder"]
    # dwell: until the next page event (the Thanks screen, 7 minutes later)
    assert session["products_viewed"] == [{"product_id": "85123A", "views": 1, "dwell_s": 420.0}]
    assert session["page_dwell_s"] == {"Home": 120.0}
    # the anonymous id now resolves to the customer
    merged = await (await client.get(f"/v1/profiles/{anonymous}", headers=ADMIN)).json()
    assert merged["profile_id"] == user and merged["aggregates"] == aggregates


async def test_a_wrong_write_key_is_refused_and_the_library_is_told(gateway, url):
    client = await gateway(**overrides("redis", url))
    errors = []
    calls = [("track", {"anonymous_id": "a1", "event": "Product Viewed", "properties": {}})]
    await asyncio.to_thread(send_with_library, str(client.make_url("/")), "nope", calls, errors)
    (error,) = errors
    assert error.status == 401 and '"code": "unauthorized"' in error.message
    assert redis.Redis.from_url(url).dbsize() == 0


async def test_ecommerce_event_names_map_to_internal_kinds(gateway, url):
    client = await gateway(**overrides("redis", url))
    batch = [
        {
            "type": "track",
            "event": name,
            "anonymousId": "a-shop",
            "messageId": f"m-{index}",
            "properties": {"product_id": "P1", "query": "q", "products": [], "text": "Good"},
        }
        for index, name in enumerate(SEGMENT_EVENTS)
    ]
    response = await client.post("/v1/batch", json={"batch": batch}, headers=basic())
    result = await response.json()
    assert result["success"] is True and result["rejected"] == []
    redis_client = redis.Redis.from_url(url)
    shard = next(s for s in range(4) if redis_client.xlen(keys.event_stream(s)))
    (entry,) = redis_client.xrange(keys.event_stream(shard))
    kinds = {e["n"]: e["k"] for e in orjson.loads(entry[1][b"e"])}
    assert kinds == dict(SEGMENT_EVENTS)
    assert kinds["Order Completed"] == "order" and kinds["Product Added"] == "cart_add"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/track", {"event": "Cart Viewed", "userId": "u1"}),
        ("/v1/identify", {"userId": "u1", "anonymousId": "a1", "traits": {"plan": "gold"}}),
        ("/v1/page", {"anonymousId": "a1", "name": "Pricing"}),
        ("/v1/screen", {"userId": 42, "name": "Basket"}),
        ("/v1/alias", {"previousId": "a1", "userId": "u1"}),
    ],
)
async def test_single_message_endpoints(gateway, url, path, body):
    client = await gateway(**overrides("redis", url))
    response = await client.post(path, json=body, headers=basic())
    assert response.status == 200, await response.text()
    result = await response.json()
    assert result["success"] is True and len(result["accepted"]) == 1
    # the write key may also come in the body
    response = await client.post(path, json={**body, "writeKey": WRITE_KEY})
    assert response.status == 200


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/track", {"userId": "u1"}, "event"),
        ("/v1/track", {"event": "Cart Viewed"}, None),
        ("/v1/alias", {"userId": "u1"}, "previousId"),
        ("/v1/page", {"anonymousId": "a1", "timestamp": "2999-01-01T00:00:00Z"}, "timestamp"),
    ],
)
async def test_single_message_errors_name_the_field(gateway, url, path, body, field):
    client = await gateway(**overrides("redis", url))
    response = await client.post(path, json=body, headers=basic())
    assert response.status == 400
    error = (await response.json())["error"]
    assert error.get("field") == field
    assert "[0]" not in error["message"]


async def test_while_redis_is_down_the_library_retries_and_nothing_is_lost(gateway, private_redis):
    server = private_redis
    try:
        client = await gateway(**overrides("redis", server.url, ingest_timeout_ms=200))
        server.kill()
        calls = [
            ("track", {"user_id": "c-outage", "event": "Order Completed", "properties": p})
            for p in ({"order_id": "A", "revenue": 5}, {"order_id": "B", "revenue": 7})
        ]
        sending = asyncio.create_task(
            asyncio.to_thread(send_with_library, str(client.make_url("/")), WRITE_KEY, calls)
        )
        await asyncio.sleep(0.5)  # the first attempts get 503 with Retry-After: 1
        server.start()
        await asyncio.wait_for(sending, 20)
        assert await apply_pending(client) == 2
        # The store's pooled connection died with the server; it is replaced at once.
        response = await client.get("/v1/profiles/c-outage", headers=ADMIN)
        assert response.status == 200
        profile = await response.json()
        assert profile["aggregates"]["orders"] == 2 and profile["aggregates"]["revenue"] == 12
        metrics = await (await client.get("/metrics")).text()
        assert 'route="/v1/batch",status="503"' in metrics
    finally:
        server.kill()
