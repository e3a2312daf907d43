"""One contract for what the event worker writes, run against Redis and the in-process store."""

import math
import time
from itertools import count

import pytest
import redis

from journeygate.config import EventsConfig, StoreConfig
from journeygate.events.profile import build_profile
from journeygate.events.schema import parse_native
from journeygate.store import DecayedScore, ProfileStore, open_store
from journeygate.store.decay import blended

EVENTS = EventsConfig(
    session_gap_s=60,
    sessions_max=3,
    session_items_max=4,
    purchased_max=3,
    categories_max=3,
    dedupe_max=50,
    anonymous_log_max=5,
)
NOW = time.time()
_ids = count()


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis_url):
    config = StoreConfig(redis_url=redis_url, timeout_ms=1000)
    store = open_store(config, request.param, EVENTS)
    yield store
    await store.close()


def ev(name, visitor, t, user=None, message_id=None, session=None, **properties):
    raw = {"event": name, "visitor_id": visitor, "timestamp": NOW + t, "properties": properties}
    raw["message_id"] = message_id or f"m{next(_ids)}"
    if user:
        raw["user_id"] = user
    if session:
        raw["session_id"] = session
    return parse_native(raw, "e", time.time(), 0.0, 300.0)


async def apply(store: ProfileStore, visitor, *events):
    (result,) = await store.apply_events([(visitor, sorted(events, key=lambda e: e["t"]))])
    return result


async def profile(store, visitor):
    raw = await store.load_events_profile(visitor)
    assert raw is not None
    return build_profile(raw, visitor, visitor, EVENTS.session_gap_s, now=NOW)


async def test_nothing_stored_is_none(store, visitor_id):
    assert await store.load_events_profile(visitor_id) is None
    assert await store.resolve_visitor(visitor_id) == visitor_id


async def test_an_event_is_applied_once_per_message_id(store, visitor_id):
    order = ev("order", visitor_id, -10, message_id="dup", revenue=20, order_id="O1")
    view = ev("product_view", visitor_id, -20, product_id="P1")
    first = await apply(store, visitor_id, view, order)
    assert first.flags == (True, True) and first.redirect is None
    again = await apply(store, visitor_id, order, view, ev("page_view", visitor_id, -5))
    assert again.flags == (False, False, True)
    assert again.duplicates == (True, True, False)  # applied by the first call
    # the same order sent again under another message id is not counted again either
    await apply(store, visitor_id, ev("order", visitor_id, -9, revenue=20, order_id="O1"))
    aggregates = (await profile(store, visitor_id))["aggregates"]
    assert aggregates["orders"] == 1 and aggregates["revenue"] == 20
    assert aggregates["events"] == 4 and aggregates["product_views"] == 1


async def test_aggregates(store, visitor_id):
    await apply(
        store,
        visitor_id,
        ev("order", visitor_id, -86400 * 60, revenue=30, order_id="A"),
        ev("order", visitor_id, -86400 * 10, revenue=10.5, order_id="B"),
        ev("order_refund", visitor_id, -86400 * 5, revenue=10.5, order_id="B"),
    )
    aggregates = (await profile(store, visitor_id))["aggregates"]
    assert aggregates["orders"] == 2 and aggregates["revenue"] == 40.5
    assert aggregates["average_order_value"] == 20.25
    assert aggregates["purchase_frequency_per_year"] == pytest.approx(2 * 365 / 60, abs=0.01)
    assert aggregates["days_since_last_order"] == pytest.approx(10, abs=0.01)
    assert aggregates["refunds"] == 1 and aggregates["refunded"] == 10.5


async def test_sessions_by_event_time_even_out_of_order(store, visitor_id):
    # arrives in three batches: late events (mobile apps) land in the session of their time
    await apply(store, visitor_id, ev("page_view", visitor_id, -1000, path="/a"))
    await apply(store, visitor_id, ev("page_view", visitor_id, -100, path="/c"))
    await apply(
        store,
        visitor_id,
        ev("page_view", visitor_id, -1030, path="/0"),  # before the first: same session
        ev("product_view", visitor_id, -980, product_id="P1", category="mugs"),
        ev("page_view", visitor_id, -940, path="/b"),
        ev("search", visitor_id, -990, query="mug"),
    )
    sessions = (await profile(store, visitor_id))["sessions"]
    assert [s["page_views"] for s in sessions] == [1, 4]  # newest first
    older = sessions[1]
    assert older["duration_s"] == 90.0
    assert older["started_at"] < older["last_activity_at"]
    assert older["searches"] == ["mug"]
    # dwell from consecutive page events: /0 -> /a 30 s, /a -> P1 20 s, P1 -> /b 40 s
    assert older["page_dwell_s"] == {"/0": 30.0, "/a": 20.0}
    assert older["products_viewed"] == [{"product_id": "P1", "views": 1, "dwell_s": 40.0}]
    assert older["categories_viewed"] == [{"category": "mugs", "views": 1}]


async def test_client_sessions_and_caps(store, visitor_id):
    for index in range(5):
        await apply(
            store,
            visitor_id,
            ev("page_view", visitor_id, -500 + index, session=f"s{index}", path=f"/{index}"),
        )
    sessions = (await profile(store, visitor_id))["sessions"]
    assert [s["session_id"] for s in sessions] == ["s4", "s3", "s2"]  # sessions_max = 3
    await apply(
        store,
        visitor_id,
        *[
            ev("product_view", visitor_id, -50 + i, session="s4", product_id=f"P{i}")
            for i in range(6)
        ],
        *[ev("search", visitor_id, -40 + i, session="s4", query=f"q{i}") for i in range(6)],
    )
    newest = (await profile(store, visitor_id))["sessions"][0]
    assert len(newest["products_viewed"]) == 4 and len(newest["searches"]) == 4


async def test_cart_follows_event_time(store, visitor_id):
    mug = {"product_id": "MUG", "price": 2.5}
    # a removal that arrives before its addition still nets out
    await apply(store, visitor_id, ev("cart_remove", visitor_id, -50, **mug))
    await apply(
        store,
        visitor_id,
        ev("cart_add", visitor_id, -60, **mug),
        ev("cart_add", visitor_id, -40, product_id="CUP", price=4.0, quantity=2),
    )
    cart = (await profile(store, visitor_id))["cart"]
    assert cart == {"items": [{"product_id": "CUP", "quantity": 2, "price": 4.0}], "value": 8.0}
    # a cart snapshot (Cart Viewed with products) replaces what came before it
    snapshot = [{"product_id": "JUG", "price": 10, "quantity": 1}]
    await apply(store, visitor_id, ev("cart_view", visitor_id, -30, products=snapshot))
    await apply(store, visitor_id, ev("cart_add", visitor_id, -35, **mug))  # late, older
    assert (await profile(store, visitor_id))["cart"]["value"] == 10.0
    # an order empties it; an addition from before the order that arrives late stays out
    await apply(store, visitor_id, ev("order", visitor_id, -20, revenue=10, products=snapshot))
    await apply(store, visitor_id, ev("cart_add", visitor_id, -25, **mug))
    assert (await profile(store, visitor_id))["cart"] == {"items": [], "value": 0}
    await apply(store, visitor_id, ev("cart_add", visitor_id, -10, **mug))
    assert (await profile(store, visitor_id))["cart"]["value"] == 2.5


async def test_consents_latest_by_event_time(store, visitor_id):
    await apply(store, visitor_id, ev("consent", visitor_id, -10, consents={"email": False}))
    await apply(
        store,
        visitor_id,
        ev("consent", visitor_id, -20, consents={"email": True, "personalization": True}),
    )
    consents = (await profile(store, visitor_id))["consents"]
    assert consents["marketing_email"]["granted"] is False
    assert consents["personalization"]["granted"] is True
    # The decide pipeline reads them with the profile, in the same round trip.
    state = await store.load_visitor(visitor_id, None)
    assert state.consents == {"marketing_email": False, "personalization": True}


async def test_preferences_are_capped(store, visitor_id):
    items = [
        {"product_id": f"P{i}", "category": f"c{i}", "price": 1, "quantity": 1} for i in range(5)
    ]
    await apply(store, visitor_id, ev("order", visitor_id, -10, products=items, revenue=5))
    await apply(
        store, visitor_id, ev("product_view", visitor_id, -5, product_id="X", category="c4")
    )
    result = await profile(store, visitor_id)
    assert len(result["purchased_products"]) == 3
    assert result["preferred_categories"][0] == {"category": "c4", "score": 4.0}
    assert len(result["preferred_categories"]) == 3
    assert result["preferred_channel"] == "web"


async def test_merge_is_three_idempotent_steps(store, visitor_id):
    anonymous, user = f"{visitor_id}-anon", f"{visitor_id}-user"
    await apply(
        store,
        anonymous,
        ev("product_view", anonymous, -60, product_id="P1", category="mugs"),
        ev("cart_add", anonymous, -50, product_id="P1", price=3.0),
        ev("consent", anonymous, -45, consents={"sms": True}),
    )
    await apply(store, user, ev("order", user, -1000, user=user, revenue=50, order_id="O0"))
    start = await store.begin_merge(anonymous, user, time.time())
    assert start.merged_into is None and len(start.events) == 3
    # from now on the anonymous visitor's events go to the customer
    late = await apply(store, anonymous, ev("search", anonymous, -40, query="cups"))
    assert late.redirect == user and late.flags == ()
    assert await store.resolve_visitor(anonymous) == user
    replay = [dict(e, u=user) for e in start.events]
    assert (await apply(store, user, *replay)).flags == (True, True, True)
    # a crash and a retry: the claim answers the same, the replay counts nothing twice
    again = await store.begin_merge(anonymous, user, time.time())
    assert [e["id"] for e in again.events] == [e["id"] for e in start.events]
    assert (await apply(store, user, *[dict(e, u=user) for e in again.events])).flags == (
        False,
        False,
        False,
    )
    await store.finish_merge(anonymous, user, time.time())
    await store.finish_merge(anonymous, user, time.time())
    assert await store.load_events_profile(anonymous) is None
    result = await profile(store, user)
    assert result["merged_ids"] == [anonymous]
    assert result["aggregates"]["orders"] == 1 and result["aggregates"]["events"] == 4
    assert result["cart"]["items"] == [{"product_id": "P1", "quantity": 1, "price": 3.0}]
    assert result["consents"]["marketing_sms"]["granted"] is True
    # the anonymous id belongs to this customer now: another one cannot take it
    other = await store.begin_merge(anonymous, f"{visitor_id}-other", time.time())
    assert other.merged_into == user and other.events == []


async def test_a_merge_blends_the_anonymous_scores_into_the_customer_once(store, visitor_id):
    anonymous, user = f"{visitor_id}-anon", f"{visitor_id}-user"
    customers = DecayedScore("mood", 0.8, NOW - 3600, 30 * 86400.0, {"mood_label": "good"})
    anonymous_one = DecayedScore("mood", -0.6, NOW, 30 * 86400.0, {"mood_label": "bad"})
    await store.blend_score(user, customers)
    await store.update_profile(user, {"segment": "vip"})
    await store.begin_merge(anonymous, user, time.time())
    for _ in range(2):  # a merge done again (its worker died) blends nothing twice
        await store.finish_merge(anonymous, user, time.time(), [anonymous_one])
    stored = blended({}, customers)
    expected = stored | blended(stored, anonymous_one)
    profile = await store.get_profile(user)
    assert profile["mood"] == pytest.approx(expected["mood"], abs=1e-4)
    assert profile["mood_at"] == round(NOW, 3) and profile["mood_label"] == "bad"
    assert profile["segment"] == "vip"
    # a customer erased after the identify was received gets nothing
    erased, late = f"{visitor_id}-erased", f"{visitor_id}-anon2"
    received = time.time()
    await store.blend_score(erased, customers)
    await store.delete_visitor(erased)
    await store.finish_merge(late, erased, received, [anonymous_one])
    assert await store.get_profile(erased) is None


async def test_only_anonymous_events_are_logged_and_capped(store, visitor_id):
    for index in range(7):
        await apply(store, visitor_id, ev("page_view", visitor_id, -100 + index))
    await apply(store, visitor_id, ev("page_view", visitor_id, -50, user=visitor_id))
    start = await store.begin_merge(visitor_id, f"{visitor_id}-user", time.time())
    assert [e["t"] for e in start.events] == sorted(e["t"] for e in start.events)
    assert len(start.events) == 5  # anonymous_log_max


async def test_erasure_reaches_merged_ids_and_drops_older_events(store, visitor_id):
    anonymous, user = f"{visitor_id}-anon", f"{visitor_id}-user"
    await apply(store, anonymous, ev("page_view", anonymous, -60))
    queued = ev("order", user, -30, user=user, revenue=9)  # received, not yet applied
    await store.begin_merge(anonymous, user, time.time())
    await store.finish_merge(anonymous, user, time.time())
    await apply(store, user, ev("page_view", user, -20, user=user))
    await store.load_visitor(user, "s1", page_view="P1")
    await store.update_profile(user, {"segment": "vip"})
    assert await store.delete_visitor(user) is True
    assert await store.load_events_profile(user) is None
    assert await store.load_events_profile(anonymous) is None
    assert await store.resolve_visitor(anonymous) == anonymous
    assert await store.get_profile(user) is None
    assert (await store.load_visitor(user, "s1")).recent_views == ()
    # an event received before the erasure is dropped when the worker reaches it
    dropped = await apply(store, user, queued)
    assert dropped.flags == (False,) and dropped.duplicates == (False,)  # not a duplicate
    fresh = ev("page_view", user, -1, user=user)
    assert (await apply(store, user, fresh)).flags == (True,)
    assert await store.delete_visitor(f"{visitor_id}-never") is False


async def test_an_identify_received_before_an_erasure_links_nothing(store, visitor_id):
    """The worker reaches an identify after one of its ids was erased: the anonymous id is
    not claimed (erased itself), or is erased with the customer (erased after the identify
    was received), never linked to it again."""
    anonymous, user = f"{visitor_id}-anon", f"{visitor_id}-user"
    received = time.time()
    await apply(store, anonymous, ev("page_view", anonymous, -60))
    await apply(store, user, ev("page_view", user, -50, user=user))
    await store.delete_visitor(anonymous)
    start = await store.begin_merge(anonymous, user, received)
    assert start.erased and start.events == [] and start.merged_into is None
    assert await store.resolve_visitor(anonymous) == anonymous

    later, other = f"{visitor_id}-anon2", f"{visitor_id}-anon3"
    await apply(store, later, ev("page_view", later, -40))
    await apply(store, other, ev("page_view", other, -40))
    received = time.time()
    await store.delete_visitor(user)
    start = await store.begin_merge(later, user, received)
    assert not start.erased and len(start.events) == 1
    await store.finish_merge(later, user, received)
    assert await store.merged_ids(user) == []
    assert await store.resolve_visitor(later) == later
    assert await store.load_events_profile(later) is None
    assert await store.load_events_profile(user) is None
    # an identify received after the erasure links as usual
    await store.begin_merge(other, user, time.time())
    await store.finish_merge(other, user, time.time())
    assert await store.merged_ids(user) == [other]


async def test_merged_ids_follow_merges_of_merged_ids(store, visitor_id):
    first, second, user = f"{visitor_id}-a1", f"{visitor_id}-a2", f"{visitor_id}-user"
    for anonymous, into in ((first, second), (second, user)):
        await apply(store, anonymous, ev("page_view", anonymous, -60))
        await store.begin_merge(anonymous, into, time.time())
        await store.finish_merge(anonymous, into, time.time())
    assert await store.merged_ids(user) == [second, first]
    assert await store.merged_ids(second) == [first]
    assert await store.merged_ids(first) == []
    assert await store.merged_ids(f"{visitor_id}-never") == []


async def test_every_redis_key_has_a_ttl(redis_url, visitor_id):
    store = open_store(StoreConfig(redis_url=redis_url, timeout_ms=1000), "redis", EVENTS)
    anonymous = f"{visitor_id}-anon"
    await store.apply_events(
        [
            (
                anonymous,
                [
                    ev("product_view", anonymous, -30, product_id="P", category="c"),
                    ev("search", anonymous, -25, query="x"),
                    ev("cart_add", anonymous, -20, product_id="P", price=1),
                    ev("consent", anonymous, -15, consents={"email": True}),
                    ev("order", anonymous, -10, order_id="O", products=[{"product_id": "P"}]),
                ],
            )
        ]
    )
    start = await store.begin_merge(anonymous, visitor_id, time.time())
    replay = [dict(e, u=visitor_id) for e in start.events]
    await store.apply_events([(visitor_id, replay)])
    await store.apply_events([(anonymous, [ev("page_view", anonymous, -29)])])  # before finish
    await store.finish_merge(anonymous, visitor_id, time.time())
    await store.apply_events([(visitor_id, [ev("page_view", visitor_id, -5, user=visitor_id)])])
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    found = client.keys(f"jg:{{{visitor_id}}}:*") + client.keys(f"jg:{{{anonymous}}}:*")
    assert len(found) > 15
    assert {key: client.ttl(key) for key in found if client.ttl(key) <= 0} == {}
    client.close()
    await store.close()


async def test_a_mistyped_price_is_rejected_before_anything_is_written(redis_url, visitor_id):
    """Events written to the streams by something other than the gateway are checked again
    in the script: a cart snapshot whose price is not a number used to empty the cart first
    and fail on the price, half-applied."""
    store = open_store(StoreConfig(redis_url=redis_url, timeout_ms=1000), "redis", EVENTS)
    await apply(store, visitor_id, ev("cart_add", visitor_id, -20, product_id="MUG", price=2.5))
    snapshot = ev("cart_view", visitor_id, -10, products=[{"product_id": "JUG", "price": 10}])
    snapshot["x"]["items"][0]["price"] = {"amount": 10}
    added = ev("cart_add", visitor_id, -5, product_id="CUP", price=1.0)
    added["x"]["price"] = "1.00"
    for bad, field in ((snapshot, "x.items"), (added, "x")):
        result = await apply(store, visitor_id, bad)
        assert result.flags == () and f"malformed {field}" in (result.error or "")
    cart = (await profile(store, visitor_id))["cart"]
    assert cart == {"items": [{"product_id": "MUG", "quantity": 1, "price": 2.5}], "value": 2.5}
    raw = await store.load_events_profile(visitor_id)
    assert raw is not None and int(raw.profile["events"]) == 1  # the first add only
    await store.close()


async def test_an_event_received_just_before_an_erasure_is_dropped_and_one_after_it_kept(
    store, visitor_id
):
    """Receipt times are rounded to the millisecond: one received a moment before the
    erasure may carry a time above the erasure's own instant, and is still dropped; one
    received once the erasure answered is kept."""
    await apply(store, visitor_id, ev("page_view", visitor_id, -60))
    just_before = ev("order", visitor_id, -30, revenue=9)
    just_before["r"] = math.ceil(time.time() * 1000) / 1000  # rounded up, as it may be
    assert await store.delete_visitor(visitor_id) is True
    assert (await apply(store, visitor_id, just_before)).flags == (False,)
    after = ev("page_view", visitor_id, -1)
    assert (await apply(store, visitor_id, after)).flags == (True,)
