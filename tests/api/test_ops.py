"""Operations endpoints and the OpenAPI document, checked against real responses."""

import jsonschema
import pytest
from openapi_spec_validator import validate as validate_spec
from prometheus_client.parser import text_string_to_metric_families

BODY = {
    "visitor_id": "v-ops",
    "context": {"page": {"type": "product", "product_id": "85123A"}},
    "slots": [{"id": "recs", "kind": "recommendations"}, {"id": "hero", "kind": "offer"}],
}


async def test_healthz(gateway):
    client = await gateway()
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_reports_store_and_plugins(gateway, redis_url):
    client = await gateway(store={"redis_url": redis_url})
    response = await client.get("/readyz")
    assert response.status == 200
    body = await response.json()
    assert body["store"] == {"backend": "redis", "reachable": True}
    assert body["plugins"] == {"started": ["fallback", "renderer"], "failed": {}}


async def test_metrics_exposes_routes_and_plugins(gateway):
    client = await gateway()
    for _ in range(3):
        await client.post("/v1/decide", json=BODY)
    await client.post("/v1/decide", json={"visitor_id": 1})
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    requests = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["journeygate_http_requests"].samples
        if s.name.endswith("_total")
    }
    assert requests[("/v1/decide", "200")] == 3
    assert requests[("/v1/decide", "400")] == 1
    latency = families["journeygate_http_request_duration_seconds"].samples
    assert any(
        s.labels.get("route") == "/v1/decide" and s.name.endswith("_count") and s.value == 4
        for s in latency
    )
    plugin = families["journeygate_plugin_duration_seconds"].samples
    assert any(
        s.labels.get("plugin") == "fallback" and s.labels.get("hook") == "journeygate_candidates"
        for s in plugin
    )


@pytest.fixture
async def spec(gateway):
    client = await gateway()
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    validate_spec(document)
    return client, document


def validator(document, name):
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


def response_schema(document, path, method, status):
    content = document["paths"][path][method]["responses"][str(status)]["content"]
    schema = content["application/json"]["schema"]
    return jsonschema.Draft202012Validator({**schema, "components": document["components"]})


async def test_openapi_document_is_valid_and_matches_real_responses(spec):
    client, document = spec
    validator(document, "DecideRequest").validate(BODY)
    for body in (BODY, {**BODY, "explain": True}):
        response = await client.post("/v1/decide", json=body)
        response_schema(document, "/v1/decide", "post", 200).validate(await response.json())
    response = await client.post(
        "/v1/decide", json={**BODY, "slots": [{"id": "x", "kind": "nope"}]}
    )
    response_schema(document, "/v1/decide", "post", 400).validate(await response.json())
    response = await client.get("/readyz")
    response_schema(document, "/readyz", "get", 200).validate(await response.json())
    response = await client.get("/healthz")
    response_schema(document, "/healthz", "get", 200).validate(await response.json())
    response = await client.get("/v1/admin/plugins", headers={"X-API-Key": "test-admin-key"})
    response_schema(document, "/v1/admin/plugins", "get", 200).validate(await response.json())
    response = await client.get("/v1/admin/plugins")
    response_schema(document, "/v1/admin/plugins", "get", 401).validate(await response.json())


async def test_openapi_rejects_what_the_server_rejects(spec):
    _, document = spec
    request = validator(document, "DecideRequest")
    with pytest.raises(jsonschema.ValidationError):
        request.validate({**BODY, "slots": [{"id": "a", "kind": "carousel"}]})
    with pytest.raises(jsonschema.ValidationError):
        request.validate({"slots": BODY["slots"]})


async def test_every_route_is_documented(spec):
    client, document = spec
    api_prefixes = ("/v1/", "/healthz", "/readyz", "/metrics", "/openapi.json")
    routes = {
        (resource.canonical, route.method.lower())
        for resource in client.app.router.resources()
        for route in resource
        if route.method != "HEAD" and resource.canonical.startswith(api_prefixes)
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == documented
