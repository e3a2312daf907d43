"""GET and DELETE /v1/profiles/{id}: the merged profile, identity merges, erasure."""

import time

import jsonschema
import pytest
from eventkit import ADMIN, apply_pending, basic, event, fresh_redis_url, overrides

from journeygate import appkeys, hookimpl
from journeygate.store import DecayedScore


@pytest.fixture
def url(redis_url):
    return fresh_redis_url(redis_url)


@pytest.fixture(params=["memory", "redis"])
async def client(request, gateway, url):
    return await gateway(**overrides(request.param, url))


async def ingest(client, *events):
    response = await client.post("/v1/events", json={"events": list(events)}, headers=basic())
    assert response.status == 200
    result = await response.json()
    assert result["rejected"] == [], result["rejected"]
    await apply_pending(client)
    return result


def schema(document, path, method, status):
    content = document["paths"][path][method]["responses"][str(status)]["content"]
    return jsonschema.Draft202012Validator(
        {**content["application/json"]["schema"], "components": document["components"]}
    )


def order(visitor, message_id, revenue, at=None, **ids):
    return {
        **event("order", visitor, at, order_id=message_id, revenue=revenue),
        "message_id": message_id,
        **ids,
    }


async def test_profile_answers_match_the_openapi_document(client, visitor_id):
    now = time.time()
    await ingest(
        client,
        event("page_view", visitor_id, now - 300, path="/"),
        event("Product Viewed", visitor_id, now - 240, product_id="22423", category="Kitchen"),
        event("Product Added", visitor_id, now - 200, product_id="22423", price=12.75),
        event("consent", visitor_id, now - 100, consents={"personalization": True}),
    )
    document = await (await client.get("/openapi.json")).json()
    path = "/v1/profiles/{visitor_id}"
    response = await client.get(f"/v1/profiles/{visitor_id}", headers=ADMIN)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    profile = await response.json()
    schema(document, path, "get", 200).validate(profile)
    assert profile["cart"] == {
        "items": [{"product_id": "22423", "quantity": 1, "price": 12.75}],
        "value": 12.75,
    }
    assert profile["aggregates"]["average_order_value"] is None
    for url, headers, status in (
        ("/v1/profiles/nobody-here", ADMIN, 404),
        (f"/v1/profiles/{visitor_id}", {}, 401),
        ("/v1/profiles/bad%20id", ADMIN, 400),
    ):
        response = await client.get(url, headers=headers)
        assert response.status == status
        schema(document, path, "get", status).validate(await response.json())
    response = await client.delete(f"/v1/profiles/{visitor_id}", headers=ADMIN)
    schema(document, path, "delete", 200).validate(await response.json())


async def test_identify_merges_history_without_double_counting(client, visitor_id):
    anonymous, user = visitor_id, f"{visitor_id}-customer"
    now = time.time()
    await ingest(client, order(user, f"{user}-o1", 40.0, now - 86400, user_id=user))
    anonymous_events = [
        event("Product Viewed", anonymous, now - 600, product_id="P9", category="Garden"),
        event("Product Added", anonymous, now - 590, product_id="P9", price=5.0, quantity=2),
        order(anonymous, f"{anonymous}-o2", 10.0, now - 580),
        event("Product Added", anonymous, now - 570, product_id="P8", price=1.5),
    ]
    await ingest(client, *anonymous_events)
    identify = {
        **event("identify", anonymous, now - 500, consents={"email": True}),
        "user_id": user,
        "message_id": f"{user}-identify",
    }
    await ingest(client, identify)
    # a client retry: the identify and the anonymous order again; and a late anonymous view
    await ingest(client, identify, anonymous_events[2])
    await ingest(client, event("page_view", anonymous, now - 400, path="/after"))

    profile = await (await client.get(f"/v1/profiles/{anonymous}", headers=ADMIN)).json()
    assert profile["visitor_id"] == anonymous and profile["profile_id"] == user
    assert profile["merged_ids"] == [anonymous]
    aggregates = profile["aggregates"]
    assert aggregates["orders"] == 2 and aggregates["revenue"] == 50.0
    assert aggregates["average_order_value"] == 25.0
    assert aggregates["events"] == 7  # 1 + 4 + identify + the late view
    assert profile["cart"]["items"] == [{"product_id": "P8", "quantity": 1, "price": 1.5}]
    assert profile["consents"]["marketing_email"]["granted"] is True
    assert profile["preferred_categories"][0]["category"] == "Garden"
    assert sum(s["page_views"] for s in profile["sessions"]) == 2


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_identify_blends_the_plugins_decayed_scores_into_the_customer(
    gateway, url, visitor_id, backend
):
    anonymous, user = visitor_id, f"{visitor_id}-customer"
    seen: list[dict] = []

    class Mood:
        """Keeps a decayed ``mood`` in the profile, as the sentiment plugin does."""

        @hookimpl
        def journeygate_merge_scores(self, profile):
            seen.append(dict(profile))
            return [DecayedScore("mood", profile["mood"], profile["mood_at"], 86400.0)]

    class Broken:
        @hookimpl
        async def journeygate_merge_scores(self, profile):
            raise RuntimeError("plugin bug")

    client = await gateway(
        extra_plugins=[("broken", Broken()), ("mood", Mood())], **overrides(backend, url)
    )
    store = client.app[appkeys.STORE]
    now = time.time()
    await store.blend_score(user, DecayedScore("mood", 0.5, now - 86400, 86400.0))
    await store.blend_score(anonymous, DecayedScore("mood", -0.5, now, 86400.0))
    await ingest(client, event("page_view", anonymous, now - 60, path="/"))
    identify = {**event("identify", anonymous, now), "user_id": user, "message_id": f"{user}-id"}
    await ingest(client, identify)
    await ingest(client, identify)  # a client retry merges nothing again
    profile = await (await client.get(f"/v1/profiles/{anonymous}", headers=ADMIN)).json()
    assert profile["profile_id"] == user and profile["merged_ids"] == [anonymous]
    assert profile["aggregates"]["page_views"] == 1
    # the customer's day-old 0.5 counts at half weight and half value: (0.125 - 0.5) / 1.5
    assert profile["attributes"]["mood"] == pytest.approx(-0.25, abs=1e-4)
    assert profile["attributes"]["mood_at"] == pytest.approx(now, abs=1e-3)
    assert [fields["mood"] for fields in seen] == [-0.5]  # the anonymous profile, read once


async def test_erasure_everywhere(client, visitor_id):
    anonymous, user = visitor_id, f"{visitor_id}-customer"
    await ingest(
        client,
        event("page_view", anonymous, path="/"),
        {**event("identify", anonymous), "user_id": user},
        order(user, f"{user}-o1", 9.0, user_id=user),
    )
    await client.post(  # the decide pipeline's own history of this visitor
        "/v1/decide",
        json={"visitor_id": user, "session_id": "s1", "slots": [{"id": "a", "kind": "offer"}]},
    )
    # received before the erasure, applied after it (with Redis: still in the stream)
    queued = order(user, f"{user}-o2", 5.0, user_id=user)
    response = await client.post("/v1/events", json={"events": [queued]}, headers=basic())
    assert response.status == 200
    response = await client.delete(f"/v1/profiles/{anonymous}", headers=ADMIN)
    assert await response.json() == {
        "visitor_id": anonymous,
        "profile_id": user,
        "erased": True,
        "ids": [anonymous, user],
        "plugins": {},
        "webhooks": 0,
        "dead_letters": 0,
    }
    await apply_pending(client)
    for visitor in (anonymous, user):
        assert (await client.get(f"/v1/profiles/{visitor}", headers=ADMIN)).status == 404
    response = await client.delete(f"/v1/profiles/{user}", headers=ADMIN)
    assert (await response.json())["erased"] is False
    assert (await client.delete(f"/v1/profiles/{user}")).status == 401
    # a new visit after the erasure is a new profile
    await ingest(client, order(user, f"{user}-o3", 7.0, user_id=user))
    profile = await (await client.get(f"/v1/profiles/{user}", headers=ADMIN)).json()
    assert profile["aggregates"]["orders"] == 1 and profile["merged_ids"] == []


async def test_a_plugin_that_cannot_forget_stops_the_erasure_until_a_retry(
    gateway, url, visitor_id
):
    anonymous, user = visitor_id, f"{visitor_id}-customer"
    asked: list[list[str]] = []

    class Keeper:
        """Keeps something per visitor outside the profile; fails once, like a lost
        connection."""

        failing = True

        @hookimpl
        async def journeygate_forget_visitor(self, visitor_ids):
            asked.append(list(visitor_ids))
            if self.failing:
                self.failing = False
                raise ConnectionError("keeper store unreachable")
            return {"notes": len(visitor_ids)}

    client = await gateway(extra_plugins=[("keeper", Keeper())], **overrides("redis", url))
    await ingest(
        client,
        event("page_view", anonymous, path="/"),
        {**event("identify", anonymous), "user_id": user},
    )
    document = await (await client.get("/openapi.json")).json()
    path = "/v1/profiles/{visitor_id}"
    response = await client.delete(f"/v1/profiles/{user}", headers=ADMIN)
    assert response.status == 503
    body = await response.json()
    schema(document, path, "delete", 503).validate(body)
    assert body["error"]["code"] == "erasure_incomplete"
    assert "keeper" in body["error"]["message"]
    # nothing was erased: the retry still finds the merged id
    assert (await client.get(f"/v1/profiles/{anonymous}", headers=ADMIN)).status == 200
    response = await client.delete(f"/v1/profiles/{user}", headers=ADMIN)
    assert response.status == 200
    body = await response.json()
    schema(document, path, "delete", 200).validate(body)
    assert body["ids"] == [user, anonymous]
    assert body["plugins"] == {"keeper": {"notes": 2}}
    assert asked == [[user, anonymous], [user, anonymous]]
    assert (await client.get(f"/v1/profiles/{anonymous}", headers=ADMIN)).status == 404
