"""The warm pool: the target lifecycle state in every report, Jibri kept out of service while Warmed:*."""

from __future__ import annotations

import pytest

DRAIN = {"protect": False, "drain": True, "state": "draining"}
NO_DRAIN = {"protect": False, "drain": False, "state": "idle"}
LAUNCHING = {"protect": False, "drain": False, "state": "launching"}


def _lifecycle_states(status_api) -> list[str | None]:
    return [r.body.get("target_lifecycle_state") for r in status_api.reports()]


def test_every_report_carries_the_target_lifecycle_state(make_agent, jibri, status_api, imds, clock):
    agent = make_agent()
    agent.tick()
    jibri.set_busy_status("BUSY")
    agent.tick()
    clock.advance(30)
    agent.tick()
    assert _lifecycle_states(status_api) == ["InService"] * 3
    assert agent.target_lifecycle_state == "InService"


def test_a_change_of_the_lifecycle_state_is_reported_at_once(make_agent, status_api, imds):
    status_api.respond(200, LAUNCHING)
    agent = make_agent()
    agent.tick()
    imds.target_lifecycle_state = "Warmed:Hibernated"
    agent.tick()  # the clock has not moved: only the change explains a second report
    assert _lifecycle_states(status_api) == ["InService", "Warmed:Hibernated"]


@pytest.mark.parametrize("answer", [None, "not a state!"], ids=["not-answered", "garbage"])
def test_the_field_is_left_out_when_imds_does_not_answer_it(make_agent, status_api, imds, answer):
    imds.target_lifecycle_state = answer
    agent = make_agent()
    agent.tick()
    body = status_api.reports()[0].body
    assert "target_lifecycle_state" not in body and body["busy_status"] == "IDLE"
    assert agent.target_lifecycle_state is None


def test_warmed_jibri_is_shut_down_and_offline_is_reported(make_agent, jibri, status_api, imds, starter):
    imds.target_lifecycle_state = "Warmed:Stopped"
    status_api.respond(200, LAUNCHING)
    agent = make_agent()
    agent.tick()
    assert jibri.graceful_shutdown_calls == 1 and not jibri.running
    # Jibri left before the first report: the control plane hears OFFLINE and may stop the instance.
    first = status_api.reports()[0].body
    assert (first["busy_status"], first["target_lifecycle_state"]) == ("OFFLINE", "Warmed:Stopped")

    agent.tick()
    agent.tick()
    assert jibri.graceful_shutdown_calls == 1 and starter.calls == 0


def test_leaving_the_pool_starts_jibri_once(make_agent, jibri, status_api, imds, starter):
    imds.target_lifecycle_state = "Warmed:Running"
    status_api.respond(200, LAUNCHING)
    agent = make_agent()
    agent.tick()
    assert not jibri.running

    imds.target_lifecycle_state = "InService"
    agent.tick()
    assert starter.calls == 1 and jibri.running
    agent.tick()
    agent.tick()
    assert starter.calls == 1
    last = status_api.reports()[-1].body
    assert (last["busy_status"], last["target_lifecycle_state"]) == ("IDLE", "InService")


def test_jibri_is_never_started_while_warmed(make_agent, jibri, status_api, imds, starter, restarter, clock):
    # Drained in service, then bound for the pool when the drain is withdrawn: the start waits for InService.
    status_api.respond(200, DRAIN)
    agent = make_agent()
    agent.tick()
    assert not jibri.running
    imds.target_lifecycle_state = "Warmed:Stopped"
    status_api.respond(200, NO_DRAIN)
    for _ in range(3):
        clock.advance(30)
        agent.tick()
    assert starter.calls == 0 and restarter.calls == 0 and not jibri.running

    imds.target_lifecycle_state = "InService"
    agent.tick()
    assert starter.calls == 1 and jibri.running


def test_a_busy_jibri_bound_for_the_pool_finishes_its_recording(make_agent, group, jibri, status_api, imds, starter):
    status_api.respond(200, LAUNCHING)
    jibri.set_busy_status("BUSY")
    imds.target_lifecycle_state = "Warmed:Running"
    agent = make_agent()
    agent.tick()
    agent.tick()
    assert jibri.running and jibri.shutdown_pending and jibri.graceful_shutdown_calls == 1
    assert status_api.statuses() == ["BUSY"] and group.protected()

    jibri.set_busy_status("IDLE")  # the recording ends: Jibri leaves
    agent.tick()
    assert status_api.statuses() == ["BUSY", "OFFLINE"] and group.protected()  # lifted once Jibri says IDLE
    assert starter.calls == 0

    imds.target_lifecycle_state = "InService"
    agent.tick()
    assert starter.calls == 1 and jibri.running


def test_a_busy_jibri_leaving_the_pool_is_started_only_once_it_has_left(make_agent, jibri, status_api, imds, starter):
    status_api.respond(200, LAUNCHING)
    jibri.set_busy_status("BUSY")
    imds.target_lifecycle_state = "Warmed:Running"
    agent = make_agent()
    agent.tick()
    imds.target_lifecycle_state = "InService"
    agent.tick()
    assert starter.calls == 0 and jibri.running  # still recording; its shutdown cannot be taken back

    jibri.set_busy_status("IDLE")
    agent.tick()
    assert starter.calls == 1 and jibri.running and jibri.busy_status == "IDLE"


def test_a_jibri_the_agent_did_not_take_down_is_not_started(make_agent, jibri, status_api, imds, starter):
    jibri.exit()
    status_api.respond(200, LAUNCHING)
    imds.target_lifecycle_state = "Warmed:Stopped"
    agent = make_agent()
    agent.tick()
    imds.target_lifecycle_state = "InService"
    agent.tick()
    assert starter.calls == 0 and jibri.graceful_shutdown_calls == 0
    assert _lifecycle_states(status_api) == ["Warmed:Stopped", "InService"]


def test_terminated_from_the_pool_does_not_start_jibri(make_agent, jibri, status_api, imds, starter):
    status_api.respond(200, LAUNCHING)
    imds.target_lifecycle_state = "Warmed:Hibernated"
    agent = make_agent()
    agent.tick()
    imds.target_lifecycle_state = "Terminated"
    agent.tick()
    assert starter.calls == 0 and not jibri.running


def test_failed_pool_shutdown_is_retried(make_agent, jibri, status_api, imds):
    status_api.respond(200, LAUNCHING)
    imds.target_lifecycle_state = "Warmed:Stopped"
    jibri.internal_errors = 1
    agent = make_agent()
    agent.tick()
    assert jibri.running and status_api.statuses() == ["IDLE"]

    agent.tick()
    assert jibri.graceful_shutdown_calls == 1 and not jibri.running
    assert status_api.statuses() == ["IDLE", "OFFLINE"]


def test_a_jibri_that_comes_back_while_warmed_is_asked_to_leave_again(make_agent, jibri, status_api, imds, starter):
    status_api.respond(200, LAUNCHING)
    imds.target_lifecycle_state = "Warmed:Running"
    agent = make_agent()
    agent.tick()
    jibri.restart()  # something else started it, e.g. its own service manager
    agent.tick()
    assert jibri.graceful_shutdown_calls == 2 and not jibri.running
    assert starter.calls == 0
