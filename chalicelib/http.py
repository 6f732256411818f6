"""One JSON error shape for every reply, and the request-body reading all routes share."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chalice import Response
from chalice.app import Request

from chalicelib.config import SettingsError
from chalicelib.errors import ApiError, BadRequest, PayloadTooLarge
from chalicelib.observability import logger

_CHALICE_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


JSON_HEADERS = {"Content-Type": "application/json"}


def error_response(status: int, code: str, message: str) -> Response:
    return Response(body={"error": {"code": code, "message": message}}, status_code=status, headers=dict(JSON_HEADERS))


def json_errors(event: Request, get_response: Callable[[Request], Response]) -> Response:
    """HTTP middleware: domain errors and Chalice's own error bodies become `{"error": {...}}`."""
    try:
        response = get_response(event)
    except ApiError as error:
        # Said explicitly: Chalice sets no Content-Type, and only API Gateway's proxy default adds one.
        return Response(body=error.body(), status_code=error.status_code, headers=dict(JSON_HEADERS))
    except SettingsError as error:
        logger.error("control plane misconfigured", extra={"error": str(error)})
        return error_response(500, "misconfigured", "the control plane is misconfigured; its operator has been told")
    except Exception:
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "an internal error occurred; it has been logged")
    body = response.body
    if response.status_code >= 400 and isinstance(body, dict) and set(body) == {"Code", "Message"}:
        status = response.status_code
        code = _CHALICE_CODES.get(status, "internal_error" if status >= 500 else "bad_request")
        message = str(body["Message"]) if status < 500 else "an internal error occurred; it has been logged"
        shaped = {"error": {"code": code, "message": message}}
        return Response(body=shaped, status_code=status, headers={**response.headers, **JSON_HEADERS})
    return response


def read_json(request: Request, max_bytes: int) -> Any:
    raw = request.raw_body or b""
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"the body has {len(raw)} bytes; at most {max_bytes} are accepted")
    if not raw.strip():
        raise BadRequest("the body is empty; send a JSON object")
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequest("the body nests too deeply") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"the body is not valid JSON: {error}") from None
    if _depth(body) > MAX_DEPTH:
        raise BadRequest(f"the body nests deeper than {MAX_DEPTH} levels")
    return body


MAX_DEPTH = 32


def _depth(value: Any) -> int:
    """Nesting depth, without recursion: the body is untrusted."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            return depth
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")
