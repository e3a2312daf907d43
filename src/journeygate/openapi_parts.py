"""Small builders shared by the parts of the OpenAPI document (core routes, event routes)."""

from __future__ import annotations

from typing import Any

JSON = "application/json"
NULLABLE_STRING = {"type": ["string", "null"]}


def ref(name: str) -> dict[str, str]:
    """A reference to a schema in ``components/schemas``."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A response (or request body) with a JSON schema."""
    return {"description": description, "content": {JSON: {"schema": schema}}}


def error_body(description: str) -> dict[str, Any]:
    """A response carrying the common ``{"error": {...}}`` body."""
    return json_body(ref("Error"), description)
