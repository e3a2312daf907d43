"""Rule-based segments: named conditions on a visitor's purchase figures, from config.

A rule is data, never code::

    [[plugin.personas.segments]]
    name = "high-value-infrequent"
    when = { average_order_value = { gt = 500 }, orders_per_year = { lt = 2 } }

A segment matches when every condition holds. A field takes one or more operators (``gt``,
``gte``, ``lt``, ``lte``, ``eq``, ``ne`` with a number; ``in``, ``not_in`` with a list), all
of which must hold; ``persona`` compares strings (``eq``, ``ne``, ``in``, ``not_in``). A
condition on a figure the visitor does not have (no orders yet, no persona) does not hold.
Rules are checked at startup and an error names the key
(``plugin.personas.segments[0].when.aov: unknown field``). Rules are evaluated in order: the
first match is the visitor's ``segment``, and every match is listed.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

#: fields a rule may test -> what they are (see jg_personas.features)
FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "orders": "orders placed",
        "refunds": "refund (cancellation) invoices",
        "revenue": "total order value",
        "average_order_value": "revenue / orders",
        "orders_per_year": "orders per year since the first order (over at least 30 days)",
        "days_since_last_order": "days since the last order",
        "tenure_days": "days since the first order",
        "return_rate": "refunds / (orders + refunds)",
        "persona": "the visitor's persona id (stored, or nearest centroid)",
    }
)
STRING_FIELDS = frozenset({"persona"})

COMPARISONS: Mapping[str, Callable[[Any, Any], bool]] = MappingProxyType(
    {
        "gt": operator.gt,
        "gte": operator.ge,
        "lt": operator.lt,
        "lte": operator.le,
        "eq": operator.eq,
        "ne": operator.ne,
        "in": lambda value, options: value in options,
        "not_in": lambda value, options: value not in options,
    }
)
STRING_OPERATORS = frozenset({"eq", "ne", "in", "not_in"})
LIST_OPERATORS = frozenset({"in", "not_in"})
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

#: the segments used when ``[plugin.personas]`` has no ``segments`` key
DEFAULT_SEGMENTS: tuple[Mapping[str, Any], ...] = (
    {
        "name": "high-value-infrequent",
        "when": {"average_order_value": {"gt": 500}, "orders_per_year": {"lt": 2}},
    },
    {
        "name": "lapsing-regular",
        "when": {"orders": {"gte": 3}, "days_since_last_order": {"gt": 90}},
    },
    {"name": "first-time-buyer", "when": {"orders": {"eq": 1}}},
)


@dataclass(frozen=True, slots=True)
class Condition:
    field: str
    op: str
    value: Any

    def holds(self, values: Mapping[str, Any]) -> bool:
        actual = values.get(self.field)
        return actual is not None and COMPARISONS[self.op](actual, self.value)


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    conditions: tuple[Condition, ...]

    def matches(self, values: Mapping[str, Any]) -> bool:
        for condition in self.conditions:  # noqa: SIM110 -- a loop: all() over a generator cost more
            if not condition.holds(values):
                return False
        return True


def matching(segments: Sequence[Segment], values: Mapping[str, Any]) -> list[str]:
    """The names of the segments ``values`` matches, in rule order."""
    return [segment.name for segment in segments if segment.matches(values)]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _operand(where: str, field: str, op: str, value: Any) -> Any:
    if op not in COMPARISONS:
        raise ValueError(f"{where}: unknown operator; expected one of {', '.join(COMPARISONS)}")
    string = field in STRING_FIELDS
    if string and op not in STRING_OPERATORS:
        raise ValueError(f"{where}: {field} is a string; use eq, ne, in or not_in")
    kind, check = ("a string", str) if string else ("a number", None)

    def valid(item: Any) -> bool:
        return isinstance(item, str) if check is str else _is_number(item)

    if op in LIST_OPERATORS:
        if not isinstance(value, list | tuple) or not value or not all(map(valid, value)):
            raise ValueError(f"{where}: expected a non-empty list of {kind}s, got {value!r}")
        return frozenset(value)
    if not valid(value):
        raise ValueError(f"{where}: expected {kind}, got {value!r}")
    return value


def parse_segments(raw: Any, where: str) -> tuple[Segment, ...]:
    """Check and compile the ``segments`` setting (a list of tables); errors name the key."""
    if not isinstance(raw, list | tuple):
        raise ValueError(f"{where}: expected a list of segment tables, got {type(raw).__name__}")
    segments: list[Segment] = []
    for index, rule in enumerate(raw):
        here = f"{where}[{index}]"
        if not isinstance(rule, Mapping):
            raise ValueError(f"{here}: expected a table with name and when")
        unknown = sorted(set(rule) - {"name", "when"})
        if unknown:
            raise ValueError(f"{here}.{unknown[0]}: unknown key; expected name and when")
        name = rule.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise ValueError(
                f"{here}.name: expected lower-case letters, digits, - and _, got {name!r}"
            )
        if name in {segment.name for segment in segments}:
            raise ValueError(f"{here}.name: segment {name!r} is defined twice")
        when = rule.get("when")
        if not isinstance(when, Mapping) or not when:
            raise ValueError(
                f"{here}.when: expected a table of conditions, e.g. {{orders = {{gte = 2}}}}"
            )
        conditions: list[Condition] = []
        for field, tests in when.items():
            at = f"{here}.when.{field}"
            if field not in FIELDS:
                raise ValueError(f"{at}: unknown field; expected one of {', '.join(FIELDS)}")
            if not isinstance(tests, Mapping) or not tests:
                raise ValueError(f"{at}: expected a table of operators, e.g. {{gt = 500}}")
            conditions += [
                Condition(field, op, _operand(f"{at}.{op}", field, op, value))
                for op, value in tests.items()
            ]
        segments.append(Segment(name, tuple(conditions)))
    return tuple(segments)
