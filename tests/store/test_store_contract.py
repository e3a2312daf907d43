"""One contract, two stores: every test here runs against Redis and the in-process store."""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from journeygate.config import StoreConfig
from journeygate.store import DecayedScore, ProfileStore, StageTransition, open_store
from journeygate.store.decay import blended

DAY = 86400.0


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis_url) -> AsyncIterator[ProfileStore]:
    config = StoreConfig(
        redis_url=redis_url, history_max=5, session_views_max=3, session_ttl_s=1, timeout_ms=500
    )
    store = open_store(config, request.param)
    yield store
    await store.close()


async def test_unknown_visitor_is_empty(store, visitor_id):
    state = await store.load_visitor(visitor_id, None)
    assert state.is_new
    assert state.profile == {} and state.recent_views == () and state.session_pages == 0
    assert await store.get_profile(visitor_id) is None


async def test_state_is_read_before_the_view_is_recorded(store, visitor_id):
    first = await store.load_visitor(visitor_id, "s1", page_view="A")
    assert first.recent_views == () and first.session_pages == 0
    second = await store.load_visitor(visitor_id, "s1", page_view="B")
    assert second.recent_views == ("A",)
    assert second.session_views == ("A",)
    assert second.session_pages == 1
    third = await store.load_visitor(visitor_id, "s1")
    assert third.recent_views == ("B", "A")
    assert third.session_pages == 2


async def test_histories_are_capped(store, visitor_id):
    for index in range(12):
        await store.load_visitor(visitor_id, "s1", page_view=f"P{index}")
    state = await store.load_visitor(visitor_id, "s1")
    assert state.recent_views == ("P11", "P10", "P9", "P8", "P7")
    assert state.session_views == ("P11", "P10", "P9")


async def test_sessions_are_separate_and_expire(store, visitor_id):
    await store.load_visitor(visitor_id, "s1", page_view="A")
    other = await store.load_visitor(visitor_id, "s2")
    assert other.session_pages == 0 and other.session_views == ()
    assert other.recent_views == ("A",)
    await asyncio.sleep(2.1)  # session_ttl_s = 1
    expired = await store.load_visitor(visitor_id, "s1")
    assert expired.session_pages == 0 and expired.session_views == ()
    assert expired.recent_views == ("A",)


async def test_profile_fields_round_trip_as_json(store, visitor_id):
    await store.update_profile(visitor_id, {"segment": "wholesale", "sentiment": 0.25})
    await store.update_profile(visitor_id, {"consents": {"email": True}, "sentiment": -0.5})
    profile = await store.get_profile(visitor_id)
    assert profile == {"segment": "wholesale", "sentiment": -0.5, "consents": {"email": True}}
    state = await store.load_visitor(visitor_id, None)
    assert state.profile == profile


async def test_many_profiles_are_updated_at_once(store, visitor_id):
    await store.update_profile(f"{visitor_id}-0", {"orders": 3})
    updates = [(f"{visitor_id}-{i}", {"persona": f"p{i % 2}", "rank": i}) for i in range(250)]
    await store.update_profiles([*updates, (f"{visitor_id}-empty", {})])
    await store.update_profiles([])
    assert await store.get_profile(f"{visitor_id}-0") == {"orders": 3, "persona": "p0", "rank": 0}
    assert await store.get_profile(f"{visitor_id}-249") == {"persona": "p1", "rank": 249}
    assert await store.get_profile(f"{visitor_id}-empty") is None


async def test_returned_profile_is_a_copy(store, visitor_id):
    await store.update_profile(visitor_id, {"consents": {"email": True}})
    profile = await store.get_profile(visitor_id)
    profile["consents"]["email"] = False
    assert (await store.get_profile(visitor_id))["consents"] == {"email": True}


async def test_delete_visitor_erases_everything(store, visitor_id):
    await store.update_profile(visitor_id, {"segment": "x"})
    await store.load_visitor(visitor_id, "s1", page_view="A")
    await store.load_visitor(visitor_id, "s2", page_view="B")
    assert await store.delete_visitor(visitor_id) is True
    state = await store.load_visitor(visitor_id, "s1")
    assert state.profile == {} and state.recent_views == () and state.session_pages == 0
    assert await store.delete_visitor(f"{visitor_id}-never-seen") is False


def mood(value, at, **details):
    return DecayedScore("mood", value, at, 30 * DAY, details)


def blend_all(scores):
    """The profile fields after blending ``scores`` one after the other."""
    fields = {}
    for score in scores:
        fields |= blended(fields, score)
    return fields


def close_to(fields):
    """``fields`` with each number compared to the 4 decimals a blended value is kept to."""
    return {k: pytest.approx(v, abs=1e-4) if isinstance(v, float) else v for k, v in fields.items()}


async def test_a_decayed_score_is_blended_into_the_profile(store, visitor_id):
    now = round(time.time(), 3)
    await store.update_profile(visitor_id, {"segment": "vip", "mood": "not a number"})
    await store.blend_score(visitor_id, mood(-0.8, now, mood_label="bad", mood_tags=["late"]))
    first = {"mood": -0.8, "mood_at": now, "mood_label": "bad", "mood_tags": ["late"]}
    assert await store.get_profile(visitor_id) == {"segment": "vip", **first}
    # a day later: the older one counts a little less, the newer one's details win
    await store.blend_score(visitor_id, mood(0.6, now + DAY, mood_label="good", mood_tags=[]))
    expected = first | blended(first, mood(0.6, now + DAY, mood_label="good", mood_tags=[]))
    profile = await store.get_profile(visitor_id)
    assert profile == close_to({"segment": "vip", **expected})
    assert profile["mood_at"] == now + DAY and profile["mood_label"] == "good"
    assert -0.8 < profile["mood"] < 0.6 and profile["mood"] > (-0.8 + 0.6) / 2
    # a late contribution counts as the older one; the newer details stay
    late = mood(0.9, now - DAY, mood_label="late")
    await store.blend_score(visitor_id, late)
    after = await store.get_profile(visitor_id)
    assert after == close_to(profile | blended(profile, late))
    assert after["mood_at"] == now + DAY and after["mood_label"] == "good"
    assert (await store.load_visitor(visitor_id, None)).profile == after


async def test_concurrent_contributions_for_one_visitor_all_count(store, visitor_id):
    """Blending is one atomic step: of two contributions written at the same time, neither
    overwrites the other (with two, the rule does not depend on their order)."""
    now = round(time.time(), 3)
    for n in range(10):
        visitor = f"{visitor_id}-{n}"
        scores = (mood(-0.9, now - n * 3600 - 1, mood_label="bad"), mood(0.7, now, mood_label="ok"))
        await asyncio.gather(*(store.blend_score(visitor, score) for score in scores))
        expected = blend_all(scores)
        assert expected == close_to(blend_all(reversed(scores)))
        assert await store.get_profile(visitor) == close_to(expected)


async def test_a_score_for_a_merged_visitor_is_blended_into_the_customer(store, visitor_id):
    customer = f"{visitor_id}-customer"
    await store.begin_merge(visitor_id, customer, time.time())
    await store.blend_score(visitor_id, mood(0.5, time.time()))
    assert (await store.get_profile(customer))["mood"] == 0.5
    assert await store.get_profile(visitor_id) is None


async def test_ping(store):
    assert await store.ping() is True


async def test_a_merged_visitor_is_answered_from_the_customer_profile(store, visitor_id):
    customer = f"{visitor_id}-customer"
    await store.update_profile(customer, {"segment": "wholesale"})
    await store.begin_merge(visitor_id, customer, time.time())
    state = await store.load_visitor(visitor_id, "s1", page_view="P1")
    assert state.profile_id == customer
    assert state.profile == {"segment": "wholesale"}
    # The page view is recorded in the customer's history, not the merged anonymous one.
    after = await store.load_visitor(customer, "s1")
    assert after.recent_views == ("P1",) and after.profile_id is None
    own = await store.load_visitor(f"{visitor_id}-other", None)
    assert own.profile_id is None


async def test_a_stage_is_recorded_only_when_it_changes(store, visitor_id):
    started = round(time.time(), 3)
    first = await store.record_stage(visitor_id, "awareness", started, "d1")
    assert first == StageTransition(visitor_id, None, "awareness", started, "d1")
    assert await store.record_stage(visitor_id, "awareness", started + 1, "d2") is None
    second = await store.record_stage(visitor_id, "decision", started + 2, "d3")
    assert (second.from_stage, second.to_stage, second.decision_id) == (
        "awareness",
        "decision",
        "d3",
    )
    profile = await store.get_profile(visitor_id)
    assert profile["stage"] == "decision"
    assert profile["stage_since"] == pytest.approx(started + 2, abs=0.001)
    # the decide pipeline reads the stored stage back with the profile
    assert (await store.load_visitor(visitor_id, None)).profile["stage"] == "decision"


async def test_concurrent_decisions_record_one_transition(store, visitor_id):
    at = time.time()
    results = await asyncio.gather(
        *(store.record_stage(visitor_id, "consideration", at, f"d{n}") for n in range(8))
    )
    assert sum(result is not None for result in results) == 1


async def test_recorded_times_stay_within_the_window_and_the_count(store, visitor_id):
    now = float(int(time.time()))
    shows = {"a": [now - 7200, now - 60], "b": [now - 30], "expired": [now - 7200]}
    await store.update_profile(visitor_id, {"segment": "vip", "shows": shows, "bad": "x"})
    await store.record_times(visitor_id, "shows", ["a", "c"], now + 0.2509, 3600, 2)
    await store.record_times(visitor_id, "shows", ["a"], now + 1.5, 3600, 2)
    await store.record_times(visitor_id, "bad", ["a"], now, 3600, 2)
    profile = await store.get_profile(visitor_id)
    assert profile == {
        "segment": "vip",
        "shows": {"a": [now + 0.25, now + 1.5], "b": [now - 30], "c": [now + 0.25]},
        "bad": {"a": [now]},
    }
    # the decide pipeline reads them back with the profile
    assert (await store.load_visitor(visitor_id, None)).profile == profile


async def test_concurrent_recordings_of_times_are_all_kept(store, visitor_id):
    now = float(int(time.time()))
    await store.record_times(visitor_id, "shows", ["a"], now - 1, 3600, 100)
    times = [now + n for n in range(60)]
    await asyncio.gather(
        *(store.record_times(visitor_id, "shows", ["a", "b"], at, 3600, 100) for at in times)
    )
    shows = (await store.get_profile(visitor_id))["shows"]
    assert shows == {"a": [now - 1, *times], "b": times}


async def test_latest_times_are_merged_and_concurrent_merges_all_kept(store, visitor_id):
    now = float(int(time.time()))
    await store.update_profile(visitor_id, {"fired": {"a": now, "b": "x"}, "bad": [1]})
    await store.merge_latest(visitor_id, "fired", {"a": now - 60, "b": now, "c": now + 0.5})
    await store.merge_latest(visitor_id, "bad", {"a": now})
    profile = await store.get_profile(visitor_id)
    assert profile["fired"] == {"a": now, "b": now, "c": now + 0.5}  # "a" keeps the later
    assert profile["bad"] == {"a": now}
    # two writers at once (two triggers of one visitor): both kept
    names = [f"t{n}" for n in range(30)]
    await asyncio.gather(
        *(store.merge_latest(visitor_id, "fired", {name: now + 1}) for name in names)
    )
    fired = (await store.get_profile(visitor_id))["fired"]
    assert set(names) <= set(fired) and fired["a"] == now
    assert (await store.load_visitor(visitor_id, None)).profile["fired"] == fired


async def test_journey_transitions_are_read_by_time_window(store, visitor_id):
    before = time.time() - 1
    await store.record_stage(visitor_id, "awareness", time.time(), "d1")
    await store.record_stage(visitor_id, "consideration", time.time(), "d2")
    after = time.time() + 1
    mine = [
        (t.from_stage, t.to_stage, t.decision_id)
        for t in await store.journey_transitions(before, after, 100_000)
        if t.visitor_id == visitor_id
    ]
    assert mine == [(None, "awareness", "d1"), ("awareness", "consideration", "d2")]
    assert not [
        t for t in await store.journey_transitions(0, before, 100_000) if t.visitor_id == visitor_id
    ]
    assert len(await store.journey_transitions(before, after, 1)) == 1


async def test_erasure_removes_the_visitors_transitions(store, visitor_id):
    before = time.time() - 1
    await store.record_stage(visitor_id, "awareness", time.time(), "d1")
    await store.record_stage(f"{visitor_id}-other", "awareness", time.time(), "d2")
    await store.delete_visitor(visitor_id)
    found = {t.visitor_id for t in await store.journey_transitions(before, time.time() + 1, 10**5)}
    assert visitor_id not in found and f"{visitor_id}-other" in found
    assert await store.get_profile(visitor_id) is None
