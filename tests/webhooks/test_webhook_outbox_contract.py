"""One contract for both outboxes (in process and Redis): what producers and dispatchers see."""

from __future__ import annotations

import asyncio
import time

import pytest
from hookkit import message

from journeygate.store import open_store
from journeygate.webhooks import OutboxFull, WebhookMessage, webhook_outbox
from journeygate.webhooks.model import AttemptResult


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


async def test_a_claim_is_exclusive_until_its_lease_runs_out(queue_factory):
    queue = queue_factory(timeout_ms=100, lease_ms=300, claim_idle_ms=300)
    await queue.enqueue([message("a")])
    (first,) = await queue.claim("d1", 5)
    assert await queue.claim("d2", 5) == []
    await asyncio.sleep(0.35)
    (second,) = await queue.claim("d2", 5)  # d1 stopped holding it
    assert second.delivery.id == first.delivery.id
    assert await queue.complete("d1", first, AttemptResult("delivered", 200)) is None
    assert await queue.complete("d2", second, AttemptResult("delivered", 200)) == "delivered"
    assert await queue.complete("d2", second, AttemptResult("delivered", 200)) is None
    assert [e.outcome for e in await queue.log(10)] == ["delivered"]


async def test_a_retry_is_due_at_its_time_with_the_next_attempt(queue_factory):
    queue = queue_factory()
    await queue.enqueue([message("a", "v1")])
    (claim,) = await queue.claim("d1", 5)
    later = time.time() + 0.2
    result = AttemptResult("retry", 503, "HTTP 503", 0.01, later)
    assert await queue.complete("d1", claim, result) == "retry"
    assert await queue.claim("d1", 5) == []
    await asyncio.sleep(max(0.0, later - time.time()) + 0.02)
    (retry,) = await queue.claim("d1", 5)
    assert (retry.delivery.id, retry.delivery.attempt) == (claim.delivery.id, 2)
    assert retry.delivery.last_error == "HTTP 503"
    assert await queue.complete("d1", retry, AttemptResult("dead_letter", 400, "HTTP 400")) == (
        "dead_letter"
    )
    (letter,) = await queue.dead_letters(5)
    assert (letter.delivery.id, letter.delivery.attempt, letter.status) == (
        claim.delivery.id,
        2,
        400,
    )
    assert [(e.outcome, e.attempt) for e in await queue.log(5)] == [
        ("dead_letter", 2),
        ("retry", 1),
    ]


async def test_a_full_retry_set_dead_letters(queue_factory):
    queue = queue_factory(outbox_maxlen=2)
    await queue.enqueue([message("a"), message("b")])
    first, second = await queue.claim("d1", 5)
    retry = AttemptResult("retry", 500, "HTTP 500", 0.0, time.time() + 60)
    assert await queue.complete("d1", first, retry) == "retry"
    await queue.enqueue([message("c")])
    (third,) = await queue.claim("d1", 5)
    assert await queue.complete("d1", second, retry) == "retry"
    assert await queue.complete("d1", third, retry) == "dead_letter"
    (letter,) = await queue.dead_letters(5)
    assert letter.error == "retry set full; HTTP 500"
