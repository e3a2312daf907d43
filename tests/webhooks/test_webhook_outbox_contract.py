"""One contract for both outboxes (in process and Redis): what producers and dispatchers see."""

from __future__ import annotations

import pytest
from hookkit import message

from journeygate.store import open_store
from journeygate.webhooks import OutboxFull, WebhookMessage, webhook_outbox


async def test_enqueue_flags_new_and_duplicate_dedupe_keys(queue_factory):
    queue = queue_factory()
    assert await queue.enqueue([message("a"), message("b"), message("a")]) == [True, True, False]
    assert await queue.enqueue([message("b"), message("c")]) == [False, True]
    claims = await queue.claim("d1", 10)
    assert sorted(c.delivery.dedupe_key for c in claims) == ["a", "b", "c"]
    assert len({c.delivery.id for c in claims}) == 3
    assert all(c.delivery.attempt == 1 for c in claims)


async def test_unknown_endpoint_is_a_value_error_naming_it(queue_factory):
    queue = queue_factory()
    with pytest.raises(ValueError, match="'mailchimp'"):
        await queue.enqueue([message("a"), message("b", endpoint="mailchimp")])
    assert await queue.claim("d1", 10) == []  # nothing of the batch was queued


async def test_payload_must_be_json(queue_factory):
    queue = queue_factory()
    bad = WebhookMessage("crm", "trigger.x", {"at": object()}, "k")
    with pytest.raises(ValueError, match=r"'k'.*not JSON"):
        await queue.enqueue([bad])


async def test_outbox_full_queues_nothing(queue_factory):
    queue = queue_factory(outbox_maxlen=3)
    assert await queue.enqueue([message("a"), message("b")]) == [True, True]
    with pytest.raises(OutboxFull):
        await queue.enqueue([message("c"), message("d")])
    assert await queue.enqueue([message("a"), message("c")]) == [False, True]


async def test_forget_visitor_drops_queued_deliveries(queue_factory):
    queue = queue_factory()
    await queue.enqueue([message("a", "v1"), message("b", "v2"), message("c", "v1")])
    await queue.enqueue([message("d")])
    assert await queue.forget_visitor(["v1", "nobody"]) == 2
    claims = await queue.claim("d1", 10)
    assert sorted(c.delivery.dedupe_key for c in claims) == ["b", "d"]
    assert await queue.forget_visitor(["v1"]) == 0


async def test_no_endpoint_no_outbox(make_config):
    config = make_config()
    store = open_store(config.store, "memory")
    assert webhook_outbox(store, config) is None
