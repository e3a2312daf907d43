"""``POST /v1/feedback`` end to end: stored like events (in-process without Redis, through the
stream and the worker with it), scored by the sentiment plugin, seen by /v1/decide."""

from __future__ import annotations

import asyncio
import base64
import time
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest
import redis

from jg_sentiment.plugin import SentimentPlugin, sentiment_score
from jg_sentiment.scoring import FeedbackScore
from journeygate.catalog import Catalog
from journeygate.events.schema import Event, parse_native
from journeygate.events.worker import serve
from journeygate.hookspecs import ROLE_WORKER
from journeygate.registry import build_plugin_manager
from journeygate.store import DecayedScore, open_store
from journeygate.store.decay import blended, decayed

WRITE_KEY = "wk-feedback"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
ADMIN = {"X-API-Key": "test-admin-key"}
MIXED = "Love the colour, but it fell apart in a week."
DAY = 86400.0


def store_overrides(backend: str, url: str, **events: object) -> dict:
    store = {"redis_url": url, "timeout_ms": 2000} if backend == "redis" else {"backend": "memory"}
    return {"store": store, "events": {"write_keys": [WRITE_KEY], "stream_shards": 2, **events}}


@pytest.fixture
def fresh_url(redis_url):
    """A database of its own, emptied (the streams are shared by every visitor)."""
    url = f"{redis_url.rsplit('/', 1)[0]}/9"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


def sentiment_section(artifact_root) -> dict:
    """The test model; a budget that covers scoring on a busy test machine, so the in-process
    path has written the profile when the answer comes back."""
    settings = {"artifacts": str(artifact_root), "half_life_days": 30, "budget_ms": 10000}
    return {"plugin": {"sentiment": settings}}


def response_validator(document: dict, status: int, path: str = "/v1/feedback"):
    content = document["paths"][path]["post"]["responses"][str(status)]["content"]
    schema = content["application/json"]["schema"]
    return jsonschema.Draft202012Validator({**schema, "components": document["components"]})


async def decide(client, visitor_id: str) -> dict:
    body = {"visitor_id": visitor_id, "slots": [{"id": "o", "kind": "offer"}], "explain": True}
    response = await client.post("/v1/decide", json=body)
    assert response.status == 200
    return await response.json()


async def test_feedback_is_scored_in_process_and_decisions_see_it(
    gateway, artifact_root, visitor_id
):
    client = await gateway(
        extra_plugins=[("sentiment", SentimentPlugin())],
        **store_overrides("memory", ""),
        **sentiment_section(artifact_root),
    )
    document = await (await client.get("/openapi.json")).json()
    jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/FeedbackRequest", "components": document["components"]}
    ).validate({"visitor_id": visitor_id, "text": MIXED, "type": "review", "rating": 3})
    response = await client.post(
        "/v1/feedback",
        json={
            "visitor_id": visitor_id,
            "text": MIXED,
            "type": "review",
            "rating": 3,
            "product_id": "85123A",
            "order_id": "o-1",
            "message_id": "fb-1",
        },
        headers=AUTH,
    )
    assert response.status == 202
    body = await response.json()
    response_validator(document, 202).validate(body)
    assert body == {"accepted": True, "message_id": "fb-1", "profile_id": visitor_id}

    visitor = (await decide(client, visitor_id))["visitor"]
    assert visitor["feedback_label"] == "mixed"
    assert "quality" in visitor["feedback_themes"]
    assert -0.5 < visitor["sentiment"] < 0.5  # a mixed message is not positive

    complaint = "Terrible. The strap broke on day two and support never answered my emails."
    response = await client.post(
        "/v1/feedback",
        json={"visitor_id": visitor_id, "text": complaint, "type": "support", "channel": "email"},
        headers=AUTH,
    )
    assert response.status == 202
    answer = await decide(client, visitor_id)
    response_validator(document, 200, "/v1/decide").validate(answer)
    assert answer["visitor"]["feedback_label"] == "negative"
    assert answer["visitor"]["sentiment"] < visitor["sentiment"]
    assert "service" in answer["visitor"]["feedback_themes"]


async def test_feedback_goes_through_the_stream_and_the_worker(
    gateway, make_config, artifact_root, fresh_url, visitor_id
):
    """With Redis the worker scores feedback; the gateway loads no model (role ``gateway``)
    and its decisions carry the stored sentiment."""
    sections = {**store_overrides("redis", fresh_url), **sentiment_section(artifact_root)}
    in_gateway, in_worker = SentimentPlugin(), SentimentPlugin()
    client = await gateway(extra_plugins=[("sentiment", in_gateway)], **sections)
    assert in_gateway.scorer is None
    text = "Fast delivery and the quality is excellent. I love it, highly recommended!"
    response = await client.post(
        "/v1/feedback", json={"user_id": visitor_id, "text": text, "rating": 5}, headers=AUTH
    )
    assert response.status == 202
    before = (await decide(client, visitor_id))["visitor"]
    assert before["sentiment"] is None  # in the stream, not applied yet

    config = make_config(**sections)
    pm = build_plugin_manager(
        config, load_entrypoints=False, extra_plugins=(("sentiment", in_worker),)
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(serve(config, pm, consumer="sentiment-test", stop=stop))
    try:
        for _ in range(300):
            visitor = (await decide(client, visitor_id))["visitor"]
            if visitor["sentiment"] is not None:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        assert await worker == 0
    assert visitor["feedback_label"] == "positive" and visitor["sentiment"] > 0.5
    assert "delivery" in visitor["feedback_themes"]
    assert in_worker.scorer is not None and in_gateway.scorer is None


async def stored_profile(client, visitor_id: str) -> dict:
    """``GET /v1/profiles/{id}`` (the sentiment fields are under ``attributes``), or {}."""
    response = await client.get(f"/v1/profiles/{visitor_id}", headers=ADMIN)
    return await response.json() if response.status == 200 else {}


async def eventually(check, timeout: float = 30.0):
    """The first true result of ``await check()`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
    return result


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_identify_carries_the_anonymous_sentiment_into_the_customer(
    gateway, make_config, artifact_root, fresh_url, visitor_id, backend
):
    """The feedback a visitor gave before logging in counts for the customer: the merge blends
    the anonymous profile's sentiment into the customer's by the decay rule, and the newer
    feedback's label and themes are kept."""
    anonymous, user = visitor_id, f"{visitor_id}-user"
    sections = {**store_overrides(backend, fresh_url), **sentiment_section(artifact_root)}
    client = await gateway(extra_plugins=[("sentiment", SentimentPlugin())], **sections)
    stop = asyncio.Event()
    worker = None
    if backend == "redis":  # the real worker, with the plugin started as in production
        config = make_config(**sections)
        pm = build_plugin_manager(
            config, load_entrypoints=False, extra_plugins=(("sentiment", SentimentPlugin()),)
        )
        worker = asyncio.create_task(serve(config, pm, consumer="merge-test", stop=stop))
    try:
        now = time.time()
        praise = "Fast delivery and the quality is excellent. I love it, highly recommended!"
        for body in (
            {"user_id": user, "text": praise, "timestamp": now - 86400},
            {
                "visitor_id": anonymous,
                "text": "Terrible, the strap broke on day two.",
                "timestamp": now,
            },
        ):
            assert (await client.post("/v1/feedback", json=body, headers=AUTH)).status == 202

        async def scored(visitor: str) -> dict:
            attributes = (await stored_profile(client, visitor)).get("attributes", {})
            return attributes if "sentiment" in attributes else {}

        theirs = await eventually(lambda: scored(anonymous))
        customer = await eventually(lambda: scored(user))
        identify = {"event": "identify", "visitor_id": anonymous, "user_id": user}
        response = await client.post("/v1/events", json={"events": [identify]}, headers=AUTH)
        assert response.status == 200

        async def merged() -> dict:
            profile = await stored_profile(client, user)
            return profile if profile.get("merged_ids") == [anonymous] else {}

        profile = await eventually(merged)
    finally:
        stop.set()
        if worker is not None:
            assert await worker == 0
    assert customer["feedback_label"] == "positive" and theirs["feedback_label"] == "negative"
    carried = DecayedScore(
        "sentiment",
        theirs["sentiment"],
        theirs["sentiment_at"],
        30 * DAY,
        {name: theirs[name] for name in ("feedback_label", "feedback_themes")},
    )
    expected = customer | blended(customer, carried)
    attributes = profile["attributes"]
    assert attributes["sentiment"] == pytest.approx(expected["sentiment"], abs=1e-3)
    assert theirs["sentiment"] < attributes["sentiment"] < customer["sentiment"]
    assert attributes["sentiment_at"] == theirs["sentiment_at"]
    assert attributes["feedback_label"] == "negative"
    assert attributes["feedback_themes"] == theirs["feedback_themes"]
    visitor = (await decide(client, anonymous))["visitor"]  # answered from the customer
    assert visitor["feedback_label"] == "negative"
    assert visitor["sentiment"] == pytest.approx(attributes["sentiment"], abs=1e-3)


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"visitor_id": "v1"}, "missing_field", "text"),
        ({"visitor_id": "v1", "text": "   "}, "missing_field", "text"),
        ({"text": "Great"}, "missing_identity", None),
        ({"visitor_id": "bad id{x}", "text": "Great"}, "invalid_id", "visitor_id"),
        ({"visitor_id": "v1", "text": "Great", "type": "tweet"}, "invalid_feedback_type", "type"),
        ({"visitor_id": "v1", "text": "Great", "rating": 11}, "invalid_number", "rating"),
        ({"visitor_id": "v1", "text": "Great", "rating": "five"}, "invalid_number", "rating"),
        ({"visitor_id": "v1", "text": ["Great"]}, "invalid_type", "text"),
        ({"visitor_id": "v1", "text": "x" * 8001}, "too_long", "text"),
        ({"visitor_id": "v1", "text": "Great", "channel": "fax"}, "invalid_channel", "channel"),
        ({"visitor_id": "v1", "text": "Great", "stars": 5}, "unknown_field", "stars"),
        (["not", "an", "object"], "invalid_request", None),
    ],
)
async def test_bad_feedback_is_a_precise_400(gateway, body, code, field):
    client = await gateway(**store_overrides("memory", ""))
    response = await client.post("/v1/feedback", json=body, headers=AUTH)
    assert response.status == 400
    answer = await response.json()
    assert answer["error"]["code"] == code
    assert answer["error"].get("field") == field
    document = await (await client.get("/openapi.json")).json()
    response_validator(document, 400).validate(answer)


async def test_feedback_needs_a_write_key_json_and_a_bounded_body(gateway):
    client = await gateway(**store_overrides("memory", "", max_event_bytes=4096))
    document = await (await client.get("/openapi.json")).json()
    body = {"visitor_id": "v1", "text": "Great"}
    cases = [
        (await client.post("/v1/feedback", json=body), 401),
        (await client.post("/v1/feedback", json=body, headers={"X-API-Key": "nope"}), 401),
        (
            await client.post(
                "/v1/feedback", data="text=Great", headers={**AUTH, "Content-Type": "text/csv"}
            ),
            415,
        ),
        (
            await client.post("/v1/feedback", json={**body, "text": "é" * 3000}, headers=AUTH),
            413,
        ),
    ]
    for response, status in cases:
        assert response.status == status
        response_validator(document, status).validate(await response.json())
    admin = await client.post("/v1/feedback", json=body, headers={"X-API-Key": "test-admin-key"})
    assert admin.status == 202  # an API key works too, as for events


def test_sentiment_fades_with_its_half_life_and_new_feedback_averages_in():
    assert decayed(0.8, 0.0, 30 * DAY, 30 * DAY) == pytest.approx(0.4)
    assert decayed(0.8, 100.0, 50.0, 30 * DAY) == 0.8  # never grows
    negative = FeedbackScore(-0.9, "negative", ("delivery",), ())
    first = blended({}, sentiment_score(negative, 1000.0, 30 * DAY))
    assert first == {
        "sentiment": -0.9,
        "sentiment_at": 1000.0,
        "feedback_label": "negative",
        "feedback_themes": ["delivery"],
    }
    positive = FeedbackScore(0.9, "positive", (), ())
    soon = blended(first, sentiment_score(positive, 1000.0 + 60, 30 * DAY))
    assert soon["sentiment"] == pytest.approx(0.0, abs=0.01)  # equal weight when fresh
    later = blended(first, sentiment_score(positive, 1000.0 + 300 * DAY, 30 * DAY))
    assert later["sentiment"] == pytest.approx(0.9, abs=0.01)  # the old complaint has faded
    assert later["feedback_label"] == "positive" and later["feedback_themes"] == []
    # a late feedback counts as the older one, whichever came first; the newest label stays
    late_event = blended(first, sentiment_score(positive, 1000.0 - 300 * DAY, 30 * DAY))
    assert late_event == {"sentiment": pytest.approx(-0.9, abs=0.01), "sentiment_at": 1000.0}


def feedback(visitor_id: str, text: str, at: float, message_id: str) -> Event:
    raw = {
        "event": "Feedback Submitted",
        "user_id": visitor_id,
        "timestamp": at,
        "message_id": message_id,
        "properties": {"text": text},
    }
    return Event.from_internal(parse_native(raw, "e", time.time(), 0.0, 300.0), visitor_id)


async def test_concurrent_feedback_for_one_visitor_all_counts(
    make_config, artifact_root, fresh_url, visitor_id
):
    """Two feedbacks of one visitor scored at once (two workers, or an observer past its
    budget): the store blends both, neither overwrites the other."""
    config = make_config(**store_overrides("redis", fresh_url), **sentiment_section(artifact_root))
    store = open_store(config.store, "redis", config.events)
    plugin = SentimentPlugin()
    texts = ("Terrible, it broke after one day.", "Lovely quality and fast delivery, thank you!")
    now = time.time()
    events = [feedback(visitor_id, text, now - 60 * i, f"fb-{i}") for i, text in enumerate(texts)]
    with ThreadPoolExecutor(max_workers=2) as executor:
        await plugin.journeygate_startup(
            config=config, catalog=Catalog(()), executor=executor, store=store, role=ROLE_WORKER
        )
        assert plugin.scorer is not None
        await asyncio.gather(*(plugin.journeygate_observe_event(event) for event in events))
        results = plugin.scorer.score_many(texts)
        await plugin.journeygate_shutdown()
    profile = await store.get_profile(visitor_id)
    await store.close()
    one, other = (
        sentiment_score(result, event.timestamp, 30 * DAY)
        for result, event in zip(results, events, strict=True)
    )
    expected = blended(blended({}, one), other)
    assert results[0].score < 0 < results[1].score
    assert profile is not None
    assert profile["sentiment"] == pytest.approx(expected["sentiment"], abs=1e-3)
    assert profile["feedback_label"] == results[0].label  # the newer of the two


@pytest.mark.parametrize("model", ["none", "stale"])
async def test_without_a_usable_model_feedback_is_stored_and_nothing_fails(
    gateway, tmp_path, stale_root, visitor_id, caplog, model
):
    artifacts = tmp_path / "none" if model == "none" else stale_root
    client = await gateway(
        extra_plugins=[("sentiment", SentimentPlugin())],
        **store_overrides("memory", ""),
        plugin={"sentiment": {"artifacts": str(artifacts)}},
    )
    hint = "retrain with " if model == "stale" else ""
    assert any(
        f"{hint}`journeygate train-sentiment`" in record.getMessage() for record in caplog.records
    )
    ready = await client.get("/readyz")
    assert ready.status == 200
    response = await client.post(
        "/v1/feedback", json={"visitor_id": visitor_id, "text": "Great"}, headers=AUTH
    )
    assert response.status == 202
    assert (await decide(client, visitor_id))["visitor"]["sentiment"] is None
