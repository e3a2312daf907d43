"""What each trigger makes of an event, and whether a due trigger still holds. No I/O.

:func:`observe` takes one applied event and the visitor's trigger state (the fields of
``jg:{v}:triggers``) and returns a :class:`Plan`: state fields to write, timers to set or
cancel, and occurrences to fire now; :func:`observe_all` nets the plans of a visitor's
events observed together into one. :func:`confirm` runs when an occurrence is about to fire
(a timer came due, or :func:`observe` asked for it): with the visitor's state and the stored
profile it says fire, wait longer (re-arm), or drop. Guardrails (consent, quiet hours, caps,
debounce) come after, in the engine.

State fields (JSON values):

==============  ============================================================================
``cart``        the cart since the last checkout: ``since`` (first addition), ``last``
                (latest addition), ``qty``, ``items`` (product ids, newest last)
``checkout``    event time of the latest checkout or order
``views``       product id -> view times within the longest repeated-interest window
``page``        the latest page event: ``pid``, ``path``, ``t``, ``id`` (message id), ``s``
``due:NAME``    when the inactivity timer of trigger NAME is set to fire
``seen``        digests of the message ids of the latest events observed, oldest first:
                what a redelivered batch already did is not done twice
==============  ============================================================================
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jg_triggers.settings import (
    DAY_S,
    YEAR_S,
    CartAbandonment,
    HighValueInfrequent,
    Inactivity,
    LongDwell,
    NegativeFeedback,
    PostPurchase,
    RepeatedProductInterest,
    SearchNoResults,
    SearchPattern,
    TriggerSpec,
)
from journeygate.events.schema import Event

PAGE_KINDS = frozenset({"page_view", "screen_view", "product_view"})
# Events that mean the visitor is there (inactivity counts from the latest).
VISIT_KINDS = PAGE_KINDS | {
    "product_click",
    "product_list_view",
    "search",
    "cart_add",
    "cart_remove",
    "cart_view",
    "checkout_start",
    "checkout_step",
    "order",
}
CHECKOUT_KINDS = frozenset({"checkout_start", "order"})
CART_ITEMS_KEPT = 20
VIEWED_PRODUCTS_KEPT = 50
FEEDBACK_TEXT_KEPT = 1000
EPSILON_S = 0.001
# Message ids of observed events remembered per visitor: enough for any redelivery of a
# batch (a visitor's events of the batch being observed are always all kept).
SEEN_KEPT = 200


@dataclass(frozen=True, slots=True)
class Timer:
    """Fire ``trigger`` for the visitor at ``due`` (epoch seconds). A timer is identified by
    (visitor, trigger, ``key``): setting it again moves it. ``key`` is empty for the timers
    every new event moves (cart, inactivity), else what makes it one of several (an order
    id, a feedback's message id)."""

    trigger: str
    key: str
    due: float
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Occurrence:
    """Fire ``trigger`` now (after :func:`confirm` and the guardrails)."""

    trigger: str
    key: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Plan:
    """What one event changes."""

    set: dict[str, Any] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    cancel: list[tuple[str, str]] = field(default_factory=list)  # (trigger, key)
    fire: list[Occurrence] = field(default_factory=list)

    @property
    def writes(self) -> bool:
        return bool(self.set or self.delete or self.timers or self.cancel)


@dataclass(frozen=True, slots=True)
class Fire:
    """Fire, as occurrence ``key`` of the trigger, with ``data`` for the action."""

    key: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Rearm:
    """Not yet: check again at ``due``."""

    due: float


@dataclass(frozen=True, slots=True)
class Drop:
    """No longer holds (checked out since, came back, not negative after all...)."""

    reason: str


Verdict = Fire | Rearm | Drop


def watched_kinds(specs: Iterable[TriggerSpec]) -> frozenset[str]:
    """The event kinds any of ``specs`` reacts to: every other event is not even read."""
    kinds: set[str] = set()
    for spec in specs:
        rule = spec.rule
        if isinstance(rule, CartAbandonment):
            kinds |= {"cart_add", "cart_remove", *CHECKOUT_KINDS}
        elif isinstance(rule, RepeatedProductInterest):
            kinds |= {"product_view", "page_view", "order"}
        elif isinstance(rule, LongDwell):
            kinds |= PAGE_KINDS
        elif isinstance(rule, SearchNoResults | SearchPattern):
            kinds.add("search")
        elif isinstance(rule, Inactivity):
            kinds |= VISIT_KINDS
        elif isinstance(rule, PostPurchase | HighValueInfrequent):
            kinds.add("order")
        elif isinstance(rule, NegativeFeedback):
            kinds.add("feedback")
    return frozenset(kinds)


def seen_digest(message_id: str) -> str:
    """What ``seen`` keeps of a message id: short, whatever the id's length."""
    return hashlib.blake2b(message_id.encode(), digest_size=8).hexdigest()


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _order_key(event: Event) -> str:
    return str(event.fields.get("oid") or event.message_id)


def observe(
    event: Event,
    state: Mapping[str, Any],
    specs: Sequence[TriggerSpec],
    now: float,
    max_event_age_s: float,
    session_gap_s: float,
) -> Plan:
    """What ``event`` does to the visitor's triggers, given its current ``state``.

    Events older than ``max_event_age_s`` (by event time) still update the state, but fire
    nothing now, and timers that would have come due more than that long ago are not set:
    replaying last year's orders sends no follow-ups."""
    plan = Plan()
    fresh = now - event.timestamp <= max_event_age_s
    _cart(event, state, specs, plan, now, max_event_age_s)
    _views(event, state, specs, plan, fresh)
    _dwell(event, state, specs, plan, fresh, session_gap_s)
    for spec in specs:
        rule = spec.rule
        if isinstance(rule, SearchNoResults | SearchPattern) and event.kind == "search":
            occurrence = _search(spec, rule, event)
            if occurrence is not None and fresh:
                plan.fire.append(occurrence)
        elif isinstance(rule, Inactivity) and event.kind in VISIT_KINDS:
            due_field = f"due:{spec.name}"
            current = _number(state.get(due_field))
            if current is None or current < event.timestamp:
                due = event.timestamp + rule.delay_s
                if due >= now - max_event_age_s:
                    plan.timers.append(Timer(spec.name, "", due))
                    plan.set[due_field] = due
        elif isinstance(rule, PostPurchase) and event.kind == "order":
            due = event.timestamp + rule.delay_s
            if due >= now - max_event_age_s:
                data = {
                    "order_id": event.fields.get("oid"),
                    "revenue": event.fields.get("rev"),
                    "products": [item["pid"] for item in event.fields.get("items", ())][
                        :CART_ITEMS_KEPT
                    ],
                    "ordered_at": event.timestamp,
                }
                plan.timers.append(Timer(spec.name, _order_key(event), due, data))
        elif isinstance(rule, HighValueInfrequent) and event.kind == "order" and fresh:
            data = {"order_id": event.fields.get("oid"), "revenue": event.fields.get("rev")}
            plan.fire.append(Occurrence(spec.name, _order_key(event), data))
        elif isinstance(rule, NegativeFeedback) and event.kind == "feedback" and fresh:
            text = event.properties.get("text")
            data = {
                "at": event.timestamp,
                "first_check": now + rule.delay_s,
                "type": event.fields.get("type"),
                "rating": event.fields.get("rating"),
                "product_id": event.fields.get("pid"),
                "order_id": event.fields.get("oid"),
                "text": text[:FEEDBACK_TEXT_KEPT] if isinstance(text, str) else None,
            }
            plan.timers.append(Timer(spec.name, event.message_id, now + rule.delay_s, data))
    return plan


def observe_all(
    events: Sequence[Event],
    state: Mapping[str, Any],
    specs: Sequence[TriggerSpec],
    now: float,
    max_event_age_s: float,
    session_gap_s: float,
) -> Plan:
    """What one visitor's ``events`` (in the order observed) do together, as one plan
    against ``state``: each event sees the state the ones before it left; fields end up set
    or deleted as the last event left them, a timer set and then cancelled is cancelled.
    An event already observed (its message id is in ``seen``: a batch delivered again, an
    event sent twice) is skipped, so observing the same events again plans nothing."""
    current = dict(state)
    timers: dict[tuple[str, str], Timer | None] = {}
    fire: list[Occurrence] = []
    stored = state.get("seen")
    seen: list[str] = list(stored) if isinstance(stored, list) else []
    known, new = set(seen), []
    for event in events:
        digest = seen_digest(event.message_id)
        if digest in known:
            continue
        known.add(digest)
        new.append(digest)
        plan = observe(event, current, specs, now, max_event_age_s, session_gap_s)
        current.update(plan.set)
        for name in plan.delete:
            current.pop(name, None)
        for name, key in plan.cancel:
            timers[(name, key)] = None
        for timer in plan.timers:
            timers[(timer.trigger, timer.key)] = timer
        fire += plan.fire
    if new:
        older = max(SEEN_KEPT - len(new), 0)
        current["seen"] = (seen[len(seen) - older :] if older else []) + new
    return Plan(
        set={name: value for name, value in current.items() if state.get(name) != value},
        delete=[name for name in state if name not in current],
        timers=[timer for timer in timers.values() if timer is not None],
        cancel=[which for which, timer in timers.items() if timer is None],
        fire=fire,
    )


def _cart(
    event: Event,
    state: Mapping[str, Any],
    specs: Sequence[TriggerSpec],
    plan: Plan,
    now: float,
    max_event_age_s: float,
) -> None:
    """Cart episodes: the first addition after a checkout starts one, every addition moves
    the timers, a checkout or order (or removing everything) ends it and cancels them."""
    carts = [s for s in specs if isinstance(s.rule, CartAbandonment)]
    if not carts or event.kind not in ("cart_add", "cart_remove", *CHECKOUT_KINDS):
        return
    t = event.timestamp
    checkout = _number(state.get("checkout")) or 0.0
    cart = state.get("cart") if isinstance(state.get("cart"), Mapping) else None
    if event.kind in CHECKOUT_KINDS:
        if t < checkout:
            return
        plan.set["checkout"] = t
        if cart is not None and t >= float(cart["since"]):
            plan.delete.append("cart")
            plan.cancel += [(spec.name, "") for spec in carts]
        return
    if t < checkout:
        return  # a late event from before the last checkout
    quantity = int(event.fields.get("qty", 1))
    product = event.fields.get("pid")
    if event.kind == "cart_remove":
        if cart is None:
            return
        remaining = int(cart["qty"]) - quantity
        if remaining <= 0:
            plan.delete.append("cart")
            plan.cancel += [(spec.name, "") for spec in carts]
        else:
            plan.set["cart"] = {**cart, "qty": remaining}
        return
    items = [pid for pid in (cart or {}).get("items", ()) if pid != product]
    if isinstance(product, str):
        items.append(product)
    since = min(float(cart["since"]), t) if cart is not None else t
    last = max(float(cart["last"]), t) if cart is not None else t
    qty = (int(cart["qty"]) if cart is not None else 0) + quantity
    plan.set["cart"] = {"since": since, "last": last, "qty": qty, "items": items[-CART_ITEMS_KEPT:]}
    for spec in carts:
        due = last + spec.delay_s
        if due >= now - max_event_age_s:
            plan.timers.append(Timer(spec.name, "", due))


def _views(
    event: Event, state: Mapping[str, Any], specs: Sequence[TriggerSpec], plan: Plan, fresh: bool
) -> None:
    """Product views within the longest window; an order forgets the products it bought."""
    rules = [(spec, spec.rule) for spec in specs if isinstance(spec.rule, RepeatedProductInterest)]
    if not rules:
        return
    stored = state.get("views")
    views: dict[str, list[float]] = dict(stored) if isinstance(stored, Mapping) else {}
    if event.kind == "order":
        bought = {item["pid"] for item in event.fields.get("items", ())}
        if bought & views.keys():
            plan.set["views"] = {pid: ts for pid, ts in views.items() if pid not in bought}
        return
    product = event.fields.get("pid")
    if event.kind not in ("product_view", "page_view") or not isinstance(product, str):
        return
    longest = max(rule.window_s for _, rule in rules)
    t = event.timestamp
    times = sorted([*(x for x in views.get(product, ()) if t - x < longest), t])
    views[product] = times
    for spec, rule in rules:
        count = sum(1 for x in times if t - rule.window_s < x <= t)
        if count >= rule.views and fresh:
            data = {"product_id": product, "views": count, "window_s": rule.window_s}
            plan.fire.append(Occurrence(spec.name, f"{product}:{event.message_id}", data))
            views[product] = []  # counted: the next occurrence needs as many views again
    newest = sorted(
        ((pid, ts) for pid, ts in views.items() if ts and ts[-1] > t - longest),
        key=lambda pair: pair[1][-1],
    )[-VIEWED_PRODUCTS_KEPT:]
    plan.set["views"] = dict(newest)


def _dwell(
    event: Event,
    state: Mapping[str, Any],
    specs: Sequence[TriggerSpec],
    plan: Plan,
    fresh: bool,
    session_gap_s: float,
) -> None:
    """Dwell on the previous page: from it to this page event, as the profile counts it."""
    rules = [(spec, spec.rule) for spec in specs if isinstance(spec.rule, LongDwell)]
    if not rules or event.kind not in PAGE_KINDS:
        return
    t = event.timestamp
    previous = state.get("page") if isinstance(state.get("page"), Mapping) else None
    if previous is not None and float(previous["t"]) > t:
        return  # a late event: the page after it is already known
    path = event.fields.get("path")
    plan.set["page"] = {
        "pid": event.fields.get("pid"),
        "path": path if isinstance(path, str) else None,
        "t": t,
        "id": event.message_id,
        "s": event.session_id,
    }
    if previous is None or not fresh:
        return
    dwell = t - float(previous["t"])
    same_session = previous.get("s") is None or previous.get("s") == event.session_id
    if dwell > session_gap_s or not same_session:
        return
    for spec, rule in rules:
        on_product = rule.products and previous.get("pid") is not None
        if dwell >= rule.threshold_s and (on_product or rule.matches(previous.get("path"))):
            data = {
                "product_id": previous.get("pid"),
                "path": previous.get("path"),
                "dwell_s": round(dwell, 3),
            }
            plan.fire.append(Occurrence(spec.name, str(previous["id"]), data))


def _search(
    spec: TriggerSpec, rule: SearchNoResults | SearchPattern, event: Event
) -> Occurrence | None:
    query = str(event.fields.get("q", ""))
    if isinstance(rule, SearchPattern):
        pattern = rule.match(query)
        if pattern is None:
            return None
        return Occurrence(spec.name, event.message_id, {"query": query, "pattern": pattern})
    counts = (_number(event.properties.get(name)) for name in rule.count_properties)
    count = next((c for c in counts if c is not None), None)
    if count != 0:
        return None
    return Occurrence(spec.name, event.message_id, {"query": query, "results": 0})


def confirm(
    spec: TriggerSpec,
    key: str,
    data: Mapping[str, Any],
    state: Mapping[str, Any],
    profile: Mapping[str, Any],
    now: float,
) -> Verdict:
    """Whether occurrence ``key`` of ``spec`` fires now: the visitor's trigger ``state`` and
    stored ``profile`` (of the profile it resolves to: an anonymous visitor who signed in and
    checked out as a customer did check out)."""
    rule = spec.rule
    if isinstance(rule, CartAbandonment):
        cart = state.get("cart")
        if not isinstance(cart, Mapping) or int(cart.get("qty", 0)) <= 0:
            return Drop("the cart is empty")
        due = float(cart["last"]) + rule.delay_s
        if due > now + EPSILON_S:
            return Rearm(due)
        since = float(cart["since"])
        checked = [
            _number(profile.get("last_checkout_at")),
            _number(profile.get("last_order_at")),
            _number(state.get("checkout")),
        ]
        if max((t for t in checked if t is not None), default=-1.0) >= since:
            return Drop("checked out")
        return Fire(
            f"{since:.3f}",
            {
                "products": list(cart.get("items", ())),
                "quantity": int(cart["qty"]),
                "since": since,
                "last_added_at": float(cart["last"]),
            },
        )
    if isinstance(rule, Inactivity):
        last_seen = _number(profile.get("last_seen"))
        if last_seen is None:
            return Drop("no profile")
        if last_seen + rule.delay_s > now + EPSILON_S:
            return Rearm(last_seen + rule.delay_s)
        if (_number(profile.get("events")) or 0) < rule.min_events:
            return Drop(f"fewer than {rule.min_events} events: never active")
        days = round((now - last_seen) / DAY_S, 2)
        return Fire(f"{last_seen:.3f}", {"last_seen": last_seen, "days_inactive": days})
    if isinstance(rule, HighValueInfrequent):
        return _high_value(rule, key, data, profile, now)
    if isinstance(rule, NegativeFeedback):
        return _negative(rule, key, data, profile, now)
    return Fire(key, data)


def _high_value(
    rule: HighValueInfrequent,
    key: str,
    data: Mapping[str, Any],
    profile: Mapping[str, Any],
    now: float,
) -> Verdict:
    """The profile's average order value, and its orders a year counted over the time since
    the first order but at least a year: a customer whose orders all fall within the last
    year has as many a year as orders so far, so a first order is one a year (it fires) and
    a second within the year is two (with the default limit of 2, it does not)."""
    orders = _number(profile.get("orders")) or 0.0
    first = _number(profile.get("first_order_at"))
    if not orders or first is None:
        return Drop("no orders")
    average = (_number(profile.get("revenue")) or 0.0) / orders
    per_year = orders * YEAR_S / max(now - first, YEAR_S)
    if average < rule.min_average_order_value:
        return Drop(f"average order value {average:.2f} below {rule.min_average_order_value:g}")
    if per_year >= rule.max_orders_per_year:
        return Drop(f"{per_year:.2f} orders a year, not fewer than {rule.max_orders_per_year:g}")
    return Fire(
        key,
        {
            **data,
            "average_order_value": round(average, 2),
            "orders": int(orders),
            "orders_per_year": round(per_year, 3),
        },
    )


def _negative(
    rule: NegativeFeedback,
    key: str,
    data: Mapping[str, Any],
    profile: Mapping[str, Any],
    now: float,
) -> Verdict:
    """The sentiment plugin's verdict on this feedback, once it is in the profile."""
    at = _number(data.get("at")) or 0.0
    scored_at = _number(profile.get("sentiment_at"))
    if scored_at is None or scored_at < at - EPSILON_S:
        first = _number(data.get("first_check")) or now
        if now - first < rule.max_wait_s:
            return Rearm(now + rule.delay_s)
        return Drop("the feedback was not scored")
    if scored_at > at + EPSILON_S:
        return Drop("a later feedback was scored since")
    if profile.get("feedback_label") != "negative":
        return Drop(f"labelled {profile.get('feedback_label')}")
    return Fire(
        key,
        {
            **data,
            "sentiment": profile.get("sentiment"),
            "themes": profile.get("feedback_themes") or [],
        },
    )
