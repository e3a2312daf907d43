"""HTML rendering: one Jinja2 environment with autoescaping, templates a deployment may override."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta

TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Stands in for the decision id in cached HTML; escaping leaves it unchanged.
DECISION_PLACEHOLDER = "jg0decision0placeholder"


class Renderer:
    """Renders block templates from the override directory first, then the bundled ones."""

    def __init__(self, directories: list[Path], cache_size: int = 4096) -> None:
        self.environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(d) for d in directories]),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
        )
        self._templates: dict[str, jinja2.Template] = {}
        self._variables: dict[str, frozenset[str]] = {}
        self._cache: dict[tuple[str, bytes], str] = {}
        self._cache_size = cache_size

    def has_template(self, name: str) -> bool:
        """True when ``name`` (without ``.html``) is a valid, existing template."""
        if not TEMPLATE_NAME.match(name):
            return False
        try:
            self._template(name)
        except jinja2.TemplateNotFound:
            return False
        return True

    def _template(self, name: str) -> jinja2.Template:
        template = self._templates.get(name)
        if template is None:
            template = self.environment.get_template(f"{name}.html")
            self._templates[name] = template
        return template

    def uses(self, name: str, variable: str) -> bool:
        """Whether template ``name`` reads ``variable``; True when it cannot tell (it includes
        or extends other templates), so callers only ever skip what is certainly unused."""
        used = self._variables.get(name)
        if used is None:
            source, _, _ = self.environment.loader.get_source(  # type: ignore[union-attr]
                self.environment, f"{name}.html"
            )
            tree = self.environment.parse(source)
            if any(True for _ in jinja2.meta.find_referenced_templates(tree)):
                used = frozenset({"*"})
            else:
                used = frozenset(jinja2.meta.find_undeclared_variables(tree))
            self._variables[name] = used
        return "*" in used or variable in used

    def render(self, name: str, **values: Any) -> str:
        """Render template ``name`` (``recommendations`` → ``recommendations.html``)."""
        return self._template(name).render(**values).strip()

    def render_cached(
        self,
        name: str,
        fingerprint: bytes,
        decision_id: str,
        values: Callable[[], Mapping[str, Any]],
    ) -> str:
        """Render ``name`` once per ``fingerprint`` and splice the decision id into a copy.

        ``fingerprint`` must identify every value the template receives except the decision
        id (which is passed here, and must appear in ``values()`` as
        :data:`DECISION_PLACEHOLDER` wherever the template shows it). ``values`` is called
        on a miss only. Blocks that many visitors share — popular items, a default offer —
        then render once instead of on every request.
        """
        key = (name, fingerprint)
        html = self._cache.get(key)
        if html is None:
            html = self.render(name, decision_id=DECISION_PLACEHOLDER, **values())
            if self._cache_size:
                if len(self._cache) >= self._cache_size:
                    del self._cache[next(iter(self._cache))]  # the oldest entry
                self._cache[key] = html
        return html.replace(DECISION_PLACEHOLDER, decision_id)
