"""The fallback plugin: popular products from the catalog and the configured default offer.

Its implementations are ``trylast`` so every installed plugin is asked first; it answers
every slot, so no block is ever empty, even when all other plugins fail or time out.
"""

from __future__ import annotations

from collections.abc import Sequence

from journeygate import hookimpl
from journeygate.catalog import Catalog
from journeygate.config import AppConfig
from journeygate.model import Candidate, DecisionContext, Offer, SlotRequest

STRATEGY = "popular"


def default_offer(config: AppConfig, reason: str) -> Offer:
    """The ``[fallback.default_offer]`` of the config, for plugins that answer with it too."""
    offer = config.fallback.default_offer
    return Offer(
        id=offer.id,
        title=offer.title,
        body=offer.body,
        cta_label=offer.cta_label,
        cta_url=offer.cta_url,
        reason=reason,
    )


class FallbackPlugin:
    """Answers from catalog popularity, preferring the category the page is about."""

    def __init__(self) -> None:
        self.catalog = Catalog(())
        self.default_offer = Offer(id="none", title="")

    @hookimpl
    def journeygate_startup(self, config: AppConfig, catalog: Catalog) -> None:
        self.catalog = catalog
        self.default_offer = default_offer(config, "default offer")

    @hookimpl
    def journeygate_slot_strategies(self) -> Sequence[str]:
        return [STRATEGY]

    def _page_category(self, context: DecisionContext) -> str | None:
        request = context.context
        if request.page.category:
            return request.page.category
        for product_id in (request.page.product_id, *(i.product_id for i in request.cart)):
            product = self.catalog.get(product_id)
            if product is not None:
                return product.category
        return None

    @hookimpl(trylast=True)
    def journeygate_candidates(
        self, context: DecisionContext, slot: SlotRequest
    ) -> list[Candidate]:
        # Enough for this slot after the pipeline removes the cart, the page's product and
        # whatever the page's other recommendation blocks show.
        page_slots = sum(s.limit for s in context.request.slots if s.kind == "recommendations")
        wanted = page_slots + len(context.context.cart) + 1
        category = self._page_category(context)
        ranked = list(self.catalog.popular_by_category.get(category or "", ())[:wanted])
        seen = {product.product_id for product in ranked}
        ranked += [p for p in self.catalog.popular[: wanted * 2] if p.product_id not in seen]
        top = max((p.popularity for p in ranked), default=1) or 1
        reason = f"popular in {category}" if category else "popular"
        return [
            Candidate(
                product.product_id,
                score=product.popularity / top,
                reason=reason if product.category == category else "popular",
            )
            for product in ranked[:wanted]
        ]

    @hookimpl(trylast=True)
    def journeygate_choose_offer(self, context: DecisionContext, slot: SlotRequest) -> Offer:
        return self.default_offer
