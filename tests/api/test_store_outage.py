"""Redis going away mid-life: decisions keep coming (without a profile), readiness says why."""

import time

BODY = {
    "visitor_id": "v-outage",
    "session_id": "s1",
    "context": {"page": {"type": "product", "product_id": "85123A"}},
    "slots": [{"id": "recs", "kind": "recommendations"}, {"id": "hero", "kind": "offer"}],
    "explain": True,
}


async def test_decide_survives_redis_going_away_and_coming_back(gateway, private_redis):
    client = await gateway(store={"redis_url": private_redis.url, "timeout_ms": 100})
    body = await (await client.post("/v1/decide", json=BODY)).json()
    assert body["explain"]["store"]["available"] is True

    private_redis.kill()
    for _ in range(3):
        started = time.perf_counter()
        response = await client.post("/v1/decide", json=BODY)
        assert time.perf_counter() - started < 1.0
        assert response.status == 200
        body = await response.json()
        assert body["explain"]["store"]["available"] is False
        assert [len(b["items"]) for b in body["blocks"]] == [8, 0]
        assert body["blocks"][1]["offer"]["id"] == "free-delivery"
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["store"]["reachable"] is False
    metrics = await (await client.get("/metrics")).text()
    assert 'journeygate_store_errors_total{operation="load_visitor"} 3.0' in metrics

    private_redis.start()
    # The very first decision after the restart already has its profile back.
    body = await (await client.post("/v1/decide", json=BODY)).json()
    assert body["explain"]["store"]["available"] is True
    assert (await client.get("/readyz")).status == 200
