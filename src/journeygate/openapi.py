"""The OpenAPI 3.1 document of the HTTP API. Tests validate real responses against it."""

from __future__ import annotations

from typing import Any

from journeygate import __version__
from journeygate.config import AppConfig
from journeygate.events.openapi import event_paths, event_schemas
from journeygate.experiments.openapi import experiment_paths, experiment_schemas
from journeygate.model import CHANNELS, PAGE_TYPES, SLOT_KINDS
from journeygate.openapi_parts import JSON, NULLABLE_STRING, error_body, json_body, ref


def schemas(config: AppConfig) -> dict[str, Any]:
    """The JSON Schemas (2020-12) of every request and response body."""
    decide = config.decide
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "field": {"type": "string"},
                    },
                }
            },
        },
        "CartItem": {
            "type": "object",
            "required": ["product_id"],
            "properties": {
                "product_id": {"type": "string", "maxLength": 64},
                "quantity": {"type": "integer", "minimum": 1, "maximum": 10000},
                "price": {"type": "number", "minimum": 0},
            },
        },
        "Context": {
            "type": "object",
            "properties": {
                "page": {
                    "type": "object",
                    "properties": {
                        "type": {"enum": list(PAGE_TYPES)},
                        "url": {"type": "string"},
                        "product_id": {"type": "string"},
                        "category": {"type": "string"},
                        "query": {"type": "string"},
                    },
                },
                "cart": {
                    "type": "object",
                    "properties": {"items": {"type": "array", "items": ref("CartItem")}},
                },
                "channel": {"enum": list(CHANNELS)},
                "device": {"type": "string"},
                "locale": {"type": "string"},
                "referrer": {"type": "string"},
                "utm": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "Slot": {
            "type": "object",
            "required": ["id", "kind"],
            "properties": {
                "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "kind": {"enum": list(SLOT_KINDS)},
                "strategy": {
                    "type": "string",
                    "description": "Recommendation strategy; see /v1/admin/plugins for the "
                    f"running list. Default: {decide.default_strategy}.",
                },
                "limit": {"type": "integer", "minimum": 1, "maximum": decide.max_limit},
                "template": {"type": "string"},
                "plugin": {
                    "type": "string",
                    "description": "Ask only this plugin (and the fallback).",
                },
                "params": {"type": "object"},
            },
        },
        "DecideRequest": {
            "type": "object",
            "required": ["visitor_id", "slots"],
            "properties": {
                "visitor_id": {"type": "string", "pattern": "^[A-Za-z0-9._:@+-]{1,128}$"},
                "session_id": {"type": "string", "pattern": "^[A-Za-z0-9._:@+-]{1,128}$"},
                "context": ref("Context"),
                "slots": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": decide.max_slots,
                    "items": ref("Slot"),
                },
                "explain": {"type": "boolean"},
            },
        },
        "Item": {
            "type": "object",
            "required": ["product_id", "title", "price", "score"],
            "properties": {
                "product_id": {"type": "string"},
                "title": {"type": "string"},
                "price": {"type": "number"},
                "currency": {"type": "string"},
                "price_display": {
                    "type": "string",
                    "description": "Price and currency, formatted.",
                },
                "category": {"type": "string"},
                "url": {"type": "string"},
                "score": {"type": "number"},
                "reason": {"type": "string"},
            },
        },
        "Offer": {
            "type": "object",
            "required": ["id", "title"],
            "properties": {
                "id": {"type": "string"},
                "title": {"type": "string"},
                "body": {"type": "string"},
                "cta_label": NULLABLE_STRING,
                "cta_url": NULLABLE_STRING,
                "reason": {"type": "string"},
                "hidden": {
                    "type": "boolean",
                    "description": "True when the slot is deliberately left empty (no HTML).",
                },
            },
        },
        "Block": {
            "type": "object",
            "required": ["slot", "kind", "source", "items", "html", "tracking", "personalized"],
            "properties": {
                "slot": {"type": "string"},
                "kind": {"enum": list(SLOT_KINDS)},
                "strategy": {"type": "string"},
                "source": {"type": "string", "description": "The plugin that answered."},
                "personalized": {"type": "boolean"},
                "items": {"type": "array", "items": ref("Item")},
                "offer": ref("Offer"),
                "html": {"type": "string"},
                "fallback_reason": {"type": "string"},
                "tracking": {
                    "type": "object",
                    "required": ["decision_id", "slot"],
                    "properties": {
                        "decision_id": {"type": "string"},
                        "slot": {"type": "string"},
                        "source": {"type": "string"},
                    },
                },
            },
        },
        "Visitor": {
            "type": "object",
            "required": ["stage", "intent", "segment", "sentiment"],
            "properties": {
                "stage": NULLABLE_STRING,
                "intent": NULLABLE_STRING,
                "segment": NULLABLE_STRING,
                "sentiment": {"type": ["number", "null"]},
            },
        },
        "Explain": {
            "type": "object",
            "required": ["duration_ms", "calls"],
            "properties": {
                "duration_ms": {"type": "number"},
                "store": {"type": "object", "properties": {"available": {"type": "boolean"}}},
                "calls": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["hook"],
                        "properties": {
                            "hook": {"type": "string"},
                            "plugin": {"type": "string"},
                            "slot": {"type": "string"},
                            "ms": {"type": "number"},
                            "outcome": {"enum": ["ok", "timeout", "error"]},
                            "explanations": {"type": "object"},
                        },
                    },
                },
            },
        },
        "DecideResponse": {
            "type": "object",
            "required": ["decision_id", "visitor", "blocks"],
            "properties": {
                "decision_id": {"type": "string"},
                "visitor": ref("Visitor"),
                "blocks": {"type": "array", "items": ref("Block")},
                "explain": ref("Explain"),
            },
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "store", "plugins"],
            "properties": {
                "status": {"enum": ["ready", "unavailable"]},
                "store": {
                    "type": "object",
                    "required": ["backend", "reachable"],
                    "properties": {
                        "backend": {"enum": ["memory", "redis"]},
                        "reachable": {"type": "boolean"},
                    },
                },
                "plugins": {
                    "type": "object",
                    "required": ["started", "failed"],
                    "properties": {
                        "started": {"type": "array", "items": {"type": "string"}},
                        "failed": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
                "catalog": {"type": "object", "properties": {"products": {"type": "integer"}}},
            },
        },
        "PluginList": {
            "type": "object",
            "required": ["plugins", "failed", "strategies"],
            "properties": {
                "plugins": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "module", "version", "builtin", "hooks", "budget_ms"],
                        "properties": {
                            "name": {"type": "string"},
                            "module": {"type": "string"},
                            "version": NULLABLE_STRING,
                            "builtin": {"type": "boolean"},
                            "hooks": {"type": "array", "items": {"type": "string"}},
                            "budget_ms": {"type": "integer"},
                        },
                    },
                },
                "failed": {"type": "object", "additionalProperties": {"type": "string"}},
                "strategies": {"type": "array", "items": {"type": "string"}},
            },
        },
    }


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def openapi_document(config: AppConfig) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document for this gateway's configuration."""
    api_key = [{"apiKey": []}]
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "journeygate",
            "version": __version__,
            "description": "Personalized content blocks for storefronts and CMS pages.",
        },
        "components": {
            "schemas": schemas(config) | event_schemas(config) | experiment_schemas(),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "writeKey": {"type": "http", "scheme": "basic"},
            },
        },
        "paths": {
            "/v1/decide": {
                "post": {
                    "operationId": "decide",
                    "summary": "Decide the content blocks of one page view.",
                    "requestBody": {
                        "required": True,
                        "content": {JSON: {"schema": ref("DecideRequest")}},
                    },
                    "responses": {
                        "200": json_body(ref("DecideResponse"), "One block per requested slot."),
                        "400": error_body("The body is not valid; `field` names the problem."),
                        "413": error_body("The body is larger than server.max_body_bytes."),
                        "415": error_body("The body is not JSON."),
                    },
                }
            },
            "/v1/blocks/{slot}": {
                "get": {
                    "operationId": "blockFragment",
                    "summary": "One slot's block as a bare HTML fragment, for <esi:include>.",
                    "parameters": [
                        {
                            "name": "slot",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        _query("visitor_id", "Visitor id; else the identity cookie is used."),
                        _query("session_id", "Session id."),
                        _query("kind", "Slot kind.", {"enum": list(SLOT_KINDS)}),
                        _query("strategy", "Recommendation strategy."),
                        _query("limit", "Number of items.", {"type": "integer"}),
                        _query("template", "Template name."),
                        _query("plugin", "Ask only this plugin."),
                        _query("page_type", "Page type.", {"enum": list(PAGE_TYPES)}),
                        _query("product_id", "Product on the page."),
                        _query("category", "Category of the page."),
                        _query("query", "Search query."),
                        _query("url", "Page URL."),
                        _query("channel", "Channel.", {"enum": list(CHANNELS)}),
                        _query("device", "Device."),
                        _query("locale", "Locale."),
                        _query("cart", "Comma-separated product ids in the cart."),
                    ],
                    "responses": {
                        "200": {
                            "description": "The block's HTML.",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        },
                        "400": error_body("A query parameter is not valid; `field` names it."),
                    },
                }
            },
            "/v1/admin/plugins": {
                "get": {
                    "operationId": "listPlugins",
                    "summary": "Running plugins in call order.",
                    "security": api_key,
                    "responses": {
                        "200": json_body(ref("PluginList"), "The plugins."),
                        "401": error_body("Missing or wrong API key."),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness.",
                    "responses": {
                        "200": json_body(
                            {"type": "object", "properties": {"status": {"const": "ok"}}},
                            "Alive.",
                        )
                    },
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: store reachable and plugins started.",
                    "responses": {
                        "200": json_body(ref("Readiness"), "Ready."),
                        "503": json_body(ref("Readiness"), "Not ready; the body says why."),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics.",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "responses": {"200": json_body({"type": "object"}, "OpenAPI 3.1.")},
                }
            },
            **event_paths(),
            **experiment_paths(),
        },
    }
