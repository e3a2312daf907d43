"""The built-in renderer: the Jinja2 template of the block's kind (or the slot's template)."""

from __future__ import annotations

from typing import Any

import orjson

from journeygate import hookimpl
from journeygate.model import Block, DecisionContext
from journeygate.render import DECISION_PLACEHOLDER, Renderer


class RendererPlugin:
    """Renders every block nobody else rendered; templates live in ``config/templates``."""

    @hookimpl(trylast=True)
    def journeygate_render_block(
        self, context: DecisionContext, block: Block, renderer: Renderer
    ) -> str:
        slot = block.slot
        name = slot.template or slot.kind
        # The visitor's state is part of the cache key only for templates that show it, so a
        # block many visitors share is rendered once whatever their stage or intent.
        visitor = context.visitor.as_json() if renderer.uses(name, "visitor") else None
        try:
            fingerprint = orjson.dumps(
                [
                    [slot.id, slot.kind, slot.strategy, slot.limit, slot.plugin, dict(slot.params)],
                    (slot.assignment.experiment, slot.assignment.arm) if slot.assignment else None,
                    [block.source, block.personalized, block.fallback_reason, block.items],
                    block.offer.as_json() if block.offer else None,
                    visitor,
                ]
            )
        except TypeError:  # a post-processor put something that is not JSON into the block
            return renderer.render(
                name,
                decision_id=context.decision_id,
                **self._values(block, context, context.decision_id),
            )
        return renderer.render_cached(
            name,
            fingerprint,
            context.decision_id,
            lambda: self._values(block, context, DECISION_PLACEHOLDER),
        )

    def _values(self, block: Block, context: DecisionContext, decision_id: str) -> dict[str, Any]:
        """What a block template receives (``decision_id`` is added by the renderer)."""
        return {
            "block": block,
            "slot": block.slot,
            "items": block.items,
            "offer": block.offer,
            "tracking": block.tracking(decision_id),
            "visitor": context.visitor,
        }
