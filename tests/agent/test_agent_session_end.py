"""How a recording ends early or leaves Jibri spent: stop_recording (Spot warning) and EXPIRED (single-use mode)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from agent.jibri import JibriClient, JibriError, JibriTimeout
from sim.net import LoopbackServer, free_port

STOP = {"protect": False, "drain": False, "state": "unhealthy", "stop_recording": True}
DRAIN = {"protect": False, "drain": True, "state": "draining"}


# -- stop_recording -------------------------------------------------------------------------------------------------


def test_stop_recording_while_busy_calls_stop_service_once(make_agent, group, jibri, status_api, caplog):
    status_api.respond(200, STOP)
    jibri.set_busy_status("BUSY")
    agent = make_agent()
    with caplog.at_level(logging.INFO, logger="jibri_agent"):
        agent.tick()
    assert jibri.stop_service_calls == 1 and jibri.busy_status == "IDLE"
    assert group.protected()
    assert "stop its recording" in caplog.text

    # Jibri stays BUSY while its finalize script runs: the same recording is not stopped twice.
    jibri.set_busy_status("BUSY")
    agent.tick()
    agent.tick()
    assert jibri.stop_service_calls == 1


def test_a_later_recording_gets_the_order_afresh(make_agent, jibri, status_api):
    status_api.respond(200, STOP)
    jibri.set_busy_status("BUSY")
    agent = make_agent()
    agent.tick()
    agent.tick()  # Jibri is seen IDLE: that recording is over
    jibri.set_busy_status("BUSY")
    agent.tick()
    assert jibri.stop_service_calls == 2


def test_stop_recording_keeps_the_protection_rules(make_agent, group, jibri, status_api):
    pending = [0]
    status_api.respond(200, STOP)  # protect: false, yet a busy or uploading recorder stays protected
    jibri.set_busy_status("BUSY")
    agent = make_agent(pending_uploads=lambda: pending[0])
    agent.tick()
    assert jibri.stop_service_calls == 1 and group.protected()

    pending[0] = 1  # the finalize script handed the recording off
    agent.tick()
    assert status_api.reports()[-1].body["pending_uploads"] == 1 and group.protected()

    pending[0] = 0
    agent.tick()
    assert not group.protected()
    assert jibri.stop_service_calls == 1


def test_stop_recording_while_idle_does_nothing(make_agent, jibri, status_api, clock):
    status_api.respond(200, STOP)
    agent = make_agent()
    agent.tick()
    clock.advance(30)
    agent.tick()
    assert jibri.stop_service_calls == 0 and jibri.running


def test_without_the_order_the_recording_goes_on(make_agent, jibri, status_api):
    jibri.set_busy_status("BUSY")
    agent = make_agent()
    agent.tick()
    assert agent.last_reply is not None and agent.last_reply.stop_recording is False
    assert jibri.stop_service_calls == 0 and jibri.busy_status == "BUSY"


def test_failed_stop_service_is_retried(make_agent, jibri, status_api):
    status_api.respond(200, STOP)
    jibri.set_busy_status("BUSY")
    jibri.stop_service_errors = 1
    agent = make_agent()
    agent.tick()
    assert jibri.busy_status == "BUSY" and jibri.stop_service_calls == 0

    agent.tick()
    assert jibri.stop_service_calls == 1 and jibri.busy_status == "IDLE"


class _Silent(BaseHTTPRequestHandler):
    """Takes a POST and answers only when released, like a Jibri that holds stopService while it stops."""

    release: threading.Event
    calls: list[str]

    def do_POST(self) -> None:
        self.calls.append(self.path)
        self.release.wait(timeout=10)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def silent() -> Iterator[tuple[LoopbackServer, list[str]]]:
    release = threading.Event()
    calls: list[str] = []
    server = LoopbackServer(type("Silent", (_Silent,), {"release": release, "calls": calls})).start()
    yield server, calls
    release.set()
    server.stop()


def test_an_unanswered_stop_service_is_not_sent_again(make_agent, jibri, status_api, silent):
    server, calls = silent
    status_api.respond(200, STOP)
    jibri.set_busy_status("BUSY")
    agent = make_agent(jibri_http_url=f"{server.url}/jibri/api/v1.0", request_timeout_seconds=0.2)
    agent.tick()
    agent.tick()
    assert calls == ["/jibri/api/v1.0/stopService"]


def test_client_tells_a_timeout_from_a_refusal(silent):
    server, _ = silent
    health = f"http://127.0.0.1:{free_port()}/jibri/api/v1.0/health"
    with pytest.raises(JibriTimeout):
        JibriClient(health, "http://127.0.0.1:9/x", 0.2, http_url=f"{server.url}/jibri/api/v1.0").stop_service()
    with pytest.raises(JibriError) as refused:
        JibriClient(health, "http://127.0.0.1:9/x", 0.2).stop_service()
    assert not isinstance(refused.value, JibriTimeout)
    assert "stopService" in str(refused.value)


# -- EXPIRED --------------------------------------------------------------------------------------------------------


def _expire(jibri, agent) -> None:
    """A single-use Jibri records once, then reports EXPIRED."""
    jibri.single_use = True
    jibri.set_busy_status("BUSY")
    agent.tick()
    jibri.set_busy_status("IDLE")
    assert jibri.busy_status == "EXPIRED"


def test_expired_jibri_is_restarted_once(make_agent, jibri, status_api, restarter, starter):
    agent = make_agent()
    _expire(jibri, agent)
    agent.tick()
    assert restarter.calls == 1 and jibri.busy_status == "IDLE"
    assert status_api.statuses() == ["BUSY", "EXPIRED"]

    agent.tick()
    agent.tick()
    assert status_api.statuses() == ["BUSY", "EXPIRED", "IDLE"]
    assert restarter.calls == 1 and starter.calls == 0


def test_expired_jibri_waits_for_pending_uploads(make_agent, jibri, status_api, restarter):
    pending = [0]
    agent = make_agent(pending_uploads=lambda: pending[0])
    _expire(jibri, agent)
    pending[0] = 1
    agent.tick()
    agent.tick()
    assert restarter.calls == 0 and jibri.busy_status == "EXPIRED"

    pending[0] = 0
    agent.tick()
    assert restarter.calls == 1 and jibri.busy_status == "IDLE"


def test_restart_is_tried_once_per_expired_episode(make_agent, jibri, status_api, caplog):
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("systemctl exited with 1")

    agent = make_agent(jibri_restarter=broken)
    _expire(jibri, agent)
    agent.tick()
    agent.tick()
    assert calls == [1] and jibri.busy_status == "EXPIRED"
    assert "could not restart" in caplog.text

    jibri.restart()  # fresh again (restarted by hand): the next EXPIRED is a new episode
    agent.tick()
    _expire(jibri, agent)
    agent.tick()
    assert calls == [1, 1]


def test_expired_action_replace_leaves_it_to_the_control_plane(make_agent, jibri, status_api, restarter, clock):
    agent = make_agent(expired_action="replace")
    _expire(jibri, agent)
    for _ in range(3):
        clock.advance(30)
        agent.tick()
    assert restarter.calls == 0 and jibri.busy_status == "EXPIRED"
    assert status_api.statuses()[-1] == "EXPIRED"


def test_expired_jibri_being_drained_is_not_restarted(make_agent, jibri, status_api, restarter):
    agent = make_agent()
    _expire(jibri, agent)
    status_api.respond(200, DRAIN)
    agent.tick()
    agent.tick()
    assert restarter.calls == 0 and jibri.graceful_shutdown_calls == 1 and not jibri.running


def test_expired_jibri_bound_for_the_pool_is_not_restarted(make_agent, jibri, status_api, imds, restarter, starter):
    status_api.respond(200, {"protect": False, "drain": False, "state": "launching"})
    agent = make_agent()
    _expire(jibri, agent)
    imds.target_lifecycle_state = "Warmed:Running"
    agent.tick()
    agent.tick()
    assert restarter.calls == 0 and starter.calls == 0 and not jibri.running

    imds.target_lifecycle_state = "InService"
    agent.tick()
    assert starter.calls == 1 and restarter.calls == 0 and jibri.busy_status == "IDLE"
