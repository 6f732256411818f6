"""Auto Scaling failing halfway through a decision, and the run after it repairing what was left.

Each test arms one fault on one call of the faulty group (tests/property/faulty_aws.py) and
shows what the next evaluator run, report or event does with the state the failure left.
"""

from __future__ import annotations

import pytest

from chalicelib.evaluator import TERMINATE_RETRY_SECONDS
from chalicelib.states import RecorderState
from tests.property.faulty_aws import FAULTS
from tests.property.pool_world import PoolWorld

S = RecorderState
BEFORE_EFFECT = ("throttle", "5xx", "timeout")


def idle_pool(desired: int = 3, **group: int) -> PoolWorld:
    world = PoolWorld(desired=desired, **group)
    for instance_id in list(world.jibris):
        world.report(instance_id)
    world.tick()
    return world


def state(world: PoolWorld, instance_id: str) -> RecorderState:
    return world.snapshot()[instance_id].state


def drained_and_offline(world: PoolWorld) -> list[str]:
    """Let the surplus be drained and its Jibris leave (OFFLINE long enough to count as gone)."""
    world.advance(120)
    for instance_id in list(world.jibris):
        world.report(instance_id)
    world.tick()
    drained = [i for i, r in world.snapshot().items() if r.state is S.DRAINING]
    assert drained, "the surplus is drained"
    for instance_id in drained:
        world.report(instance_id)  # the reply said drain: Jibri shuts down
    for _ in range(2):  # OFFLINE, then OFFLINE again long enough after to count as gone
        world.advance(46)
        for instance_id in list(world.jibris):
            world.report(instance_id)
    return drained


@pytest.mark.parametrize("kind", BEFORE_EFFECT)
def test_a_drained_recorder_whose_terminate_call_failed_is_terminated_by_a_later_run(kind: str) -> None:
    world = idle_pool(desired=3)
    drained = drained_and_offline(world)
    world.group.arm("terminate", kind)
    world.tick()
    victim = next(i for i in drained if state(world, i) is S.TERMINATING)
    assert world.group.instances[victim].lifecycle_state == "InService", "the failed call terminated nothing"

    world.advance(TERMINATE_RETRY_SECONDS + 1)
    world.report(victim)
    world.tick()
    assert world.group.instances[victim].lifecycle_state == "Terminating:Wait"
    world.deliver_event(len(world.events) - 1)
    assert world.group.instances[victim].lifecycle_state == "Terminated"
    assert world.check() == []


def test_a_terminate_call_whose_reply_was_lost_is_not_repeated_and_its_action_completes() -> None:
    world = idle_pool(desired=3)
    drained_and_offline(world)
    world.group.arm("terminate", "lost_reply")
    desired = world.group.desired
    world.tick()
    victims = [i for i in world.group.instances if world.group.instances[i].lifecycle_state == "Terminating:Wait"]
    assert victims and world.group.desired == desired - len(victims)
    assert all(state(world, v) is S.TERMINATING for v in victims)
    world.advance(TERMINATE_RETRY_SECONDS + 1)
    world.tick()
    terminate_calls = [c for c in world.group.calls if c[0] == "terminate"]
    assert len(terminate_calls) == len(victims), "an instance already terminating is not terminated again"
    for index in range(len(world.events)):
        world.deliver_event(index)
    assert all(world.group.instances[v].lifecycle_state == "Terminated" for v in victims)
    assert world.check() == []


@pytest.mark.parametrize("kind", FAULTS)
def test_a_failed_scale_out_is_made_by_the_next_run(kind: str) -> None:
    world = idle_pool(desired=2)
    for instance_id in list(world.jibris):
        world.start_recording(instance_id)
        world.report(instance_id)
    world.group.arm("set_desired_capacity", kind)
    world.tick()
    world.tick()
    assert world.group.desired > 2
    assert world.check() == []


@pytest.mark.parametrize("kind", BEFORE_EFFECT)
def test_a_terminate_action_whose_completion_failed_is_completed_by_the_next_run(kind: str) -> None:
    world = idle_pool(desired=2)
    instance_id = next(iter(world.jibris))
    world.group.begin_external_termination(instance_id, "operator")
    world.collect_events()
    world.group.arm("complete_lifecycle_action", kind)
    assert world.deliver_event(0) is None, "the handler failed: EventBridge retries it"
    assert world.group.instances[instance_id].lifecycle_state == "Terminating:Wait"
    world.deliver_event(0)  # the retry finds the action recorded and changes nothing
    world.advance(60)
    world.tick()
    assert world.group.instances[instance_id].lifecycle_state == "Terminated"
    assert world.check() == []


def test_a_report_that_frees_a_held_termination_is_answered_though_completing_the_action_fails() -> None:
    world = idle_pool(desired=2)
    instance_id = next(iter(world.jibris))
    world.start_recording(instance_id)
    world.report(instance_id)
    world.group.begin_external_termination(instance_id, "operator")
    world.collect_events()
    world.deliver_event(0)
    world.end_recording(instance_id)
    world.upload_done(instance_id)
    world.group.arm("complete_lifecycle_action", "throttle")
    reply = world.report(instance_id)
    assert reply is not None and reply.applied, "the agent's report is stored and answered, not a 500"
    assert world.group.instances[instance_id].lifecycle_state == "Terminating:Wait"
    world.advance(60)
    world.tick()
    assert world.group.instances[instance_id].lifecycle_state == "Terminated"
    assert world.check() == []


@pytest.mark.parametrize("method", ["set_instance_protection", "record_lifecycle_action_heartbeat"])
def test_a_failed_side_call_does_not_stop_the_run_from_scaling_out(method: str) -> None:
    world = idle_pool(desired=2)
    first, second = list(world.jibris)
    world.group.begin_external_termination(second, "operator")  # a held termination to heartbeat
    world.collect_events()
    world.start_recording(second)
    world.report(second)
    world.deliver_event(0)
    world.start_recording(first)
    world.report(first)
    world.advance(3700)  # the held termination is due a heartbeat
    for instance_id in (first, second):
        world.report(instance_id)
    world.group.protect([first], False)  # protection drifted: the reconciler sets it
    world.group.arm(method, "throttle")
    status, _ = world.request("alpha", None)  # its evaluator run meets the throttled call
    assert status == 202
    assert world.group.desired > 2, f"a throttled {method} stopped the scale-out"
    world.tick()
    assert world.group.instances[first].protected
    assert ("heartbeat", second) in world.group.calls
    assert world.check() == []


def test_a_failed_health_report_is_tried_again_and_does_not_stop_the_run() -> None:
    world = idle_pool(desired=2)
    first, second = list(world.jibris)
    world.jibris[first].agent_up = False  # silent: replaced once stale
    world.advance(120)
    world.report(second)
    world.start_recording(second)
    world.report(second)
    world.group.arm("set_instance_health", "throttle")
    status, _ = world.request("alpha", None)
    assert status == 202
    assert world.group.desired > 2, "a throttled SetInstanceHealth stopped the scale-out"
    world.advance(60)
    world.report(second)
    world.tick()
    assert ("health", (first, False)) in world.group.calls
    assert world.check() == []
