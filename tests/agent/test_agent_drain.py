"""Drain: graceful shutdown once, OFFLINE follows; a withdrawn drain starts Jibri again."""

from __future__ import annotations

DRAIN = {"protect": False, "drain": True, "state": "draining"}
NO_DRAIN = {"protect": False, "drain": False, "state": "idle"}


def test_drain_shuts_jibri_down_gracefully_and_reports_offline(make_agent, jibri, status_api, starter):
    status_api.respond(200, DRAIN)
    agent = make_agent()
    agent.tick()
    assert jibri.graceful_shutdown_calls == 1
    assert not jibri.running

    agent.tick()
    offline = status_api.reports()[-1].body
    assert offline["busy_status"] == "OFFLINE" and offline["health"] == "UNHEALTHY" and offline["jibri"] is None

    agent.tick()
    assert jibri.graceful_shutdown_calls == 1
    assert starter.calls == 0


def test_drain_of_a_busy_jibri_waits_for_the_recording(make_agent, group, jibri, status_api):
    status_api.respond(200, {**DRAIN, "protect": True})
    agent = make_agent()
    jibri.set_busy_status("BUSY")
    agent.tick()
    assert jibri.graceful_shutdown_calls == 1 and jibri.running and group.protected()

    jibri.set_busy_status("IDLE")  # the recording ends: Jibri leaves
    status_api.respond(200, DRAIN)
    agent.tick()

    assert status_api.statuses() == ["BUSY", "OFFLINE"]
    assert jibri.graceful_shutdown_calls == 1
    # Jibri is gone and cannot say it is idle: protection stays (the control plane's termination
    # does not need it lifted, and a slow health check must never lift it mid-recording).
    assert group.protected()


def test_failed_graceful_shutdown_is_retried(make_agent, jibri, status_api):
    status_api.respond(200, DRAIN)
    jibri.internal_errors = 1
    agent = make_agent()
    agent.tick()
    assert jibri.running and jibri.graceful_shutdown_calls == 0

    agent.tick()
    assert jibri.graceful_shutdown_calls == 1 and not jibri.running


def test_withdrawn_drain_starts_jibri_once(make_agent, jibri, status_api, starter, clock):
    status_api.respond(200, DRAIN)
    agent = make_agent()
    agent.tick()
    agent.tick()
    assert status_api.statuses()[-1] == "OFFLINE"

    status_api.respond(200, NO_DRAIN)
    clock.advance(30)
    agent.tick()  # the periodic report hears drain: false; Jibri is gone: start it
    assert starter.calls == 1 and jibri.running

    agent.tick()
    agent.tick()
    assert status_api.statuses()[-1] == "IDLE"
    assert starter.calls == 1


def test_withdrawn_drain_waits_until_a_busy_jibri_has_left(make_agent, jibri, status_api, starter, clock):
    jibri.set_busy_status("BUSY")
    status_api.respond(200, {**DRAIN, "protect": True})
    agent = make_agent()
    agent.tick()
    status_api.respond(200, {**NO_DRAIN, "protect": True, "state": "busy"})
    clock.advance(30)
    agent.tick()
    agent.tick()
    assert starter.calls == 0 and jibri.running  # Jibri still records; it cannot take back its shutdown

    jibri.set_busy_status("IDLE")
    agent.tick()
    assert starter.calls == 1 and jibri.running and jibri.busy_status == "IDLE"


def test_offline_jibri_that_was_not_drained_is_not_started(make_agent, jibri, status_api, starter, clock):
    jibri.exit()
    status_api.respond(200, DRAIN)
    agent = make_agent()
    agent.tick()
    status_api.respond(200, NO_DRAIN)
    clock.advance(30)
    agent.tick()
    assert starter.calls == 0 and jibri.graceful_shutdown_calls == 0
