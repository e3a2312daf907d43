"""The typed objects a decision is made of: the request, the visitor's state, candidates, blocks.

Plugins receive these objects; they are frozen so that one plugin cannot change what another
plugin sees, except through the hook results the pipeline merges on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from journeygate.frozen import quick_init

PAGE_TYPES = ("home", "category", "product", "search", "cart", "checkout", "confirmation", "other")
CHANNELS = ("web", "app", "email", "store", "support")
# Visitor, session and user ids become part of Redis keys inside a hash tag (``jg:{id}:…``):
# no braces, no whitespace, and no "/" (global keys use it to stay apart from visitors').
IDENTIFIER = re.compile(r"^[A-Za-z0-9._:@+-]{1,128}$")
SLOT_KINDS = ("recommendations", "offer")

EMPTY: Mapping[str, Any] = MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    return EMPTY


@quick_init
@dataclass(frozen=True, slots=True)
class CartItem:
    product_id: str
    quantity: int = 1
    price: float | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class PageContext:
    type: str = "other"
    url: str | None = None
    product_id: str | None = None
    category: str | None = None
    query: str | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the page knows right now: the real-time session context."""

    page: PageContext = field(default_factory=PageContext)
    cart: tuple[CartItem, ...] = ()
    channel: str = "web"
    device: str | None = None
    locale: str | None = None
    referrer: str | None = None
    utm: Mapping[str, str] = field(default_factory=_empty)

    @property
    def cart_value(self) -> float:
        return sum((item.price or 0.0) * item.quantity for item in self.cart)

    @property
    def cart_product_ids(self) -> frozenset[str]:
        return frozenset(item.product_id for item in self.cart)


@quick_init
@dataclass(frozen=True, slots=True)
class ArmAssignment:
    """The experiment arm a slot is shown under, and the probability it had (propensity)."""

    experiment: str
    arm: str
    propensity: float


@quick_init
@dataclass(frozen=True, slots=True)
class SlotRequest:
    """One block the page wants."""

    id: str
    kind: str
    strategy: str | None = None
    limit: int = 8
    template: str | None = None
    plugin: str | None = None
    params: Mapping[str, Any] = field(default_factory=_empty)
    assignment: ArmAssignment | None = None  # set by a running experiment on this slot


@quick_init
@dataclass(frozen=True, slots=True)
class DecideRequest:
    visitor_id: str
    session_id: str | None
    context: RequestContext
    slots: tuple[SlotRequest, ...]
    explain: bool = False
    track: bool = True  # False: an anonymous one-off request; nothing is read or recorded


@quick_init
@dataclass(frozen=True, slots=True)
class StoredVisitor:
    """What the profile store knows about a visitor before this request."""

    profile: Mapping[str, Any] = field(default_factory=_empty)
    recent_views: tuple[str, ...] = ()
    session_views: tuple[str, ...] = ()
    session_pages: int = 0
    store_available: bool = True
    # Consents the event worker recorded (``marketing_email``, ``marketing_sms``,
    # ``personalization``): the latest answer of each, True when granted. A consent never
    # given is absent.
    consents: Mapping[str, bool] = field(default_factory=_empty)
    # The profile this visitor's history lives in: another id once an anonymous visitor was
    # merged into a customer (identify/alias), else None (the visitor's own).
    profile_id: str | None = None

    @property
    def is_new(self) -> bool:
        return not self.profile and not self.recent_views


@quick_init
@dataclass(frozen=True, slots=True)
class VisitorState:
    """The visitor as plugins derived it: stage, intent, segment, sentiment and extras."""

    stage: str | None = None
    intent: str | None = None
    segment: str | None = None
    sentiment: float | None = None
    attributes: Mapping[str, Any] = field(default_factory=_empty)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "stage": self.stage,
            "intent": self.intent,
            "segment": self.segment,
            "sentiment": self.sentiment,
        }
        body.update(self.attributes)
        return body


@quick_init
@dataclass(frozen=True, slots=True)
class DecisionContext:
    """Everything a plugin may look at for one decision."""

    decision_id: str
    request: DecideRequest
    stored: StoredVisitor
    visitor: VisitorState

    @property
    def visitor_id(self) -> str:
        return self.request.visitor_id

    @property
    def context(self) -> RequestContext:
        return self.request.context


@quick_init
@dataclass(frozen=True, slots=True)
class Candidate:
    """A product a plugin proposes for a recommendations slot, with its score."""

    product_id: str
    score: float = 0.0
    reason: str | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class Offer:
    """An offer or content banner chosen for an offer slot.

    ``explain`` is what the choosing plugin wants the decision's explain trace to show (the
    alternatives it considered); it is not part of the offer sent to the page. A ``hidden``
    offer (see :meth:`nothing`) answers the slot with an empty block.
    """

    id: str
    title: str
    body: str = ""
    cta_label: str | None = None
    cta_url: str | None = None
    reason: str | None = None
    data: Mapping[str, Any] = field(default_factory=_empty)
    hidden: bool = False
    explain: Mapping[str, Any] = field(default_factory=_empty)

    @classmethod
    def nothing(cls, reason: str, explain: Mapping[str, Any] = EMPTY) -> Offer:
        """An answer that shows nothing: the slot is filled (no other plugin or fallback is
        asked) and its HTML is empty."""
        return cls(id="", title="", reason=reason, hidden=True, explain=explain)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "body": self.body,
            "cta_label": self.cta_label,
            "cta_url": self.cta_url,
        }
        if self.reason:
            body["reason"] = self.reason
        if self.hidden:
            body["hidden"] = True
        body.update(self.data)
        return body


@dataclass(slots=True)
class Block:
    """One answered slot. Mutable until rendered so post-processing plugins can adjust it."""

    slot: SlotRequest
    source: str
    items: list[dict[str, Any]] = field(default_factory=list)
    offer: Offer | None = None
    personalized: bool = True
    html: str = ""
    fallback_reason: str | None = None

    def tracking(self, decision_id: str) -> dict[str, Any]:
        tracking = {"decision_id": decision_id, "slot": self.slot.id, "source": self.source}
        if self.slot.assignment is not None:
            tracking["experiment"] = self.slot.assignment.experiment
            tracking["arm"] = self.slot.assignment.arm
        return tracking

    def as_json(self, decision_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "slot": self.slot.id,
            "kind": self.slot.kind,
            "source": self.source,
            "personalized": self.personalized,
            "items": self.items,
            "html": self.html,
            "tracking": self.tracking(decision_id),
        }
        if self.slot.strategy:
            body["strategy"] = self.slot.strategy
        if self.offer is not None:
            body["offer"] = self.offer.as_json()
        if self.fallback_reason:
            body["fallback_reason"] = self.fallback_reason
        return body
