"""Domain errors raised in the core and translated to JSON HTTP errors in one middleware."""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """An error the client should see as ``{"error": {"code", "message", "field"}}``."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def as_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class InvalidRequest(GatewayError):
    status = 400
    code = "invalid_request"


class InvalidJson(InvalidRequest):
    code = "invalid_json"


class UnknownSlotKind(InvalidRequest):
    code = "unknown_slot_kind"


class UnknownStrategy(InvalidRequest):
    code = "unknown_strategy"


class UnknownPlugin(InvalidRequest):
    code = "unknown_plugin"


class UnknownTemplate(InvalidRequest):
    code = "unknown_template"


class Unauthorized(GatewayError):
    status = 401
    code = "unauthorized"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    code = "unsupported_media_type"


class ServiceUnavailable(GatewayError):
    status = 503
    code = "unavailable"


class ErasureIncomplete(ServiceUnavailable):
    """A plugin could not erase its share of a visitor: the profile was kept, retry."""

    code = "erasure_incomplete"


class Overloaded(ServiceUnavailable):
    """The workers are behind: ingestion refuses until they catch up."""

    code = "backpressure"
