"""Jibri's webhook wakes the loop, so a change is reported without waiting for the next poll."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request


def test_webhook_post_reports_at_once(make_agent, running, jibri, status_api, group, wait):
    # Real clock; polls every 5 minutes and reports every 40 s: only the webhook can explain a quick report.
    agent = make_agent(clock=time.monotonic, poll_interval_seconds=300, report_interval_seconds=40)
    with running(agent):
        wait(lambda: status_api.statuses() == ["IDLE"], what="the first report")
        jibri.set_busy_status("BUSY")
        busy = wait(lambda: [r for r in status_api.reports() if r.busy_status == "BUSY"], what="a BUSY report")
        assert busy[0].protected_at_arrival is True
        assert jibri.webhook_posts >= 1


def test_webhook_endpoint_answers_like_a_subscriber(make_agent, webhook_port):
    agent = make_agent()
    agent.setup()
    base = f"http://127.0.0.1:{webhook_port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def post(path: str, body: bytes) -> int:
        request = urllib.request.Request(
            base + path, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with opener.open(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    status = {"busyStatus": "IDLE", "health": {"healthStatus": "HEALTHY", "details": {}}}
    assert post("/v1/status", json.dumps({"jibriId": "j", "status": status}).encode()) == 200
    assert post("/v1/session/status", b'{"jibriId": "j", "session": {}}') == 200
    assert post("/v1/status", b"not json") == 400
    assert post("/elsewhere", b"{}") == 404


def test_stop_ends_a_long_wait(make_agent, running, status_api, wait):
    agent = make_agent(clock=time.monotonic, poll_interval_seconds=300, report_interval_seconds=40)
    runner = running(agent)
    with runner:
        wait(lambda: status_api.statuses(), what="the first report")
    assert not runner.thread.is_alive()


def test_a_taken_webhook_port_does_not_stop_reporting(make_agent, status_api, webhook_port, caplog):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", webhook_port))
        squatter.listen()
        agent = make_agent()
        agent.tick()
    assert status_api.statuses() == ["IDLE"]
    assert "relying on polling" in caplog.text
