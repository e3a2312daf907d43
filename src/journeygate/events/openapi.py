"""The event and profile part of the OpenAPI document (merged in ``journeygate.openapi``)."""

from __future__ import annotations

from typing import Any

from journeygate.config import AppConfig
from journeygate.events.schema import (
    CONSENTS,
    FEEDBACK_TYPES,
    KINDS,
    MAX_FEEDBACK_TEXT,
    MAX_RATING,
    SEGMENT_EVENTS,
)
from journeygate.model import CHANNELS
from journeygate.openapi_parts import JSON, error_body, json_body, ref

ID_PATTERN = "^[A-Za-z0-9._:@+-]{1,128}$"
ID = {"type": "string", "pattern": ID_PATTERN}
TIME = {
    "description": "ISO 8601 (no offset means UTC) or epoch seconds.",
    "type": ["string", "number"],
}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
NULLABLE_NUMBER = {"type": ["number", "null"]}
COUNT = {"type": "integer", "minimum": 0}


def event_schemas(config: AppConfig) -> dict[str, Any]:
    events = config.events
    properties = {
        "type": "object",
        "description": "Free-form; these names are understood: product_id (or sku), "
        "category, price, quantity, query, order_id, revenue (or total, value), products "
        "([{product_id, category, price, quantity}]), path (or url, name), consents "
        f"({{{', '.join(CONSENTS)}: true|false}}).",
    }
    return {
        "Event": {
            "type": "object",
            "required": ["event"],
            "description": "One touchpoint. Needs visitor_id, anonymous_id or user_id; the "
            "profile is the user_id's when given (identify/alias with both merge the "
            "anonymous visitor into the customer).",
            "properties": {
                "event": {
                    "type": "string",
                    "maxLength": 128,
                    "description": f"A kind ({', '.join(KINDS)}), a Segment e-commerce name "
                    f"({', '.join(SEGMENT_EVENTS)}), or any other name (kind custom).",
                },
                "visitor_id": ID,
                "anonymous_id": ID,
                "user_id": ID,
                "session_id": {
                    **ID,
                    "description": "Optional: without it, sessions are derived by "
                    f"inactivity ({events.session_gap_s} s).",
                },
                "timestamp": {
                    **TIME,
                    "description": "Event time; at most "
                    f"{events.max_future_skew_s} s in the future. Default: now.",
                },
                "channel": {"enum": list(CHANNELS)},
                "properties": properties,
                "message_id": {
                    "type": "string",
                    "maxLength": 128,
                    "description": "Idempotency key: an event is applied once per message id "
                    f"(within {events.dedupe_ttl_s} s); send one so retries are safe.",
                },
            },
        },
        "EventsRequest": {
            "type": "object",
            "required": ["events"],
            "properties": {
                "events": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": events.max_batch,
                    "items": ref("Event"),
                },
                "sent_at": {
                    **TIME,
                    "description": "When the client sent the batch, by its own clock: event "
                    "times are corrected by the difference to the server's clock.",
                },
            },
        },
        "EventsResult": {
            "type": "object",
            "required": ["accepted", "rejected"],
            "description": "Accepted events are stored (with Redis: in a stream, durably) "
            "before this answer; rejected ones are not, and say why.",
            "properties": {
                "success": {"type": "boolean"},
                "accepted": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["index", "message_id"],
                        "properties": {
                            "index": {"type": "integer"},
                            "message_id": {"type": "string"},
                        },
                    },
                },
                "rejected": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["index", "field", "code", "message"],
                        "properties": {
                            "index": {"type": "integer"},
                            "field": {"type": "string"},
                            "code": {
                                "type": "string",
                                "description": "timestamp_in_future, missing_identity, "
                                "missing_field, invalid_id, invalid_type, invalid_number, "
                                "invalid_quantity, invalid_timestamp, invalid_channel, "
                                "unknown_consent, unsupported_type, too_long, too_many, "
                                "event_too_large, invalid_event",
                            },
                            "message": {"type": "string"},
                        },
                    },
                },
            },
        },
        "SegmentMessage": {
            "type": "object",
            "description": "A Segment Tracking API message (track, identify, page, screen, "
            "alias); see Segment's spec.",
            "properties": {
                "type": {"enum": ["track", "identify", "page", "screen", "alias"]},
                "event": {"type": "string"},
                "userId": {"type": ["string", "number"]},
                "anonymousId": {"type": ["string", "number"]},
                "previousId": {"type": ["string", "number"]},
                "messageId": {"type": "string"},
                "timestamp": TIME,
                "properties": {"type": "object"},
                "traits": {"type": "object"},
                "context": {"type": "object"},
                "name": {"type": "string"},
            },
        },
        "SegmentBatch": {
            "type": "object",
            "required": ["batch"],
            "properties": {
                "batch": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": events.max_batch,
                    "items": ref("SegmentMessage"),
                },
                "sentAt": TIME,
                "context": {"type": "object"},
                "writeKey": {"type": "string"},
            },
        },
        "Session": {
            "type": "object",
            "required": ["session_id", "started_at", "last_activity_at", "events"],
            "properties": {
                "session_id": {"type": "string"},
                "started_at": NULLABLE_TIME,
                "last_activity_at": NULLABLE_TIME,
                "duration_s": {"type": "number"},
                "events": COUNT,
                "page_views": COUNT,
                "channels": {"type": "object", "additionalProperties": COUNT},
                "products_viewed": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["product_id", "views", "dwell_s"],
                        "properties": {
                            "product_id": {"type": "string"},
                            "views": COUNT,
                            "dwell_s": {"type": "number"},
                        },
                    },
                },
                "categories_viewed": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"category": {"type": "string"}, "views": COUNT},
                    },
                },
                "page_dwell_s": {"type": "object", "additionalProperties": {"type": "number"}},
                "searches": {"type": "array", "items": {"type": "string"}},
                "cart_adds": COUNT,
                "cart_removes": COUNT,
                "checkouts": COUNT,
                "orders": COUNT,
                "revenue": {"type": "number"},
            },
        },
        "Profile": {
            "type": "object",
            "required": ["visitor_id", "profile_id", "aggregates", "sessions", "cart"],
            "properties": {
                "visitor_id": {"type": "string"},
                "profile_id": {
                    "type": "string",
                    "description": "The profile shown: visitor_id's, or the customer's it "
                    "was merged into.",
                },
                "merged_ids": {"type": "array", "items": {"type": "string"}},
                "first_seen": NULLABLE_TIME,
                "last_seen": NULLABLE_TIME,
                "first_order_at": NULLABLE_TIME,
                "last_order_at": NULLABLE_TIME,
                "last_checkout_at": NULLABLE_TIME,
                "aggregates": {
                    "type": "object",
                    "required": ["events", "orders", "revenue", "average_order_value"],
                    "properties": {
                        "events": COUNT,
                        "page_views": COUNT,
                        "product_views": COUNT,
                        "searches": COUNT,
                        "cart_adds": COUNT,
                        "cart_removes": COUNT,
                        "checkouts": COUNT,
                        "orders": COUNT,
                        "revenue": {"type": "number"},
                        "refunds": COUNT,
                        "refunded": {"type": "number"},
                        "cancellations": COUNT,
                        "average_order_value": NULLABLE_NUMBER,
                        "purchase_frequency_per_year": NULLABLE_NUMBER,
                        "days_since_last_order": NULLABLE_NUMBER,
                        "days_since_last_seen": NULLABLE_NUMBER,
                    },
                },
                "preferred_categories": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "category": {"type": "string"},
                            "score": {"type": "number"},
                        },
                    },
                },
                "preferred_channel": {"type": ["string", "null"]},
                "channels": {"type": "object", "additionalProperties": COUNT},
                "consents": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["granted", "updated_at"],
                        "properties": {
                            "granted": {"type": "boolean"},
                            "updated_at": NULLABLE_TIME,
                        },
                    },
                },
                "purchased_products": {"type": "array", "items": {"type": "string"}},
                "cart": {
                    "type": "object",
                    "required": ["items", "value"],
                    "properties": {
                        "items": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["product_id", "quantity"],
                                "properties": {
                                    "product_id": {"type": "string"},
                                    "quantity": {"type": "integer", "minimum": 1},
                                    "price": NULLABLE_NUMBER,
                                },
                            },
                        },
                        "value": {"type": "number"},
                    },
                },
                "sessions": {"type": "array", "items": ref("Session")},
                "attributes": {
                    "type": "object",
                    "description": "Profile fields set by plugins (segment, sentiment, ...).",
                },
            },
        },
        "Erasure": {
            "type": "object",
            "required": [
                "visitor_id",
                "profile_id",
                "erased",
                "ids",
                "plugins",
                "webhooks",
                "dead_letters",
            ],
            "properties": {
                "visitor_id": {"type": "string"},
                "profile_id": {"type": "string"},
                "erased": {"type": "boolean", "description": "Whether anything was stored."},
                "ids": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The ids erased: as requested, its profile, merged ids.",
                },
                "plugins": {
                    "type": "object",
                    "description": "What each plugin erased outside the profile, by kind.",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": {"type": "integer", "minimum": 0},
                    },
                },
                "webhooks": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Undelivered webhooks of these ids dropped.",
                },
                "dead_letters": {
                    "type": "integer",
                    "minimum": 0,
                    "description": (
                        "Event dead letters that held events of these ids: deleted, or "
                        "rewritten without them when they held other visitors' events too."
                    ),
                },
            },
        },
        "JourneyMap": {
            "type": "object",
            "required": ["since", "until", "total", "truncated", "transitions"],
            "properties": {
                "since": {"type": "number"},
                "until": {"type": "number"},
                "total": COUNT,
                "truncated": {
                    "type": "boolean",
                    "description": "More transitions in the window than events.transitions_maxlen.",
                },
                "transitions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["from", "to", "count"],
                        "properties": {
                            "from": {
                                "type": ["string", "null"],
                                "description": "null: the visitor's first recorded stage.",
                            },
                            "to": {"type": "string"},
                            "count": COUNT,
                        },
                    },
                },
            },
        },
        "FeedbackRequest": {
            "type": "object",
            "required": ["text"],
            "additionalProperties": False,
            "description": "Free-text feedback. Needs visitor_id, anonymous_id or user_id. It "
            "becomes one event (Feedback Submitted, kind feedback), stored like any event.",
            "properties": {
                "visitor_id": ID,
                "anonymous_id": ID,
                "user_id": ID,
                "session_id": ID,
                "text": {"type": "string", "minLength": 1, "maxLength": MAX_FEEDBACK_TEXT},
                "type": {"enum": list(FEEDBACK_TYPES), "description": "Default: other."},
                "rating": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": MAX_RATING,
                    "description": "Optional: stars (1-5) or an NPS answer (0-10).",
                },
                "product_id": {"type": "string", "maxLength": 64},
                "order_id": {"type": "string", "maxLength": 128},
                "channel": {"enum": list(CHANNELS)},
                "timestamp": TIME,
                "message_id": {
                    "type": "string",
                    "maxLength": 128,
                    "description": "Idempotency key, as for events.",
                },
            },
        },
        "FeedbackAccepted": {
            "type": "object",
            "required": ["accepted", "message_id", "profile_id"],
            "properties": {
                "accepted": {"const": True},
                "message_id": {"type": "string"},
                "profile_id": {"type": "string", "description": "The profile it is applied to."},
            },
        },
    }


def _ingest(operation: str, summary: str, body: str, description: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation,
            "summary": summary,
            "description": description,
            "security": [{"writeKey": []}, {"apiKey": []}],
            "requestBody": {"required": True, "content": {JSON: {"schema": ref(body)}}},
            "responses": {
                "200": json_body(ref("EventsResult"), "Per-event outcome: accepted and rejected."),
                "400": error_body("The envelope is not valid (not an array, too many events)."),
                "401": error_body("Missing or wrong write key."),
                "413": error_body("The body is larger than events.max_body_bytes."),
                "415": error_body("The body is not JSON."),
                "503": error_body(
                    "Nothing was accepted; retry after the Retry-After header's seconds: "
                    "Redis is down (code `unavailable`) or the workers are behind and the "
                    "backlog passed events.backlog_high_water_pct (code `backpressure`)."
                ),
            },
        }
    }


def event_paths() -> dict[str, Any]:
    profile_parameter = {
        "name": "visitor_id",
        "in": "path",
        "required": True,
        "schema": ID,
    }
    paths = {
        "/v1/events": _ingest(
            "ingestEvents",
            "Ingest a batch of events (journeygate's schema).",
            "EventsRequest",
            "Each event is validated on its own: invalid ones are listed in `rejected` "
            "(index, field, code, message) and the others are accepted. Late and "
            "out-of-order events are applied by event time.",
        ),
        "/v1/batch": _ingest(
            "segmentBatch",
            "Segment Tracking API: a batch of messages.",
            "SegmentBatch",
            "Write key as the HTTP basic auth user name, as Segment libraries send it.",
        ),
    }
    for message_type in ("track", "identify", "page", "screen", "alias"):
        operation = _ingest(
            f"segment{message_type.title()}",
            f"Segment Tracking API: one {message_type} message.",
            "SegmentMessage",
            "An invalid message is answered 400 with the field that is wrong.",
        )
        operation["post"]["responses"]["400"] = error_body("The message is not valid.")
        paths[f"/v1/{message_type}"] = operation
    paths["/v1/feedback"] = {
        "post": {
            "operationId": "submitFeedback",
            "summary": "Submit free-text feedback (review, survey or NPS answer, support message).",
            "description": "Stored as one event, as durably as events (with Redis: in a stream "
            "before this answer). Plugins observing events score it; the sentiment plugin "
            "writes sentiment, sentiment_at, feedback_label and feedback_themes to the profile.",
            "security": [{"writeKey": []}, {"apiKey": []}],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": ref("FeedbackRequest")}},
            },
            "responses": {
                "202": json_body(ref("FeedbackAccepted"), "Accepted and stored."),
                "400": error_body("Not valid; `field` names the problem, `code` what it is."),
                "401": error_body("Missing or wrong write key."),
                "413": error_body("The body is larger than events.max_event_bytes."),
                "415": error_body("The body is not JSON."),
                "503": error_body("Feedback cannot be stored now (Redis down); retry later."),
            },
        }
    }
    paths["/v1/profiles/{visitor_id}"] = {
        "get": {
            "operationId": "getProfile",
            "summary": "The profile built from events (merged identities resolved).",
            "security": [{"apiKey": []}],
            "parameters": [profile_parameter],
            "responses": {
                "200": json_body(ref("Profile"), "The merged profile."),
                "400": error_body("Not a valid visitor id."),
                "401": error_body("Missing or wrong API key."),
                "404": error_body("No profile for this id."),
                "503": error_body("The profile store is not reachable."),
            },
        },
        "delete": {
            "operationId": "eraseProfile",
            "summary": "Erase a visitor everywhere (right to be forgotten).",
            "security": [{"apiKey": []}],
            "parameters": [profile_parameter],
            "responses": {
                "200": json_body(ref("Erasure"), "Erased (idempotent)."),
                "400": error_body("Not a valid visitor id."),
                "401": error_body("Missing or wrong API key."),
                "503": error_body(
                    "The profile store is not reachable, or a plugin failed to erase its "
                    "share (code erasure_incomplete); nothing was lost, retry."
                ),
            },
        },
    }
    window = [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": {"type": "number", "minimum": 0},
        }
        for name, description in (
            ("since", "Epoch seconds (default: 24 hours before until)."),
            ("until", "Epoch seconds (default: now)."),
        )
    ]
    paths["/v1/journey/transitions"] = {
        "get": {
            "operationId": "journeyTransitions",
            "summary": "Journey stage transition counts (from -> to) over a time window.",
            "security": [{"apiKey": []}],
            "parameters": window,
            "responses": {
                "200": json_body(ref("JourneyMap"), "Counts, most frequent first."),
                "400": error_body("since or until is not a time, or since is after until."),
                "401": error_body("Missing or wrong API key."),
                "503": error_body("The profile store is not reachable."),
            },
        }
    }
    return paths
