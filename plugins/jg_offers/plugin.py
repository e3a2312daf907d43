"""The offer selector as a gateway plugin: the best eligible offer of the catalog per slot.

``journeygate_choose_offer`` is synchronous and does no I/O: every input is in the decision
context (the visitor's state from other plugins, the request, the stored profile with the
visitor's recent offer shows), and budget counts are refreshed in the background (by the
processes that decide, not by the event worker). Shows are recorded after the response
(``journeygate_observe_decision``) into the profile, with one atomic ``store.record_times``
(concurrent decisions for one visitor all count), so the next decision reads them with the
profile it loads anyway; redemptions are counted from events (``journeygate_observe_event``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from jg_offers.budget import Redemptions
from jg_offers.catalog import (
    PLUGIN_NAME,
    OfferCatalog,
    OfferSpec,
    OffersSettings,
    load_catalog,
)
from jg_offers.commands import add_command
from jg_offers.rules import (
    SHOWS_FIELD,
    Rule,
    Verdict,
    VisitorInputs,
    eligible,
    evaluate,
    offer_rules,
)
from journeygate import hookimpl
from journeygate.builtins.fallback import default_offer
from journeygate.config import AppConfig
from journeygate.events.schema import Event
from journeygate.hookspecs import ROLE_EMBEDDED, ROLE_GATEWAY
from journeygate.model import EMPTY, Block, DecisionContext, Offer, SlotRequest
from journeygate.store import ProfileStore

# Experiment contract: slot params an experiment (or the page) may set.
PARAM_OFFER_ID = "offer_id"  # serve this offer when it is eligible
PARAM_POOL = "offers"  # choose only among these offer ids
PARAM_HOLDOUT = "holdout"  # true: answer nothing, the default content is served
COUPON_PROPERTIES = ("coupon", "coupon_id", "coupon_name")
# The processes that decide, and so read budget counts (see journeygate_startup's role).
DECIDING_ROLES = frozenset({ROLE_GATEWAY, ROLE_EMBEDDED})
# Decisions whose offers are remembered until they are observed; a decision that never is
# (it failed) is forgotten past this many.
MAX_OPEN_DECISIONS = 4096


class OffersPlugin:
    """Chooses offers from ``config/offers.toml`` (``[plugin.offers] catalog``)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.settings = OffersSettings()
        self.catalog = OfferCatalog(())
        self.offers: dict[str, OfferSpec] = {}
        self.store: ProfileStore | None = None
        self.redemptions = Redemptions({}, None, 0)
        self.no_offer = Offer.nothing("no eligible offer")
        self._data: dict[str, Mapping[str, Any]] = {}
        self._coupons: dict[str, list[str]] = {}
        self._rules: dict[str, tuple[Rule, ...]] = {}
        self._zone: dt.tzinfo | None = None  # only when some offer has hours
        # Shows kept per offer in the profile: those of the longest cap window, as many as
        # the highest per_visitor (enough for every offer's cap).
        self._shows_window_s = 0.0
        self._shows_kept = 0
        # The offers chosen so far in each decision in progress (decision id -> offer id ->
        # slot id): the other offer slots of the page get the next best ones.
        self._taken: OrderedDict[str, dict[str, str]] = OrderedDict()

    # -- lifecycle -----------------------------------------------------------------------

    @hookimpl
    async def journeygate_startup(self, config: AppConfig, store: ProfileStore, role: str) -> None:
        self.settings = OffersSettings.read(config.plugin_config(PLUGIN_NAME).settings)
        self.catalog = load_catalog(config.resolve_path(self.settings.catalog), self.settings.zone)
        self.offers = self.catalog.by_id()
        self.store = store
        if self.settings.when_none_eligible == "default":
            self.no_offer = default_offer(config, "no eligible offer: the default offer")
        else:
            self.no_offer = Offer.nothing("no eligible offer: the slot is hidden")
        self._data = {
            spec.id: MappingProxyType(
                {"kind": spec.kind, **({"coupon": spec.coupon} if spec.coupon else {})}
            )
            for spec in self.catalog.offers
        }
        budgets = {s.id: s.caps.budget for s in self.catalog.offers if s.caps.budget is not None}
        self._coupons = {}
        for spec in self.catalog.offers:
            if spec.coupon and spec.id in budgets:
                self._coupons.setdefault(spec.coupon.lower(), []).append(spec.id)
        redis_url = config.store.redis_url if config.store_backend == "redis" else None
        self.redemptions = Redemptions(budgets, redis_url, self.settings.budget_ttl_days * 86400)
        upsell = self.catalog.upsell_eligibility
        self._rules = {
            spec.id: offer_rules(spec, upsell, self.redemptions.count)
            for spec in self.catalog.offers
        }
        capped = [spec.caps for spec in self.catalog.offers if spec.caps.per_visitor]
        self._shows_window_s = max((caps.window_s for caps in capped), default=0.0)
        self._shows_kept = max((caps.per_visitor or 0 for caps in capped), default=0)
        hours = any(spec.schedule.hours for spec in self.catalog.offers)
        self._zone = self.settings.zone if hours else None
        if role in DECIDING_ROLES:  # a worker only counts redemptions, it reads none
            await self.redemptions.start(self.settings.budget_refresh_s)

    @hookimpl
    async def journeygate_shutdown(self) -> None:
        await self.redemptions.close()

    @hookimpl
    def journeygate_register_commands(
        self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]
    ) -> None:
        add_command(subparsers)

    # -- one decision ----------------------------------------------------------------------

    @hookimpl
    def journeygate_choose_offer(self, context: DecisionContext, slot: SlotRequest) -> Offer | None:
        params = slot.params
        if params.get(PARAM_HOLDOUT) is True:
            return None  # the experiment's control group sees the default content
        explain = context.request.explain
        inputs = VisitorInputs.from_context(context, self.clock(), self._zone)
        notes: list[str] = []
        taken = self._taken.get(context.decision_id, {})
        pool = self._pool(params.get(PARAM_POOL), notes)
        if explain:  # every offer's verdict, in words
            verdicts = [self._evaluate(spec, inputs, True) for spec in pool]
        else:  # the eligible offers' only: the others lose without a word
            rules = self._rules
            verdicts = [
                Verdict(spec, rules[spec.id]) for spec in pool if eligible(rules[spec.id], inputs)
            ]
        ranked = sorted(
            (v for v in verdicts if v.eligible and v.offer.id not in taken),
            key=lambda v: -v.offer.priority,
        )
        chosen = ranked[0] if ranked else None
        requested = self._requested(params.get(PARAM_OFFER_ID), verdicts, inputs, explain, notes)
        if requested is not None:
            chosen = requested
        if chosen is None:
            if not explain:
                return self.no_offer
            details = self._explain(verdicts, None, notes, taken)
            return dataclasses.replace(self.no_offer, explain=details)
        spec = chosen.offer
        rank = f"priority {spec.priority}"
        if len(ranked) > 1 and chosen is ranked[0]:
            rank += f" (highest of {len(ranked)} eligible)"
        offer = Offer(
            id=spec.id,
            title=spec.title,
            body=spec.body,
            cta_label=spec.cta_label,
            cta_url=spec.cta_url,
            reason="; ".join([*notes, rank, *chosen.public_matches(inputs)]),
            data=self._data[spec.id],
            explain=self._explain(verdicts, chosen, notes, taken) if explain else EMPTY,
        )
        self._take(context, spec.id, slot.id)
        return offer

    def _take(self, context: DecisionContext, offer_id: str, slot_id: str) -> None:
        """Remember the offer a slot got for the decision's other offer slots, until the
        decision is observed (most pages have one offer slot: nothing to remember)."""
        if sum(slot.kind == "offer" for slot in context.request.slots) < 2:
            return
        decision_id = context.decision_id
        taken = self._taken.get(decision_id)
        if taken is None:
            taken = self._taken[decision_id] = {}
            if len(self._taken) > MAX_OPEN_DECISIONS:
                self._taken.popitem(last=False)
        taken.setdefault(offer_id, slot_id)

    def _evaluate(self, spec: OfferSpec, inputs: VisitorInputs, complete: bool) -> Verdict:
        return evaluate(spec, self._rules[spec.id], inputs, complete)

    def _pool(self, pool: Any, notes: list[str]) -> Sequence[OfferSpec]:
        """The catalog, or the offers an experiment restricted the slot to."""
        if pool is None:
            return self.catalog.offers
        if not isinstance(pool, list) or not all(isinstance(i, str) for i in pool):
            notes.append(f"slot.params.{PARAM_POOL} ignored: not a list of offer ids")
            return self.catalog.offers
        unknown = [offer_id for offer_id in pool if offer_id not in self.offers]
        if unknown:
            notes.append(f"not in the catalog: {', '.join(unknown)}")
        wanted = set(pool)
        return [spec for spec in self.catalog.offers if spec.id in wanted]

    def _requested(
        self,
        offer_id: Any,
        verdicts: list[Verdict],
        inputs: VisitorInputs,
        explain: bool,
        notes: list[str],
    ) -> Verdict | None:
        """The offer ``slot.params.offer_id`` names, when it is eligible; else a note why not."""
        if offer_id is None:
            return None
        if not isinstance(offer_id, str) or offer_id not in self.offers:
            notes.append(f"requested offer {offer_id!r} is not in the catalog")
            return None
        verdict = next((v for v in verdicts if v.offer.id == offer_id), None)
        if verdict is None:  # outside the pool, or a loser nobody explained
            verdict = self._evaluate(self.offers[offer_id], inputs, explain)
            verdicts.append(verdict)
        if verdict.eligible:
            notes.append(f"requested by slot.params.{PARAM_OFFER_ID}")
            return verdict
        notes.append(
            f"requested offer {offer_id} not eligible ({verdict.public_rejection(inputs)})"
        )
        return None

    def _explain(
        self,
        verdicts: list[Verdict],
        chosen: Verdict | None,
        notes: list[str],
        taken: Mapping[str, str],
    ) -> dict[str, Any]:
        """Every offer considered, and why each one lost."""
        considered = []
        for verdict in verdicts:
            spec = verdict.offer
            entry: dict[str, Any] = {"id": spec.id, "kind": spec.kind, "priority": spec.priority}
            if verdict is chosen:
                entry["outcome"] = "chosen"
            elif verdict.eligible and spec.id in taken:
                entry["outcome"] = "taken"
                entry["rejected"] = [f"chosen for slot {taken[spec.id]}"]
            elif verdict.eligible:
                entry["outcome"] = "outranked"
                winner = chosen.offer if chosen else spec
                entry["rejected"] = [f"{winner.id} won (priority {winner.priority})"]
            else:
                entry["outcome"] = "ineligible"
                entry["rejected"] = verdict.rejected
            entry["matched"] = verdict.matched
            considered.append(entry)
        details: dict[str, Any] = {
            "chosen": chosen.offer.id if chosen else None,
            "considered": considered,
        }
        if notes:
            details["notes"] = list(notes)
        if chosen is None:
            details["when_none_eligible"] = self.settings.when_none_eligible
        return details

    @hookimpl
    def journeygate_observe_decision(
        self, context: DecisionContext, blocks: Sequence[Block]
    ) -> Awaitable[None] | None:
        """Record each show of a frequency-capped offer in the visitor's profile, in one
        atomic store call: concurrent decisions for one visitor each add theirs (rewriting
        the shows read with the profile would lose all but one). Not a coroutine function:
        a decision without such a show has nothing to await."""
        self._taken.pop(context.decision_id, None)
        if self.store is None or not context.request.track or not context.stored.store_available:
            return None
        shown = [
            block.offer.id
            for block in blocks
            if block.offer is not None
            and not block.offer.hidden
            and block.offer.id in self.offers
            and self.offers[block.offer.id].caps.per_visitor
        ]
        if not shown:
            return None
        profile_id = context.stored.profile_id or context.visitor_id
        return self.store.record_times(
            profile_id, SHOWS_FIELD, shown, self.clock(), self._shows_window_s, self._shows_kept
        )

    # -- events ------------------------------------------------------------------------------

    @hookimpl
    def journeygate_observe_event(self, event: Event) -> Awaitable[None] | None:
        """Count a redemption against the budget of the offer whose coupon the event carries.

        Not a coroutine function: the worker calls it for every event, and only orders with
        a coupon have anything to await."""
        if not self._coupons or event.name not in self.settings.redemption_events:
            return None
        properties = event.properties
        codes = {
            str(properties[name]).lower() for name in COUPON_PROPERTIES if properties.get(name)
        }
        offer_ids = [offer_id for code in codes for offer_id in self._coupons.get(code, ())]
        if not offer_ids:
            return None
        redemption_id = str(properties.get("order_id") or event.message_id)
        return self._record_redemptions(offer_ids, redemption_id, event.timestamp)

    async def _record_redemptions(
        self, offer_ids: Sequence[str], redemption_id: str, at: float
    ) -> None:
        for offer_id in offer_ids:
            await self.redemptions.record(offer_id, redemption_id, at)
