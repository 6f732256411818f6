"""Jitsi's request endpoint when Auto Scaling fails during the scale-out it starts."""

from __future__ import annotations

import pytest

from tests.property.faulty_aws import FAULTS
from tests.property.pool_world import PoolWorld


@pytest.mark.parametrize("kind", FAULTS)
def test_a_queued_request_is_answered_202_when_its_scale_out_fails_and_the_next_run_scales_out(kind: str) -> None:
    # Found by the stateful test: a throttled DescribeAutoScalingGroups in the evaluator run that a
    # queued request starts turned the 202 into a 500, though the ticket was already queued.
    world = PoolWorld(desired=1)
    for instance_id in list(world.jibris):
        world.report(instance_id)
        world.start_recording(instance_id)
        world.report(instance_id)
    world.group.arm("describe", kind)

    status, reply = world.request("alpha", None)

    assert (status, reply["status"], reply["position"]) == (202, "queued", 1)
    world.advance(60)
    world.tick()
    assert world.group.desired > 1, "the scheduled run scales out for the queued request"
    assert world.check() == []


def test_a_retry_with_the_same_key_after_a_failed_scale_out_names_the_same_ticket() -> None:
    world = PoolWorld(desired=1)
    for instance_id in list(world.jibris):
        world.report(instance_id)
        world.start_recording(instance_id)
        world.report(instance_id)
    world.group.arm("set_desired_capacity", "throttle")
    first = world.request("alpha", "retry-key")
    again = world.request("alpha", "retry-key")
    assert first[1]["request_id"] == again[1]["request_id"]
    assert len(world.tickets.list_status("queued")) == 1
