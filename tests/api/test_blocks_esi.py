"""GET /v1/blocks/{slot}: the same decision as a bare HTML fragment for <esi:include>."""

from journeygate import hookimpl
from journeygate.model import Candidate


async def test_fragment_is_html_of_one_block(gateway):
    client = await gateway()
    response = await client.get(
        "/v1/blocks/pdp-similar",
        params={
            "visitor_id": "v-123",
            "kind": "recommendations",
            "product_id": "85123A",
            "limit": "3",
        },
    )
    assert response.status == 200
    assert response.content_type == "text/html"
    html = await response.text()
    assert html.startswith(
        '<section class="jg-block jg-recommendations" data-jg-slot="pdp-similar"'
    )
    assert html.count('class="jg-item"') == 3
    assert 'data-jg-product="85123A"' not in html
    assert response.headers["X-Journeygate-Decision"] in html
    assert response.headers["X-Journeygate-Source"] == "fallback"


async def test_anonymous_non_personalized_fragment_may_be_cached_by_a_shared_cache(
    gateway, redis_url, redis_client
):
    client = await gateway(store={"redis_url": redis_url})
    keys_before = redis_client.dbsize()
    params = {"page_type": "product", "product_id": "85123A"}
    response = await client.get("/v1/blocks/top", params=params)
    assert response.headers["Cache-Control"] == "public, max-age=60"
    assert response.headers["Vary"] == "Cookie"
    assert "Set-Cookie" not in response.headers
    # Nothing was recorded for the one-off anonymous visitor the cache may replay.
    assert redis_client.dbsize() == keys_before


async def test_fragment_for_a_known_visitor_is_private(gateway):
    client = await gateway()
    response = await client.get("/v1/blocks/top", params={"visitor_id": "v1"})
    assert response.headers["Cache-Control"] == "private, no-store"


class ForYou:
    @hookimpl
    def journeygate_slot_strategies(self):
        return ["for_you"]

    @hookimpl
    def journeygate_candidates(self, context, slot):
        if slot.strategy == "for_you":
            return [Candidate(p) for p in context.stored.recent_views] or [Candidate("22423")]
        return None


async def test_personalized_fragment_is_private_and_varies_on_cookie(gateway):
    client = await gateway(extra_plugins=[("foryou", ForYou())])
    response = await client.get(
        "/v1/blocks/mine", params={"visitor_id": "v1", "strategy": "for_you"}
    )
    assert response.headers["X-Journeygate-Source"] == "foryou"
    assert response.headers["Cache-Control"] == "private, no-store"
    assert response.headers["Vary"] == "Cookie"


async def test_identity_comes_from_the_cookie_or_a_new_one_is_set(gateway):
    client = await gateway(extra_plugins=[("foryou", ForYou())])
    first = await client.get("/v1/blocks/mine", params={"strategy": "for_you"})
    assert first.status == 200
    cookie = first.cookies["jg_vid"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert first.headers["Cache-Control"] == "private, no-store"
    # The test client keeps the cookie: later includes are the same visitor.
    params = {"strategy": "for_you", "page_type": "product", "product_id": "84879"}
    second = await client.get("/v1/blocks/mine", params=params)
    assert "Set-Cookie" not in second.headers
    third = await client.get("/v1/blocks/mine", params={"strategy": "for_you"})
    assert 'data-jg-product="84879"' in await third.text()


async def test_offer_fragment(gateway):
    client = await gateway()
    response = await client.get("/v1/blocks/hero", params={"visitor_id": "v1", "kind": "offer"})
    assert (await response.text()).startswith('<aside class="jg-block jg-offer"')


async def test_bad_query_parameters_are_named(gateway):
    client = await gateway()
    for params, field in [
        ({"visitor_id": "v1", "limit": "many"}, "limit"),
        ({"visitor_id": "v1", "limit": "500"}, "limit"),
        ({"visitor_id": "v1", "kind": "popup"}, "kind"),
        ({"visitor_id": "v1", "page_type": "basket"}, "page_type"),
        ({"visitor_id": "bad id"}, "visitor_id"),
        ({"visitor_id": "v1", "strategy": "nope"}, "strategy"),
    ]:
        response = await client.get("/v1/blocks/s1", params=params)
        assert response.status == 400, params
        assert (await response.json())["error"]["field"] == field
    response = await client.get("/v1/blocks/bad%20slot", params={"visitor_id": "v1"})
    assert response.status == 400
