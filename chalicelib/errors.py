"""Errors a caller can act on, each with its HTTP status and a stable code."""

from __future__ import annotations

from chalice.app import ChaliceUnhandledError


class ApiError(ChaliceUnhandledError):
    """Raised from a view, passed by Chalice to the middleware that shapes error replies."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(ApiError):
    status_code = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Gone(ApiError):
    status_code = 410
    code = "gone"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class Unavailable(ApiError):
    status_code = 503
    code = "unavailable"
