"""The OpenAPI part of ``GET /v1/experiments/{id}/results``."""

from __future__ import annotations

from typing import Any

from journeygate.openapi_parts import NULLABLE_STRING, error_body, json_body, ref

NUMBER = {"type": "number"}
NULLABLE_INTERVAL = {"oneOf": [ref("Interval"), {"type": "null"}]}


def experiment_schemas() -> dict[str, Any]:
    return {
        "Interval": {
            "type": "object",
            "required": ["estimate", "low", "high"],
            "properties": {"estimate": NUMBER, "low": NUMBER, "high": NUMBER},
        },
        "ArmResult": {
            "type": "object",
            "required": [
                "name",
                "control",
                "share",
                "exposures",
                "decisions",
                "clicks",
                "conversions",
                "orders",
                "revenue",
                "conversion_rate",
                "conversion_rate_ci",
                "revenue_per_visitor",
                "click_rate",
                "rewards",
                "lift",
            ],
            "properties": {
                "name": {"type": "string"},
                "control": {"type": "boolean"},
                "share": NUMBER,
                "exposures": {"type": "integer", "description": "Unique exposed visitors."},
                "decisions": {"type": "integer"},
                "clicks": {"type": "integer"},
                "conversions": {"type": "integer", "description": "Converting visitors."},
                "orders": {"type": "integer"},
                "revenue": NUMBER,
                "conversion_rate": NUMBER,
                "conversion_rate_ci": {"type": "array", "items": NUMBER},
                "revenue_per_visitor": NUMBER,
                "click_rate": {"type": "number", "description": "Clicks per decision."},
                "rewards": {"type": "integer", "description": "Bandit rewards."},
                "lift": {
                    "description": "Against the control arm; null for the control.",
                    "oneOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "required": [
                                "conversion_rate_difference",
                                "conversion_rate_relative",
                                "revenue_per_visitor_difference",
                            ],
                            "properties": {
                                "conversion_rate_difference": ref("Interval"),
                                "conversion_rate_relative": NULLABLE_INTERVAL,
                                "revenue_per_visitor_difference": NULLABLE_INTERVAL,
                                "welch_df": {"type": ["number", "null"]},
                            },
                        },
                    ],
                },
            },
        },
        "ExperimentResults": {
            "type": "object",
            "required": [
                "experiment",
                "slot",
                "policy",
                "status",
                "control",
                "confidence",
                "arms",
                "sample_ratio",
                "warnings",
                "methods",
            ],
            "properties": {
                "experiment": {"type": "string"},
                "slot": {"type": "string"},
                "policy": {"enum": ["fixed", "thompson"]},
                "reward": {"enum": ["click", "conversion"]},
                "status": {"enum": ["scheduled", "running", "stopped"]},
                "start": NULLABLE_STRING,
                "stop": NULLABLE_STRING,
                "traffic": NUMBER,
                "holdout": NUMBER,
                "control": {"type": "string"},
                "confidence": NUMBER,
                "arms": {"type": "array", "items": ref("ArmResult")},
                "sample_ratio": {
                    "oneOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "required": ["chi_square", "p_value", "mismatch", "expected"],
                            "properties": {
                                "chi_square": NUMBER,
                                "p_value": NUMBER,
                                "mismatch": {"type": "boolean"},
                                "expected": {"type": "object", "additionalProperties": NUMBER},
                            },
                        },
                    ]
                },
                "warnings": {"type": "array", "items": {"type": "string"}},
                "methods": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    }


def experiment_paths() -> dict[str, Any]:
    return {
        "/v1/experiments/{experiment_id}/results": {
            "get": {
                "operationId": "experimentResults",
                "summary": "Per-arm results of an experiment, lifts with 95% intervals, SRM.",
                "security": [{"apiKey": []}],
                "parameters": [
                    {
                        "name": "experiment_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": json_body(ref("ExperimentResults"), "The results."),
                    "401": error_body("Missing or wrong API key."),
                    "404": error_body("No such experiment."),
                    "503": error_body("The experiment store is not reachable."),
                },
            }
        }
    }
