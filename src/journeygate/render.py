"""HTML rendering: one Jinja2 environment with autoescaping, templates a deployment may override."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2

TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class Renderer:
    """Renders block templates from the override directory first, then the bundled ones."""

    def __init__(self, directories: list[Path]) -> None:
        self.environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(d) for d in directories]),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
        )
        self._templates: dict[str, jinja2.Template] = {}

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

    def render(self, name: str, **values: Any) -> str:
        """Render template ``name`` (``recommendations`` → ``recommendations.html``)."""
        return self._template(name).render(**values).strip()
