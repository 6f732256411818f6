"""Small helpers for servers on loopback."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 that can be started and stopped again on the same port."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        self._handler = handler
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._bound: ThreadingHTTPServer | None = None
        if port:
            self.port = port
        else:
            # Bound now, on a port the kernel picks, and kept: a port picked first and bound later can be
            # taken in between by another process on the machine. It listens only once started, so until
            # then a connection is refused as it would be with nothing there.
            # Without SO_REUSEADDR: on Linux another socket asking for it could share a port bound with it.
            self._bound = self._make(0, reuse=False)
            self.port = int(self._bound.server_address[1])

    def _make(self, port: int, reuse: bool = True) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", port), self._handler, bind_and_activate=False)
        server.allow_reuse_address = reuse  # a restart on the same port needs it (TIME_WAIT)
        try:
            server.server_bind()
        except BaseException:
            server.server_close()
            raise
        server.daemon_threads = True
        server.owner = self  # type: ignore[attr-defined]
        return server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> LoopbackServer:
        if self._server is None:
            server, self._bound = self._bound or self._make(self.port), None
            try:
                # Shared only now that it listens (Linux lets no one bind a listening port), so that after a
                # stop its connections in TIME_WAIT do not keep a restart on the same port from binding.
                server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                server.server_activate()
            except BaseException:
                server.server_close()
                raise
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._bound is not None:  # never started
            self._bound.server_close()
            self._bound = None
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
