"""Event schema: journeygate's own events and Segment Tracking API messages, validated and
normalized into one compact internal shape.

Every accepted event becomes a plain dict (cheap to serialize into a stream entry):

====  ==================================================================================
key   meaning
====  ==================================================================================
id    message id (the client's ``message_id``/``messageId``, else generated); applied once
n     the event name as sent (``Order Completed``, ``product_view``, ``page``)
k     the internal kind (:data:`KINDS`), which the store understands
v     the profile the event belongs to: the user id when known, else the anonymous id
u     user id (a known customer), when given
a     anonymous id (``visitor_id``/``anonymous_id``/``anonymousId``, or alias ``previousId``)
s     session id, when the client manages sessions (else sessions are derived by time)
t     event time, epoch seconds (client clock, corrected by ``sent_at`` when given)
r     time the gateway received it, epoch seconds
c     channel: web, app, email, store or support
x     normalized fields the store applies: ``pid`` ``cat`` ``price`` ``qty`` ``q`` ``oid``
      ``rev`` ``items`` (``[{pid, cat, price, qty}]``) ``consents`` ``path``; feedback:
      ``type`` ``rating`` ``pid`` ``oid`` (its ``text`` is checked and kept in ``p`` only)
p     the original properties (identify: traits), for plugins observing events
====  ==================================================================================

Validation is hand-written for speed (it runs for every event) and reports the exact field
of the batch that is wrong, so one bad event never rejects the others.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from journeygate.model import CHANNELS, IDENTIFIER

MAX_TEXT = 512
MAX_ITEMS = 100
MAX_QUANTITY = 10_000
# Feedback (``POST /v1/feedback`` or a ``Feedback Submitted`` event): free text, long enough
# for a detailed review or support message, within one event's ``events.max_event_bytes``.
FEEDBACK_KIND = "feedback"
FEEDBACK_TYPES = ("review", "survey", "nps", "support", "other")
MAX_FEEDBACK_TEXT = 8000
MAX_RATING = 10

KINDS = (
    "page_view",
    "screen_view",
    "product_view",
    "product_click",
    "product_list_view",
    "search",
    "cart_add",
    "cart_remove",
    "cart_view",
    "checkout_start",
    "checkout_step",
    "order",
    "order_update",
    "order_refund",
    "order_cancel",
    "coupon",
    "promotion_view",
    "promotion_click",
    "block_click",
    "wishlist_add",
    "wishlist_remove",
    "share",
    "review",
    "consent",
    "identify",
    "alias",
    "feedback",
    "custom",
)
CONSENTS = ("marketing_email", "marketing_sms", "personalization")
CONSENT_ALIASES = {"email": "marketing_email", "sms": "marketing_sms"}

# Segment's e-commerce spec (v2) event names and the kind each one maps to.
SEGMENT_EVENTS: Mapping[str, str] = {
    "Products Searched": "search",
    "Product List Viewed": "product_list_view",
    "Product List Filtered": "product_list_view",
    "Product Clicked": "product_click",
    "Product Viewed": "product_view",
    "Product Added": "cart_add",
    "Product Removed": "cart_remove",
    "Cart Viewed": "cart_view",
    "Checkout Started": "checkout_start",
    "Checkout Step Viewed": "checkout_step",
    "Checkout Step Completed": "checkout_step",
    "Payment Info Entered": "checkout_step",
    "Order Completed": "order",
    "Order Updated": "order_update",
    "Order Refunded": "order_refund",
    "Order Cancelled": "order_cancel",
    "Coupon Entered": "coupon",
    "Coupon Applied": "coupon",
    "Coupon Denied": "coupon",
    "Coupon Removed": "coupon",
    "Promotion Viewed": "promotion_view",
    "Promotion Clicked": "promotion_click",
    # A click on a journeygate block: properties decision_id and slot, from the block's
    # tracking data, credit the click to the decision (and its experiment arm).
    "Block Clicked": "block_click",
    "Product Added to Wishlist": "wishlist_add",
    "Product Removed from Wishlist": "wishlist_remove",
    "Wishlist Product Added to Cart": "cart_add",
    "Product Shared": "share",
    "Cart Shared": "share",
    "Product Reviewed": "review",
    "Feedback Submitted": "feedback",
}
SEGMENT_TYPES = ("track", "identify", "page", "screen", "alias")
SEGMENT_CHANNELS = {"browser": "web", "mobile": "app", "server": "web"}
PRODUCT_KINDS = frozenset(
    {"product_view", "product_click", "cart_add", "cart_remove", "wishlist_add", "review"}
)
CART_KINDS = frozenset({"cart_view", "checkout_start", "checkout_step", "order", "order_update"})
ORDER_KINDS = frozenset({"order", "order_update", "order_refund", "order_cancel"})
_KIND_SET = frozenset(KINDS)


class EventError(ValueError):
    """One event is invalid; ``field`` names it within the request body."""

    def __init__(self, field: str, code: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.code = code
        self.message = message

    def as_json(self, index: int) -> dict[str, Any]:
        return {"index": index, "field": self.field, "code": self.code, "message": self.message}


def kind_of(name: str) -> str:
    """The internal kind of an event name: a kind itself, a Segment name, or ``custom``."""
    if name in _KIND_SET:
        return name
    return SEGMENT_EVENTS.get(name, "custom")


def _type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(value), "object" if isinstance(value, Mapping) else type(value).__name__
    )


def _text(value: Any, field: str, max_len: int = MAX_TEXT) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise EventError(field, "invalid_type", f"{field} must be a string, got {_type(value)}")
    text = value if isinstance(value, str) else str(value)
    if len(text) > max_len:
        raise EventError(field, "too_long", f"{field} is longer than {max_len} characters")
    return text or None


def _identifier(value: Any, field: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise EventError(
            field,
            "invalid_id",
            f"{field} must be 1-128 characters of letters, digits and . _ : @ + -",
        )
    return value


def _number(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise EventError(field, "invalid_number", f"{field} must be a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EventError(field, "invalid_number", f"{field} must be a number")
    if value < 0:
        raise EventError(field, "invalid_number", f"{field} must not be negative")
    return float(value)


def _quantity(value: Any, field: str) -> int:
    if value is None:
        return 1
    number = _number(value, field)
    if number is None or number != int(number) or not 1 <= number <= MAX_QUANTITY:
        raise EventError(
            field, "invalid_quantity", f"{field} must be an integer from 1 to {MAX_QUANTITY}"
        )
    return int(number)


def parse_time(value: Any, field: str) -> float | None:
    """ISO 8601 (``Z`` or an offset; no offset means UTC) or epoch seconds."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise EventError(
                field, "invalid_timestamp", f"{field} must be ISO 8601 or epoch seconds"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        if not 0 < value < 1e11:
            raise EventError(
                field, "invalid_timestamp", f"{field} must be epoch seconds, not milliseconds"
            )
        return float(value)
    raise EventError(field, "invalid_timestamp", f"{field} must be ISO 8601 or epoch seconds")


def _item(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise EventError(field, "invalid_type", f"{field} must be an object")
    pid = _text(
        value.get("product_id") or value.get("sku") or value.get("id"), f"{field}.product_id", 64
    )
    if pid is None:
        raise EventError(f"{field}.product_id", "missing_field", f"{field}.product_id is required")
    item: dict[str, Any] = {
        "pid": pid,
        "qty": _quantity(value.get("quantity"), f"{field}.quantity"),
    }
    category = _text(value.get("category"), f"{field}.category", 128)
    if category:
        item["cat"] = category
    price = _number(value.get("price"), f"{field}.price")
    if price is not None:
        item["price"] = price
    return item


def _consents(value: Any, field: str) -> dict[str, bool] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise EventError(field, "invalid_type", f"{field} must be an object")
    consents: dict[str, bool] = {}
    for raw_name, granted in value.items():
        name = CONSENT_ALIASES.get(raw_name, raw_name)
        if name not in CONSENTS:
            raise EventError(
                f"{field}.{raw_name}",
                "unknown_consent",
                f"{field}.{raw_name} is not one of {', '.join(CONSENTS)}",
            )
        if not isinstance(granted, bool):
            raise EventError(f"{field}.{raw_name}", "invalid_type", "a consent is true or false")
        consents[name] = granted
    return consents or None


def normalize(kind: str, props: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The fields of ``props`` the store applies for ``kind`` (see the module docstring)."""
    x: dict[str, Any] = {}
    if kind in PRODUCT_KINDS or (kind == "page_view" and "product_id" in props):
        pid = _text(
            props.get("product_id") or props.get("sku") or props.get("id"),
            f"{where}.product_id",
            64,
        )
        if pid is None and kind in PRODUCT_KINDS:
            raise EventError(
                f"{where}.product_id", "missing_field", f"{where}.product_id is required"
            )
        if pid is not None:
            x["pid"] = pid
        x["qty"] = _quantity(props.get("quantity"), f"{where}.quantity")
        price = _number(props.get("price"), f"{where}.price")
        if price is not None:
            x["price"] = price
    category = _text(props.get("category"), f"{where}.category", 128)
    if category and kind != "page_view" and kind != "screen_view":
        x["cat"] = category
    if kind == "search":
        query = _text(props.get("query"), f"{where}.query")
        if query is None:
            raise EventError(f"{where}.query", "missing_field", f"{where}.query is required")
        x["q"] = query
    elif kind in ("page_view", "screen_view"):
        path = _text(props.get("path") or props.get("url") or props.get("name"), f"{where}.path")
        if path:
            x["path"] = path
        if category:
            x["page_cat"] = category
    if kind in CART_KINDS or kind in ORDER_KINDS:
        products = props.get("products")
        if products is not None:
            if not isinstance(products, list):
                raise EventError(f"{where}.products", "invalid_type", "products must be an array")
            if len(products) > MAX_ITEMS:
                raise EventError(
                    f"{where}.products", "too_many", f"products has more than {MAX_ITEMS} items"
                )
            x["items"] = [_item(p, f"{where}.products[{i}]") for i, p in enumerate(products)]
        order_id = _text(
            props.get("order_id") or props.get("checkout_id"), f"{where}.order_id", 128
        )
        if order_id:
            x["oid"] = order_id
    if kind in ORDER_KINDS:
        revenue = None
        for name in ("revenue", "total", "value"):
            revenue = _number(props.get(name), f"{where}.{name}")
            if revenue is not None:
                break
        if revenue is None:
            revenue = sum(i.get("price", 0.0) * i["qty"] for i in x.get("items", ()))
        x["rev"] = round(revenue, 2)
    if kind == FEEDBACK_KIND:
        x.update(_feedback(props, where))
    consents = _consents(props.get("consents"), f"{where}.consents")
    if consents:
        x["consents"] = consents
    return x


def _feedback(props: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A feedback's type, rating, and the product or order it is about; its text is checked
    here and read from the properties (not copied: it is the bulk of the event)."""
    text = _text(props.get("text"), f"{where}.text", MAX_FEEDBACK_TEXT)
    if text is None or not text.strip():
        raise EventError(f"{where}.text", "missing_field", f"{where}.text is required")
    kind = props.get("type") or "other"
    if kind not in FEEDBACK_TYPES:
        raise EventError(
            f"{where}.type",
            "invalid_feedback_type",
            f"{where}.type must be one of {', '.join(FEEDBACK_TYPES)}; got {kind!r}",
        )
    x: dict[str, Any] = {"type": kind}
    rating = _number(props.get("rating"), f"{where}.rating")
    if rating is not None:
        if rating > MAX_RATING:
            raise EventError(
                f"{where}.rating",
                "invalid_number",
                f"{where}.rating must be from 0 to {MAX_RATING} (stars 1-5, NPS 0-10)",
            )
        x["rating"] = rating
    product_id = _text(props.get("product_id"), f"{where}.product_id", 64)
    if product_id:
        x["pid"] = product_id
    order_id = _text(props.get("order_id"), f"{where}.order_id", 128)
    if order_id:
        x["oid"] = order_id
    return x


def message_id() -> str:
    return secrets.token_hex(12)


def _check_time(
    event_time: float | None, received: float, offset: float, max_skew: float, field: str
) -> float:
    if event_time is None:
        return received
    corrected = event_time + offset
    if corrected > received + max_skew:
        ahead = corrected - received
        raise EventError(
            field,
            "timestamp_in_future",
            f"{field} is {ahead:.0f} s in the future (at most {max_skew:.0f} s of clock skew "
            "is accepted); check the device clock or send sent_at",
        )
    return corrected


@dataclass(frozen=True, slots=True)
class _Source:
    """Where one incoming message's shared fields are, in its own API's names."""

    where: str
    message_id: Any
    message_id_field: str
    timestamp: Any
    properties_field: str


def _record(
    source: _Source,
    *,
    name: str,
    kind: str,
    channel: str,
    props: Mapping[str, Any],
    identity: tuple[str | None, str | None, str | None],
    clock: tuple[float, float, float],
) -> dict[str, Any]:
    """The compact stream record of one event, the same for both APIs.

    ``identity`` is (anonymous id, user id, session id); ``clock`` is (received, client clock
    offset, allowed future skew)."""
    where = source.where
    anonymous, user, session = identity
    received, offset, max_skew = clock
    mid = _text(source.message_id, f"{where}.{source.message_id_field}", 128) or message_id()
    event_time = _check_time(
        parse_time(source.timestamp, f"{where}.timestamp"),
        received,
        offset,
        max_skew,
        f"{where}.timestamp",
    )
    route = user or anonymous
    if route is None:
        raise EventError(
            where, "missing_identity", "an event needs a visitor_id, anonymous_id or user_id"
        )
    event: dict[str, Any] = {
        "id": mid,
        "n": name,
        "k": kind,
        "t": round(event_time, 3),
        "r": received,
        "c": channel,
        "x": normalize(kind, props, f"{where}.{source.properties_field}"),
        "p": props,
        "v": route,
    }
    if user:
        event["u"] = user
    if anonymous and anonymous != user:
        event["a"] = anonymous
    if session:
        event["s"] = session
    return event


def parse_native(
    raw: Any, where: str, received: float, offset: float, max_skew: float
) -> dict[str, Any]:
    """One event of ``POST /v1/events``: ``{"event", "visitor_id"|"anonymous_id"|"user_id",
    "session_id", "timestamp", "channel", "properties", "message_id"}``."""
    if not isinstance(raw, Mapping):
        raise EventError(where, "invalid_type", f"{where} must be an object")
    name = raw.get("event")
    if not isinstance(name, str) or not name or len(name) > 128:
        raise EventError(f"{where}.event", "missing_field", f"{where}.event must be a name")
    kind = kind_of(name)
    props = raw.get("properties") or {}
    if not isinstance(props, Mapping):
        raise EventError(f"{where}.properties", "invalid_type", "properties must be an object")
    channel = raw.get("channel") or props.get("channel") or "web"
    if channel not in CHANNELS:
        raise EventError(
            f"{where}.channel",
            "invalid_channel",
            f"{where}.channel must be one of {', '.join(CHANNELS)}; got {channel!r}",
        )
    anonymous = _identifier(raw.get("visitor_id"), f"{where}.visitor_id") or _identifier(
        raw.get("anonymous_id"), f"{where}.anonymous_id"
    )
    if kind == "alias":
        anonymous = anonymous or _identifier(props.get("previous_id"), f"{where}.previous_id")
    user = _identifier(raw.get("user_id"), f"{where}.user_id")
    session = _identifier(raw.get("session_id"), f"{where}.session_id")
    return _record(
        _Source(where, raw.get("message_id"), "message_id", raw.get("timestamp"), "properties"),
        name=name,
        kind=kind,
        channel=channel,
        props=props,
        identity=(anonymous, user, session),
        clock=(received, offset, max_skew),
    )


def parse_segment(
    raw: Any,
    where: str,
    received: float,
    offset: float,
    max_skew: float,
    message_type: str | None = None,
) -> dict[str, Any]:
    """One Segment Tracking API message (``track``, ``identify``, ``page``, ``screen``,
    ``alias``); ``message_type`` is given by the single-message endpoints."""
    if not isinstance(raw, Mapping):
        raise EventError(where, "invalid_type", f"{where} must be an object")
    kind_name = message_type or raw.get("type")
    if kind_name not in SEGMENT_TYPES:
        raise EventError(
            f"{where}.type",
            "unsupported_type",
            f"{where}.type must be one of {', '.join(SEGMENT_TYPES)}; got {kind_name!r}",
        )
    props_key = "traits" if kind_name == "identify" else "properties"
    props = raw.get(props_key) or {}
    if not isinstance(props, Mapping):
        raise EventError(f"{where}.{props_key}", "invalid_type", f"{props_key} must be an object")
    if kind_name == "track":
        name = raw.get("event")
        if not isinstance(name, str) or not name or len(name) > 128:
            raise EventError(f"{where}.event", "missing_field", f"{where}.event must be a name")
        kind = kind_of(name)
    elif kind_name in ("page", "screen"):
        kind = "page_view" if kind_name == "page" else "screen_view"
        name = kind_name
        if raw.get("name") and "name" not in props:
            props = {**props, "name": raw["name"]}
    else:
        kind = name = kind_name
    context = raw.get("context") or {}
    if not isinstance(context, Mapping):
        raise EventError(f"{where}.context", "invalid_type", "context must be an object")
    channel = str(props.get("channel") or raw.get("channel") or context.get("channel") or "")
    channel = SEGMENT_CHANNELS.get(channel, channel)
    if channel not in CHANNELS:
        channel = "app" if kind_name == "screen" else "web"
    user = _identifier(raw.get("userId"), f"{where}.userId")
    if kind_name == "alias":
        anonymous = _identifier(raw.get("previousId"), f"{where}.previousId")
        if anonymous is None or user is None:
            raise EventError(
                f"{where}.previousId", "missing_field", "alias needs previousId and userId"
            )
    else:
        anonymous = _identifier(raw.get("anonymousId"), f"{where}.anonymousId")
    session = _identifier(
        props.get("session_id") or context.get("session_id"), f"{where}.context.session_id"
    )
    timestamp = raw.get("timestamp") or raw.get("originalTimestamp")
    return _record(
        _Source(where, raw.get("messageId"), "messageId", timestamp, props_key),
        name=name,
        kind=kind,
        channel=channel,
        props=props,
        identity=(anonymous, user, session),
        clock=(received, offset, max_skew),
    )


def clock_offset(sent_at: Any, received: float, field: str) -> float:
    """Correction for a client's clock: ``received - sent_at`` when ``sent_at`` is given and
    the two differ by more than a second (network delay is not a clock error)."""
    sent = parse_time(sent_at, field)
    if sent is None:
        return 0.0
    offset = received - sent
    return offset if abs(offset) > 1.0 else 0.0


@dataclass(frozen=True, slots=True)
class Event:
    """An applied event, as plugins observe it (``journeygate_observe_event``)."""

    message_id: str
    name: str
    kind: str
    profile_id: str
    user_id: str | None
    anonymous_id: str | None
    session_id: str | None
    timestamp: float
    received_at: float
    channel: str
    properties: Mapping[str, Any]
    fields: Mapping[str, Any]

    @classmethod
    def from_internal(cls, event: Mapping[str, Any], profile_id: str) -> Event:
        """From the internal shape (see the module docstring), applied to ``profile_id``."""
        return cls(
            message_id=event["id"],
            name=event["n"],
            kind=event["k"],
            profile_id=profile_id,
            user_id=event.get("u"),
            anonymous_id=event.get("a"),
            session_id=event.get("s"),
            timestamp=event["t"],
            received_at=event["r"],
            channel=event["c"],
            properties=MappingProxyType(dict(event.get("p") or {})),
            fields=MappingProxyType(dict(event.get("x") or {})),
        )
