"""Jibri's local HTTP APIs: the HTTP API with its health endpoint (:2222) and the internal API (:3333)."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.log import get_logger

log = get_logger("jibri")

JIBRI_BUSY_STATUSES = ("IDLE", "BUSY", "EXPIRED")
HEALTH_STATUSES = ("HEALTHY", "UNHEALTHY")
_MAX_HEALTH_BYTES = 1 << 20


@dataclass(frozen=True)
class JibriHealth:
    busy_status: str  # IDLE, BUSY, EXPIRED, or OFFLINE when the API does not answer sensibly
    health: str
    raw: dict[str, Any] | None

    @property
    def offline(self) -> bool:
        return self.busy_status == "OFFLINE"


OFFLINE = JibriHealth(busy_status="OFFLINE", health="UNHEALTHY", raw=None)


class JibriError(RuntimeError):
    pass


class JibriTimeout(JibriError):
    """The request was sent but not answered in time: Jibri may well be acting on it."""


def http_base_of(health_url: str) -> str:
    """Jibri serves health and stopService side by side (under /jibri/api/v1.0 on its external port)."""
    return health_url.rstrip("/").rpartition("/")[0]


def parse_health(body: Any) -> JibriHealth | None:
    """Jibri's JibriHealth JSON: {"status": {"busyStatus", "health": {"healthStatus", "details"}}, ...}."""
    if not isinstance(body, dict):
        return None
    status = body.get("status")
    if not isinstance(status, dict):
        return None
    busy = status.get("busyStatus")
    health = status.get("health")
    health_status = health.get("healthStatus") if isinstance(health, dict) else None
    if busy not in JIBRI_BUSY_STATUSES or health_status not in HEALTH_STATUSES:
        return None
    return JibriHealth(busy_status=str(busy), health=str(health_status), raw=body)


class JibriClient:
    def __init__(self, health_url: str, internal_url: str, timeout: float, http_url: str | None = None) -> None:
        self._health_url = health_url
        self._internal_url = internal_url.rstrip("/")
        self._http_url = (http_url or http_base_of(health_url)).rstrip("/")
        self._timeout = timeout
        # Jibri listens on loopback: an environment proxy must not be asked for it.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def health(self) -> JibriHealth:
        try:
            with self._opener.open(self._health_url, timeout=self._timeout) as response:
                payload = response.read(_MAX_HEALTH_BYTES + 1)
        except urllib.error.HTTPError as exc:
            log.warning("Jibri's health API answered HTTP %s; treating Jibri as offline", exc.code)
            return OFFLINE
        except (OSError, ValueError):
            return OFFLINE  # not listening or not answering: Jibri is not running
        try:
            body = json.loads(payload) if len(payload) <= _MAX_HEALTH_BYTES else None
        except ValueError:
            body = None
        parsed = parse_health(body)
        if parsed is None:
            log.warning(
                "Jibri's health API answered something that is not Jibri health JSON; treating Jibri as offline",
                extra={"body": payload[:200].decode("utf-8", "replace")},
            )
            return JibriHealth(busy_status="OFFLINE", health="UNHEALTHY", raw=body if isinstance(body, dict) else None)
        return parsed

    def graceful_shutdown(self) -> None:
        """Ask Jibri to leave once idle: at once when idle, after the current recording when busy."""
        self._post(f"{self._internal_url}/gracefulShutdown", "internal API", "gracefulShutdown")

    def stop_service(self) -> None:
        """Stop the current recording now; Jibri then runs its finalize script as after any recording."""
        self._post(f"{self._http_url}/stopService", "HTTP API", "stopService")

    def _post(self, url: str, api: str, action: str) -> None:
        request = urllib.request.Request(url, method="POST", data=b"", headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise JibriError(f"Jibri's {api} answered HTTP {exc.code} to {action}") from None
        except (OSError, ValueError) as exc:
            # urllib wraps connect and send failures in URLError; a bare timeout came while waiting for the answer.
            if isinstance(exc, TimeoutError):
                raise JibriTimeout(f"Jibri's {api} did not answer {action} within {self._timeout:g} s") from None
            raise JibriError(f"Jibri's {api} did not answer {action}: {exc}") from None


class CommandStarter:
    """Runs a command that starts or restarts Jibri (systemctl start jibri, systemctl restart jibri)."""

    def __init__(self, command: Sequence[str], timeout: float = 60.0) -> None:
        self._command = list(command)
        self._timeout = timeout

    def __call__(self) -> None:
        try:
            result = subprocess.run(self._command, capture_output=True, text=True, timeout=self._timeout, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise JibriError(f"could not run {' '.join(self._command)}: {exc}") from None
        if result.returncode != 0:
            raise JibriError(
                f"{' '.join(self._command)} exited with {result.returncode}: {result.stderr.strip()[:500]}"
            )
