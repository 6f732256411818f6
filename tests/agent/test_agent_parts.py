"""The agent's parts on their own: backoff, Jibri's API client, IMDS, the report, the log lines."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler

import pytest

from agent import log as agent_log
from agent.backoff import Backoff
from agent.imds import Imds
from agent.jibri import JibriClient, parse_health
from agent.reporter import StatusReport, format_time
from sim.net import LoopbackServer, free_port


def test_backoff_is_full_jitter_capped_at_60_seconds():
    top = Backoff(rng=lambda: 1.0)
    assert [top.next_delay() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    bottom = Backoff(rng=lambda: 0.0)
    assert {bottom.next_delay() for _ in range(5)} == {0.0}
    top.reset()
    assert top.next_delay() == 1


class _Garbage(BaseHTTPRequestHandler):
    body = b"<html>hello</html>"
    code = 200

    def do_GET(self) -> None:
        self.send_response(self.code)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("code", "body"),
    [(200, b"<html>hello</html>"), (200, b'{"status": {"busyStatus": "NAPPING"}}'), (500, b"{}"), (200, b"[]")],
)
def test_garbage_health_is_offline_and_unhealthy_with_a_warning(caplog, code, body):
    server = LoopbackServer(type("G", (_Garbage,), {"body": body, "code": code})).start()
    try:
        with caplog.at_level(logging.WARNING, logger="jibri_agent"):
            health = JibriClient(f"{server.url}/jibri/api/v1.0/health", f"{server.url}/x", 2).health()
    finally:
        server.stop()
    assert (health.busy_status, health.health) == ("OFFLINE", "UNHEALTHY")
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_refused_health_is_offline():
    health = JibriClient(f"http://127.0.0.1:{free_port()}/jibri/api/v1.0/health", "http://127.0.0.1:9/x", 2).health()
    assert (health.busy_status, health.health, health.raw) == ("OFFLINE", "UNHEALTHY", None)


def test_real_jibri_health_json_parses():
    body = {
        "status": {
            "busyStatus": "EXPIRED",
            "health": {"healthStatus": "UNHEALTHY", "details": {"JibriManager": {"healthStatus": "UNHEALTHY"}}},
        },
        "environmentContext": {"name": "prod"},
    }
    parsed = parse_health(body)
    assert parsed is not None and (parsed.busy_status, parsed.health, parsed.raw) == ("EXPIRED", "UNHEALTHY", body)


def test_sent_at_is_utc_with_milliseconds_and_zone():
    moment = datetime(2026, 11, 24, 1, 2, 3, 456789, tzinfo=UTC)
    assert format_time(moment) == "2026-11-24T01:02:03.456Z"
    report = StatusReport("IDLE", "HEALTHY", 0, moment, None)
    assert report.body() == {
        "busy_status": "IDLE",
        "health": "HEALTHY",
        "pending_uploads": 0,
        "sent_at": "2026-11-24T01:02:03.456Z",
        "jibri": None,
    }


def test_imds_client_renews_a_refused_token(imds):
    client = Imds(imds.url, timeout=2)
    assert client.instance_id() == imds.instance_id
    assert client.region() == "us-east-1" and client.availability_zone() == "us-east-1a"
    assert client.identity_document()["instanceId"] == imds.instance_id
    imds.revoke_tokens()
    imds.target_lifecycle_state = "Warmed:Stopped"
    assert client.target_lifecycle_state() == "Warmed:Stopped"
    assert imds.token_requests == 2


def test_log_lines_are_json_with_the_instance_id_and_no_secrets(make_agent, jibri, status_api, imds):
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    try:
        agent_log.configure("DEBUG", stream=stream)
        agent = make_agent()
        jibri.set_busy_status("BUSY")
        agent.tick()
        status_api.respond(400, {"error": {"code": "forbidden", "message": "wrong role"}})
        jibri.set_busy_status("IDLE")
        agent.tick()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        agent_log.set_instance_id(None)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    ours = [line for line in lines if line["logger"].startswith("jibri_agent")]
    assert ours and all({"time", "level", "message", "instance_id"} <= set(line) for line in ours)
    assert ours[-1]["instance_id"] == imds.instance_id
    assert any(line["level"] == "ERROR" and "configuration problem" in line["message"] for line in ours)
    text = stream.getvalue()
    for secret in (imds.credentials["SecretAccessKey"], imds.credentials["Token"], "Signature=", "AWS4-HMAC"):
        assert secret not in text
