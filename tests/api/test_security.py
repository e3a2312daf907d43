"""CORS for storefront origins and the API-key contract for admin and write endpoints."""

import pytest

BODY = {"visitor_id": "v1", "slots": [{"id": "hero", "kind": "offer"}]}


async def test_cors_preflight_for_a_configured_origin(gateway):
    client = await gateway()
    response = await client.options(
        "/v1/decide",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Content-Type",
        },
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in response.headers["Access-Control-Allow-Headers"]


async def test_cors_headers_on_answers_and_errors_for_allowed_origin_only(gateway):
    client = await gateway()
    ok = await client.post("/v1/decide", json=BODY, headers={"Origin": "https://shop.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Origin" in ok.headers.getall("Vary")
    bad = await client.post("/v1/decide", json={}, headers={"Origin": "https://shop.example"})
    assert bad.status == 400
    assert bad.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    other = await client.post("/v1/decide", json=BODY, headers={"Origin": "https://evil.example"})
    assert other.status == 200
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = await client.options(
        "/v1/decide",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 401
    assert "Access-Control-Allow-Origin" not in preflight.headers


async def test_wildcard_origin(gateway):
    client = await gateway(server={"cors_origins": ["*"]})
    response = await client.post("/v1/decide", json=BODY, headers={"Origin": "https://any.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://any.example"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-API-Key": "wrong"}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"X-API-Key": "test-admin-key"}, 200),
        ({"Authorization": "Bearer test-admin-key"}, 200),
    ],
)
async def test_admin_routes_need_an_api_key(gateway, headers, status):
    client = await gateway()
    response = await client.get("/v1/admin/plugins", headers=headers)
    assert response.status == status
    body = await response.json()
    if status == 401:
        assert body["error"]["code"] == "unauthorized"
    else:
        names = [plugin["name"] for plugin in body["plugins"]]
        assert sorted(names) == ["fallback", "renderer"]
        assert body["strategies"] == ["popular"]


async def test_admin_routes_are_closed_when_no_key_is_configured(gateway):
    client = await gateway(server={"api_keys": []})
    response = await client.get("/v1/admin/plugins", headers={"X-API-Key": ""})
    assert response.status == 401


async def test_public_routes_need_no_key(gateway):
    client = await gateway()
    assert (await client.post("/v1/decide", json=BODY)).status == 200
    assert (await client.get("/healthz")).status == 200
