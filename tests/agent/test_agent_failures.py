"""When the API, AWS or Jibri misbehave: backoff for transient faults, a clear error for configuration problems."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import pytest

from sim.net import free_port

OK = {"protect": False, "drain": False, "state": "idle"}


@pytest.fixture(autouse=True)
def agent_logs(caplog):
    caplog.set_level(logging.DEBUG, logger="jibri_agent")
    return caplog


def _records(caplog, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("jibri_agent") and r.levelno == level]


def test_400_is_logged_as_a_configuration_problem_and_reporting_goes_on(make_agent, status_api, clock, caplog):
    status_api.respond(400, {"error": {"code": "bad_request", "message": "sent_at has no zone"}})
    agent = make_agent()
    agent.tick()

    errors = _records(caplog, logging.ERROR)
    assert len(errors) == 1
    text = errors[0].getMessage()
    assert "configuration problem" in text and "400" in text and "sent_at has no zone" in text

    for _ in range(3):
        clock.advance(5)
        agent.tick()  # no hammering: nothing until the report interval has passed
    assert len(status_api.reports()) == 1

    clock.advance(15)
    status_api.respond(200, OK)
    agent.tick()
    assert len(status_api.reports()) == 2
    assert agent.last_reply is not None and agent.last_reply.state == "idle"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"error": {"code": "internal", "message": "boom"}}),
        (502, b"<html>Bad Gateway</html>"),
        (429, {"message": "Too Many Requests"}),
        (200, b"this is not json"),
        (200, {"protect": "yes", "drain": False, "state": "idle"}),
        (200, {"drain": False, "state": "idle"}),
    ],
    ids=["500", "502-html", "429", "non-json", "wrong-type", "missing-field"],
)
def test_transient_failures_are_retried_with_full_jitter_backoff(make_agent, status_api, clock, status, body):
    status_api.respond(status, body)
    agent = make_agent()  # rng is 0.5: the delay is half of min(60, 1 * 2**failures)

    for attempt, expected in enumerate([0.5, 1.0, 2.0, 4.0], start=1):
        assert agent.tick() == expected
        assert len(status_api.reports()) == attempt
        agent.tick()  # before the retry time: no request
        assert len(status_api.reports()) == attempt
        clock.advance(expected)

    status_api.respond(200, OK)
    agent.tick()
    assert len(status_api.reports()) == 5 and agent.last_reply is not None

    status_api.respond(500, {"error": {"code": "internal", "message": "again"}})
    clock.advance(30)
    assert agent.tick() == 0.5  # a success resets the backoff


def test_unreachable_api_is_retried_with_backoff(make_agent, clock, caplog):
    agent = make_agent(api_url=f"http://127.0.0.1:{free_port()}/api")
    delays = []
    for _ in range(4):
        delays.append(agent.tick())
        clock.advance(delays[-1])
    assert delays == [0.5, 1.0, 2.0, 4.0]
    warnings = [r.getMessage() for r in _records(caplog, logging.WARNING)]
    assert len(warnings) == 4 and all("unreachable" in w for w in warnings)


def test_the_loop_sleeps_the_backoff_delays(make_agent, status_api, clock):
    status_api.respond(500, {"error": {"code": "internal", "message": "boom"}})
    stop = threading.Event()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 6:
            stop.set()

    agent = make_agent(sleep=sleep)
    agent.run(stop)

    # 0.5, 1, 2, 4; then the next retry (8 s away) is cut to the poll interval, then the remaining 3 s.
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 5.0, 3.0]
    assert len(status_api.reports()) == 5


def test_the_loop_survives_an_exception_in_a_round(make_agent, status_api, clock, caplog):
    stop = threading.Event()
    failures = [RuntimeError("unexpected")]

    def now() -> datetime:
        if failures:
            raise failures.pop()
        return datetime.now(UTC)

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if status_api.reports():
            stop.set()

    agent = make_agent(now=now, sleep=sleep)
    agent.run(stop)

    assert status_api.statuses() == ["IDLE"]
    crashed = [r for r in _records(caplog, logging.ERROR) if r.exc_info]
    assert len(crashed) == 1 and "unexpected" in caplog.text


def test_startup_waits_for_imds(make_agent, imds, status_api, clock, caplog):
    imds.stop()
    stop = threading.Event()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        imds.start()
        if status_api.reports():
            stop.set()

    agent = make_agent(sleep=sleep, request_timeout_seconds=0.5)
    agent.run(stop)

    assert status_api.statuses() == ["IDLE"]
    assert clock.sleeps[0] == 0.5
    assert any("could not start" in r.getMessage() for r in _records(caplog, logging.ERROR))


def test_broken_pending_uploads_hook_keeps_the_last_count(make_agent, group, status_api, clock):
    counts: list[int | Exception] = [1, RuntimeError("hook broke")]

    def pending() -> int:
        value = counts.pop(0) if counts else 0
        if isinstance(value, Exception):
            raise value
        return value

    agent = make_agent(pending_uploads=pending)
    agent.tick()
    clock.advance(30)
    agent.tick()
    assert [r.body["pending_uploads"] for r in status_api.reports()] == [1, 1]
    assert group.protected()
