"""Eligibility: what a decision knows about the visitor, and which offers that admits.

No I/O here. :class:`VisitorInputs` gathers every input from the decision context once per
decision (the intent plugin's stage and intent, personas and segments, sentiment, the
request's cart and channel, and from the stored profile: orders, consents, fired triggers
and the visitor's recent offer shows). :func:`evaluate` runs an offer's rules against them
and says, in words, which rules matched and which did not.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jg_offers.catalog import Caps, Eligibility, OfferSpec, Schedule
from journeygate.model import EMPTY, DecisionContext

# Profile fields other parts of journeygate write and the offer rules read.
TRIGGERS_FIELD = "triggers"  # {trigger name: epoch seconds it last fired} (triggers)
SHOWS_FIELD = "offer_shows"  # {offer id: [epoch seconds of each recent show]} (this plugin)
PERSONA_FIELD = "persona"  # the visitor's persona name (personas)
SEGMENTS_FIELD = "segments"  # the rule-based segments the visitor is in (personas)
ORDERS_FIELD = "orders"  # orders counted by the event worker


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _names(*values: Any) -> frozenset[str]:
    """Names from attributes that may be one string or a list of them (or missing)."""
    names: set[str] = set()
    for value in values:
        if isinstance(value, str) and value:
            names.add(value)
        elif isinstance(value, list | tuple):
            names.update(v for v in value if isinstance(v, str) and v)
    return frozenset(names)


def _times(value: Any) -> Mapping[str, float]:
    if not isinstance(value, Mapping):
        return EMPTY
    return {str(k): t for k, v in value.items() if (t := _number(v)) is not None}


def read_shows(value: Any) -> Mapping[str, tuple[float, ...]]:
    if not isinstance(value, Mapping):
        return EMPTY
    return {
        str(k): tuple(t for t in (_number(x) for x in v) if t is not None)
        for k, v in value.items()
        if isinstance(v, list)
    }


@dataclass(frozen=True, slots=True)
class VisitorInputs:
    """Everything the offer rules look at for one decision."""

    now: float
    hour: int  # local hour of ``now`` in the plugin's timezone
    stage: str | None = None
    intent: str | None = None
    personas: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()
    sentiment: float | None = None
    cart_value: float = 0.0
    channel: str = "web"
    orders: int = 0
    consents: Mapping[str, bool] = field(default_factory=dict)
    triggers: Mapping[str, float] = field(default_factory=dict)
    shows: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    @classmethod
    def from_context(cls, context: DecisionContext, now: float, zone: dt.tzinfo) -> VisitorInputs:
        """Plugins' answers for this decision first (``context.visitor``), then what the stored
        profile says; an input nobody produced is simply absent."""
        visitor = context.visitor
        profile = context.stored.profile
        attributes = visitor.attributes
        return cls(
            now=now,
            hour=dt.datetime.fromtimestamp(now, zone).hour,
            stage=visitor.stage,
            intent=visitor.intent,
            personas=_names(attributes.get(PERSONA_FIELD) or profile.get(PERSONA_FIELD)),
            segments=_names(
                visitor.segment, attributes.get(SEGMENTS_FIELD) or profile.get(SEGMENTS_FIELD)
            ),
            sentiment=visitor.sentiment,
            cart_value=context.context.cart_value,
            channel=context.context.channel,
            orders=int(_number(profile.get(ORDERS_FIELD)) or 0),
            consents=context.stored.consents,
            triggers=_times(profile.get(TRIGGERS_FIELD)),
            shows=read_shows(profile.get(SHOWS_FIELD)),
        )

    def recent_shows(self, offer_id: str, window_s: float) -> int:
        return sum(1 for t in self.shows.get(offer_id, ()) if self.now - t < window_s)


def _listed(values: Iterable[str]) -> str:
    return "[" + ", ".join(sorted(values)) + "]"


def _one_of(label: str, value: str | None, allowed: frozenset[str]) -> tuple[bool, str]:
    if value in allowed:
        return True, f"{label} {value}"
    return False, f"{label} {value or 'unknown'} not in {_listed(allowed)}"


def _any_of(label: str, values: frozenset[str], allowed: frozenset[str]) -> tuple[bool, str]:
    common = values & allowed
    if common:
        return True, f"{label} {', '.join(sorted(common))}"
    have = ", ".join(sorted(values)) or "unknown"
    return False, f"{label} {have} not in {_listed(allowed)}"


def _bounds(
    label: str, value: float, low: float | None, high: float | None, note: str = ""
) -> Iterator[tuple[bool, str]]:
    if low is not None:
        ok = value >= low
        yield ok, f"{label} {value:g}{note} {'≥' if ok else 'below'} {low:g}"
    if high is not None:
        ok = value <= high
        yield ok, f"{label} {value:g}{note} {'≤' if ok else 'above'} {high:g}"


def check_eligibility(
    rules: Eligibility, inputs: VisitorInputs, prefix: str = ""
) -> Iterator[tuple[bool, str]]:
    """(passed, why) for every rule that is set, in a fixed order."""
    checks: list[tuple[bool, str]] = []
    if rules.stages:
        checks.append(_one_of("stage", inputs.stage, rules.stages))
    if rules.intents:
        checks.append(_one_of("intent", inputs.intent, rules.intents))
    if rules.personas:
        checks.append(_any_of("persona", inputs.personas, rules.personas))
    if rules.segments:
        checks.append(_any_of("segment", inputs.segments, rules.segments))
    if rules.channels:
        checks.append(_one_of("channel", inputs.channel, rules.channels))
    for ok, why in checks:
        yield ok, prefix + why
    sentiment = inputs.sentiment if inputs.sentiment is not None else 0.0
    note = "" if inputs.sentiment is not None else " (none yet: neutral)"
    for ok, why in _bounds("sentiment", sentiment, rules.sentiment_min, rules.sentiment_max, note):
        yield ok, prefix + why
    cart = round(inputs.cart_value, 2)
    for ok, why in _bounds("cart value", cart, rules.cart_value_min, rules.cart_value_max):
        yield ok, prefix + why
    for ok, why in _bounds("orders", inputs.orders, rules.orders_min, rules.orders_max):
        yield ok, prefix + why
    for consent in sorted(rules.consents):
        granted = inputs.consents.get(consent) is True
        yield granted, prefix + (f"consent {consent}" if granted else f"no {consent} consent")
    if rules.triggers:
        yield _active_trigger(rules, inputs, prefix)


def _active_trigger(rules: Eligibility, inputs: VisitorInputs, prefix: str) -> tuple[bool, str]:
    window = rules.trigger_window_s
    for name in sorted(rules.triggers):
        fired = inputs.triggers.get(name)
        if fired is not None and 0 <= inputs.now - fired <= window:
            return True, f"{prefix}trigger {name} fired {(inputs.now - fired) / 60:.0f} min ago"
    return False, (
        f"{prefix}no trigger of {_listed(rules.triggers)} fired in the last {window / 60:g} min"
    )


def _iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def check_schedule(schedule: Schedule, inputs: VisitorInputs) -> Iterator[tuple[bool, str]]:
    if schedule.start is not None and inputs.now < schedule.start:
        yield False, f"not started (starts {_iso(schedule.start)})"
        return
    if schedule.end is not None and inputs.now >= schedule.end:
        yield False, f"ended {_iso(schedule.end)}"
        return
    if schedule.hours is not None:
        low, high = schedule.hours
        hour = inputs.hour
        inside = low <= hour < high if low < high else hour >= low or hour < high
        if not inside:
            yield False, f"outside hours {low}-{high} (now {inputs.hour}h)"
            return
    if schedule.start is not None or schedule.end is not None or schedule.hours is not None:
        yield True, "within schedule"


def check_caps(
    offer_id: str, caps: Caps, inputs: VisitorInputs, redeemed: int
) -> Iterator[tuple[bool, str]]:
    if caps.per_visitor is not None:
        shows = inputs.recent_shows(offer_id, caps.window_s)
        hours = f"{caps.window_s / 3600:g} h"
        if shows < caps.per_visitor:
            yield True, f"shown {shows} of {caps.per_visitor} times in {hours}"
        else:
            yield False, f"frequency cap: shown {shows} times in the last {hours}"
    if caps.budget is not None:
        if redeemed < caps.budget:
            yield True, f"budget {redeemed}/{caps.budget} redeemed"
        else:
            yield False, f"budget exhausted: {redeemed}/{caps.budget} redeemed"


@dataclass(slots=True)
class Verdict:
    """Why one offer is or is not eligible for this decision."""

    offer: OfferSpec
    matched: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    @property
    def eligible(self) -> bool:
        return not self.rejected


def evaluate(
    offer: OfferSpec,
    upsell: Eligibility,
    inputs: VisitorInputs,
    redeemed: int,
    complete: bool,
) -> Verdict:
    """Run the offer's rules (its schedule, its eligibility, the catalog's upsell rules when it
    is an upsell, its caps). Stops at the first failing rule unless ``complete``."""
    verdict = Verdict(offer)
    checks = [
        check_schedule(offer.schedule, inputs),
        check_eligibility(offer.eligibility, inputs),
        check_caps(offer.id, offer.caps, inputs, redeemed),
    ]
    if offer.upsell:
        checks.insert(2, check_eligibility(upsell, inputs, prefix="upsell: "))
    for group in checks:
        for ok, why in group:
            if ok:
                verdict.matched.append(why)
            else:
                verdict.rejected.append(why)
                if not complete:
                    return verdict
    return verdict
