"""A fake Jibri: its HTTP API (:2222), its internal API (:3333) and its webhook posts, with Jibri's JSON shapes.

Shapes follow Jibri's JibriHealth, JibriStatus and OverallHealth classes and its WebhookClient:
health is {"status": {"busyStatus", "health": {"healthStatus", "details"}}, "environmentContext"?}, and each
subscriber gets {"jibriId", "status": <the same JibriStatus>} POSTed to <subscriber>/v1/status.
The HTTP API also takes POST stopService, which ends the current session at once and always answers 200.
In single-use mode (jibri.single-use-mode) a Jibri whose session ended is EXPIRED until it is restarted.
A session that stopService ends runs `on_session_end` first, with the body startService got, while Jibri is
still BUSY: what Jibri's finalize script does (write the recording, hand it off) before Jibri goes IDLE.
"""

from __future__ import annotations

import json
import queue
import threading
import urllib.request
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any

from sim.net import LoopbackServer

HTTP_PATH = "/jibri/api/v1.0"
HEALTH_PATH = f"{HTTP_PATH}/health"
STOP_SERVICE_PATH = f"{HTTP_PATH}/stopService"
START_SERVICE_PATH = f"{HTTP_PATH}/startService"
INTERNAL_PATH = "/jibri/api/internal/v1.0"
BUSY_STATUSES = ("IDLE", "BUSY", "EXPIRED")
HEALTH_STATUSES = ("HEALTHY", "UNHEALTHY")
WEBHOOK_TIMEOUT_SECONDS = 2.0


class FakeJibri:
    def __init__(
        self,
        jibri_id: str = "jibri",
        *,
        subscribers: Sequence[str] = (),
        single_use: bool = False,
        on_session_end: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.jibri_id = jibri_id
        self.on_session_end = on_session_end
        self.session_end_errors: list[str] = []  # what on_session_end raised, one line each
        self._session: dict[str, Any] | None = None  # the running session's startService body
        self.subscribers = [url.rstrip("/") for url in subscribers]
        self.single_use = single_use
        self.environment = "xmpp-environment"
        self.graceful_shutdown_calls = 0
        self.stop_service_calls = 0
        self.start_service_requests: list[dict[str, Any]] = []  # the bodies Jibri was asked to start with
        self.restarts = 0
        # Fault injection: the internal API answers 503 to this many calls, acting on none of them.
        self.internal_errors = 0
        # The same for stopService on the HTTP API (health keeps answering).
        self.stop_service_errors = 0
        self.webhook_posts = 0
        self.webhook_failures = 0
        self._lock = threading.RLock()
        self._busy_status = "IDLE"
        self._health = "HEALTHY"
        self._shutdown_pending = False
        self._api = LoopbackServer(type("FakeJibriApi", (_HealthHandler,), {"jibri": self}))
        self._internal = LoopbackServer(type("FakeJibriInternalApi", (_InternalHandler,), {"jibri": self}))
        self._outbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._sender: threading.Thread | None = None
        # Loopback subscribers: a proxy from the environment must not be asked.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- the process --------------------------------------------------------------------------------------------

    def start(self) -> FakeJibri:
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_webhooks, name="fake-jibri-webhooks", daemon=True)
            self._sender.start()
        self._api.start()
        self._internal.start()
        return self

    def stop(self) -> None:
        self.exit()
        sender, self._sender = self._sender, None
        if sender is not None:
            self._outbox.put(None)
            sender.join(timeout=5)

    def restart(self) -> None:
        """Jibri's process started again: both APIs answer and it is IDLE and HEALTHY (EXPIRED no more)."""
        self.exit()
        with self._lock:
            self.restarts += 1
            self._busy_status = "IDLE"
            self._health = "HEALTHY"
            self._shutdown_pending = False
        self.start()

    @property
    def running(self) -> bool:
        return self._api.running

    @property
    def http_url(self) -> str:
        return f"{self._api.url}{HTTP_PATH}"

    @property
    def health_url(self) -> str:
        return f"{self._api.url}{HEALTH_PATH}"

    @property
    def internal_url(self) -> str:
        return f"{self._internal.url}{INTERNAL_PATH}"

    # -- state ------------------------------------------------------------------------------------------------------

    @property
    def busy_status(self) -> str:
        return self._busy_status

    @property
    def health(self) -> str:
        return self._health

    @property
    def shutdown_pending(self) -> bool:
        return self._shutdown_pending

    def set_busy_status(self, busy_status: str) -> None:
        """In single-use mode a session that ends (BUSY to IDLE) leaves Jibri EXPIRED instead, until restart()."""
        if busy_status not in BUSY_STATUSES:
            raise ValueError(f"busy_status must be one of {', '.join(BUSY_STATUSES)}")
        with self._lock:
            if busy_status == "IDLE" and self._busy_status == "BUSY":
                busy_status = self._after_session()
            elif busy_status == "IDLE" and self.single_use and self._busy_status == "EXPIRED":
                busy_status = "EXPIRED"  # only a restart brings a spent single-use Jibri back
            changed = busy_status != self._busy_status
            self._busy_status = busy_status
            # Jibri runs its pending graceful shutdown when its session ends and exits before publishing IDLE.
            leaving = self._shutdown_pending and busy_status != "BUSY"
        if leaving:
            self.exit()
        elif changed:
            self.announce()

    def set_health(self, health: str) -> None:
        if health not in HEALTH_STATUSES:
            raise ValueError(f"health must be one of {', '.join(HEALTH_STATUSES)}")
        with self._lock:
            changed = health != self._health
            self._health = health
        if changed:
            self.announce()

    def status(self) -> dict[str, Any]:
        """Jibri's JibriStatus JSON."""
        with self._lock:
            details: dict[str, Any] = {}
            if self._health != "HEALTHY":
                details["JibriManager"] = {"healthStatus": self._health, "detail": ""}
            return {"busyStatus": self._busy_status, "health": {"healthStatus": self._health, "details": details}}

    def health_body(self) -> dict[str, Any]:
        """Jibri's JibriHealth JSON; the environment context is only there while a session runs."""
        body: dict[str, Any] = {"status": self.status()}
        if self._busy_status == "BUSY":
            body["environmentContext"] = {"name": self.environment}
        return body

    def announce(self) -> None:
        """Post the current status to every subscriber, as Jibri does on a change and every minute."""
        if self.running:
            self._outbox.put({"jibriId": self.jibri_id, "status": self.status()})

    def _after_session(self) -> str:
        return "EXPIRED" if self.single_use else "IDLE"

    # -- the HTTP API -----------------------------------------------------------------------------------------------

    def take_stop_service_error(self) -> bool:
        with self._lock:
            if self.stop_service_errors <= 0:
                return False
            self.stop_service_errors -= 1
            return True

    def request_start_service(self, body: dict[str, Any]) -> int:
        """Jibri's startService: 200 and BUSY when idle, 412 (precondition failed) otherwise."""
        with self._lock:
            self.start_service_requests.append(body)
            if self._busy_status != "IDLE" or self._shutdown_pending:
                return 412
            self._session = body
        self.set_busy_status("BUSY")
        return 200

    def request_stop_service(self) -> None:
        """Ends the current session, if any; with a graceful shutdown pending, Jibri then leaves (before the caller
        hears back, so its next health poll is refused)."""
        with self._lock:
            self.stop_service_calls += 1
            if self._busy_status != "BUSY":
                return
            session, self._session = self._session, None
        if session is not None and self.on_session_end is not None:
            try:
                self.on_session_end(session)  # Jibri stays BUSY until its finalize script exits
            except Exception as error:  # a failed finalize is Jibri's log line, not the caller's error
                self.session_end_errors.append(f"{type(error).__name__}: {error}")
        with self._lock:
            if self._busy_status != "BUSY":
                return
            self._busy_status = self._after_session()
            leaving = self._shutdown_pending
        if leaving:
            self.exit()
        else:
            self.announce()

    # -- the internal API ---------------------------------------------------------------------------------------

    def take_internal_error(self) -> bool:
        with self._lock:
            if self.internal_errors <= 0:
                return False
            self.internal_errors -= 1
            return True

    def request_graceful_shutdown(self) -> bool:
        """Returns True when Jibri leaves at once (not busy: its health API is already closed); when busy it leaves
        once the session ends."""
        with self._lock:
            self.graceful_shutdown_calls += 1
            if self._busy_status == "BUSY":
                self._shutdown_pending = True
                return False
        self._api.stop()
        return True

    def request_shutdown(self) -> None:
        with self._lock:
            self._busy_status = "IDLE"
        self._api.stop()

    def exit(self) -> None:
        """The process ends: both APIs stop answering (connection refused)."""
        with self._lock:
            self._shutdown_pending = False
        self._api.stop()
        self._internal.stop()

    def _send_webhooks(self) -> None:
        while True:
            body = self._outbox.get()
            if body is None:
                return
            data = json.dumps(body).encode("utf-8")
            for subscriber in list(self.subscribers):
                request = urllib.request.Request(
                    f"{subscriber}/v1/status", data=data, method="POST", headers={"Content-Type": "application/json"}
                )
                try:
                    with self._opener.open(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
                        response.read()
                    self.webhook_posts += 1
                except OSError:
                    self.webhook_failures += 1  # best effort, as Jibri only logs a failed post


class _JsonHandler(BaseHTTPRequestHandler):
    jibri: FakeJibri

    def _answer(self, code: int, body: dict[str, Any] | None = None) -> None:
        payload = json.dumps(body).encode("utf-8") if body is not None else b""
        self.send_response(code)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HealthHandler(_JsonHandler):
    def do_GET(self) -> None:
        if self.path.rstrip("/") == HEALTH_PATH:
            self._answer(200, self.jibri.health_body())
        else:
            self._answer(404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") == START_SERVICE_PATH:
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._answer(400)
                return
            self._answer(self.jibri.request_start_service(body if isinstance(body, dict) else {}))
            return
        if self.path.rstrip("/") != STOP_SERVICE_PATH:
            self._answer(404)
            return
        if self.jibri.take_stop_service_error():
            self._answer(503)
            return
        self.jibri.request_stop_service()
        self._answer(200)


class _InternalHandler(_JsonHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        action = self.path.rstrip("/")
        if self.jibri.take_internal_error():
            self._answer(503)
            return
        # Jibri answers 200 and then acts; the health API is closed before the caller hears back, so the
        # caller's next poll is refused, and the internal API closes right after the answer.
        if action == f"{INTERNAL_PATH}/gracefulShutdown":
            leaving = self.jibri.request_graceful_shutdown()
            self._answer(200)
            if leaving:
                self.jibri.exit()
        elif action == f"{INTERNAL_PATH}/shutdown":
            self.jibri.request_shutdown()
            self._answer(200)
            self.jibri.exit()
        elif action == f"{INTERNAL_PATH}/notifyConfigChanged":
            self._answer(200)
        else:
            self._answer(404)
