"""Signed calls to the control plane (SigV4 with the instance role) and the status report: its body and reply."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from agent.log import UTC

_MAX_REPLY_BYTES = 65536
# A recordings reply lists up to 100 presigned URLs of a few hundred bytes each.
_MAX_CALL_REPLY_BYTES = 1 << 20
# The gateway and Lambda answer these when they are briefly overloaded or failing; they clear on their own.
TRANSIENT_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class StatusReport:
    busy_status: str
    health: str
    pending_uploads: int
    sent_at: datetime
    jibri: dict[str, Any] | None
    target_lifecycle_state: str | None = None  # IMDS autoscaling/target-lifecycle-state, when it answered
    private_ip: str | None = None  # IMDS local-ipv4: where the control plane can reach Jibri (direct start)
    disk_free_bytes: int | None = None  # free space where recordings are written
    failed_uploads: int | None = None  # of pending_uploads, sessions waiting for an operator (SpoolScan.failed)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "busy_status": self.busy_status,
            "health": self.health,
            "pending_uploads": self.pending_uploads,
            "sent_at": format_time(self.sent_at),
            "jibri": self.jibri,
        }
        if self.target_lifecycle_state is not None:
            body["target_lifecycle_state"] = self.target_lifecycle_state
        if self.private_ip is not None:
            body["private_ip"] = self.private_ip
        if self.disk_free_bytes is not None:
            body["disk_free_bytes"] = self.disk_free_bytes
        if self.failed_uploads is not None:
            body["failed_uploads"] = self.failed_uploads
        return body


@dataclass(frozen=True)
class Reply:
    protect: bool
    drain: bool
    state: str
    stop_recording: bool = False  # a Spot interruption warning: the recording must end before the instance does


class TransientReportError(RuntimeError):
    """The API could not be reached or answered 5xx/429/garbage: retry with backoff."""


class ReportRejected(RuntimeError):
    """The API refused the report with a 4xx: a configuration problem that retrying will not fix."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SignedApi:
    """POSTs JSON to the control plane, signed with SigV4 for execute-api with the instance role's credentials."""

    def __init__(
        self, api_url: str, region: str, credentials: Callable[[], Credentials | None], timeout: float
    ) -> None:
        self.base_url = api_url.rstrip("/")
        self._region = region
        self._credentials = credentials
        self._timeout = timeout

    def post(self, path: str, body: Mapping[str, Any], max_reply_bytes: int = _MAX_REPLY_BYTES) -> tuple[int, bytes]:
        """The reply's status and (at most max_reply_bytes + 1 bytes of) body, whatever the status.

        Raises TransientReportError when the API cannot be reached or no credentials are at hand.
        """
        url = self.base_url + path
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        request = urllib.request.Request(url, data=data, headers=self._signed_headers(url, data), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return response.status, response.read(max_reply_bytes + 1)
        except urllib.error.HTTPError as exc:
            return exc.code, _read_quietly(exc, max_reply_bytes)
        except (OSError, ValueError) as exc:
            raise TransientReportError(f"control plane API unreachable: {exc}") from None

    def call(self, path: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        """Like post, with the reply parsed as JSON (None when it is not JSON)."""
        status, payload = self.post(path, body, _MAX_CALL_REPLY_BYTES)
        try:
            parsed = json.loads(payload) if len(payload) <= _MAX_CALL_REPLY_BYTES else None
        except ValueError:
            parsed = None
        return status, parsed

    def _signed_headers(self, url: str, data: bytes) -> dict[str, str]:
        try:
            credentials = self._credentials()
            frozen = credentials.get_frozen_credentials() if credentials is not None else None
        except Exception as exc:
            raise TransientReportError(f"instance role credentials unavailable: {type(exc).__name__}") from None
        if frozen is None or not frozen.access_key:
            raise TransientReportError("no instance role credentials from IMDS")
        signed = AWSRequest(method="POST", url=url, data=data, headers={"Content-Type": "application/json"})
        SigV4Auth(frozen, "execute-api", self._region).add_auth(signed)
        # urllib adds Host from the URL's netloc, which is exactly the host SigV4 signed.
        return {name: str(value) for name, value in signed.headers.items()}


class Reporter:
    def __init__(
        self,
        api_url: str,
        instance_id: str,
        region: str,
        credentials: Callable[[], Credentials | None],
        timeout: float,
    ) -> None:
        self.api = SignedApi(api_url, region, credentials, timeout)
        self._path = f"/v1/recorders/{quote(instance_id, safe='')}/status"
        self.url = self.api.base_url + self._path

    def send(self, report: StatusReport) -> Reply:
        status, payload = self.api.post(self._path, report.body())
        if 200 <= status < 300:
            return _parse_reply(status, payload)
        code, message = error_fields(_parsed(payload), _error_text(payload))
        if transient_status(status):
            raise TransientReportError(f"status API answered HTTP {status} {code}: {message}")
        raise ReportRejected(status, code, message)


def _parse_reply(status: int, payload: bytes) -> Reply:
    try:
        body = json.loads(payload) if len(payload) <= _MAX_REPLY_BYTES else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise TransientReportError(f"status API answered HTTP {status} with a body that is not a JSON object")
    protect, drain, state = body.get("protect"), body.get("drain"), body.get("state")
    if not isinstance(protect, bool) or not isinstance(drain, bool) or not isinstance(state, str):
        raise TransientReportError(
            f"status API answered HTTP {status} without protect (bool), drain (bool) and state (str)"
        )
    # Only sent when true; anything but true is no order, so a stray value never cuts a recording.
    return Reply(protect=protect, drain=drain, state=state, stop_recording=body.get("stop_recording") is True)


def _read_quietly(exc: urllib.error.HTTPError, max_reply_bytes: int = _MAX_REPLY_BYTES) -> bytes:
    try:
        return bytes(exc.read(max_reply_bytes + 1))
    except (OSError, ValueError):
        return b""
    finally:
        exc.close()


def transient_status(status: int) -> bool:
    """An HTTP status the control plane answers while briefly overloaded or failing: worth retrying soon."""
    return status >= 500 or status in TRANSIENT_STATUSES


def error_fields(body: Any, fallback: str = "(no JSON error body)") -> tuple[str, str]:
    """The code and message of the control plane's error reply {"error": {"code", "message"}} (parsed JSON).

    API Gateway's own replies may still use {"message": ...} if its gateway responses are not set up;
    `fallback` is the message when the reply says nothing readable."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return (
            code if isinstance(code, str) else "Unknown",
            message if isinstance(message, str) else fallback,
        )
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return "Unknown", str(body["message"])
    return "Unknown", fallback


def _parsed(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return None


def _error_text(payload: bytes) -> str:
    text = payload[:300].decode("utf-8", "replace").strip()
    return text or "(empty body)"
