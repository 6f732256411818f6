"""The webhook subscriber Jibri posts its status to (jibri.webhook.subscribers), so a change is reported at once."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.log import get_logger

log = get_logger("webhook")

_MAX_BODY_BYTES = 65536


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY_BYTES:
            self._answer(413)
            return
        payload = self.rfile.read(length) if length > 0 else b""
        if self.path.rstrip("/") == "/v1/status":
            try:
                body = json.loads(payload)
            except ValueError:
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("status"), dict):
                self._answer(400)
                return
            self._answer(200)
            self.server.on_status(body)
        elif self.path.rstrip("/") == "/v1/session/status":
            self._answer(200)  # session events carry nothing the control plane needs from the agent
        else:
            self._answer(404)

    def _answer(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("webhook request: %s", format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    on_status: Callable[[dict[str, Any]], None]


class WebhookServer:
    def __init__(self, host: str, port: int, on_status: Callable[[dict[str, Any]], None]) -> None:
        self._address = (host, port)
        self._on_status = on_status
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._address[1]
        return int(self._server.server_address[1])

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        return f"http://{self._address[0]}:{self.port}"

    def start(self) -> WebhookServer:
        if self._server is None:
            server = _Server(self._address, _Handler)
            server.on_status = self._on_status
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="jibri-webhook", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
