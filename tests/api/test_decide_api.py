"""POST /v1/decide through a real aiohttp server: answers, bad input, escaping."""

import json

import pytest

from journeygate import appkeys, hookimpl
from journeygate.catalog import Product, write_catalog

SLOTS = [
    {"id": "pdp-similar", "kind": "recommendations", "limit": 8},
    {"id": "hero", "kind": "offer"},
]
BODY = {
    "visitor_id": "v-123",
    "session_id": "s-456",
    "context": {
        "page": {"type": "product", "product_id": "85123A", "url": "https://shop.example/p/85123A"},
        "cart": {"items": [{"product_id": "22423", "quantity": 1, "price": 12.75}]},
        "channel": "web",
        "device": "mobile",
        "locale": "en-GB",
    },
    "slots": SLOTS,
}


async def test_decide_returns_one_block_per_slot(gateway):
    client = await gateway()
    response = await client.post("/v1/decide", json=BODY)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert len(body["decision_id"]) == 32
    assert set(body["visitor"]) >= {"stage", "intent", "segment", "sentiment"}
    recs, hero = body["blocks"]
    assert recs["slot"] == "pdp-similar" and recs["kind"] == "recommendations"
    assert len(recs["items"]) == 8
    ids = [item["product_id"] for item in recs["items"]]
    assert "85123A" not in ids and "22423" not in ids  # not the page's product, not the cart's
    assert len(set(ids)) == 8
    assert recs["tracking"] == {
        "decision_id": body["decision_id"],
        "slot": "pdp-similar",
        "source": "fallback",
    }
    assert recs["html"].startswith("<section") and 'data-jg-product="' in recs["html"]
    assert hero["offer"]["id"] == "free-delivery"
    assert "explain" not in body


async def test_fallback_prefers_the_category_of_the_page_product(gateway):
    client = await gateway()
    body = await (await client.post("/v1/decide", json=BODY)).json()
    categories = [item["category"] for item in body["blocks"][0]["items"]]
    assert categories == ["Candles & lighting"] * 8


async def test_explain_lists_every_plugin_call_with_timings(gateway):
    client = await gateway()
    body = await (await client.post("/v1/decide", json={**BODY, "explain": True})).json()
    calls = body["explain"]["calls"]
    assert {(c["hook"], c["plugin"], c["slot"]) for c in calls} == {
        ("candidates", "fallback", "pdp-similar"),
        ("render_block", "renderer", "pdp-similar"),
        ("choose_offer", "fallback", "hero"),
        ("render_block", "renderer", "hero"),
    }
    assert all(c["ms"] >= 0 and c["outcome"] == "ok" for c in calls)
    assert body["explain"]["store"] == {"available": True}


async def test_page_views_reach_the_profile_store(gateway, redis_url, visitor_id, redis_client):
    client = await gateway(store={"redis_url": redis_url})
    for product in ("85123A", "22423"):
        body = {
            **BODY,
            "visitor_id": visitor_id,
            "context": {"page": {"type": "product", "product_id": product}},
        }
        assert (await client.post("/v1/decide", json=body)).status == 200
    assert redis_client.lrange(f"jg:{{{visitor_id}}}:views", 0, -1) == ["22423", "85123A"]


def post_raw(client, data, content_type="application/json"):
    return client.post("/v1/decide", data=data, headers={"Content-Type": content_type})


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({**BODY, "visitor_id": 42}, 400, "invalid_request", "visitor_id"),
        ({**BODY, "visitor_id": "has space"}, 400, "invalid_request", "visitor_id"),
        ({**BODY, "visitor_id": "{tag}"}, 400, "invalid_request", "visitor_id"),
        (
            {k: v for k, v in BODY.items() if k != "visitor_id"},
            400,
            "invalid_request",
            "visitor_id",
        ),
        ({**BODY, "slots": []}, 400, "invalid_request", "slots"),
        ({**BODY, "slots": "pdp"}, 400, "invalid_request", "slots"),
        (
            {**BODY, "slots": [{"id": "a", "kind": "recommendations", "limit": "8"}]},
            400,
            "invalid_request",
            "slots[0].limit",
        ),
        (
            {**BODY, "slots": [{"id": "a", "kind": "recommendations", "limit": 0}]},
            400,
            "invalid_request",
            "slots[0].limit",
        ),
        (
            {**BODY, "slots": [{"id": "a", "kind": "recommendations", "limit": 1000}]},
            400,
            "invalid_request",
            "slots[0].limit",
        ),
        (
            {**BODY, "slots": [{"id": "a", "kind": "carousel"}]},
            400,
            "unknown_slot_kind",
            "slots[0].kind",
        ),
        (
            {**BODY, "slots": [{"id": "a", "kind": "recommendations", "strategy": "mind_reading"}]},
            400,
            "unknown_strategy",
            "slots[0].strategy",
        ),
        (
            {**BODY, "slots": [{"id": "a", "kind": "recommendations", "plugin": "ghost"}]},
            400,
            "unknown_plugin",
            "slots[0].plugin",
        ),
        (
            {**BODY, "slots": [{"id": "a", "kind": "recommendations", "template": "nope"}]},
            400,
            "unknown_template",
            "slots[0].template",
        ),
        (
            {**BODY, "slots": [{"id": "a", "kind": "recommendations", "template": "../secrets"}]},
            400,
            "unknown_template",
            "slots[0].template",
        ),
        (
            {**BODY, "slots": [{"id": "a", "kind": "offer"}, {"id": "a", "kind": "offer"}]},
            400,
            "invalid_request",
            "slots[1].id",
        ),
        (
            {**BODY, "slots": [{"id": f"s{i}", "kind": "offer"} for i in range(11)]},
            400,
            "invalid_request",
            "slots",
        ),
        (
            {**BODY, "context": {"page": {"type": "basket"}}},
            400,
            "invalid_request",
            "context.page.type",
        ),
        ({**BODY, "context": {"channel": "fax"}}, 400, "invalid_request", "context.channel"),
        (
            {**BODY, "context": {"cart": {"items": [{"product_id": "1", "price": -1}]}}},
            400,
            "invalid_request",
            "context.cart.items[0].price",
        ),
        (
            {**BODY, "context": {"cart": {"items": [{"product_id": "1", "quantity": 1.5}]}}},
            400,
            "invalid_request",
            "context.cart.items[0].quantity",
        ),
        (
            {**BODY, "context": {"cart": {"items": [{"quantity": 1}]}}},
            400,
            "invalid_request",
            "context.cart.items[0].product_id",
        ),
        (
            {**BODY, "context": {"cart": {"items": [{"product_id": "1", "quantity": True}]}}},
            400,
            "invalid_request",
            "context.cart.items[0].quantity",
        ),
        (
            {
                **BODY,
                "context": {"cart": {"items": [{"product_id": "1"}, {"product_id": "x" * 65}]}},
            },
            400,
            "invalid_request",
            "context.cart.items[1].product_id",
        ),
        (
            {**BODY, "context": {"cart": {"items": [{"product_id": "1", "price": "12.75"}]}}},
            400,
            "invalid_request",
            "context.cart.items[0].price",
        ),
        ({**BODY, "session_id": "s{1}"}, 400, "invalid_request", "session_id"),
        ({**BODY, "session_id": 7}, 400, "invalid_request", "session_id"),
        ({**BODY, "context": {"device": 3}}, 400, "invalid_request", "context.device"),
        (
            {**BODY, "context": {"page": {"product_id": "p" * 65}}},
            400,
            "invalid_request",
            "context.page.product_id",
        ),
        ({**BODY, "context": {"utm": "spring"}}, 400, "invalid_request", "context.utm"),
        ({**BODY, "context": "product"}, 400, "invalid_request", "context"),
        ({**BODY, "explain": "yes"}, 400, "invalid_request", "explain"),
        ([BODY], 400, "invalid_request", None),
    ],
)
async def test_bad_requests_name_the_field(gateway, body, status, code, field):
    client = await gateway()
    response = await client.post("/v1/decide", json=body)
    assert response.status == status
    error = (await response.json())["error"]
    assert error["code"] == code
    assert error.get("field") == field
    assert error["message"]


async def test_a_slot_validated_before_does_not_vouch_for_an_equal_looking_one(gateway):
    """Slots are validated once per exact JSON: ``1``, ``1.0`` and ``true`` compare equal
    in Python, but only the first is a valid limit, whatever was sent before."""
    client = await gateway()
    for limit, status in ((1, 200), (True, 400), (1.0, 400), (1, 200), (True, 400)):
        slot = {"id": "a", "kind": "recommendations", "limit": limit}
        response = await client.post("/v1/decide", json={**BODY, "slots": [slot]})
        assert response.status == status, limit
        if status == 200:
            assert len((await response.json())["blocks"][0]["items"]) == 1
        else:
            assert (await response.json())["error"]["field"] == "slots[0].limit"
    # a second slot with the same definition gets the index it has in its own request
    slots = [{"id": "b", "kind": "offer"}, {"id": "a", "kind": "recommendations", "limit": True}]
    response = await client.post("/v1/decide", json={**BODY, "slots": slots})
    assert (await response.json())["error"]["field"] == "slots[1].limit"


async def test_malformed_json(gateway):
    client = await gateway()
    response = await post_raw(client, '{"visitor_id": "v1", "slots": [')
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_json"
    assert "line 1 column" in error["message"]
    response = await post_raw(client, b"\xff\xfe")
    assert (await response.json())["error"]["code"] == "invalid_json"


async def test_wrong_content_type(gateway):
    client = await gateway()
    response = await post_raw(
        client, "visitor_id=v1", content_type="application/x-www-form-urlencoded"
    )
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "unsupported_media_type"


async def test_text_plain_json_is_accepted_for_preflight_free_browser_calls(gateway):
    client = await gateway()
    response = await post_raw(client, json.dumps(BODY), content_type="text/plain")
    assert response.status == 200


async def test_oversized_body_is_rejected_and_server_keeps_serving(gateway):
    client = await gateway(server={"max_body_bytes": 2048})
    padded = {**BODY, "context": {**BODY["context"], "referrer": "x" * 1500, "device": "y" * 60}}
    padded["slots"] = SLOTS + [{"id": f"pad{i}", "kind": "offer"} for i in range(8)]
    response = await client.post("/v1/decide", json=padded)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "payload_too_large"
    assert (await client.post("/v1/decide", json=BODY)).status == 200


async def test_unknown_route_and_method_are_json_errors(gateway):
    client = await gateway()
    response = await client.get("/v1/nothing")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
    response = await client.get("/v1/decide")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_product_names_from_data_are_escaped(gateway, tmp_path):
    catalog = tmp_path / "catalog.csv"
    write_catalog(
        [
            Product("1", '<script>alert("x")</script> Mug', 2.5, "Kitchen & dining", popularity=10),
            Product("2", "Tea & <b>Biscuits</b>", 3.0, "Kitchen & dining", popularity=5),
        ],
        catalog,
    )
    client = await gateway(catalog={"path": str(catalog)})
    body = await (
        await client.post("/v1/decide", json={"visitor_id": "v1", "slots": [SLOTS[0]]})
    ).json()
    block = body["blocks"][0]
    assert block["items"][0]["title"] == '<script>alert("x")</script> Mug'  # JSON keeps the data
    assert "<script>" not in block["html"]
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; Mug" in block["html"]
    assert "Tea &amp; &lt;b&gt;Biscuits&lt;/b&gt;" in block["html"]


async def test_several_fallback_blocks_on_one_page_are_all_full(gateway):
    client = await gateway()
    slots = [{"id": name, "kind": "recommendations", "limit": 8} for name in ("a", "b", "c")]
    body = await (await client.post("/v1/decide", json={**BODY, "slots": slots})).json()
    assert [len(block["items"]) for block in body["blocks"]] == [8, 8, 8]


async def test_only_product_pages_record_a_product_view(
    gateway, redis_url, visitor_id, redis_client
):
    client = await gateway(store={"redis_url": redis_url})
    cart_page = {"page": {"type": "cart", "product_id": "85123A"}}
    await client.post("/v1/decide", json={**BODY, "visitor_id": visitor_id, "context": cart_page})
    assert redis_client.lrange(f"jg:{{{visitor_id}}}:views", 0, -1) == []


async def test_shared_blocks_are_rendered_once_with_each_decision_id(gateway):
    client = await gateway()
    answers = [await (await client.post("/v1/decide", json=BODY)).json() for _ in range(2)]
    first, second = (a["blocks"][0]["html"] for a in answers)
    ids = [a["decision_id"] for a in answers]
    assert ids[0] != ids[1]
    assert ids[0] in first and ids[1] in second and ids[0] not in second
    assert first.replace(ids[0], "") == second.replace(ids[1], "")
    assert "jg0decision0placeholder" not in first + second
    renderer = client.app[appkeys.RENDERER]
    assert len(renderer._cache) == 2  # the recommendations block and the offer, once each


class StageFromVisitorId:
    @hookimpl
    def journeygate_enrich_visitor(self, context):
        return {"stage": context.visitor_id.split("-")[0]}


async def test_render_cache_keys_on_visitor_state_only_when_the_template_shows_it(
    gateway, tmp_path
):
    slots = [{"id": "pdp-similar", "kind": "recommendations", "limit": 3}]
    bodies = [{**BODY, "visitor_id": v, "slots": slots} for v in ("awareness-1", "decision-2")]
    client = await gateway(extra_plugins=[("stage", StageFromVisitorId())])
    for body in bodies:
        await client.post("/v1/decide", json=body)
    assert len(client.app[appkeys.RENDERER]._cache) == 1  # the bundled template ignores it

    (tmp_path / "recommendations.html").write_text(
        '<section data-stage="{{ visitor.stage }}">{{ items|length }}</section>', encoding="utf-8"
    )
    client = await gateway(
        extra_plugins=[("stage", StageFromVisitorId())],
        templates={"override_dir": str(tmp_path)},
    )
    htmls = [
        (await (await client.post("/v1/decide", json=body)).json())["blocks"][0]["html"]
        for body in bodies
    ]
    assert htmls == [
        '<section data-stage="awareness">3</section>',
        '<section data-stage="decision">3</section>',
    ]
