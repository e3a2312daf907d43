"""Intent score and journey stage: configurable, explainable rules with no I/O.

The intent score is a weighted sum of signals of the current session and request; every
signal's value, weight and contribution is kept so ``explain`` shows how the score was made
(the contributions sum to the score). Two thresholds turn the score into a tier. The journey
stage is the first rule that matches, in the order advocacy, retention, decision,
consideration, awareness.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

from journeygate.model import DecisionContext

PLUGIN_NAME = "intent"

BROWSING = "browsing"
COMPARING = "comparing"
READY_TO_BUY = "ready_to_buy"

AWARENESS = "awareness"
CONSIDERATION = "consideration"
DECISION = "decision"
RETENTION = "retention"
ADVOCACY = "advocacy"

#: signal -> (default weight, what its value is)
SIGNALS: Mapping[str, tuple[float, str]] = MappingProxyType(
    {
        "product_views": (1.0, "distinct products viewed this session, this page included"),
        "repeat_views": (1.5, "views of a product already viewed this session"),
        "category_page": (0.5, "1 on a category page"),
        "search_page": (1.0, "1 on a search page"),
        "session_depth": (0.25, "pages seen this session, this page included"),
        "cart": (4.0, "1 when the cart holds items"),
        "cart_value": (0.02, "cart value in the catalog currency"),
        "cart_page": (2.0, "1 on the cart page"),
        "checkout_page": (6.0, "1 on a checkout page"),
    }
)

#: signal -> default cap on its value, so one long session cannot dominate the score
DEFAULT_CAPS: Mapping[str, float] = MappingProxyType(
    {"product_views": 10, "repeat_views": 5, "session_depth": 12, "cart_value": 250}
)


def _weights() -> Mapping[str, float]:
    return MappingProxyType({name: weight for name, (weight, _) in SIGNALS.items()})


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _error(key: str, message: str) -> ValueError:
    return ValueError(f"plugin.{PLUGIN_NAME}.{key}: {message}")


@dataclass(frozen=True)
class IntentSettings:
    """``[plugin.intent]`` settings, validated at startup."""

    weights: Mapping[str, float] = field(default_factory=_weights)
    caps: Mapping[str, float] = field(default_factory=lambda: DEFAULT_CAPS)
    comparing_threshold: float = 3.0
    ready_to_buy_threshold: float = 8.0
    consideration_min_product_views: int = 3
    decision_on_cart: bool = True
    retention_min_orders: int = 1
    advocacy_min_orders: int = 3
    advocacy_min_sentiment: float = 0.5

    @cached_property
    def terms(self) -> tuple[tuple[str, float | None, float], ...]:
        """(signal, cap, weight) in signal order, looked up once for the scoring loop."""
        return tuple((name, self.caps.get(name), self.weights[name]) for name in SIGNALS)

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> IntentSettings:
        defaults = cls()
        values: dict[str, Any] = {}
        for key, value in settings.items():
            if key not in cls.__dataclass_fields__:
                raise _error(key, "unknown setting")
            if key in ("weights", "caps"):
                values[key] = cls._table(key, value, negative=key == "weights")
            elif key == "decision_on_cart":
                if not isinstance(value, bool):
                    raise _error(key, f"expected true or false, got {value!r}")
                values[key] = value
            elif isinstance(getattr(defaults, key), int):
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise _error(key, f"expected an integer of at least 1, got {value!r}")
                values[key] = value
            else:
                if not _number(value):
                    raise _error(key, f"expected a number, got {value!r}")
                values[key] = float(value)
        if "weights" in values:
            values["weights"] = MappingProxyType({**defaults.weights, **values["weights"]})
        if "caps" in values:
            values["caps"] = MappingProxyType({**defaults.caps, **values["caps"]})
        result = cls(**values)
        if result.comparing_threshold < 0:
            raise _error("comparing_threshold", "must not be negative")
        if result.ready_to_buy_threshold <= result.comparing_threshold:
            raise _error(
                "ready_to_buy_threshold",
                f"must be above comparing_threshold ({result.comparing_threshold}), "
                f"got {result.ready_to_buy_threshold}",
            )
        if result.advocacy_min_orders < result.retention_min_orders:
            raise _error(
                "advocacy_min_orders",
                f"must be at least retention_min_orders ({result.retention_min_orders})",
            )
        return result

    @staticmethod
    def _table(key: str, value: Any, negative: bool) -> dict[str, float]:
        if not isinstance(value, Mapping):
            raise _error(key, f"expected a table of signal = number, got {value!r}")
        table: dict[str, float] = {}
        for name, number in value.items():
            if name not in SIGNALS:
                raise _error(f"{key}.{name}", f"unknown signal (known: {', '.join(SIGNALS)})")
            if not _number(number) or (not negative and number < 0):
                kind = "a number" if negative else "a non-negative number"
                raise _error(f"{key}.{name}", f"expected {kind}, got {number!r}")
            table[name] = float(number)
        return table


def _profile_number(profile: Mapping[str, Any], name: str) -> float | None:
    value = profile.get(name)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and _number(value):
        return float(value)
    return None


def signal_values(context: DecisionContext) -> dict[str, float]:
    """The raw (uncapped) value of every signal for this decision."""
    stored = context.stored
    request = context.context
    page = request.page
    views = list(stored.session_views)  # before this page view is recorded
    if page.type == "product" and page.product_id:
        views.append(page.product_id)
    distinct = len(set(views))
    return {
        "product_views": float(distinct),
        "repeat_views": float(len(views) - distinct),
        "category_page": 1.0 if page.type == "category" else 0.0,
        "search_page": 1.0 if page.type == "search" else 0.0,
        "session_depth": float(stored.session_pages + 1),
        "cart": 1.0 if request.cart else 0.0,
        "cart_value": float(request.cart_value),
        "cart_page": 1.0 if page.type == "cart" else 0.0,
        "checkout_page": 1.0 if page.type == "checkout" else 0.0,
    }


def score_intent(
    settings: IntentSettings, values: Mapping[str, float], explain: bool
) -> tuple[float, str, list[dict[str, Any]]]:
    """The intent score, its tier, and each signal's contribution (they sum to the score;
    listed only when ``explain``, as building them costs more than the score itself)."""
    contributions: list[dict[str, Any]] = []
    score = 0.0
    for name, cap, weight in settings.terms:
        value = values.get(name, 0.0)
        if not value and not explain:
            continue  # contributes nothing; most signals are zero on any one page
        if cap is not None and value > cap:
            value = cap
        contribution = round(value * weight, 6)
        score += contribution
        if explain:
            entry: dict[str, Any] = {
                "signal": name,
                "value": value,
                "weight": weight,
                "contribution": contribution,
            }
            if cap is not None:
                entry["cap"] = cap
            contributions.append(entry)
    score = round(score, 6)
    if score >= settings.ready_to_buy_threshold:
        tier = READY_TO_BUY
    elif score >= settings.comparing_threshold:
        tier = COMPARING
    else:
        tier = BROWSING
    return score, tier, contributions


def journey_stage(
    settings: IntentSettings, context: DecisionContext, tier: str, values: Mapping[str, float]
) -> dict[str, str]:
    """The first matching stage rule, with the facts that made it match."""
    profile = context.stored.profile
    orders = int(_profile_number(profile, "orders") or 0)
    sentiment = _profile_number(profile, "sentiment")
    if orders >= settings.advocacy_min_orders:
        return {
            "stage": ADVOCACY,
            "rule": "advocacy_min_orders",
            "because": f"{orders} orders >= {settings.advocacy_min_orders}",
        }
    if (
        orders >= settings.retention_min_orders
        and sentiment is not None
        and sentiment >= settings.advocacy_min_sentiment
    ):
        return {
            "stage": ADVOCACY,
            "rule": "advocacy_min_sentiment",
            "because": f"customer ({orders} orders) with sentiment {sentiment:g} "
            f">= {settings.advocacy_min_sentiment:g}",
        }
    if orders >= settings.retention_min_orders:
        return {
            "stage": RETENTION,
            "rule": "retention_min_orders",
            "because": f"{orders} orders >= {settings.retention_min_orders}",
        }
    if tier == READY_TO_BUY:
        return {"stage": DECISION, "rule": "ready_to_buy", "because": "intent is ready_to_buy"}
    if settings.decision_on_cart and (values.get("cart") or values.get("checkout_page")):
        return {
            "stage": DECISION,
            "rule": "decision_on_cart",
            "because": "cart holds items" if values.get("cart") else "on a checkout page",
        }
    if tier == COMPARING:
        return {"stage": CONSIDERATION, "rule": "comparing", "because": "intent is comparing"}
    # Product views of earlier sessions count too: a returning visitor is considering.
    lifetime = max(
        len(context.stored.recent_views) + (1 if context.context.page.type == "product" else 0),
        int(_profile_number(profile, "product_views") or 0),
        int(values.get("product_views", 0)),
    )
    if lifetime >= settings.consideration_min_product_views:
        return {
            "stage": CONSIDERATION,
            "rule": "consideration_min_product_views",
            "because": f"{lifetime} product views >= {settings.consideration_min_product_views}",
        }
    return {"stage": AWARENESS, "rule": "default", "because": "no other rule matched"}
