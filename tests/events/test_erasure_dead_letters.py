"""Right to be forgotten and the event pipeline: ``DELETE /v1/profiles/{id}`` removes the
visitor's events from the dead letters (rewriting those shared with other visitors), and
events of the visitor still queued when it is erased do not bring anything back."""

import asyncio

import jsonschema
import orjson
import pytest
import redis
from eventkit import (
    ADMIN,
    apply_pending,
    basic,
    dead_letter_settings,
    event,
    fresh_redis_url,
    internal,
)

from journeygate.events.worker import serve
from journeygate.registry import build_plugin_manager
from journeygate.store import keys

PROFILE_PATH = "/v1/profiles/{visitor_id}"


@pytest.fixture
def url(redis_url):
    return fresh_redis_url(redis_url)


def poison(message_id, visitor, **fields):
    """An event the store rejects (a mistyped quantity), so its entry is dead-lettered."""
    return internal(message_id, visitor, **{"x": {"pid": "P1", "qty": "three"}, **fields})


async def ingest(client, *events):
    response = await client.post("/v1/events", json={"events": list(events)}, headers=basic())
    assert response.status == 200
    assert (await response.json())["rejected"] == []


def validator(document, status=200):
    operation = document["paths"][PROFILE_PATH]["delete"]
    schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
    return jsonschema.Draft202012Validator({**schema, "components": document["components"]})


async def dead_letter_all(make_config, url, client, count):
    """Run a worker in this process until ``count`` entries are dead letters."""
    config = make_config(**dead_letter_settings(url))
    pm = build_plugin_manager(config, load_entrypoints=False)
    stop = asyncio.Event()
    running = asyncio.create_task(serve(config, pm, consumer="w-erase", stop=stop))
    try:
        for _ in range(200):
            if client.xlen(keys.DEAD_LETTER_STREAM) == count:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        assert await running == 0
    assert client.xlen(keys.DEAD_LETTER_STREAM) == count


async def test_erasure_removes_the_visitors_events_from_the_dead_letters(
    gateway, make_config, url, visitor_id
):
    anonymous, user = visitor_id, f"{visitor_id}-customer"
    other, third = f"o{visitor_id}", f"x{visitor_id}"  # names that contain the erased id
    gw = await gateway(**dead_letter_settings(url))
    await ingest(gw, event("page_view", anonymous, path="/"))
    await ingest(gw, {**event("identify", anonymous), "user_id": user})
    await apply_pending(gw)

    client = redis.Redis.from_url(url)
    stream = keys.event_stream(0)
    kept_event = internal("other-ok", other)
    entries = {
        # the erased user's own poison event
        "own": [poison("u-bad", user)],
        # one request with another visitor's event beside it: only that one must stay
        "mixed": [kept_event, poison("u-bad-2", user)],
        # another route naming the erased anonymous id
        "named": [poison("x-bad", third, a=anonymous)],
        # the id only as a product id: not the visitor's event
        "product": [poison("p-bad", other, x={"pid": anonymous, "qty": "three"})],
    }
    ids = {name: client.xadd(stream, {"e": orjson.dumps(evs)}) for name, evs in entries.items()}
    # unreadable payloads: one that names the visitor, one that does not
    ids["unreadable"] = client.xadd(stream, {"e": b'[{"v": "%s", broken' % anonymous.encode()})
    ids["garbage"] = client.xadd(stream, {"e": b"{not json"})
    await dead_letter_all(make_config, url, client, len(ids))
    before = {
        fields[b"id"]: (dl_id, fields) for dl_id, fields in client.xrange(keys.DEAD_LETTER_STREAM)
    }

    document = await (await gw.get("/openapi.json")).json()
    response = await gw.delete(f"/v1/profiles/{anonymous}", headers=ADMIN)
    assert response.status == 200
    body = await response.json()
    validator(document).validate(body)
    assert body["ids"] == [anonymous, user]
    assert body["dead_letters"] == 4 and body["erased"] is True

    after = {
        fields[b"id"]: (dl_id, fields) for dl_id, fields in client.xrange(keys.DEAD_LETTER_STREAM)
    }
    assert set(after) == {ids["mixed"], ids["product"], ids["garbage"]}
    for untouched in ("product", "garbage"):
        assert after[ids[untouched]] == before[ids[untouched]]
    # the shared entry: rewritten with the other visitor's event and every field kept
    new_id, fields = after[ids["mixed"]]
    old_id, old_fields = before[ids["mixed"]]
    assert new_id != old_id
    assert orjson.loads(fields.pop(b"e")) == [kept_event]
    assert user.encode() in old_fields[b"error"]
    assert fields.pop(b"error") == old_fields[b"error"].replace(user.encode(), b"(erased)")
    assert fields == {
        name: value for name, value in old_fields.items() if name not in (b"e", b"error")
    }

    # idempotent: nothing of the visitor is left to remove
    response = await gw.delete(f"/v1/profiles/{anonymous}", headers=ADMIN)
    assert (await response.json())["dead_letters"] == 0
    client.close()


async def test_erasure_reads_every_page_of_the_dead_letters(gateway, url, visitor_id):
    """More dead letters than one page (DEAD_LETTER_PAGE = 500): the visitor's, on both
    sides of each page boundary and at the very end, all go; the others all stay."""
    gw = await gateway(**dead_letter_settings(url))
    client = redis.Redis.from_url(url)
    total, theirs = 1201, {0, 499, 500, 999, 1000, 1200}
    pipe = client.pipeline(transaction=False)
    for index in range(total):
        owner = visitor_id if index in theirs else f"someone-{index}"
        payload = orjson.dumps([poison(f"m-{index}", owner)])
        fields = {"stream": keys.event_stream(0), "id": f"1-{index}", "error": "x", "e": payload}
        pipe.xadd(keys.DEAD_LETTER_STREAM, fields)
    pipe.execute()

    response = await gw.delete(f"/v1/profiles/{visitor_id}", headers=ADMIN)
    assert response.status == 200
    assert (await response.json())["dead_letters"] == len(theirs)
    left = [fields[b"id"] for _, fields in client.xrange(keys.DEAD_LETTER_STREAM)]
    assert left == [f"1-{index}".encode() for index in range(total) if index not in theirs]
    client.close()


async def test_events_queued_before_an_erasure_do_not_bring_the_visitor_back(
    gateway, url, visitor_id
):
    """Received before the DELETE, applied by the worker after it: the erasure marker drops
    them, an identify included, so no key of either id holds anything but the marker."""
    anonymous, user = visitor_id, f"{visitor_id}-customer"
    gw = await gateway(**dead_letter_settings(url))
    await ingest(gw, event("page_view", anonymous, path="/"), event("page_view", user, path="/"))
    await apply_pending(gw)
    await ingest(
        gw,
        event("Product Viewed", anonymous, product_id="P1", category="Garden"),
        {**event("identify", anonymous), "user_id": user, "message_id": f"{user}-identify"},
        {**event("order", user, order_id="o-1", revenue=9.5), "user_id": user},
    )
    client = redis.Redis.from_url(url)
    assert client.xlen(keys.event_stream(0)) > 0  # queued, not applied yet
    for visitor in (anonymous, user):
        response = await gw.delete(f"/v1/profiles/{visitor}", headers=ADMIN)
        assert (await response.json())["erased"] is True
    assert await apply_pending(gw) == 0

    for visitor in (anonymous, user):
        assert (await gw.get(f"/v1/profiles/{visitor}", headers=ADMIN)).status == 404
        left = sorted(client.scan_iter(match=f"jg:{{{visitor}}}:*"))
        assert left == [keys.visitor_key(visitor, "erased").encode()]
    # a visit after the erasure is a new profile again
    await ingest(gw, event("page_view", user, path="/new"))
    await apply_pending(gw)
    assert (await gw.get(f"/v1/profiles/{user}", headers=ADMIN)).status == 200
    client.close()
