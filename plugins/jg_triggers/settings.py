"""The trigger definitions (``config/triggers.toml``) and the guardrails, checked at startup.

``[plugin.triggers] file`` names the file. Every value is checked when the process starts; a
mistake stops the plugin with a :class:`TriggerConfigError` that names the file and the key
(``triggers.toml: triggers.cart_abandonment.delay_s: expected a number from 1 to 31536000,
got 'soon'``), so a typo never becomes a trigger that silently never fires.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
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

PLUGIN_NAME = "triggers"
DEFAULT_FILE = "config/triggers.toml"
NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
YEAR_S = 365 * 86400.0
DAY_S = 86400.0


class TriggerConfigError(ConfigError):
    """The trigger file or ``[plugin.triggers]`` cannot be used; the message names the key."""


def _plain(number: float) -> str:
    """A number as written in a config file: 31536000, not 3.1536e+07."""
    return str(int(number)) if float(number).is_integer() else repr(number)


class _Table:
    """One TOML table being read: typed getters whose errors name ``where.key``, and a check
    that no key was left unread (a misspelt key is an error, not a silent default)."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, Mapping):
            raise TriggerConfigError(f"{where}: expected a table, got {data!r}")
        self.data = data
        self.where = where
        self.read: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, message: str) -> TriggerConfigError:
        return TriggerConfigError(f"{self.key(key)}: {message}")

    def get(self, key: str) -> Any:
        self.read.add(key)
        return self.data.get(key)

    def table(self, key: str) -> _Table:
        value = self.get(key)
        return _Table({} if value is None else value, self.key(key))

    def text(self, key: str, default: str | None = None) -> str:
        value = self.get(key)
        if value is None:
            if default is None:
                raise self.error(key, "required")
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected a non-empty string, got {value!r}")
        return value

    def name(self, key: str, default: str | None = None) -> str:
        value = self.text(key, default)
        if not NAME.match(value):
            raise self.error(key, f"expected a lowercase name (a-z, 0-9, _), got {value!r}")
        return value

    def number(self, key: str, low: float, high: float, default: float) -> float:
        value = self.get(key)
        if value is None:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            raise self.error(
                key, f"expected a number from {_plain(low)} to {_plain(high)}, got {value!r}"
            )
        return float(value)

    def integer(self, key: str, low: int, high: int, default: int) -> int:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(key, f"expected an integer from {low} to {high}, got {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def texts(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, f"expected a list of non-empty strings, got {value!r}")
        return tuple(value)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise self.error(unknown[0], "unknown key")


# -- what each trigger type watches -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CartAbandonment:
    """Items in the cart and no checkout or order within ``delay_s`` of the last addition."""

    delay_s: float = 1800.0


@dataclass(frozen=True, slots=True)
class RepeatedProductInterest:
    """The same product viewed ``views`` times within ``window_s`` without buying it."""

    views: int = 3
    window_s: float = 7 * DAY_S


@dataclass(frozen=True, slots=True)
class LongDwell:
    """``threshold_s`` or more on a product page (``products``) or a page whose path matches
    ``paths`` (shell patterns, ``/pricing*``), measured like the profile's dwell time: until
    the visitor's next page event, within ``[events] session_gap_s``."""

    threshold_s: float = 120.0
    products: bool = True
    paths: tuple[str, ...] = ()

    def matches(self, path: str | None) -> bool:
        return path is not None and any(fnmatch.fnmatchcase(path, p) for p in self.paths)


@dataclass(frozen=True, slots=True)
class SearchNoResults:
    """A search whose result count (the first of ``count_properties`` the event carries) is
    zero."""

    count_properties: tuple[str, ...] = ("results", "result_count", "results_count")


DEFAULT_COUNT_PROPERTIES = SearchNoResults().count_properties


@dataclass(frozen=True, slots=True)
class SearchPattern:
    """A search whose query matches one of ``patterns`` (regular expressions)."""

    patterns: tuple[re.Pattern[str], ...] = ()

    def match(self, query: str) -> str | None:
        return next((p.pattern for p in self.patterns if p.search(query)), None)


@dataclass(frozen=True, slots=True)
class Inactivity:
    """No visit for ``delay_s`` after the visitor was active (``min_events`` events)."""

    delay_s: float = 30 * DAY_S
    min_events: int = 5


@dataclass(frozen=True, slots=True)
class PostPurchase:
    """``delay_s`` after each order."""

    delay_s: float = DAY_S


@dataclass(frozen=True, slots=True)
class HighValueInfrequent:
    """An order that leaves the customer's average order value at ``min_average_order_value``
    or more with fewer than ``max_orders_per_year`` orders a year: orders x 365 / days since
    the first order, at least 365 (a first order is one a year)."""

    min_average_order_value: float = 200.0
    max_orders_per_year: float = 2.0


@dataclass(frozen=True, slots=True)
class NegativeFeedback:
    """A feedback whose text the sentiment plugin labelled negative. Scoring runs in that
    plugin's own observer, so the label is checked ``delay_s`` after the feedback, and again
    every ``delay_s`` up to ``max_wait_s`` while the profile does not show it yet."""

    delay_s: float = 30.0
    max_wait_s: float = 600.0


Rule = (
    CartAbandonment
    | RepeatedProductInterest
    | LongDwell
    | SearchNoResults
    | SearchPattern
    | Inactivity
    | PostPurchase
    | HighValueInfrequent
    | NegativeFeedback
)
TYPES: Mapping[str, type[Any]] = {
    "cart_abandonment": CartAbandonment,
    "repeated_product_interest": RepeatedProductInterest,
    "long_dwell": LongDwell,
    "search_no_results": SearchNoResults,
    "search_pattern": SearchPattern,
    "inactivity": Inactivity,
    "post_purchase": PostPurchase,
    "high_value_infrequent": HighValueInfrequent,
    "negative_feedback": NegativeFeedback,
}
MAX_DELAY_S = YEAR_S
MIN_DELAY_S = 0.01  # tests and demos run on sub-second delays


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    """One configured trigger: what it watches (``rule``), where its action goes, and the
    per-trigger guardrails."""

    name: str
    type: str
    rule: Rule
    endpoint: str
    action: str  # the action type frequency caps count (``re_engagement``, ``cart_recovery``)
    marketing: bool  # marketing needs consent and waits out quiet hours
    consent: str
    debounce_s: float  # no second fire for one visitor within this time
    enabled: bool = True

    @property
    def delay_s(self) -> float:
        """How long after its event the trigger fires (0: at once)."""
        return float(getattr(self.rule, "delay_s", 0.0))


@dataclass(frozen=True, slots=True)
class Cap:
    """At most ``count`` actions of one type to one visitor within ``window_s``."""

    count: int
    window_s: float


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local times (``start`` to ``end``, may span midnight) when no marketing action goes
    out; one that comes due then is deferred to ``end``."""

    start: dt.time
    end: dt.time
    zone: dt.tzinfo

    def deferred_until(self, now: float) -> float | None:
        """The end of the quiet period ``now`` is in (epoch seconds), or None."""
        local = dt.datetime.fromtimestamp(now, self.zone)
        moment = local.time()
        if self.start <= self.end:
            quiet = self.start <= moment < self.end
        else:
            quiet = moment >= self.start or moment < self.end
        if not quiet:
            return None
        end_day = local.date()
        if self.start > self.end and moment >= self.start:
            end_day += dt.timedelta(days=1)
        end = dt.datetime.combine(end_day, self.end).replace(tzinfo=self.zone)
        return end.timestamp()


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """The durable timer loop (worker and embedded processes)."""

    shards: int = 8  # timer zsets, one Redis Cluster slot each
    poll_interval_s: float = 1.0  # how often due timers are claimed
    lease_s: float = 60.0  # a claimed timer not finished by then is claimed again
    batch: int = 200  # timers claimed per shard and poll
    max_timers_per_shard: int = 2_000_000  # past this, new timers are refused and logged


@dataclass(frozen=True)
class TriggerSettings:
    """Everything in the trigger file."""

    triggers: tuple[TriggerSpec, ...] = ()
    caps: Mapping[str, Cap] = field(default_factory=dict)
    quiet_hours: QuietHours | None = None
    scheduler: SchedulerSettings = SchedulerSettings()
    state_ttl_s: float = 45 * DAY_S  # a visitor's trigger state, refreshed by its events
    max_event_age_s: float = DAY_S  # older events (replays of old data) update state only
    log_maxlen: int = 100_000  # fired triggers kept in the log stream (MAXLEN ~)
    fires_kept: int = 50  # recent fires kept per visitor for caps and debounce

    @property
    def active(self) -> tuple[TriggerSpec, ...]:
        return tuple(spec for spec in self.triggers if spec.enabled)

    def by_name(self) -> dict[str, TriggerSpec]:
        return {spec.name: spec for spec in self.triggers}

    @property
    def history_s(self) -> float:
        """How long a fire must be remembered: the longest cap window or debounce."""
        windows = [cap.window_s for cap in self.caps.values()]
        windows += [spec.debounce_s for spec in self.triggers]
        return max(windows, default=0.0)


def _clock_time(table: _Table, key: str) -> dt.time:
    value = table.text(key)
    try:
        return dt.time.fromisoformat(value)
    except ValueError:
        raise table.error(key, f"expected a local time like '21:00', got {value!r}") from None


def _zone(table: _Table) -> dt.tzinfo:
    name = table.text("timezone", "UTC")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise table.error("timezone", f"unknown time zone {name!r}") from None


def _rule(kind: str, table: _Table) -> Rule:
    delay = (MIN_DELAY_S, MAX_DELAY_S)
    if kind == "cart_abandonment":
        return CartAbandonment(table.number("delay_s", *delay, default=1800.0))
    if kind == "repeated_product_interest":
        return RepeatedProductInterest(
            views=table.integer("views", 2, 1000, default=3),
            window_s=table.number("window_s", MIN_DELAY_S, MAX_DELAY_S, default=7 * DAY_S),
        )
    if kind == "long_dwell":
        paths = table.texts("paths")
        for index, pattern in enumerate(paths):
            if not pattern.startswith(("/", "*")):
                raise table.error(f"paths[{index}]", f"expected a path pattern, got {pattern!r}")
        rule = LongDwell(
            threshold_s=table.number("threshold_s", 1.0, DAY_S, default=120.0),
            products=table.flag("products", True),
            paths=paths,
        )
        if not rule.products and not rule.paths:
            raise table.error("paths", "with products = false, name the pages to watch")
        return rule
    if kind == "search_no_results":
        return SearchNoResults(table.texts("count_properties", DEFAULT_COUNT_PROPERTIES))
    if kind == "search_pattern":
        patterns = []
        for index, text in enumerate(table.texts("patterns")):
            try:
                patterns.append(re.compile(text, re.IGNORECASE))
            except re.error as exc:
                message = f"not a regular expression: {exc}"
                raise table.error(f"patterns[{index}]", message) from None
        if not patterns:
            raise table.error("patterns", "required: the queries to react to")
        return SearchPattern(tuple(patterns))
    if kind == "inactivity":
        return Inactivity(
            delay_s=table.number("delay_s", *delay, default=30 * DAY_S),
            min_events=table.integer("min_events", 1, 1_000_000, default=5),
        )
    if kind == "post_purchase":
        return PostPurchase(table.number("delay_s", *delay, default=DAY_S))
    if kind == "high_value_infrequent":
        return HighValueInfrequent(
            min_average_order_value=table.number(
                "min_average_order_value", 0.0, 1e9, default=200.0
            ),
            max_orders_per_year=table.number("max_orders_per_year", 0.01, 365.0, default=2.0),
        )
    feedback = NegativeFeedback(
        delay_s=table.number("delay_s", 0.01, DAY_S, default=30.0),
        max_wait_s=table.number("max_wait_s", 0.01, 7 * DAY_S, default=600.0),
    )
    if feedback.max_wait_s < feedback.delay_s:
        raise table.error("max_wait_s", "must be at least delay_s")
    return feedback


def _trigger(name: str, data: Any, where: str) -> TriggerSpec:
    if not NAME.match(name):
        raise TriggerConfigError(f"{where}: expected a lowercase trigger name, got {name!r}")
    table = _Table(data, where)
    kind = table.text("type", name)
    if kind not in TYPES:
        raise table.error("type", f"expected one of {', '.join(TYPES)}, got {kind!r}")
    consent = table.text("consent", "marketing_email")
    if consent not in CONSENTS:
        raise table.error("consent", f"expected one of {', '.join(CONSENTS)}, got {consent!r}")
    spec = TriggerSpec(
        name=name,
        type=kind,
        enabled=table.flag("enabled", True),
        endpoint=table.text("endpoint"),
        action=table.name("action", name),
        marketing=table.flag("marketing", True),
        consent=consent,
        debounce_s=table.number("debounce_s", 0.0, MAX_DELAY_S, default=0.0),
        rule=_rule(kind, table),
    )
    table.done()
    return spec


def read_settings(data: Mapping[str, Any], where: str = "") -> TriggerSettings:
    """The settings of a parsed trigger file; errors name ``where`` and the key."""
    top = _Table(data, where)
    zone = _zone(top)
    quiet_table = top.get("quiet_hours")
    quiet = None
    if quiet_table is not None:
        table = top.table("quiet_hours")
        quiet = QuietHours(_clock_time(table, "start"), _clock_time(table, "end"), zone)
        table.done()
        if quiet.start == quiet.end:
            raise table.error("end", "equals start: quiet hours would be empty")
    caps: dict[str, Cap] = {}
    cap_tables = top.table("caps")
    for action in cap_tables.data:
        table = cap_tables.table(action)
        if not NAME.match(action):
            raise TriggerConfigError(f"{table.where}: expected a lowercase action name")
        caps[action] = Cap(
            count=table.integer("count", 1, 1000, default=1),
            window_s=table.number("window_s", 1.0, MAX_DELAY_S, default=DAY_S),
        )
        table.done()
    cap_tables.done()
    sched = top.table("scheduler")
    scheduler = SchedulerSettings(
        shards=sched.integer("shards", 1, 1024, default=8),
        poll_interval_s=sched.number("poll_interval_ms", 10, 60_000, default=1000.0) / 1000,
        lease_s=sched.number("lease_s", 0.1, 3600.0, default=60.0),
        batch=sched.integer("batch", 1, 10_000, default=200),
        max_timers_per_shard=sched.integer(
            "max_timers_per_shard", 1, 100_000_000, default=2_000_000
        ),
    )
    sched.done()
    trigger_tables = top.table("triggers")
    triggers = tuple(
        _trigger(name, value, trigger_tables.key(name))
        for name, value in trigger_tables.data.items()
    )
    trigger_tables.read.update(trigger_tables.data)
    trigger_tables.done()
    settings = TriggerSettings(
        triggers=triggers,
        caps=caps,
        quiet_hours=quiet,
        scheduler=scheduler,
        state_ttl_s=top.number("state_ttl_s", 60.0, 2 * YEAR_S, default=45 * DAY_S),
        max_event_age_s=top.number("max_event_age_s", 1.0, 10 * YEAR_S, default=DAY_S),
        log_maxlen=top.integer("log_maxlen", 100, 100_000_000, default=100_000),
        fires_kept=top.integer("fires_kept", 1, 10_000, default=50),
    )
    top.done()
    windows = [spec.delay_s for spec in triggers]
    windows += [
        spec.rule.window_s for spec in triggers if isinstance(spec.rule, RepeatedProductInterest)
    ]
    longest = max(windows, default=0.0)
    if settings.state_ttl_s <= longest:
        raise top.error(
            "state_ttl_s",
            f"must be longer than the longest delay or window ({_plain(longest)} s): "
            "a timer needs its visitor's state when it fires",
        )
    unknown_caps = sorted(set(caps) - {spec.action for spec in triggers})
    if unknown_caps:
        raise top.error(f"caps.{unknown_caps[0]}", "no trigger has this action")
    return settings


def load_settings(path: Path) -> TriggerSettings:
    """Read and check a trigger file; errors name the file and the key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TriggerConfigError(f"{path}: no such trigger file") from None
    except tomllib.TOMLDecodeError as exc:
        raise TriggerConfigError(f"{path.name}: not valid TOML: {exc}") from None
    try:
        return read_settings(data)
    except TriggerConfigError as exc:
        raise TriggerConfigError(f"{path.name}: {exc}") from None


@dataclass(frozen=True, slots=True)
class PluginSettings:
    """``[plugin.triggers]`` in journeygate.toml."""

    file: str = DEFAULT_FILE

    @classmethod
    def read(cls, settings: Mapping[str, Any]) -> PluginSettings:
        table = _Table(settings, f"plugin.{PLUGIN_NAME}")
        found = cls(file=table.text("file", DEFAULT_FILE))
        table.done()
        return found
