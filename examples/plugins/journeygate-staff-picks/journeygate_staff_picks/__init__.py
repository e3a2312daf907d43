"""journeygate-staff-picks: products chosen by hand, served as the ``staff_picks`` strategy.

An example of a third-party journeygate plugin. It is found through the ``journeygate``
entry-point group (see ``pyproject.toml``), configured in ``[plugin.staff_picks]``:

.. code-block:: toml

    [plugin.staff_picks]
    product_ids = ["22423", "85123A"]   # required to serve anything; catalog product ids
    badge = "Staff pick"                # optional; shown on every staff pick, in any block

It implements four hooks: ``journeygate_startup`` (read and check the settings),
``journeygate_slot_strategies`` (declare ``staff_picks``), ``journeygate_candidates`` (answer
slots of that strategy) and an ``async`` ``journeygate_postprocess_block`` (badge the picks in
every recommendations block).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from journeygate import hookimpl
from journeygate.catalog import Catalog
from journeygate.config import AppConfig
from journeygate.model import Block, Candidate, DecisionContext, SlotRequest

__version__ = "0.1.0"

PLUGIN_NAME = "staff_picks"
STRATEGY = "staff_picks"
DEFAULT_BADGE = "Staff pick"
SETTINGS = ("product_ids", "badge")

log = logging.getLogger(__name__)


def parse_settings(settings: Mapping[str, Any], catalog: Catalog) -> tuple[tuple[str, ...], str]:
    """Check ``[plugin.staff_picks]`` and return the usable product ids and the badge text.

    A wrong type or an unknown key raises :class:`ValueError` naming the key, so that a typo
    stops the plugin at startup (journeygate then reports it in ``/readyz``) instead of
    silently serving something else. An id that is not in the catalog is only logged and
    skipped: catalogs change daily and one retired product must not take the block down.
    """
    where = f"plugin.{PLUGIN_NAME}"
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown setting (known: {', '.join(SETTINGS)})")

    raw_ids = settings.get("product_ids", [])
    if not isinstance(raw_ids, list | tuple):
        raise ValueError(
            f"{where}.product_ids: expected a list of product ids, got {type(raw_ids).__name__}"
        )
    product_ids: list[str] = []
    for index, product_id in enumerate(raw_ids):
        if not isinstance(product_id, str):
            raise ValueError(
                f"{where}.product_ids[{index}]: expected a product id string, got {product_id!r}"
            )
        if product_id not in catalog:
            log.warning("%s.product_ids: %r is not in the catalog; skipped", where, product_id)
            continue
        if product_id not in product_ids:
            product_ids.append(product_id)

    badge = settings.get("badge", DEFAULT_BADGE)
    if not isinstance(badge, str) or not badge.strip():
        raise ValueError(f"{where}.badge: expected a non-empty string, got {badge!r}")
    if not product_ids:
        log.warning("%s: no usable product_ids; the fallback answers its slots", where)
    return tuple(product_ids), badge


class StaffPicksPlugin:
    """Serves hand-picked products and badges them wherever they are recommended.

    journeygate instantiates this class once per gateway process, so the settings read at
    startup live on the instance and every request reads them without locking.
    """

    def __init__(self) -> None:
        self.product_ids: tuple[str, ...] = ()
        self.picks: frozenset[str] = frozenset()
        self.badge = DEFAULT_BADGE

    @hookimpl
    def journeygate_startup(self, config: AppConfig, catalog: Catalog) -> None:
        """Read the settings once, before the first request, so that a bad config fails the
        plugin at startup (visible in ``/readyz``) rather than on every decision."""
        settings = config.plugin_config(PLUGIN_NAME).settings
        self.product_ids, self.badge = parse_settings(settings, catalog)
        self.picks = frozenset(self.product_ids)
        log.info("staff picks: %d products, badge %r", len(self.product_ids), self.badge)

    @hookimpl
    def journeygate_slot_strategies(self) -> Sequence[str]:
        """Declare ``staff_picks`` so that pages may ask for it; without this declaration the
        gateway rejects such slots with ``400 unknown_strategy``. It is declared even with no
        picks configured so that pages keep working (the fallback then answers)."""
        return [STRATEGY]

    @hookimpl
    def journeygate_candidates(
        self, context: DecisionContext, slot: SlotRequest
    ) -> list[Candidate] | None:
        """Answer ``staff_picks`` slots with the picks in configured order.

        Returns None for any other strategy so that the plugins after this one (finally the
        built-in fallback) answer those slots. All picks are returned, not just ``slot.limit``:
        the pipeline drops products in the cart or on the page, then cuts to the limit.
        Synchronous because it only reads memory; it cannot block the event loop.
        """
        if slot.strategy != STRATEGY or not self.product_ids:
            return None
        count = len(self.product_ids)
        return [
            Candidate(product_id, score=(count - rank) / count, reason="staff pick")
            for rank, product_id in enumerate(self.product_ids)
        ]

    @hookimpl
    async def journeygate_postprocess_block(self, context: DecisionContext, block: Block) -> None:
        """Badge every staff pick in a recommendations block, whoever answered the block.

        ``async`` to show that any hook may be a coroutine: the pipeline awaits it under this
        plugin's budget (a real plugin might fetch badge texts from a CMS here). Items are
        changed in place, as the hook contract asks; a badge set by a plugin called earlier is
        kept.
        """
        if block.slot.kind != "recommendations" or not self.picks:
            return
        for item in block.items:
            if item.get("product_id") in self.picks:
                item.setdefault("badge", self.badge)


__all__ = ["DEFAULT_BADGE", "STRATEGY", "StaffPicksPlugin", "parse_settings"]
