"""Turns untrusted JSON into typed request objects, naming the exact field that is wrong.

Validation is hand-written rather than schema-driven because it runs on every request: a
few ``isinstance`` checks cost microseconds, and each error says ``slots[0].limit``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from journeygate.errors import (
    InvalidRequest,
    UnknownPlugin,
    UnknownSlotKind,
    UnknownStrategy,
    UnknownTemplate,
)
from journeygate.model import (
    CHANNELS,
    EMPTY,
    IDENTIFIER,
    PAGE_TYPES,
    SLOT_KINDS,
    CartItem,
    DecideRequest,
    PageContext,
    RequestContext,
    SlotRequest,
)

SLOT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TEXT = 2048
MAX_CART_ITEMS = 100
MAX_QUANTITY = 10_000
SLOT_CACHE_SIZE = 1024
SLOT_KEY_MAX = 512


@dataclass(frozen=True)
class Limits:
    """What the running gateway accepts; built from config and the started plugins."""

    max_slots: int
    max_limit: int
    default_limit: int
    default_strategy: str
    strategies: Collection[str]
    plugins: Collection[str]
    has_template: Callable[[str], bool]
    # Slots already validated, by their exact JSON (see _cached_slot).
    slot_cache: dict[bytes, SlotRequest] = field(default_factory=dict, compare=False, repr=False)


def _object(value: Any, field: str) -> Mapping[str, Any]:
    # JSON objects arrive as dicts: the exact type test skips the slower ABC check.
    if type(value) is not dict and not isinstance(value, Mapping):
        raise InvalidRequest(f"{field or 'body'} must be an object", field or None)
    return value


def _text(
    data: Mapping[str, Any], key: str, field: str, required: bool = False, max_len: int = MAX_TEXT
) -> str | None:
    value = data.get(key)
    if type(value) is str and len(value) <= max_len:  # the usual case, tested first
        return value
    if value is None:
        if required:
            raise InvalidRequest(f"{field} is required", field)
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a string, got {_type(value)}", field)
    if len(value) > max_len:
        raise InvalidRequest(f"{field} is longer than {max_len} characters", field)
    return value


def _identifier(data: Mapping[str, Any], key: str, field: str, required: bool) -> str | None:
    value = data.get(key)
    if type(value) is str and IDENTIFIER.match(value):  # the usual case, tested first
        return value
    value = _text(data, key, field, required)
    if value is not None and not IDENTIFIER.match(value):
        raise InvalidRequest(
            f"{field} must be 1-128 characters of letters, digits and . _ : @ + -", field
        )
    return value


def _choice(
    data: Mapping[str, Any], key: str, field: str, choices: tuple[str, ...], default: str
) -> str:
    value = _text(data, key, field)
    if value is None:
        return default
    if value not in choices:
        raise InvalidRequest(f"{field} must be one of {', '.join(choices)}; got {value!r}", field)
    return value


def _integer(
    data: Mapping[str, Any], key: str, field: str, default: int, low: int, high: int
) -> int:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{field} must be an integer, got {_type(value)}", field)
    if not low <= value <= high:
        raise InvalidRequest(f"{field} must be between {low} and {high}, got {value}", field)
    return value


def _type(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _cart(value: Any, field: str) -> tuple[CartItem, ...]:
    if value is None:
        return ()
    cart = _object(value, field)
    items = cart.get("items", [])
    if not isinstance(items, list):
        raise InvalidRequest(
            f"{field}.items must be an array, got {_type(items)}", f"{field}.items"
        )
    if len(items) > MAX_CART_ITEMS:
        raise InvalidRequest(
            f"{field}.items has more than {MAX_CART_ITEMS} items", f"{field}.items"
        )
    parsed = []
    for index, raw in enumerate(items):
        # The usual item, checked inline: a product id, a price and a quantity of plain types.
        if type(raw) is dict:
            product_id = raw.get("product_id")
            price = raw.get("price")
            quantity = raw.get("quantity", 1)
            if (
                type(product_id) is str
                and 0 < len(product_id) <= 64
                and (
                    price is None
                    or ((type(price) is float or type(price) is int) and 0 <= price < math.inf)
                )
                and type(quantity) is int
                and 1 <= quantity <= MAX_QUANTITY
            ):
                parsed.append(
                    CartItem(product_id, quantity, None if price is None else float(price))
                )
                continue
        parsed.append(_cart_item(raw, f"{field}.items[{index}]"))
    return tuple(parsed)


def _cart_item(raw: Any, where: str) -> CartItem:
    item = _object(raw, where)
    product_id = _text(item, "product_id", f"{where}.product_id", required=True, max_len=64)
    price = item.get("price")
    if price is not None and (
        isinstance(price, bool)
        or not isinstance(price, int | float)
        or not math.isfinite(price)
        or price < 0
    ):
        raise InvalidRequest(f"{where}.price must be a non-negative number", f"{where}.price")
    return CartItem(
        product_id=product_id or "",
        quantity=_integer(item, "quantity", f"{where}.quantity", 1, 1, MAX_QUANTITY),
        price=float(price) if price is not None else None,
    )


def _texts(
    data: Mapping[str, Any], where: str, fields: tuple[tuple[str, int], ...]
) -> list[str | None]:
    """Several optional text fields of one object, checked in one pass: each is usually
    absent or a short enough string; any other value goes through :func:`_text`, which
    names the field it rejects."""
    values = []
    for key, max_len in fields:
        value = data.get(key)
        if value is not None and (type(value) is not str or len(value) > max_len):
            value = _text(data, key, f"{where}.{key}", max_len=max_len)
        values.append(value)
    return values


PAGE_TEXT_FIELDS = (("url", MAX_TEXT), ("product_id", 64), ("category", 128), ("query", 512))
CONTEXT_TEXT_FIELDS = (("device", 64), ("locale", 35), ("referrer", MAX_TEXT))


def _context(value: Any) -> RequestContext:
    if value is None:
        return RequestContext()
    data = _object(value, "context")
    page_data = _object(data.get("page") or {}, "context.page")
    url, product_id, category, query = _texts(page_data, "context.page", PAGE_TEXT_FIELDS)
    page = PageContext(
        _choice(page_data, "type", "context.page.type", PAGE_TYPES, "other"),
        url,
        product_id,
        category,
        query,
    )
    utm: Mapping[str, str] = EMPTY
    if utm_data := data.get("utm"):
        utm_data = _object(utm_data, "context.utm")
        utm = MappingProxyType(
            {key: _text(utm_data, key, f"context.utm.{key}", max_len=256) or "" for key in utm_data}
        )
    device, locale, referrer = _texts(data, "context", CONTEXT_TEXT_FIELDS)
    return RequestContext(
        page,
        _cart(data.get("cart"), "context.cart"),
        _choice(data, "channel", "context.channel", CHANNELS, "web"),
        device,
        locale,
        referrer,
        utm,
    )


def _slot(value: Any, index: int, limits: Limits) -> SlotRequest:
    where = f"slots[{index}]"
    data = _object(value, where)
    slot_id = _text(data, "id", f"{where}.id", required=True, max_len=64) or ""
    if not SLOT_ID.match(slot_id):
        raise InvalidRequest(f"{where}.id must be 1-64 letters, digits, '-' or '_'", f"{where}.id")
    kind = _text(data, "kind", f"{where}.kind", required=True) or ""
    if kind not in SLOT_KINDS:
        raise UnknownSlotKind(
            f"{where}.kind {kind!r} is not one of {', '.join(SLOT_KINDS)}", f"{where}.kind"
        )
    strategy = _text(data, "strategy", f"{where}.strategy", max_len=64)
    if kind == "recommendations":
        strategy = strategy or limits.default_strategy
        if strategy not in limits.strategies:
            known = ", ".join(sorted(limits.strategies))
            raise UnknownStrategy(
                f"{where}.strategy {strategy!r} is not served by any plugin (known: {known})",
                f"{where}.strategy",
            )
    template = _text(data, "template", f"{where}.template", max_len=64)
    if template is not None and not limits.has_template(template):
        raise UnknownTemplate(f"{where}.template {template!r} does not exist", f"{where}.template")
    plugin = _text(data, "plugin", f"{where}.plugin", max_len=64)
    if plugin is not None and plugin not in limits.plugins:
        raise UnknownPlugin(f"{where}.plugin {plugin!r} is not a running plugin", f"{where}.plugin")
    params = _object(data.get("params") or {}, f"{where}.params")
    return SlotRequest(
        id=slot_id,
        kind=kind,
        strategy=strategy,
        limit=_integer(data, "limit", f"{where}.limit", limits.default_limit, 1, limits.max_limit),
        template=template,
        plugin=plugin,
        params=MappingProxyType(dict(params)) if params else EMPTY,
    )


def _cached_slot(value: Any, index: int, limits: Limits) -> SlotRequest:
    """``_slot``, answered from ``limits.slot_cache`` for a slot sent before: a storefront
    sends the same few slot definitions with every page. The key is the slot's JSON, which
    keeps ``8``, ``8.0`` and ``true`` apart (equal in Python); a slot whose JSON is longer
    than ``SLOT_KEY_MAX`` bytes is validated every time, so the cache stays small."""
    try:
        key = orjson.dumps(value)
    except TypeError:
        return _slot(value, index, limits)
    cache = limits.slot_cache
    slot = cache.get(key)
    if slot is None:
        slot = _slot(value, index, limits)
        if len(key) <= SLOT_KEY_MAX:
            if len(cache) >= SLOT_CACHE_SIZE:
                del cache[next(iter(cache))]  # the oldest entry
            cache[key] = slot
    return slot


def parse_decide_request(body: Any, limits: Limits) -> DecideRequest:
    """Validate a ``POST /v1/decide`` body; raises an :class:`InvalidRequest` naming the field."""
    data = _object(body, "")
    visitor_id = _identifier(data, "visitor_id", "visitor_id", required=True) or ""
    session_id = _identifier(data, "session_id", "session_id", required=False)
    slots = data.get("slots")
    if not isinstance(slots, list) or not slots:
        raise InvalidRequest("slots must be a non-empty array", "slots")
    if len(slots) > limits.max_slots:
        raise InvalidRequest(f"slots has more than {limits.max_slots} entries", "slots")
    parsed_slots = []
    seen: set[str] = set()
    for index, raw_slot in enumerate(slots):
        slot = _cached_slot(raw_slot, index, limits)
        if slot.id in seen:
            raise InvalidRequest(f"slot id {slot.id!r} is used twice", f"slots[{index}].id")
        seen.add(slot.id)
        parsed_slots.append(slot)
    explain = data.get("explain", False)
    if not isinstance(explain, bool):
        raise InvalidRequest(f"explain must be a boolean, got {_type(explain)}", "explain")
    return DecideRequest(
        visitor_id=visitor_id,
        session_id=session_id,
        context=_context(data.get("context")),
        slots=tuple(parsed_slots),
        explain=explain,
    )
