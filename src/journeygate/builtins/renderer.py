"""The built-in renderer: the Jinja2 template of the block's kind (or the slot's template)."""

from __future__ import annotations

from journeygate import hookimpl
from journeygate.model import Block, DecisionContext
from journeygate.render import Renderer


class RendererPlugin:
    """Renders every block nobody else rendered; templates live in ``config/templates``."""

    @hookimpl(trylast=True)
    def journeygate_render_block(
        self, context: DecisionContext, block: Block, renderer: Renderer
    ) -> str:
        return renderer.render(
            block.slot.template or block.slot.kind,
            block=block,
            slot=block.slot,
            items=block.items,
            offer=block.offer,
            tracking=block.tracking(context.decision_id),
            decision_id=context.decision_id,
            visitor=context.visitor,
        )
