"""The fake Jibri: its health JSON, webhook posts and graceful shutdown behave as Jibri's do."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from sim.jibri import FakeJibri
from sim.net import LoopbackServer

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Subscriber:
    """A webhook subscriber that records what Jibri posts."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        self.lock = threading.Lock()
        self.server = LoopbackServer(type("SubscriberHandler", (_SubscriberHandler,), {"subscriber": self}))

    def bodies(self) -> list[Any]:
        with self.lock:
            return [body for _, body in self.posts]


class _SubscriberHandler(BaseHTTPRequestHandler):
    subscriber: Subscriber

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        with self.subscriber.lock:
            self.subscriber.posts.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)
    return value


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    sub = Subscriber()
    sub.server.start()
    yield sub
    sub.server.stop()


@pytest.fixture
def jibri(subscriber: Subscriber) -> Iterator[FakeJibri]:
    fake = FakeJibri("jibri-1", subscribers=[subscriber.server.url]).start()
    yield fake
    fake.stop()


def _health(jibri: FakeJibri) -> Any:
    with _OPENER.open(jibri.health_url, timeout=5) as response:
        return json.loads(response.read())


def _post(url: str) -> int:
    request = urllib.request.Request(url, method="POST", data=b"")
    try:
        with _OPENER.open(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _refused(jibri: FakeJibri) -> bool:
    try:
        _health(jibri)
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
    return False


def test_health_has_jibris_shape(jibri):
    assert jibri.health_url.endswith("/jibri/api/v1.0/health")
    assert jibri.internal_url.endswith("/jibri/api/internal/v1.0")
    assert _health(jibri) == {"status": {"busyStatus": "IDLE", "health": {"healthStatus": "HEALTHY", "details": {}}}}
    jibri.set_busy_status("BUSY")
    jibri.set_health("UNHEALTHY")
    body = _health(jibri)
    assert body["status"]["busyStatus"] == "BUSY"
    assert body["status"]["health"]["healthStatus"] == "UNHEALTHY"
    assert body["status"]["health"]["details"]["JibriManager"]["healthStatus"] == "UNHEALTHY"
    assert body["environmentContext"] == {"name": jibri.environment}


def test_each_change_is_posted_to_subscribers(jibri, subscriber):
    jibri.set_busy_status("BUSY")
    jibri.set_busy_status("BUSY")  # no change, no post
    jibri.set_health("UNHEALTHY")
    jibri.set_busy_status("EXPIRED")
    wait_until(lambda: len(subscriber.bodies()) == 3)
    assert {path for path, _ in subscriber.posts} == {"/v1/status"}
    first, second, third = subscriber.bodies()
    assert first == {
        "jibriId": "jibri-1",
        "status": {"busyStatus": "BUSY", "health": {"healthStatus": "HEALTHY", "details": {}}},
    }
    assert second["status"]["health"]["healthStatus"] == "UNHEALTHY"
    assert third["status"]["busyStatus"] == "EXPIRED"
    assert jibri.webhook_posts == 3


def test_unreachable_subscribers_are_best_effort(subscriber):
    jibri = FakeJibri(subscribers=["http://127.0.0.1:9", subscriber.server.url]).start()
    try:
        jibri.set_busy_status("BUSY")
        wait_until(lambda: subscriber.bodies())
        assert jibri.webhook_failures == 1
    finally:
        jibri.stop()


def test_graceful_shutdown_of_an_idle_jibri_leaves_at_once(jibri):
    assert _post(f"{jibri.internal_url}/gracefulShutdown") == 200
    assert jibri.graceful_shutdown_calls == 1
    assert not jibri.running
    assert _refused(jibri)


def test_graceful_shutdown_of_a_busy_jibri_waits_for_idle(jibri, subscriber):
    jibri.set_busy_status("BUSY")
    assert _post(f"{jibri.internal_url}/gracefulShutdown") == 200
    assert jibri.running and jibri.shutdown_pending
    assert _health(jibri)["status"]["busyStatus"] == "BUSY"

    jibri.set_busy_status("IDLE")
    assert not jibri.running and _refused(jibri)
    # Jibri exits before it publishes IDLE: the subscriber heard BUSY only.
    wait_until(lambda: subscriber.bodies())
    assert [b["status"]["busyStatus"] for b in subscriber.bodies()] == ["BUSY"]


def test_restart_brings_back_an_idle_jibri(jibri):
    jibri.set_busy_status("EXPIRED")
    _post(f"{jibri.internal_url}/gracefulShutdown")
    assert not jibri.running
    jibri.restart()
    assert jibri.running
    assert _health(jibri)["status"]["busyStatus"] == "IDLE"
    assert _post(f"{jibri.internal_url}/gracefulShutdown") == 200
    assert jibri.graceful_shutdown_calls == 2


def test_stop_service_ends_a_busy_session(jibri, subscriber):
    jibri.set_busy_status("BUSY")
    assert jibri.http_url.endswith("/jibri/api/v1.0")
    assert _post(f"{jibri.http_url}/stopService") == 200
    assert jibri.stop_service_calls == 1 and jibri.busy_status == "IDLE" and jibri.running
    assert _health(jibri)["status"]["busyStatus"] == "IDLE"
    wait_until(lambda: len(subscriber.bodies()) == 2)
    assert [b["status"]["busyStatus"] for b in subscriber.bodies()] == ["BUSY", "IDLE"]


def test_stop_service_when_idle_answers_200_and_changes_nothing(jibri):
    assert _post(f"{jibri.http_url}/stopService") == 200
    assert jibri.stop_service_calls == 1 and jibri.busy_status == "IDLE"


def test_stop_service_with_a_pending_graceful_shutdown_leaves(jibri):
    jibri.set_busy_status("BUSY")
    _post(f"{jibri.internal_url}/gracefulShutdown")
    assert _post(f"{jibri.http_url}/stopService") == 200
    assert not jibri.running and _refused(jibri)


def test_stop_service_faults_and_unknown_posts(jibri):
    jibri.set_busy_status("BUSY")
    jibri.stop_service_errors = 1
    assert _post(f"{jibri.http_url}/stopService") == 503
    assert jibri.busy_status == "BUSY" and jibri.stop_service_calls == 0
    assert _post(f"{jibri.http_url}/notAService") == 404
    assert _post(f"{jibri.http_url}/stopService") == 200 and jibri.busy_status == "IDLE"


def test_single_use_jibri_expires_after_each_session(subscriber):
    jibri = FakeJibri("jibri-once", subscribers=[subscriber.server.url], single_use=True).start()
    try:
        jibri.set_busy_status("BUSY")
        jibri.set_busy_status("IDLE")  # the recording ends
        assert jibri.busy_status == "EXPIRED"
        assert _health(jibri)["status"]["busyStatus"] == "EXPIRED"
        jibri.set_busy_status("IDLE")  # nothing but a restart brings it back
        assert jibri.busy_status == "EXPIRED"

        jibri.restart()
        assert jibri.restarts == 1 and _health(jibri)["status"]["busyStatus"] == "IDLE"
        jibri.set_busy_status("BUSY")
        assert _post(f"{jibri.http_url}/stopService") == 200
        assert jibri.busy_status == "EXPIRED"
        wait_until(lambda: len(subscriber.bodies()) == 4)
        assert [b["status"]["busyStatus"] for b in subscriber.bodies()] == ["BUSY", "EXPIRED", "BUSY", "EXPIRED"]
    finally:
        jibri.stop()


def test_internal_api_faults_and_unknown_paths(jibri):
    jibri.internal_errors = 1
    assert _post(f"{jibri.internal_url}/gracefulShutdown") == 503
    assert jibri.running and jibri.graceful_shutdown_calls == 0
    assert _post(f"{jibri.internal_url}/nothing") == 404


def test_invalid_states_are_refused(jibri):
    with pytest.raises(ValueError):
        jibri.set_busy_status("OFFLINE")
    with pytest.raises(ValueError):
        jibri.set_health("OK")


def _post_json(url: str, body: Any) -> int:
    request = urllib.request.Request(
        url, method="POST", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with _OPENER.open(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_session_ended_by_stop_service_runs_its_finalize_while_still_busy(subscriber):
    seen: list[tuple[dict[str, Any], str]] = []
    jibri = FakeJibri("jibri-fin", subscribers=[subscriber.server.url])
    jibri.on_session_end = lambda body: seen.append((body, jibri.busy_status))
    jibri.start()
    try:
        body = {"sessionId": "s-1", "sinkType": "file", "callParams": {"callUrlInfo": {"callName": "Room"}}}
        assert _post_json(f"{jibri.http_url}/startService", body) == 200
        assert _post_json(f"{jibri.http_url}/startService", body) == 412  # one session at a time
        assert _post(f"{jibri.http_url}/stopService") == 200
        assert seen == [(body, "BUSY")] and jibri.busy_status == "IDLE"
        assert _post(f"{jibri.http_url}/stopService") == 200
        assert len(seen) == 1  # nothing ran: no session
    finally:
        jibri.stop()


def test_a_failing_finalize_is_recorded_and_jibri_still_goes_idle(jibri):
    def fail(body: dict[str, Any]) -> None:
        raise OSError("disk full")

    jibri.on_session_end = fail
    assert _post_json(f"{jibri.http_url}/startService", {"sessionId": "s-2"}) == 200
    assert _post(f"{jibri.http_url}/stopService") == 200
    assert jibri.busy_status == "IDLE" and jibri.session_end_errors == ["OSError: disk full"]
