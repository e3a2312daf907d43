"""Eligibility: what a decision knows about the visitor, and which offers that admits.

No I/O here. :class:`VisitorInputs` gathers every input from the decision context once per
decision (the intent plugin's stage and intent, personas and segments, sentiment, the
request's cart and channel, and from the stored profile: orders, consents, fired triggers
and the visitor's recent offer shows). :func:`evaluate` runs an offer's rules against them
and says, in words, which rules matched and which did not.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jg_offers.catalog import Caps, Eligibility, OfferSpec, Schedule
from journeygate.frozen import quick_init
from journeygate.model import EMPTY, DecisionContext

# Profile fields other parts of journeygate write and the offer rules read.
TRIGGERS_FIELD = "triggers"  # {trigger name: epoch seconds it last fired} (triggers)
SHOWS_FIELD = "offer_shows"  # {offer id: [epoch seconds of each recent show]} (this plugin)
PERSONA_FIELD = "persona"  # the visitor's persona name (personas)
SEGMENTS_FIELD = "segments"  # the rule-based segments the visitor is in (personas)
ORDERS_FIELD = "orders"  # orders counted by the event worker


EMPTY_NAMES: frozenset[str] = frozenset()
# The types of a JSON number (exactly: a bool is an int, but not a number here).
NUMBER_TYPES = (int, float)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _names(*values: Any) -> frozenset[str]:
    """Names from attributes that may be one string or a list of them (or missing)."""
    if not any(values):  # most visitors have neither, and this runs per decision
        return EMPTY_NAMES
    names: set[str] = set()
    for value in values:
        if isinstance(value, str) and value:
            names.add(value)
        elif isinstance(value, list | tuple):
            names.update(v for v in value if isinstance(v, str) and v)
    return frozenset(names)


def _times(value: Any) -> Mapping[str, float]:
    if not value or not isinstance(value, Mapping):
        return EMPTY
    return {str(k): t for k, v in value.items() if (t := _number(v)) is not None}


@quick_init
@dataclass(frozen=True, slots=True)
class VisitorInputs:
    """Everything the offer rules look at for one decision."""

    now: float
    hour: int  # local hour of ``now`` in the plugin's timezone (-1: not needed)
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
    # the profile's offer_shows as stored ({offer id: [epoch seconds]}), read per offer by
    # recent_shows(): most decisions look at the shows of one or two offers
    shows: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_context(
        cls, context: DecisionContext, now: float, zone: dt.tzinfo | None
    ) -> VisitorInputs:
        """Plugins' answers for this decision first (``context.visitor``), then what the stored
        profile says; an input nobody produced is simply absent. ``zone``: the timezone of
        schedule hours (None when no offer has hours: the hour is not needed)."""
        visitor = context.visitor
        profile = context.stored.profile
        attributes = visitor.attributes
        shows = profile.get(SHOWS_FIELD)
        return cls(
            now=now,
            hour=dt.datetime.fromtimestamp(now, zone).hour if zone is not None else -1,
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
            shows=shows if type(shows) is dict or isinstance(shows, Mapping) else EMPTY,
        )

    def recent_shows(self, offer_id: str, window_s: float) -> int:
        """Shows of ``offer_id`` within ``window_s``; entries that are not times are ignored."""
        times = self.shows.get(offer_id)
        if not isinstance(times, list):
            return 0
        since = self.now - window_s
        count = 0
        for moment in times:  # a loop: sum() over a generator cost twice as much
            if type(moment) in NUMBER_TYPES and moment > since:
                count += 1
        return count


def _listed(values: Iterable[str]) -> str:
    return "[" + ", ".join(sorted(values)) + "]"


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of one offer, compiled at startup: a cheap test, and words for why it passed
    or failed (built only when someone reads them)."""

    passes: Callable[[VisitorInputs], bool]
    describe: Callable[[VisitorInputs, bool], str]
    # Set for a rule whose words name internal numbers (budget counts), which only
    # ``explain`` shows: what the offer's public reason says when it fails (nothing when it
    # passes).
    public_failure: str | None = None


def _one_of(label: str, attribute: str, allowed: frozenset[str]) -> Rule:
    get = operator.attrgetter(attribute)

    def describe(inputs: VisitorInputs, ok: bool) -> str:
        value = get(inputs)
        return (
            f"{label} {value}" if ok else f"{label} {value or 'unknown'} not in {_listed(allowed)}"
        )

    return Rule(lambda inputs: get(inputs) in allowed, describe)


def _any_of(label: str, attribute: str, allowed: frozenset[str]) -> Rule:
    get = operator.attrgetter(attribute)

    def describe(inputs: VisitorInputs, ok: bool) -> str:
        values: frozenset[str] = get(inputs)
        if ok:
            return f"{label} {', '.join(sorted(values & allowed))}"
        return f"{label} {', '.join(sorted(values)) or 'unknown'} not in {_listed(allowed)}"

    return Rule(lambda inputs: not allowed.isdisjoint(get(inputs)), describe)


def _bounds(
    label: str, get: Callable[[VisitorInputs], float], low: float | None, high: float | None
) -> Iterator[Rule]:
    def words(inputs: VisitorInputs) -> str:
        value = get(inputs)
        note = " (none yet: neutral)" if label == "sentiment" and inputs.sentiment is None else ""
        return f"{label} {value:g}{note}"

    if low is not None:
        yield Rule(
            lambda inputs: get(inputs) >= low,
            lambda inputs, ok: f"{words(inputs)} {'≥' if ok else 'below'} {low:g}",
        )
    if high is not None:
        yield Rule(
            lambda inputs: get(inputs) <= high,
            lambda inputs, ok: f"{words(inputs)} {'≤' if ok else 'above'} {high:g}",
        )


def _consent(name: str) -> Rule:
    return Rule(
        lambda inputs: inputs.consents.get(name) is True,
        lambda inputs, ok: f"consent {name}" if ok else f"no {name} consent",
    )


def _active_trigger(names: frozenset[str], window: float) -> Rule:
    ordered = sorted(names)

    def fired(inputs: VisitorInputs) -> str | None:
        for name in ordered:
            at = inputs.triggers.get(name)
            if at is not None and 0 <= inputs.now - at <= window:
                return name
        return None

    def describe(inputs: VisitorInputs, ok: bool) -> str:
        name = fired(inputs)
        if name is not None:
            return f"trigger {name} fired {(inputs.now - inputs.triggers[name]) / 60:.0f} min ago"
        return f"no trigger of {_listed(names)} fired in the last {window / 60:g} min"

    return Rule(lambda inputs: fired(inputs) is not None, describe)


def _sentiment(inputs: VisitorInputs) -> float:
    return inputs.sentiment if inputs.sentiment is not None else 0.0


def _cart_value(inputs: VisitorInputs) -> float:
    return round(inputs.cart_value, 2)


def _orders(inputs: VisitorInputs) -> float:
    return inputs.orders


def eligibility_rules(rules: Eligibility) -> list[Rule]:
    """The rules that are set, in a fixed order (the order ``explain`` lists them in)."""
    compiled = []
    for label, attribute, allowed in (
        ("stage", "stage", rules.stages),
        ("intent", "intent", rules.intents),
        ("channel", "channel", rules.channels),
    ):
        if allowed:
            compiled.append(_one_of(label, attribute, allowed))
    if rules.personas:
        compiled.append(_any_of("persona", "personas", rules.personas))
    if rules.segments:
        compiled.append(_any_of("segment", "segments", rules.segments))
    compiled += _bounds("sentiment", _sentiment, rules.sentiment_min, rules.sentiment_max)
    compiled += _bounds("cart value", _cart_value, rules.cart_value_min, rules.cart_value_max)
    compiled += _bounds("orders", _orders, rules.orders_min, rules.orders_max)
    compiled += [_consent(name) for name in sorted(rules.consents)]
    if rules.triggers:
        compiled.append(_active_trigger(rules.triggers, rules.trigger_window_s))
    return compiled


def _iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def _schedule(schedule: Schedule) -> Rule:
    def problem(inputs: VisitorInputs) -> str | None:
        if schedule.start is not None and inputs.now < schedule.start:
            return f"not started (starts {_iso(schedule.start)})"
        if schedule.end is not None and inputs.now >= schedule.end:
            return f"ended {_iso(schedule.end)}"
        if schedule.hours is not None:
            low, high = schedule.hours
            hour = inputs.hour
            inside = low <= hour < high if low < high else hour >= low or hour < high
            if not inside:
                return f"outside hours {low}-{high} (now {hour}h)"
        return None

    return Rule(
        lambda inputs: problem(inputs) is None,
        lambda inputs, ok: "within schedule" if ok else problem(inputs) or "",
    )


def _frequency(offer_id: str, caps: Caps) -> Rule:
    limit, window = caps.per_visitor or 0, caps.window_s
    hours = f"{window / 3600:g} h"

    def describe(inputs: VisitorInputs, ok: bool) -> str:
        shows = inputs.recent_shows(offer_id, window)
        if ok:
            return f"shown {shows} of {limit} times in {hours}"
        return f"frequency cap: shown {shows} times in the last {hours}"

    return Rule(lambda inputs: inputs.recent_shows(offer_id, window) < limit, describe)


def _budget(offer_id: str, budget: int, redeemed: Callable[[str], int]) -> Rule:
    def describe(inputs: VisitorInputs, ok: bool) -> str:
        count = redeemed(offer_id)
        if ok:
            return f"budget {count}/{budget} redeemed"
        return f"budget exhausted: {count}/{budget} redeemed"

    return Rule(lambda inputs: redeemed(offer_id) < budget, describe, "budget exhausted")


def _prefixed(prefix: str, rule: Rule) -> Rule:
    return Rule(rule.passes, lambda inputs, ok: prefix + rule.describe(inputs, ok))


def offer_rules(
    offer: OfferSpec, upsell: Eligibility, redeemed: Callable[[str], int]
) -> tuple[Rule, ...]:
    """Every rule of an offer: its schedule, its eligibility, the catalog's upsell rules when
    it is an upsell, then its caps (``redeemed`` counts an offer's redemptions)."""
    schedule = offer.schedule
    compiled = []
    if schedule.start is not None or schedule.end is not None or schedule.hours is not None:
        compiled.append(_schedule(schedule))
    compiled += eligibility_rules(offer.eligibility)
    if offer.upsell:
        compiled += [_prefixed("upsell: ", rule) for rule in eligibility_rules(upsell)]
    if offer.caps.per_visitor is not None:
        compiled.append(_frequency(offer.id, offer.caps))
    if offer.caps.budget is not None:
        compiled.append(_budget(offer.id, offer.caps.budget, redeemed))
    return tuple(compiled)


@dataclass(slots=True)
class Verdict:
    """Why one offer is or is not eligible for this decision."""

    offer: OfferSpec
    rules: tuple[Rule, ...]
    matched: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # written only by a complete evaluation
    eligible: bool = True

    def public_matches(self, inputs: VisitorInputs) -> list[str]:
        """Why every rule passed, for the winner's reason, which every client reads: the
        rules with internal words go unsaid."""
        return [rule.describe(inputs, True) for rule in self.rules if rule.public_failure is None]

    def public_rejection(self, inputs: VisitorInputs) -> str:
        """Why the offer is not eligible (its first failing rule), in words a client may read."""
        rule = next(rule for rule in self.rules if not rule.passes(inputs))
        return rule.public_failure or rule.describe(inputs, False)


def eligible(rules: tuple[Rule, ...], inputs: VisitorInputs) -> bool:
    """Whether every rule passes: :func:`evaluate` without the verdict, for the many offers
    of a decision that lose and are never explained."""
    for rule in rules:  # noqa: SIM110 -- a loop: all() over a generator cost more
        if not rule.passes(inputs):
            return False
    return True


def evaluate(
    offer: OfferSpec, rules: tuple[Rule, ...], inputs: VisitorInputs, complete: bool
) -> Verdict:
    """Run an offer's rules. Unless ``complete`` (``explain``), stop at the first failing
    rule and write no words: most offers lose, and what a client reads is built when needed
    (:meth:`Verdict.public_matches` for the winner, :meth:`Verdict.public_rejection`)."""
    verdict = Verdict(offer, rules)
    for rule in rules:
        if rule.passes(inputs):
            if complete:
                verdict.matched.append(rule.describe(inputs, True))
        else:
            verdict.eligible = False
            if not complete:
                break
            verdict.rejected.append(rule.describe(inputs, False))
    return verdict
