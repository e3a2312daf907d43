"""The pure parts: trigger settings (errors name the key), quiet hours, and what each rule
makes of events (jg_triggers.rules.observe) and of a due occurrence (confirm)."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from types import MappingProxyType
from typing import Any

import pytest

from jg_triggers import rules
from jg_triggers.rules import Drop, Fire, Occurrence, Rearm, Timer
from jg_triggers.settings import (
    QuietHours,
    TriggerConfigError,
    load_settings,
    read_settings,
)
from journeygate.config import PROJECT_ROOT
from journeygate.events.schema import Event

NOW = 1_780_000_000.0
GAP = 1800.0


def settings(**triggers: dict[str, Any]) -> Any:
    data = {name: {"endpoint": "crm", **table} for name, table in triggers.items()}
    return read_settings({"triggers": data})


def specs(**triggers: dict[str, Any]) -> tuple[Any, ...]:
    return settings(**triggers).active


def ev(kind: str, t: float, message_id: str = "m", **fields: Any) -> Event:
    properties = fields.pop("properties", {})
    return Event(
        message_id=message_id,
        name=kind,
        kind=kind,
        profile_id="v1",
        user_id=None,
        anonymous_id="v1",
        session_id=fields.pop("session", None),
        timestamp=t,
        received_at=t,
        channel="web",
        properties=MappingProxyType(properties),
        fields=MappingProxyType(fields),
    )


def run(specs_: tuple[Any, ...], events: list[Event], now: float = NOW) -> list[rules.Plan]:
    """Observe events one after the other, carrying the state along as the engine does."""
    state: dict[str, Any] = {}
    plans = []
    for event in events:
        plan = rules.observe(event, state, specs_, now, 86400.0, GAP)
        state.update(plan.set)
        for name in plan.delete:
            state.pop(name, None)
        plans.append(plan)
    return plans


# -- settings -----------------------------------------------------------------------------


def test_the_shipped_trigger_file_is_valid_and_complete():
    shipped = load_settings(PROJECT_ROOT / "config" / "triggers.toml")
    types = {spec.type for spec in shipped.triggers}
    assert types == {
        "cart_abandonment",
        "repeated_product_interest",
        "long_dwell",
        "search_no_results",
        "search_pattern",
        "inactivity",
        "post_purchase",
        "high_value_infrequent",
        "negative_feedback",
    }
    by_name = shipped.by_name()
    assert by_name["cart_abandonment"].delay_s == 1800
    assert by_name["post_purchase_1d"].delay_s == 86400
    assert by_name["post_purchase_7d"].delay_s == 7 * 86400
    rule = by_name["repeated_product_interest"].rule
    assert (rule.views, rule.window_s) == (3, 7 * 86400)
    assert shipped.caps["re_engagement"].count == 1
    assert shipped.caps["re_engagement"].window_s == 48 * 3600
    assert by_name["negative_feedback"].marketing is False


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"triggers": {"cart": {"type": "basket"}}}, "triggers.cart.type: expected one of"),
        ({"triggers": {"cart_abandonment": {}}}, "triggers.cart_abandonment.endpoint: required"),
        (
            {"triggers": {"cart_abandonment": {"endpoint": "crm", "delay_s": "soon"}}},
            "cart_abandonment.delay_s: expected a number from 0.01 to 31536000, got 'soon'",
        ),
        (
            {"triggers": {"cart_abandonment": {"endpoint": "crm", "dealy_s": 5}}},
            "triggers.cart_abandonment.dealy_s: unknown key",
        ),
        (
            {"triggers": {"search_pattern": {"endpoint": "crm", "patterns": ["(unclosed"]}}},
            "triggers.search_pattern.patterns[0]: not a regular expression",
        ),
        (
            {"triggers": {"long_dwell": {"endpoint": "crm", "products": False}}},
            "triggers.long_dwell.paths: with products = false",
        ),
        (
            {"triggers": {"inactivity": {"endpoint": "crm", "consent": "email"}}},
            "triggers.inactivity.consent: expected one of marketing_email",
        ),
        ({"quiet_hours": {"start": "21:00", "end": "late"}}, "quiet_hours.end: expected a local"),
        ({"timezone": "Mars/Olympus"}, "timezone: unknown time zone 'Mars/Olympus'"),
        ({"caps": {"re_engagement": {"count": 1}}}, "caps.re_engagement: no trigger has"),
        (
            {"state_ttl_s": 3600, "triggers": {"inactivity": {"endpoint": "crm"}}},
            "state_ttl_s: must be longer than the longest delay or window (2592000 s)",
        ),
        ({"scheduler": {"lease_s": 0}}, "scheduler.lease_s: expected a number from 0.1"),
    ],
)
def test_a_mistake_names_the_key(data, message):
    with pytest.raises(TriggerConfigError) as raised:
        read_settings(data)
    assert message in str(raised.value)


def test_a_file_mistake_names_the_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[triggers.cart_abandonment]\nendpoint = "crm"\ndelay_s = -1\n')
    with pytest.raises(TriggerConfigError, match=r"^mine.toml: triggers.cart_abandonment"):
        load_settings(path)
    path.write_text("[triggers\n")
    with pytest.raises(TriggerConfigError, match=r"mine\.toml: not valid TOML"):
        load_settings(path)


def test_quiet_hours_across_midnight_defer_to_their_end():
    london = zoneinfo.ZoneInfo("Europe/London")
    quiet = QuietHours(dt.time(21), dt.time(8), london)

    def at(day: int, hour: int, minute: int = 0) -> float:
        return dt.datetime(2026, 7, day, hour, minute, tzinfo=london).timestamp()

    assert quiet.deferred_until(at(1, 20, 59)) is None
    assert quiet.deferred_until(at(1, 21)) == at(2, 8)
    assert quiet.deferred_until(at(1, 23, 30)) == at(2, 8)
    assert quiet.deferred_until(at(2, 3)) == at(2, 8)
    assert quiet.deferred_until(at(2, 8)) is None
    daytime = QuietHours(dt.time(12), dt.time(14), london)
    assert daytime.deferred_until(at(1, 13)) == at(1, 14)
    assert daytime.deferred_until(at(1, 15)) is None


# -- observe ------------------------------------------------------------------------------


def test_cart_timer_moves_with_each_addition_and_a_checkout_cancels_it():
    cart = specs(cart_abandonment={"delay_s": 1800})
    add1 = ev("cart_add", NOW - 100, "a1", pid="P1", qty=1)
    add2 = ev("cart_add", NOW - 50, "a2", pid="P2", qty=2)
    checkout = ev("checkout_start", NOW - 10, "c1")
    first, second, third = run(cart, [add1, add2, checkout])
    assert first.timers == [Timer("cart_abandonment", "", NOW - 100 + 1800)]
    assert second.timers == [Timer("cart_abandonment", "", NOW - 50 + 1800)]
    assert second.set["cart"] == {
        "since": NOW - 100,
        "last": NOW - 50,
        "qty": 3,
        "items": ["P1", "P2"],
    }
    assert third.cancel == [("cart_abandonment", "")] and third.delete == ["cart"]
    # a late addition from before the checkout changes nothing
    (late,) = run(cart, [checkout, ev("cart_add", NOW - 20, "a0", pid="P3", qty=1)])[1:]
    assert late.timers == [] and "cart" not in late.set


def test_removing_everything_from_the_cart_cancels_the_timer():
    cart = specs(cart_abandonment={})
    plans = run(
        cart,
        [
            ev("cart_add", NOW - 60, "a1", pid="P1", qty=2),
            ev("cart_remove", NOW - 30, "r1", pid="P1", qty=1),
            ev("cart_remove", NOW - 20, "r2", pid="P1", qty=1),
        ],
    )
    assert plans[1].set["cart"]["qty"] == 1 and not plans[1].cancel
    assert plans[2].cancel == [("cart_abandonment", "")]


def test_the_third_view_within_the_window_fires_and_a_purchase_forgets_the_views():
    interest = specs(repeated_product_interest={"views": 3, "window_s": 7 * 86400})
    day = 86400
    views = [ev("product_view", NOW - 8 * day, "v0", pid="P1")]  # outside the window
    views += [ev("product_view", NOW - d * day, f"v{d}", pid="P1") for d in (5, 3)]
    views.append(ev("product_view", NOW - 2 * day, "o1", pid="P2"))
    plans = run(interest, [*views, ev("product_view", NOW, "v9", pid="P1")])
    assert [p.fire for p in plans[:-1]] == [[], [], [], []]
    assert plans[-1].fire == [
        Occurrence(
            "repeated_product_interest",
            "P1:v9",
            {"product_id": "P1", "views": 3, "window_s": 7 * day},
        )
    ]
    bought = ev("order", NOW - day, "o", items=[{"pid": "P1", "qty": 1}])
    after = run(interest, [*views[1:3], bought, ev("product_view", NOW, "v9", pid="P1")])
    assert after[-1].fire == []


def test_dwell_on_a_product_or_pricing_page_until_the_next_page_event():
    dwell = specs(long_dwell={"threshold_s": 120, "paths": ["/pricing*"]})
    plans = run(
        dwell,
        [
            ev("page_view", NOW - 900, "p1", path="/", session="s"),
            ev("page_view", NOW - 600, "p2", path="/pricing/teams", session="s"),
            ev("product_view", NOW - 400, "p3", pid="P1", session="s"),
            ev("page_view", NOW - 390, "p4", path="/about", session="s"),
            ev("page_view", NOW, "p5", path="/", session="s2"),  # another session
        ],
    )
    fired = [occurrence for plan in plans for occurrence in plan.fire]
    assert fired == [
        Occurrence(
            "long_dwell", "p2", {"product_id": None, "path": "/pricing/teams", "dwell_s": 200.0}
        )
    ]


def test_searches_without_results_or_matching_a_pattern():
    search = specs(
        search_no_results={},
        search_pattern={"patterns": [r"\bcancel", "refund"]},
    )
    plans = run(
        search,
        [
            ev("search", NOW, "s1", q="blue mug", properties={"results": 0}),
            ev("search", NOW, "s2", q="red mug", properties={"result_count": 4}),
            ev("search", NOW, "s3", q="How do I CANCEL my order"),
        ],
    )
    assert plans[0].fire == [
        Occurrence("search_no_results", "s1", {"query": "blue mug", "results": 0})
    ]
    assert plans[1].fire == []
    assert plans[2].fire == [
        Occurrence(
            "search_pattern", "s3", {"query": "How do I CANCEL my order", "pattern": r"\bcancel"}
        )
    ]


def test_orders_set_post_purchase_timers_and_old_events_fire_nothing():
    triggers = specs(
        post_purchase_1d={"type": "post_purchase", "delay_s": 86400},
        post_purchase_7d={"type": "post_purchase", "delay_s": 7 * 86400},
        high_value_infrequent={},
    )
    order = ev("order", NOW - 60, "m1", oid="O1", rev=250.0, items=[{"pid": "P1", "qty": 1}])
    (plan,) = run(triggers, [order])
    assert [(t.trigger, t.key, t.due) for t in plan.timers] == [
        ("post_purchase_1d", "O1", NOW - 60 + 86400),
        ("post_purchase_7d", "O1", NOW - 60 + 7 * 86400),
    ]
    assert plan.timers[0].data["products"] == ["P1"]
    assert plan.fire == [
        Occurrence("high_value_infrequent", "O1", {"order_id": "O1", "revenue": 250.0})
    ]
    # a replayed order from two years ago: nothing to send now
    (old,) = run(triggers, [ev("order", NOW - 2 * 365 * 86400, "m2", oid="O0", rev=300.0)])
    assert old.timers == [] and old.fire == []


def test_the_inactivity_timer_is_set_once_and_again_after_it_came_due():
    idle = specs(inactivity={"delay_s": 3600, "min_events": 2})
    plans = run(
        idle,
        [
            ev("page_view", NOW - 100, "p1"),
            ev("page_view", NOW - 50, "p2"),  # the timer stays: it re-arms itself when due
            ev("consent", NOW - 40, "c1"),  # not a visit
        ],
    )
    assert plans[0].timers == [Timer("inactivity", "", NOW - 100 + 3600)]
    assert plans[1].timers == [] and plans[2].timers == []
    later = rules.observe(
        ev("page_view", NOW + 7200, "p3"),
        {"due:inactivity": NOW + 3500},
        idle,
        NOW + 7200,
        86400,
        GAP,
    )
    assert later.timers == [Timer("inactivity", "", NOW + 7200 + 3600)]


def test_feedback_is_checked_after_the_sentiment_plugin_scored_it():
    feedback = specs(negative_feedback={"delay_s": 30, "max_wait_s": 300})
    (plan,) = run(
        feedback, [ev("feedback", NOW - 1, "f1", properties={"text": "Awful."}, type="review")]
    )
    (timer,) = plan.timers
    assert (timer.key, timer.due) == ("f1", NOW + 30)
    assert timer.data["text"] == "Awful." and timer.data["at"] == NOW - 1


# -- confirm ------------------------------------------------------------------------------


def test_cart_confirmation_reads_the_resolved_profile():
    (cart,) = specs(cart_abandonment={"delay_s": 1800})
    state = {"cart": {"since": NOW - 2000, "last": NOW - 1900, "qty": 2, "items": ["P1"]}}
    fired = rules.confirm(cart, "", {}, state, {}, NOW)
    assert fired == Fire(
        f"{NOW - 2000:.3f}",
        {"products": ["P1"], "quantity": 2, "since": NOW - 2000, "last_added_at": NOW - 1900},
    )
    # the anonymous visitor signed in and checked out as the customer
    assert rules.confirm(cart, "", {}, state, {"last_checkout_at": NOW - 100}, NOW) == Drop(
        "checked out"
    )
    moved = {"cart": {**state["cart"], "last": NOW - 60}}
    assert rules.confirm(cart, "", {}, moved, {}, NOW) == Rearm(NOW - 60 + 1800)
    assert rules.confirm(cart, "", {}, {}, {}, NOW) == Drop("the cart is empty")


def test_inactivity_re_arms_from_the_last_visit_and_needs_an_active_visitor():
    (idle,) = specs(inactivity={"delay_s": 3600, "min_events": 5})
    assert rules.confirm(idle, "", {}, {}, {"last_seen": NOW - 600, "events": 9}, NOW) == Rearm(
        NOW - 600 + 3600
    )
    assert rules.confirm(idle, "", {}, {}, {"last_seen": NOW - 4000, "events": 9}, NOW) == Fire(
        f"{NOW - 4000:.3f}", {"last_seen": NOW - 4000, "days_inactive": 0.05}
    )
    assert isinstance(
        rules.confirm(idle, "", {}, {}, {"last_seen": NOW - 4000, "events": 2}, NOW), Drop
    )


def test_high_value_infrequent_counts_orders_a_year_over_at_least_a_year():
    (vip,) = specs(high_value_infrequent={"min_average_order_value": 200, "max_orders_per_year": 2})
    day, year = 86400, 365 * 86400
    first_order = {"orders": 1, "revenue": 900.0, "first_order_at": NOW}
    verdict = rules.confirm(vip, "O1", {"order_id": "O1"}, {}, first_order, NOW)
    assert verdict == Fire(
        "O1",
        {"order_id": "O1", "average_order_value": 900.0, "orders": 1, "orders_per_year": 1.0},
    )
    second_within_a_year = {"orders": 2, "revenue": 1800.0, "first_order_at": NOW - 300 * day}
    assert isinstance(rules.confirm(vip, "O2", {}, {}, second_within_a_year, NOW), Drop)
    two_orders_a_year_apart = {"orders": 2, "revenue": 700.0, "first_order_at": NOW - 1.5 * year}
    verdict = rules.confirm(vip, "O2", {"order_id": "O2"}, {}, two_orders_a_year_apart, NOW)
    assert isinstance(verdict, Fire)
    assert verdict.data["average_order_value"] == 350.0
    assert verdict.data["orders_per_year"] == pytest.approx(1.333, abs=0.001)
    frequent = {"orders": 9, "revenue": 2700.0, "first_order_at": NOW - 3 * year}
    assert isinstance(rules.confirm(vip, "O9", {}, {}, frequent, NOW), Drop)
    cheap = {"orders": 2, "revenue": 100.0, "first_order_at": NOW - 2 * year}
    assert isinstance(rules.confirm(vip, "O3", {}, {}, cheap, NOW), Drop)


def test_negative_feedback_waits_for_the_score_and_fires_only_on_its_own_label():
    (unhappy,) = specs(negative_feedback={"delay_s": 30, "max_wait_s": 300})
    data = {"at": NOW - 40, "first_check": NOW - 10, "text": "Broken on arrival"}
    assert rules.confirm(unhappy, "f1", data, {}, {}, NOW) == Rearm(NOW + 30)
    scored = {"sentiment_at": NOW - 40, "feedback_label": "negative", "sentiment": -0.8}
    fired = rules.confirm(unhappy, "f1", data, {}, scored, NOW)
    assert isinstance(fired, Fire) and fired.data["sentiment"] == -0.8
    assert rules.confirm(
        unhappy, "f1", data, {}, {**scored, "feedback_label": "mixed"}, NOW
    ) == Drop("labelled mixed")
    assert rules.confirm(unhappy, "f1", data, {}, {**scored, "sentiment_at": NOW - 5}, NOW) == Drop(
        "a later feedback was scored since"
    )
    assert rules.confirm(unhappy, "f1", data, {}, {}, NOW + 400) == Drop(
        "the feedback was not scored"
    )


def test_only_watched_event_kinds_are_read():
    assert rules.watched_kinds(specs(search_no_results={})) == {"search"}
    kinds = rules.watched_kinds(specs(cart_abandonment={}, negative_feedback={}))
    assert kinds == {"cart_add", "cart_remove", "checkout_start", "order", "feedback"}


def test_a_visitors_events_observed_together_make_one_plan():
    triggers = specs(cart_abandonment={"delay_s": 1800}, post_purchase={"delay_s": 86400})
    state = {"checkout": NOW - 5000, "page": {"t": 1.0}}
    events = [
        ev("cart_add", NOW - 300, "a1", pid="P1", qty=1),
        ev("order", NOW - 200, "o1", oid="O1", rev=5.0),  # cancels the cart timer
        ev("cart_add", NOW - 100, "a2", pid="P2", qty=1),  # and a new cart sets it again
    ]
    plan = rules.observe_all(events, state, triggers, NOW, 86400, GAP)
    assert plan.set == {
        "checkout": NOW - 200,
        "cart": {"since": NOW - 100, "last": NOW - 100, "qty": 1, "items": ["P2"]},
        "seen": [rules.seen_digest(message_id) for message_id in ("a1", "o1", "a2")],
    }
    assert plan.delete == []
    assert [(t.trigger, t.key, t.due) for t in plan.timers] == [
        ("cart_abandonment", "", NOW - 100 + 1800),
        ("post_purchase", "O1", NOW - 200 + 86400),
    ]
    assert plan.cancel == []
    emptied = rules.observe_all(
        [ev("cart_remove", NOW, "r1", pid="P2", qty=1)],
        {**state, **plan.set},
        triggers,
        NOW,
        86400,
        GAP,
    )
    assert emptied.delete == ["cart"] and emptied.cancel == [("cart_abandonment", "")]


def test_events_observed_before_are_skipped_and_the_ids_kept_are_bounded():
    triggers = specs(cart_abandonment={"delay_s": 1800})
    added = [ev("cart_add", NOW - 100 + i, f"a{i}", pid=f"P{i}", qty=1) for i in range(3)]
    plan = rules.observe_all(added, {}, triggers, NOW, 86400, GAP)
    assert plan.set["cart"]["qty"] == 3
    # the same batch delivered again (its worker died before acknowledging it), and an event
    # sent twice within one batch: nothing counted twice
    state = dict(plan.set)
    assert rules.observe_all(added, state, triggers, NOW, 86400, GAP) == rules.Plan()
    again = rules.observe_all([added[0], *added], {}, triggers, NOW, 86400, GAP)
    assert again.set["cart"]["qty"] == 3
    # the ids of a batch are all kept, older ones down to SEEN_KEPT in all
    many = [ev("cart_add", NOW - 50, f"b{i}", pid="P9", qty=1) for i in range(rules.SEEN_KEPT)]
    later = rules.observe_all(many, state, triggers, NOW, 86400, GAP)
    assert later.set["seen"] == [rules.seen_digest(f"b{i}") for i in range(rules.SEEN_KEPT)]
    bigger = [*many, ev("cart_add", NOW - 40, "c0", pid="P9", qty=1)]
    seen = rules.observe_all(bigger, {}, triggers, NOW, 86400, GAP).set["seen"]
    assert len(seen) == rules.SEEN_KEPT + 1
