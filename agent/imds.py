"""The instance's own facts from IMDSv2 (session token first, then GETs carrying it)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

TOKEN_TTL_SECONDS = 21600
# Renew well before the token expires so a GET never races its expiry.
_TOKEN_RENEW_MARGIN_SECONDS = 300


class ImdsError(RuntimeError):
    pass


class Imds:
    def __init__(self, base_url: str, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._clock = clock
        # IMDS is link-local: a proxy from the environment must never see these requests.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires = 0.0

    def instance_id(self) -> str:
        return self.get("meta-data/instance-id")

    def region(self) -> str:
        return self.get("meta-data/placement/region")

    def availability_zone(self) -> str:
        return self.get("meta-data/placement/availability-zone")

    def local_ipv4(self) -> str:
        return self.get("meta-data/local-ipv4")

    def target_lifecycle_state(self) -> str:
        return self.get("meta-data/autoscaling/target-lifecycle-state")

    def identity_document(self) -> dict[str, Any]:
        document = json.loads(self.get("dynamic/instance-identity/document"))
        if not isinstance(document, dict):
            raise ImdsError("the instance identity document is not a JSON object")
        return document

    def get(self, path: str) -> str:
        for attempt in range(2):
            request = urllib.request.Request(
                f"{self._base_url}/latest/{path}", headers={"X-aws-ec2-metadata-token": self._session_token()}
            )
            try:
                with self._opener.open(request, timeout=self._timeout) as response:
                    return str(response.read().decode("utf-8")).strip()
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 0:
                    self._forget_token()  # the token expired or IMDS restarted: fetch a new one once
                    continue
                raise ImdsError(f"IMDS answered {exc.code} for {path}") from None
            except (OSError, ValueError) as exc:
                raise ImdsError(f"IMDS unreachable for {path}: {exc}") from None
        raise ImdsError(f"IMDS refused the session token for {path}")

    def _session_token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._token_expires:
                self._token = self._fetch_token()
                self._token_expires = self._clock() + TOKEN_TTL_SECONDS - _TOKEN_RENEW_MARGIN_SECONDS
            return self._token

    def _forget_token(self) -> None:
        with self._lock:
            self._token = None

    def _fetch_token(self) -> str:
        request = urllib.request.Request(
            f"{self._base_url}/latest/api/token",
            method="PUT",
            data=b"",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)},
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                token = response.read().decode("utf-8").strip()
        except urllib.error.HTTPError as exc:
            raise ImdsError(f"IMDS refused a session token ({exc.code})") from None
        except (OSError, ValueError) as exc:
            raise ImdsError(f"IMDS unreachable: {exc}") from None
        if not token:
            raise ImdsError("IMDS returned an empty session token")
        return str(token)
