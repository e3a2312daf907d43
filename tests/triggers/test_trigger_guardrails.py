"""Guardrails against trigger fatigue, through the real worker path: consent, frequency caps
per action type, debounce, quiet hours (deferred, not dropped); and service recovery from
the sentiment plugin's verdict on a feedback."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time

from triggerkit import consent, ev, send

from jg_sentiment.plugin import sentiment_score
from jg_sentiment.scoring import FeedbackScore
from journeygate import hookimpl
from testkit import settle

pytest_plugins = ["triggerfixtures"]  # url, receiver, stack


async def test_consent_caps_and_debounce_suppress_and_say_why(stack, receiver):
    deployment = await stack(
        {
            "search_no_results": {"action": "nudge", "debounce_s": 3600},
            "search_pattern": {"action": "nudge", "patterns": ["gift"]},
        },
        caps={"nudge": {"count": 1, "window_s": 3600}},
        workers=1,
    )
    await send(
        deployment.client,
        consent("shopper"),
        consent("private", granted=False),
        ev("Products Searched", "shopper", query="gift wrap", results=0),
        ev("Products Searched", "shopper", query="blue teapot", results=0),
        ev("Products Searched", "private", query="red teapot", results=0),
    )
    await settle(lambda: _logged(deployment, 4))
    log = await deployment.log()  # the two visitors' events are in different stream shards
    shopper = [(r.trigger, r.outcome, r.detail) for r in log if r.visitor == "shopper"]
    assert shopper == [
        ("search_no_results", "sent", ""),
        ("search_pattern", "suppressed:cap", "1 nudge per 3600 s"),  # one nudge an hour
        ("search_no_results", "suppressed:debounce", "fired within 3600 s"),
    ]
    private = [(r.trigger, r.outcome, r.detail) for r in log if r.visitor == "private"]
    assert private == [
        ("search_no_results", "suppressed:no_consent", "marketing_email not granted")
    ]
    await receiver.wait_for(1)
    await asyncio.sleep(0.2)
    assert [p["data"]["query"] for p in receiver.payloads()] == ["gift wrap"]


async def test_quiet_hours_defer_a_marketing_action_to_their_end(stack, receiver):
    now = time.time()
    start = dt.datetime.fromtimestamp(now - 3600, dt.UTC).time()
    end_at = math.ceil(now) + 2
    end = dt.datetime.fromtimestamp(end_at, dt.UTC).time()
    deployment = await stack(
        {
            "cart_abandonment": {"delay_s": 0.2},
            "search_pattern": {"patterns": ["cancel"], "marketing": False},
        },
        timezone="UTC",
        quiet_hours={"start": start.isoformat(), "end": end.isoformat()},
        workers=1,
    )
    await send(
        deployment.client,
        consent("night-owl"),
        ev("Product Added", "night-owl", product_id="P1"),
        ev("Products Searched", "night-owl", query="cancel my order"),  # service: not held
    )
    await settle(lambda: _logged(deployment, 2))
    assert sorted(await deployment.outcomes()) == [
        ("cart_abandonment", "night-owl", "deferred"),
        ("search_pattern", "night-owl", "sent"),
    ]
    await receiver.wait_for(2, timeout_s=6)
    assert [p["trigger"] for p in receiver.payloads()] == ["search_pattern", "cart_abandonment"]
    assert (await deployment.log())[-1].at >= end_at
    assert (await deployment.outcomes())[-1] == ("cart_abandonment", "night-owl", "sent")


class LexiconSentiment:
    """Stands in for the sentiment plugin's model (a trained artifact takes minutes to
    build): labels feedback by a few words and writes the profile fields as the sentiment
    plugin does."""

    def __init__(self) -> None:
        self.store = None

    @hookimpl
    def journeygate_startup(self, store):
        self.store = store

    @hookimpl
    async def journeygate_observe_event(self, event):
        if event.kind != "feedback":
            return
        text = event.properties["text"].lower()
        score = -0.8 if any(word in text for word in ("broken", "awful")) else 0.7
        label = "negative" if score < 0 else "positive"
        result = FeedbackScore(score, label, ("quality",), ())
        await self.store.blend_score(
            event.profile_id, sentiment_score(result, event.timestamp, 30 * 86400)
        )


async def test_negative_feedback_starts_service_recovery(stack, receiver):
    deployment = await stack(
        {"negative_feedback": {"delay_s": 0.1, "max_wait_s": 2, "marketing": False}},
        workers=1,
        worker_plugins=lambda: [("sentiment", LexiconSentiment())],
    )
    feedback = {"event": "Feedback Submitted", "channel": "support"}
    await send(
        deployment.client,
        {**ev("x", "unhappy", text="The lamp arrived broken.", type="review"), **feedback},
        {**ev("x", "happy", text="Lovely lamp, thank you!", rating=5), **feedback},
    )
    await receiver.wait_for(1)
    await asyncio.sleep(0.4)
    (payload,) = receiver.payloads()
    assert payload["trigger"] == "negative_feedback" and payload["visitor_id"] == "unhappy"
    assert payload["data"]["sentiment"] == -0.8 and payload["data"]["themes"] == ["quality"]
    assert payload["data"]["text"] == "The lamp arrived broken."
    assert payload["data"]["type"] == "review"
    assert await deployment.outcomes() == [("negative_feedback", "unhappy", "sent")]


async def _logged(deployment, count: int) -> bool:
    return len(await deployment.log()) >= count
