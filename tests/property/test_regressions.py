"""Counterexamples the stateful test found, shrunk, kept as plain tests; and the oracle's own
judgement of terminations the control plane could or could not have held."""

from __future__ import annotations

import pytest

from chalicelib.lifecycle import LifecycleService
from tests.property.pool_world import PoolWorld


def busy_recorder_whose_termination_lands_after_a_run() -> tuple[PoolWorld, str]:
    """Someone terminates a busy recorder; an evaluator run sees the instance Terminating:Wait
    before the lifecycle event arrives."""
    world, first = _busy_recorder_terminated_by("operator")
    world.advance(1)
    world.tick()
    # Today this run buries the recorder: the group lists its instance as Terminating:Wait.
    world.deliver_event(0)
    return world, first


def test_a_terminate_action_arriving_after_the_recorder_was_buried_does_not_release_a_busy_recorder() -> None:
    world, busy = busy_recorder_whose_termination_lands_after_a_run()
    assert ("complete", (busy, "CONTINUE")) not in world.group.calls
    assert world.group.instances[busy].lifecycle_state == "Terminating:Wait"
    assert world.check() == []


def test_a_terminate_action_arriving_after_a_run_is_held_and_completed_once_the_recording_ends() -> None:
    world, busy = busy_recorder_whose_termination_lands_after_a_run()
    world.advance(3700)
    world.report(busy)
    world.tick()
    assert ("heartbeat", busy) in world.group.calls
    world.end_recording(busy)
    world.upload_done(busy)
    world.report(busy)  # told to drain, Jibri left after its recording: OFFLINE
    world.advance(46)
    world.report(busy)
    world.tick()
    assert ("complete", (busy, "CONTINUE")) in world.group.calls


def test_a_reserved_recorder_whose_jibri_left_service_is_never_assigned_to_a_second_request() -> None:
    """Shrunk: a recorder reserved for one request reports OFFLINE (its Jibri left service before any
    recording: a drain it had already been told of, a crash), comes back idle and was then reserved for
    the next request while the first still named it."""
    world = PoolWorld()
    for instance_id in world.jibris:
        world.report(instance_id)
    world.tick()
    first = world.request("alpha", None)[1]
    held = first["recorder"]["instance_id"]
    world.jibris[held].jibri = "offline"
    world.advance(1)
    world.report(held)
    assert world.check() == []
    world.jibris[held].jibri = "idle"
    world.advance(1)
    world.report(held)
    for _ in range(len(world.jibris)):
        world.request("beta", None)
        assert world.check() == []
    holders = [t.instance_id for t in world.tickets.list_status("assigned")]
    assert len(holders) == len(set(holders))


def busy_recorder_under_a_spot_interruption() -> tuple[PoolWorld, str]:
    """A Spot interruption begins the termination of a recorder the control plane knows is busy."""
    return _busy_recorder_terminated_by("spot interruption")


def _busy_recorder_terminated_by(cause: str) -> tuple[PoolWorld, str]:
    """Two recorders report idle, the first starts recording, then `cause` begins its termination."""
    world = PoolWorld()
    first, second = list(world.jibris)
    world.report(first)
    world.report(second)
    world.tick()
    world.start_recording(first)
    world.report(first)
    world.group.begin_external_termination(first, cause)
    world.collect_events()
    return world, first


def test_an_action_that_times_out_while_the_control_plane_never_ran_is_not_counted_against_it() -> None:
    """The oracle's false positive, shrunk: no evaluator run and no event for two hours."""
    world, busy = busy_recorder_under_a_spot_interruption()
    world.advance(7201)
    assert busy in world.gone
    assert world.check() == []


def test_an_action_a_run_could_have_held_is_counted_when_it_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """The oracle still sees a hold the control plane had the token and a run for, and skipped."""
    world, busy = busy_recorder_under_a_spot_interruption()
    world.advance(1)
    world.deliver_event(0)
    monkeypatch.setattr(LifecycleService, "_hold", lambda self, recorder, now: "not held")
    world.advance(1)
    world.tick()
    world.advance(7201)
    assert busy in world.gone
    assert any("terminated while recording" in problem and "did not hold it" in problem for problem in world.check())


def test_a_held_action_that_times_out_with_no_run_in_its_window_is_not_counted() -> None:
    world, busy = busy_recorder_under_a_spot_interruption()
    world.advance(1)
    world.deliver_event(0)
    world.advance(1)
    world.tick()
    assert ("heartbeat", busy) in world.group.calls
    world.advance(7201)
    assert busy in world.gone
    assert world.check() == []
