"""Delivery through a real aiohttp receiver, against both outboxes: signed requests, retries
with backoff, dead letters, Retry-After, redelivery, erasure of pending deliveries."""

from __future__ import annotations

import asyncio

import pytest
from hookkit import SECRET, message, running

from journeygate.metrics import Metrics
from journeygate.webhooks import verify_signature
from journeygate.webhooks.dispatcher import Dispatcher
from testkit import settle


def urls(receiver):
    return {"crm": receiver.url("/crm"), "email": receiver.url("/email")}


async def test_delivery_is_signed_and_logged(queue_factory, receiver):
    queue = queue_factory(urls=urls(receiver))
    metrics = Metrics()
    await queue.enqueue([message("a", "v1"), message("b", endpoint="email")])
    dispatcher = Dispatcher(queue, queue.config, "d1", metrics=metrics)
    async with running(dispatcher):
        await receiver.wait_for(2)
        await settle(lambda: _logged(queue, 2))
    by_path = {r.path: r for r in receiver.requests}
    crm = by_path["/crm"]
    assert crm.headers["Content-Type"] == "application/json"
    assert crm.headers["Journeygate-Event"] == "trigger.cart_abandonment"
    assert verify_signature(SECRET, crm.headers["Journeygate-Signature"], crm.body)
    assert not verify_signature("wrong", crm.headers["Journeygate-Signature"], crm.body)
    body = crm.json
    assert body["id"] == crm.headers["Journeygate-Delivery"]
    assert body["type"] == "trigger.cart_abandonment"
    assert body["attempt"] == 1
    assert body["created_at"].endswith("Z")
    assert body["data"] == {"visitor_id": "v1", "cart_value": 38.25, "key": "a"}
    log = await queue.log(10)
    assert [entry.outcome for entry in log] == ["delivered", "delivered"]
    assert {entry.delivery_id for entry in log} == set(receiver.ids())
    assert all(entry.status == 200 and entry.attempt == 1 for entry in log)
    sample = metrics.registry.get_sample_value
    labels = {"endpoint": "crm", "outcome": "delivered"}
    assert sample("journeygate_webhook_deliveries_total", labels) == 1
    assert sample("journeygate_webhook_delivery_duration_seconds_count", {"endpoint": "crm"}) == 1


async def test_a_message_queued_in_process_wakes_the_idle_dispatcher(queue_factory, receiver):
    """The triggers plugin and the dispatcher of one process share the outbox: what it
    queues is sent at once, not at the next poll (here a minute away)."""
    queue = queue_factory(urls=urls(receiver), poll_interval_ms=60_000)
    async with running(Dispatcher(queue, queue.config, "d1")):
        await asyncio.sleep(0.2)  # the dispatcher has polled once, found nothing, and waits
        await queue.enqueue([message("a", "v1")])
        async with asyncio.timeout(5):
            await receiver.wait_for(1)
    assert receiver.requests[0].json["data"]["key"] == "a"


async def _logged(queue, count: int) -> bool:
    return len(await queue.log(100)) >= count


async def test_failures_are_retried_with_backoff_then_delivered(queue_factory, receiver):
    queue = queue_factory(urls=urls(receiver), backoff_base_ms=100, backoff_max_ms=400)
    receiver.script.extend([(503, {}), (500, {})])
    await queue.enqueue([message("a")])
    async with running(Dispatcher(queue, queue.config, "d1")):
        await receiver.wait_for(3)
        await settle(lambda: _logged(queue, 3))
    first, second, third = receiver.requests
    assert len(set(receiver.ids())) == 1  # one delivery id on every attempt
    assert [r.json["attempt"] for r in receiver.requests] == [1, 2, 3]
    # equal jitter: the wait after attempt n is in [ceiling/2, ceiling], ceiling 100 * 2**(n-1) ms
    assert second.at - first.at >= 0.05
    assert third.at - second.at >= 0.1
    log = list(reversed(await queue.log(10)))
    assert [(e.outcome, e.attempt, e.status) for e in log] == [
        ("retry", 1, 503),
        ("retry", 2, 500),
        ("delivered", 3, 200),
    ]
    assert log[0].error.startswith("HTTP 503")
    assert await queue.dead_letters(10) == []


async def test_dead_letter_after_the_last_attempt(queue_factory, receiver):
    queue = queue_factory(urls=urls(receiver), max_attempts=3)
    receiver.default = 502
    await queue.enqueue([message("a", "v1")])
    async with running(Dispatcher(queue, queue.config, "d1")):
        await settle(lambda: _dead(queue, 1))
    assert len(receiver.requests) == 3
    (letter,) = await queue.dead_letters(10)
    assert letter.status == 502
    assert letter.error.startswith("gave up after 3 attempts: HTTP 502")
    assert letter.delivery.dedupe_key == "a" and letter.delivery.visitor_id == "v1"
    assert [e.outcome for e in await queue.log(10)] == ["dead_letter", "retry", "retry"]


async def _dead(queue, count: int) -> bool:
    return len(await queue.dead_letters(100)) >= count


async def test_a_permanent_failure_is_dead_lettered_at_once(queue_factory, receiver):
    queue = queue_factory(urls=urls(receiver), max_attempts=5)
    receiver.script.append((400, {}))
    await queue.enqueue([message("a"), message("b")])
    async with running(Dispatcher(queue, queue.config, "d1")):
        await settle(lambda: _logged(queue, 2))
    assert len(receiver.requests) == 2  # the 400 was not retried
    (letter,) = await queue.dead_letters(10)
    assert (letter.status, letter.error) == (400, "HTTP 400: nope")


async def test_retry_after_is_honoured(queue_factory, receiver):
    queue = queue_factory(urls=urls(receiver), backoff_base_ms=10, backoff_max_ms=3000)
    receiver.script.append((429, {"Retry-After": "1"}))
    await queue.enqueue([message("a")])
    async with running(Dispatcher(queue, queue.config, "d1")):
        await receiver.wait_for(2)
    first, second = receiver.requests
    assert second.at - first.at >= 1.0


async def test_retry_after_is_capped_at_backoff_max(queue_factory, receiver):
    queue = queue_factory(urls=urls(receiver), backoff_base_ms=10, backoff_max_ms=200)
    receiver.script.append((503, {"Retry-After": "3600"}))
    await queue.enqueue([message("a")])
    async with running(Dispatcher(queue, queue.config, "d1")):
        await receiver.wait_for(2)
    first, second = receiver.requests
    assert 0.1 <= second.at - first.at < 1.0


async def test_a_timeout_is_retried(queue_factory, receiver):
    queue = queue_factory(urls=urls(receiver), timeout_ms=100)
    receiver.delay_s = 0.3
    await queue.enqueue([message("a")])
    async with running(Dispatcher(queue, queue.config, "d1")):
        await receiver.wait_for(2)
        receiver.delay_s = 0
        await settle(lambda: _has_outcome(queue, "delivered"))
    outcomes = [(e.outcome, e.error) for e in reversed(await queue.log(10))]
    assert outcomes[0] == ("retry", "timed out")
    assert outcomes[-1][0] == "delivered"


async def _has_outcome(queue, outcome: str) -> bool:
    return any(e.outcome == outcome for e in await queue.log(100))


async def test_dead_letters_are_redelivered_with_their_id(queue_factory, receiver):
    queue = queue_factory(urls=urls(receiver))
    receiver.script.extend([(410, {}), (410, {})])
    await queue.enqueue([message("a", "v1"), message("b")])
    dispatcher = Dispatcher(queue, queue.config, "d1")
    async with running(dispatcher):
        await settle(lambda: _dead(queue, 2))
    letters = await queue.dead_letters(10)
    assert await queue.redeliver(["0-1", letters[0].entry_id]) == [letters[0].entry_id]
    assert await queue.redeliver(None) == [letters[1].entry_id]
    assert await queue.dead_letters(10) == []
    async with running(Dispatcher(queue, queue.config, "d2")):
        await receiver.wait_for(4)
        await settle(lambda: _delivered(queue, 2))
    assert sorted(receiver.ids()[2:]) == sorted(letter.delivery.id for letter in letters)
    assert [r.json["attempt"] for r in receiver.requests[2:]] == [1, 1]


async def _delivered(queue, count: int) -> bool:
    return sum(e.outcome == "delivered" for e in await queue.log(100)) >= count


async def test_forget_visitor_drops_retrying_deliveries_and_dead_letters(queue_factory, receiver):
    queue = queue_factory(urls=urls(receiver), backoff_base_ms=400, backoff_max_ms=400)
    receiver.script.extend([(500, {}), (500, {})])
    await queue.enqueue([message("a", "v1"), message("b", "v2")])
    dispatcher = Dispatcher(queue, queue.config, "d1")
    async with running(dispatcher):
        await settle(lambda: _logged(queue, 2))  # both failed once: retrying
        assert await queue.forget_visitor(["v1"]) == 1
        await settle(lambda: _delivered(queue, 1))  # v2's retry goes on
    sent = [r.json["data"]["key"] for r in receiver.requests]
    assert sorted(sent) == ["a", "b", "b"]  # v1's delivery was not tried again
    receiver.default = 400
    await queue.enqueue([message("c", "v1"), message("d", "v2")])
    async with running(Dispatcher(queue, queue.config, "d2")):
        await settle(lambda: _dead(queue, 2))
    assert await queue.forget_visitor(["v1"]) == 0  # nothing pending, its dead letter goes
    assert [letter.delivery.dedupe_key for letter in await queue.dead_letters(10)] == ["d"]


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 20])
def test_backoff_grows_within_jittered_bounds(webhook_config, attempt):
    config = webhook_config(backoff_base_ms=100, backoff_max_ms=800).webhooks
    dispatcher = Dispatcher(queue=None, config=config, consumer="d")  # type: ignore[arg-type]
    ceiling = min(0.8, 0.1 * 2 ** (attempt - 1))
    waits = [dispatcher.backoff_s(attempt) for _ in range(200)]
    assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
    assert max(waits) - min(waits) > ceiling / 4  # jittered, not constant
