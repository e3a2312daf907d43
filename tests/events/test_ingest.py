"""POST /v1/events: per-event validation, limits, write keys, durability in Redis streams."""

import gzip
import json
import time

import jsonschema
import orjson
import pytest
import redis
from eventkit import ADMIN, WRITE_KEY, basic, event, fresh_redis_url, overrides

from journeygate.config import ConfigError
from journeygate.store import keys
from testkit import free_port


@pytest.fixture
def url(redis_url):
    return fresh_redis_url(redis_url)


@pytest.fixture
async def client(gateway, url):
    return await gateway(**overrides("redis", url))


def stream_events(url, shards=4):
    """Every event in the streams, in stream order."""
    client = redis.Redis.from_url(url)
    found = []
    for shard in range(shards):
        for _, fields in client.xrange(keys.event_stream(shard)):
            found += orjson.loads(fields[b"e"])
    client.close()
    return found


def response_validator(document, path, status):
    schema = document["paths"][path]["post"]["responses"][str(status)]["content"]
    schema = schema["application/json"]["schema"]
    return jsonschema.Draft202012Validator({**schema, "components": document["components"]})


async def test_accepted_events_are_in_the_stream_before_the_answer(client, url, visitor_id):
    now = time.time()
    body = {
        "events": [
            event("page_view", visitor_id, now - 5, path="/"),
            {**event("Product Viewed", visitor_id, now, product_id="85123A"), "message_id": "m1"},
            {"event": "order", "user_id": "cust-1", "channel": "store", "properties": {}},
        ]
    }
    response = await client.post("/v1/events", json=body, headers=basic())
    assert response.status == 200
    result = await response.json()
    assert [a["index"] for a in result["accepted"]] == [0, 1, 2]
    assert result["accepted"][1]["message_id"] == "m1"
    assert result["rejected"] == []
    stored = {e["id"]: e for e in stream_events(url)}
    assert set(stored) == {a["message_id"] for a in result["accepted"]}
    assert stored["m1"]["k"] == "product_view" and stored["m1"]["x"]["pid"] == "85123A"
    order = next(e for e in stored.values() if e["k"] == "order")
    assert order["v"] == "cust-1" and order["c"] == "store"
    document = await (await client.get("/openapi.json")).json()
    response_validator(document, "/v1/events", 200).validate(result)


async def test_invalid_events_are_reported_one_by_one(client, url, visitor_id):
    now = time.time()
    body = {
        "events": [
            event("page_view", visitor_id, now),
            event("page_view", visitor_id, now + 3600),  # an hour ahead
            {"event": "page_view", "properties": {}},  # nobody
            event("Product Added", visitor_id, now, price=2.5),  # no product
            event("search", visitor_id, now - 7 * 86400, query="mugs"),  # a week late: fine
            {**event("page_view", visitor_id, now), "channel": "fax"},
            "not an event",
            event("consent", visitor_id, now, consents={"carrier_pigeon": True}),
            {**event("page_view", "bad id{x}", now)},
        ]
    }
    response = await client.post("/v1/events", json=body, headers=basic())
    assert response.status == 200
    result = await response.json()
    assert [a["index"] for a in result["accepted"]] == [0, 4]
    rejected = {r["index"]: r for r in result["rejected"]}
    assert rejected[1]["code"] == "timestamp_in_future"
    assert rejected[1]["field"] == "events[1].timestamp"
    assert "in the future" in rejected[1]["message"] and "300 s" in rejected[1]["message"]
    assert rejected[2]["code"] == "missing_identity"
    assert rejected[3]["field"] == "events[3].properties.product_id"
    assert rejected[5]["field"] == "events[5].channel"
    assert rejected[6]["field"] == "events[6]"
    assert rejected[7]["field"] == "events[7].properties.consents.carrier_pigeon"
    assert rejected[8]["code"] == "invalid_id"
    assert len(stream_events(url)) == 2
    document = await (await client.get("/openapi.json")).json()
    response_validator(document, "/v1/events", 200).validate(result)


async def test_sent_at_corrects_a_wrong_device_clock(client, url, visitor_id):
    now = time.time()
    skewed = now + 7200  # the device clock is two hours ahead
    body = {"sent_at": skewed, "events": [event("page_view", visitor_id, skewed - 60)]}
    result = await (await client.post("/v1/events", json=body, headers=basic())).json()
    assert len(result["accepted"]) == 1
    (stored,) = stream_events(url)
    assert abs(stored["t"] - (now - 60)) < 5


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"events": []}, 400, "events"),
        ({"events": {"event": "x"}}, 400, "events"),
        ([], 400, None),
        ({"events": [{"event": "page_view", "visitor_id": "v"}] * 11}, 400, "events"),
        ({"sent_at": "yesterday", "events": [{"event": "x", "visitor_id": "v"}]}, 400, "sent_at"),
    ],
)
async def test_batch_envelope_errors(gateway, url, body, status, field):
    client = await gateway(**overrides("redis", url, max_batch=10))
    response = await client.post("/v1/events", json=body, headers=basic())
    assert response.status == status
    error = (await response.json())["error"]
    assert error.get("field") == field


async def test_body_limits_and_content_type(gateway, url, visitor_id):
    client = await gateway(**overrides("redis", url, max_body_bytes=2000))
    big = {"events": [event("page_view", visitor_id, path="/" + "x" * 300)] * 6}
    response = await client.post("/v1/events", json=big, headers=basic())
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "payload_too_large"
    # gzip is decoded before the limit is applied (a small zip bomb is still too large)
    packed = gzip.compress(json.dumps(big).encode())
    assert len(packed) < 2000
    response = await client.post(
        "/v1/events",
        data=packed,
        headers={**basic(), "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status == 413
    small = gzip.compress(json.dumps({"events": [event("page_view", visitor_id)]}).encode())
    response = await client.post(
        "/v1/events",
        data=small,
        headers={**basic(), "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status == 200
    response = await client.post(
        "/v1/events", data=b"{", headers={**basic(), "Content-Type": "application/json"}
    )
    assert (await response.json())["error"]["code"] == "invalid_json"
    response = await client.post("/v1/events", data=b"a=b", headers=basic())
    assert response.status == 415


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        (basic("wrong"), 401),
        ({"Authorization": "Basic !!notbase64"}, 401),
        ({"X-API-Key": "wrong"}, 401),
        (basic(), 200),
        ({"X-API-Key": WRITE_KEY}, 200),
        ({"Authorization": f"Bearer {WRITE_KEY}"}, 200),
        (ADMIN, 200),
    ],
)
async def test_write_key(client, visitor_id, headers, status):
    body = {"events": [event("page_view", visitor_id)]}
    response = await client.post("/v1/events", json=body, headers=headers)
    assert response.status == status
    if status == 401:
        assert (await response.json())["error"]["code"] == "unauthorized"


async def test_no_write_key_configured_means_closed(gateway, url, visitor_id):
    config = overrides("redis", url)
    config["events"]["write_keys"] = []
    client = await gateway(**config, server={"api_keys": []})
    body = {"events": [event("page_view", visitor_id)]}
    assert (await client.post("/v1/events", json=body, headers=basic())).status == 401


async def test_redis_down_is_503_and_nothing_is_accepted(gateway, visitor_id):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    client = await gateway(**overrides("redis", dead, ingest_timeout_ms=200))
    started = time.perf_counter()
    response = await client.post(
        "/v1/events", json={"events": [event("page_view", visitor_id)]}, headers=basic()
    )
    assert time.perf_counter() - started < 2
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert (await response.json())["error"]["code"] == "unavailable"


async def test_visitors_keep_their_shard_and_streams_stay_bounded(gateway, url):
    client = await gateway(**overrides("redis", url, stream_maxlen=50))
    visitors = [f"v-{n}" for n in range(8)]
    rounds = 250
    statuses = set()
    for round_ in range(rounds):
        body = {"events": [event("page_view", v, path=f"/{round_}") for v in visitors]}
        statuses.add((await client.post("/v1/events", json=body, headers=basic())).status)
    assert statuses == {200, 503}  # no worker: backpressure stops the streams growing
    redis_client = redis.Redis.from_url(url)
    shard_of = {}
    for shard in range(4):
        name = keys.event_stream(shard)
        # MAXLEN ~ trims whole radix-tree nodes (100 entries each by default)
        assert redis_client.xlen(name) <= 50 + 100 < rounds
        for _, fields in redis_client.xrange(name):
            for stored in orjson.loads(fields[b"e"]):
                assert shard_of.setdefault(stored["v"], shard) == shard
    redis_client.close()
    assert set(shard_of) == set(visitors)
    assert len(set(shard_of.values())) > 1  # visitors spread over the shards


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ({"stream_shards": 0}, "events.stream_shards: must be at least 1"),
        ({"max_batch": "many"}, "events.max_batch: expected an integer, got 'many'"),
        ({"write_key": ["x"]}, "events.write_key: unknown config key"),
        ({"backlog_high_water_pct": 95}, "events.backlog_high_water_pct: must be between 1 and 90"),
        ({"max_deliveries": 0}, "events.max_deliveries: must be at least 1"),
    ],
)
def test_events_config_is_checked_at_startup(make_config, events, message):
    with pytest.raises(ConfigError) as error:
        make_config(events=events)
    assert str(error.value) == message
