"""The loopback test server: its port is held from construction, and it answers only while started."""

from __future__ import annotations

import socket
import urllib.request
from http.server import BaseHTTPRequestHandler

from sim.net import LoopbackServer


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"hi")

    def log_message(self, format: str, *args: object) -> None:
        pass


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def _taken(port: int) -> bool:
    """Whether another socket, even one asking to share the address, cannot bind the port."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            other.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def test_the_port_is_held_from_construction_so_nothing_else_can_take_it() -> None:
    server = LoopbackServer(_Hello)
    try:
        assert _taken(server.port)
        assert _refused(server.port)  # bound, not yet listening: as if nothing were there
        server.start()
        assert urllib.request.urlopen(server.url, timeout=5).read() == b"hi"
    finally:
        server.stop()


def test_stopped_it_refuses_and_started_again_it_answers_on_the_same_port() -> None:
    server = LoopbackServer(_Hello).start()
    port = server.port
    try:
        server.stop()
        assert _refused(port)
        server.start()
        assert server.port == port
        assert urllib.request.urlopen(server.url, timeout=5).read() == b"hi"
    finally:
        server.stop()


def test_a_server_never_started_releases_its_port_when_stopped() -> None:
    server = LoopbackServer(_Hello)
    assert _taken(server.port)
    server.stop()
    assert not _taken(server.port)
