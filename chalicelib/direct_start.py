"""Direct start (off by default): the control plane asks the reserved recorder's Jibri itself to
join the meeting, so the assignment is exact instead of left to Jicofo.

It needs Jibri's HTTP API reachable on the instance's private address from the API Lambda:
Jibri bound to that address, a security group admitting only the Lambda's, and the Lambda in
the VPC (see template.md). XMPP credentials for an invisible recorder come from an SSM
SecureString holding {"domain", "username", "password"}, read and cached, never logged.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from chalicelib.tickets import Ticket

START_PATH = "/jibri/api/v1.0/startService"


@dataclass(frozen=True)
class DirectStartSettings:
    enabled: bool = False
    jibri_port: int = 2222
    call_login_parameter: str | None = None
    timeout_seconds: float = 5.0


def call_params(meeting_url: str, room: str) -> dict[str, Any]:
    """Jibri's callUrlInfo: the base URL (with a tenant path, if any) and the room as callName."""
    parts = urlsplit(meeting_url)
    path = [p for p in parts.path.split("/") if p]
    base_path = "/".join(path[:-1])
    call_name = path[-1] if path else room
    base = f"{parts.scheme}://{parts.netloc}" + (f"/{base_path}" if base_path else "")
    return {"callUrlInfo": {"baseUrl": base, "callName": call_name}}


class DirectStarter:
    def __init__(self, settings: DirectStartSettings, read_secret: Callable[[str], bytes] | None = None) -> None:
        self.settings = settings
        self._read_secret = read_secret
        # Jibri is on a private address: no proxy from the environment may be asked.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def start(self, ticket: Ticket, stream_key: str | None) -> dict[str, str]:
        """Ask the ticket's recorder to start; the outcome goes into the API's reply."""
        if not ticket.private_ip:
            return {"status": "failed", "message": "the recorder has not reported its private address yet"}
        if not ticket.meeting_url:
            return {"status": "failed", "message": "direct start needs the request's meeting_url"}
        if ticket.kind == "streaming" and not stream_key:
            return {"status": "failed", "message": "direct start of a stream needs stream_key"}
        body: dict[str, Any] = {
            "sessionId": ticket.request_id,
            "callParams": call_params(ticket.meeting_url, ticket.room),
            "sinkType": "STREAM" if ticket.kind == "streaming" else "FILE",
        }
        if stream_key:
            body["youTubeStreamKey"] = stream_key
        if self.settings.call_login_parameter and self._read_secret is not None:
            body["callLoginParams"] = json.loads(self._read_secret(self.settings.call_login_parameter))
        host = f"[{ticket.private_ip}]" if ":" in ticket.private_ip else ticket.private_ip
        request = urllib.request.Request(
            f"http://{host}:{self.settings.jibri_port}{START_PATH}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with self._opener.open(request, timeout=self.settings.timeout_seconds) as reply:
                return {"status": "started", "message": f"Jibri answered {reply.status}"}
        except urllib.error.HTTPError as error:
            return {"status": "failed", "message": f"Jibri answered {error.code}"}
        except (OSError, ValueError) as error:
            return {"status": "failed", "message": f"Jibri could not be reached: {type(error).__name__}"}
