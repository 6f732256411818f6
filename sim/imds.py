"""A fake EC2 instance metadata service that insists on IMDSv2, for the agent's tests and the local stack."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

from sim.net import LoopbackServer

TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TTL_SECONDS = 21600
CREDENTIALS_LIFETIME = timedelta(hours=6)
_CREDENTIALS_PREFIX = "/latest/meta-data/iam/security-credentials/"


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeImds:
    def __init__(
        self,
        instance_id: str,
        *,
        credentials: Mapping[str, str],
        role_name: str = "jibri-agent",
        region: str = "us-east-1",
        availability_zone: str = "us-east-1a",
        private_ip: str = "10.0.0.10",
        target_lifecycle_state: str | None = "InService",
    ) -> None:
        missing = {"AccessKeyId", "SecretAccessKey", "Token"} - set(credentials)
        if missing:
            raise ValueError(f"credentials lack {', '.join(sorted(missing))}")
        self.instance_id = instance_id
        self.credentials = dict(credentials)
        self.role_name = role_name
        self.region = region
        self.availability_zone = availability_zone
        self.private_ip = private_ip
        # Read on every GET, so a change is what the next read sees; None answers 404, as outside a group.
        self.target_lifecycle_state = target_lifecycle_state
        self.token_requests = 0
        self.rejected_requests = 0
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()
        self._started_at = datetime.now(UTC)
        self._server = LoopbackServer(type("FakeImdsHandler", (_Handler,), {"imds": self}))

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> FakeImds:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def issue_token(self, ttl_seconds: int) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self.token_requests += 1
            self._tokens[token] = time.monotonic() + ttl_seconds
        return token

    def revoke_tokens(self) -> None:
        """Every session token stops working, as when tokens expire."""
        with self._lock:
            self._tokens.clear()

    def count_rejection(self) -> None:
        with self._lock:
            self.rejected_requests += 1

    def token_valid(self, token: str | None) -> bool:
        with self._lock:
            expires = self._tokens.get(token or "")
        return expires is not None and time.monotonic() < expires

    def metadata(self, path: str) -> tuple[str, str] | None:
        """The body and content type IMDS answers for a GET of `path`, or None for 404."""
        text = {
            "/latest/meta-data/instance-id": self.instance_id,
            "/latest/meta-data/placement/region": self.region,
            "/latest/meta-data/placement/availability-zone": self.availability_zone,
            "/latest/meta-data/local-ipv4": self.private_ip,
            "/latest/meta-data/autoscaling/target-lifecycle-state": self.target_lifecycle_state,
            _CREDENTIALS_PREFIX: self.role_name,
        }.get(path)
        if text is not None:
            return text, "text/plain"
        if path == _CREDENTIALS_PREFIX + self.role_name:
            return json.dumps(self._role_credentials(), indent=2), "text/plain"
        if path == "/latest/dynamic/instance-identity/document":
            return json.dumps(self._identity_document(), indent=2), "application/json"
        return None

    def _role_credentials(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {
            "Code": "Success",
            "LastUpdated": _stamp(now),
            "Type": "AWS-HMAC",
            "AccessKeyId": self.credentials["AccessKeyId"],
            "SecretAccessKey": self.credentials["SecretAccessKey"],
            "Token": self.credentials["Token"],
            "Expiration": _stamp(now + CREDENTIALS_LIFETIME),
        }

    def _identity_document(self) -> dict[str, Any]:
        return {
            "accountId": "123456789012",
            "architecture": "x86_64",
            "availabilityZone": self.availability_zone,
            "billingProducts": None,
            "devpayProductCodes": None,
            "marketplaceProductCodes": None,
            "imageId": "ami-12c6146b",
            "instanceId": self.instance_id,
            "instanceType": "c5.xlarge",
            "kernelId": None,
            "pendingTime": _stamp(self._started_at),
            "privateIp": self.private_ip,
            "ramdiskId": None,
            "region": self.region,
            "version": "2017-09-30",
        }


class _Handler(BaseHTTPRequestHandler):
    server_version = "EC2ws"
    imds: FakeImds

    def do_PUT(self) -> None:
        if self.path != TOKEN_PATH:
            self._answer(404 if self.path.startswith("/latest/") else 403, "Not Found")
            return
        # Real IMDS refuses a token request that went through a proxy, so a token never leaves the instance.
        if self.headers.get("X-Forwarded-For"):
            self._answer(403, "Forbidden")
            return
        raw = self.headers.get(TTL_HEADER)
        if raw is None or not raw.strip().isdigit() or not 1 <= int(raw) <= MAX_TTL_SECONDS:
            self._answer(400, "Bad Request")
            return
        self._answer(200, self.imds.issue_token(int(raw)), extra={TTL_HEADER: raw.strip()})

    def do_GET(self) -> None:
        if not self.imds.token_valid(self.headers.get(TOKEN_HEADER)):
            self.imds.count_rejection()
            self._answer(401, "Unauthorized")
            return
        found = self.imds.metadata(self.path)
        if found is None:
            self._answer(404, "Not Found")
            return
        self._answer(200, found[0], content_type=found[1])

    def do_POST(self) -> None:
        self._answer(405, "Method Not Allowed")

    def _answer(
        self, code: int, body: str, content_type: str = "text/plain", extra: Mapping[str, str] | None = None
    ) -> None:
        payload = body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass
