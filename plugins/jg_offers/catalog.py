"""The offer catalog (``config/offers.toml``) and the plugin's settings, validated at startup.

Every value is checked when the gateway starts; a mistake stops the plugin with an
:class:`OfferCatalogError` whose message names the file and the key
(``offers[2] (vip-preview).eligibility.sentiment_min: expected a number, got 'high'``), so a
typo never turns into an offer that silently never shows.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from journeygate.config import ConfigError
from journeygate.events.schema import CONSENTS
from journeygate.model import CHANNELS

PLUGIN_NAME = "offers"

KINDS = (
    "discount",
    "free_shipping",
    "bundle",
    "vip_preview",
    "service_recovery",
    "referral",
    "content",
)
WHEN_NONE_ELIGIBLE = ("default", "hidden")
OFFER_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
SAFE_LINK = re.compile(r"^(/(?!/)|https?://)", re.IGNORECASE)
# Sentiment scores run from -1 (very negative) to 1 (very positive).
SENTIMENT_RANGE = (-1.0, 1.0)


class OfferCatalogError(ConfigError):
    """The offer catalog or the ``[plugin.offers]`` settings cannot be used; names the key."""


class _Table:
    """One TOML table being read: typed getters whose errors name ``where.key``, and a check
    that no key was left unread (a misspelt key is an error, not a silent default)."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, Mapping):
            raise OfferCatalogError(f"{where}: expected a table, got {data!r}")
        self.data = data
        self.where = where
        self.read: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, message: str) -> OfferCatalogError:
        return OfferCatalogError(f"{self.key(key)}: {message}")

    def get(self, key: str) -> Any:
        self.read.add(key)
        return self.data.get(key)

    def text(self, key: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.get(key)
        if value is None:
            if required:
                raise self.error(key, "required")
            return default
        if not isinstance(value, str) or (required and not value.strip()):
            raise self.error(key, f"expected a non-empty string, got {value!r}")
        return value

    def number(
        self, key: str, low: float = -math.inf, high: float = math.inf, default: float | None = None
    ) -> float | None:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise self.error(key, f"expected a number, got {value!r}")
        if not low <= value <= high:
            raise self.error(key, f"must be between {low:g} and {high:g}, got {value!r}")
        return float(value)

    def integer(self, key: str, minimum: int = 0, default: int | None = None) -> int | None:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {value!r}")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        return value

    def flag(self, key: str) -> bool:
        value = self.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def names(self, key: str, allowed: tuple[str, ...] | None = None) -> frozenset[str]:
        value = self.get(key)
        if value is None:
            return frozenset()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.error(key, f"expected a non-empty list of strings, got {value!r}")
        for index, name in enumerate(value):
            if not isinstance(name, str) or not name:
                raise self.error(f"{key}[{index}]", f"expected a non-empty string, got {name!r}")
            if allowed is not None and name not in allowed:
                raise self.error(f"{key}[{index}]", f"{name!r} is not one of {', '.join(allowed)}")
        return frozenset(value)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise self.error(unknown[0], "unknown key")


def _range(table: _Table, name: str, low: float, high: float) -> tuple[float | None, float | None]:
    """``NAME_min`` and ``NAME_max`` of a table, checked to be in order."""
    minimum = table.number(f"{name}_min", low, high)
    maximum = table.number(f"{name}_max", low, high)
    if minimum is not None and maximum is not None and minimum > maximum:
        raise table.error(f"{name}_max", f"below {name}_min ({minimum:g})")
    return minimum, maximum


@dataclass(frozen=True, slots=True)
class Eligibility:
    """Who an offer is for. Every rule that is set must pass; an unset rule is no constraint.

    Inputs a visitor does not have yet count as: stage, intent, persona and segments unknown
    (a rule on them fails), sentiment neutral (0.0), no orders, no consents, no triggers.
    """

    stages: frozenset[str] = frozenset()
    intents: frozenset[str] = frozenset()
    personas: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()
    sentiment_min: float | None = None
    sentiment_max: float | None = None
    cart_value_min: float | None = None
    cart_value_max: float | None = None
    orders_min: int | None = None
    orders_max: int | None = None
    consents: frozenset[str] = frozenset()
    triggers: frozenset[str] = frozenset()
    trigger_window_s: float = 3600.0

    @classmethod
    def read(cls, data: Any, where: str) -> Eligibility:
        table = _Table(data, where)
        sentiment = _range(table, "sentiment", *SENTIMENT_RANGE)
        cart_value = _range(table, "cart_value", 0.0, math.inf)
        orders_min = table.integer("orders_min")
        orders_max = table.integer("orders_max")
        if orders_min is not None and orders_max is not None and orders_min > orders_max:
            raise table.error("orders_max", f"below orders_min ({orders_min})")
        triggers = table.names("triggers")
        window = table.number("trigger_window_minutes", 0.001, 366 * 24 * 60, default=60.0)
        if "trigger_window_minutes" in table.data and not triggers:
            raise table.error("trigger_window_minutes", "set without triggers")
        eligibility = cls(
            stages=table.names("stages"),
            intents=table.names("intents"),
            personas=table.names("personas"),
            segments=table.names("segments"),
            channels=table.names("channels", CHANNELS),
            sentiment_min=sentiment[0],
            sentiment_max=sentiment[1],
            cart_value_min=cart_value[0],
            cart_value_max=cart_value[1],
            orders_min=orders_min,
            orders_max=orders_max,
            consents=table.names("consents", CONSENTS),
            triggers=triggers,
            trigger_window_s=(window or 60.0) * 60,
        )
        table.done()
        return eligibility


@dataclass(frozen=True, slots=True)
class Schedule:
    """When an offer runs: epoch seconds ``[start, end)`` and local hours ``[from, to)``
    (``from`` > ``to`` wraps past midnight)."""

    start: float | None = None
    end: float | None = None
    hours: tuple[int, int] | None = None

    @classmethod
    def read(cls, data: Any, where: str, zone: dt.tzinfo) -> Schedule:
        table = _Table(data, where)
        start = _moment(table, "start", zone, end_of_day=False)
        end = _moment(table, "end", zone, end_of_day=True)
        if start is not None and end is not None and end <= start:
            raise table.error("end", "must be after start")
        hours = table.get("hours")
        if hours is not None:
            valid = (
                isinstance(hours, list)
                and len(hours) == 2
                and all(isinstance(h, int) and not isinstance(h, bool) for h in hours)
                and all(0 <= h <= 24 for h in hours)
                and hours[0] != hours[1]
            )
            if not valid:
                raise table.error("hours", f"expected [from, to], whole hours 0-24, got {hours!r}")
        table.done()
        return cls(start=start, end=end, hours=(hours[0], hours[1]) if hours else None)


def _link(table: _Table, key: str) -> str | None:
    """A link the page may follow: a path on the site or an http(s) URL, never a script."""
    url = table.text(key)
    if url is not None and not SAFE_LINK.match(url):
        raise table.error(key, f"expected a path (/...) or an http(s) URL, got {url!r}")
    return url


def _moment(table: _Table, key: str, zone: dt.tzinfo, end_of_day: bool) -> float | None:
    """A TOML date (``end``: the whole day included), datetime or ISO string, as epoch
    seconds; times without an offset are in the plugin's ``timezone``."""
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise table.error(key, f"expected a date or date-time, got {value!r}") from None
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=zone)
    elif isinstance(value, dt.date):
        day = value + dt.timedelta(days=1) if end_of_day else value
        moment = dt.datetime.combine(day, dt.time(), zone)
    else:
        raise table.error(key, f"expected a date or date-time, got {value!r}")
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class Caps:
    """``budget``: total redemptions; ``per_visitor`` shows to one visitor per ``window_s``."""

    budget: int | None = None
    per_visitor: int | None = None
    window_s: float = 86400.0

    @classmethod
    def read(cls, data: Any, where: str) -> Caps:
        table = _Table(data, where)
        budget = table.integer("budget", minimum=1)
        per_visitor = table.integer("per_visitor", minimum=1)
        window_hours = table.number("window_hours", 0.001, 366 * 24)
        if window_hours is not None and per_visitor is None:
            raise table.error("window_hours", "set without per_visitor")
        table.done()
        return cls(budget, per_visitor, (window_hours or 24.0) * 3600)


@dataclass(frozen=True, slots=True)
class OfferSpec:
    """One offer of the catalog."""

    id: str
    kind: str
    title: str
    body: str = ""
    cta_label: str | None = None
    cta_url: str | None = None
    coupon: str | None = None
    priority: int = 0
    upsell: bool = False
    eligibility: Eligibility = field(default_factory=Eligibility)
    schedule: Schedule = field(default_factory=Schedule)
    caps: Caps = field(default_factory=Caps)


@dataclass(frozen=True, slots=True)
class OfferCatalog:
    """The offers in file order, and the rules every ``upsell`` offer must pass too."""

    offers: tuple[OfferSpec, ...]
    upsell_eligibility: Eligibility = field(default_factory=Eligibility)

    def by_id(self) -> dict[str, OfferSpec]:
        return {offer.id: offer for offer in self.offers}


def read_catalog(data: Mapping[str, Any], zone: dt.tzinfo) -> OfferCatalog:
    """Validate a parsed catalog."""
    top = _Table(data, "")
    upsell = Eligibility.read(top.get("upsell_eligibility") or {}, top.key("upsell_eligibility"))
    entries = top.get("offers")
    if not isinstance(entries, list):
        raise top.error("offers", "expected [[offers]] entries")
    offers: list[OfferSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        raw_id = entry.get("id") if isinstance(entry, Mapping) else None
        label = f"offers[{index}]" + (f" ({raw_id})" if isinstance(raw_id, str) else "")
        table = _Table(entry, top.key(label))
        offer_id = table.text("id", required=True)
        assert offer_id is not None
        if not OFFER_ID.match(offer_id):
            raise table.error("id", f"expected letters, digits, '.', '_' or '-', got {offer_id!r}")
        if offer_id in seen:
            raise table.error("id", f"duplicate offer id {offer_id!r}")
        seen.add(offer_id)
        kind = table.text("kind", required=True)
        if kind not in KINDS:
            raise table.error("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
        title = table.text("title", required=True)
        assert title is not None
        offers.append(
            OfferSpec(
                id=offer_id,
                kind=kind,
                title=title,
                body=table.text("body", default="") or "",
                cta_label=table.text("cta_label"),
                cta_url=_link(table, "cta_url"),
                coupon=table.text("coupon"),
                priority=table.integer("priority", minimum=-1_000_000, default=0) or 0,
                upsell=table.flag("upsell"),
                eligibility=Eligibility.read(
                    table.get("eligibility") or {}, table.key("eligibility")
                ),
                schedule=Schedule.read(table.get("schedule") or {}, table.key("schedule"), zone),
                caps=Caps.read(table.get("caps") or {}, table.key("caps")),
            )
        )
        table.done()
    top.done()
    return OfferCatalog(tuple(offers), upsell)


def load_catalog(path: Path, zone: dt.tzinfo) -> OfferCatalog:
    """Read and validate the catalog file at ``path``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OfferCatalogError(f"plugin.offers.catalog: file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise OfferCatalogError(f"{path}: invalid TOML: {exc}") from None
    try:
        return read_catalog(data, zone)
    except OfferCatalogError as exc:
        raise OfferCatalogError(f"{path}: {exc}") from None


@dataclass(frozen=True, slots=True)
class OffersSettings:
    """``[plugin.offers]``: where the catalog is and how selection behaves."""

    catalog: str = "config/offers.toml"
    when_none_eligible: str = "default"
    timezone: str = "UTC"
    zone: dt.tzinfo = dt.UTC
    budget_refresh_s: float = 5.0
    budget_ttl_days: int = 400
    redemption_events: frozenset[str] = frozenset({"Order Completed", "order", "Coupon Applied"})

    @classmethod
    def read(cls, settings: Mapping[str, Any]) -> OffersSettings:
        table = _Table(settings, f"plugin.{PLUGIN_NAME}")
        defaults = cls()
        when = table.text("when_none_eligible", default=defaults.when_none_eligible)
        if when not in WHEN_NONE_ELIGIBLE:
            raise table.error(
                "when_none_eligible", f"expected {' or '.join(WHEN_NONE_ELIGIBLE)}, got {when!r}"
            )
        timezone = table.text("timezone", default=defaults.timezone) or defaults.timezone
        try:
            zone = dt.UTC if timezone == "UTC" else zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise table.error("timezone", f"unknown time zone {timezone!r}") from None
        result = cls(
            catalog=table.text("catalog", default=defaults.catalog) or defaults.catalog,
            when_none_eligible=when,
            timezone=timezone,
            zone=zone,
            budget_refresh_s=table.number("budget_refresh_s", 0.01, 3600, default=5.0) or 5.0,
            budget_ttl_days=table.integer("budget_ttl_days", 1, default=400) or 400,
            redemption_events=table.names("redemption_events") or defaults.redemption_events,
        )
        table.done()
        return result
