"""An HTTP proxy in front of moto's S3: it forwards every request and can see or change part uploads.

Tests put it between the agent and S3 to count which parts are sent and to corrupt a byte in flight;
moto itself stores what it receives and checks no checksum, so a detection proves the control plane's
own check. The control plane is pointed at it with AWS_ENDPOINT_URL_S3, so its presigned URLs name it.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from sim.net import LoopbackServer

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


@dataclass(frozen=True)
class PartPut:
    key: str  # /bucket/key
    number: int
    size: int


# (request path, part number, body) -> the body to forward
Mutator = Callable[[str, int, bytes], bytes]


class S3Proxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self.parts: list[PartPut] = []
        self.mutate: Mutator | None = None
        self.after_part: Callable[[PartPut], None] | None = None
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                number = int(query["partNumber"][0]) if self.command == "PUT" and "partNumber" in query else 0
                if number and proxy.mutate is not None:
                    body = proxy.mutate(url.path, number, body)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(proxy._host, proxy._port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                    if number and 200 <= answer.status < 300:
                        # Recorded once S3 holds the part, before the client hears of it (it may be gone).
                        put = PartPut(url.path, number, len(body))
                        with proxy._lock:
                            proxy.parts.append(put)
                        if proxy.after_part is not None:
                            proxy.after_part(put)
                    self.send_response(answer.status)
                    head = self.command == "HEAD"  # keeps the object's Content-Length, has no body
                    for name, value in answer.getheaders():
                        if name.lower() not in _HOP_BY_HOP and (head or name.lower() != "content-length"):
                            self.send_header(name, value)
                    if not head:
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._server = LoopbackServer(Handler)

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> S3Proxy:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def sent(self) -> list[int]:
        with self._lock:
            return [p.number for p in self.parts]
