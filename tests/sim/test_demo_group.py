"""The demo's group on a clock: launches through hooks, warm pool, termination, the agent's Auto Scaling API,
and lifecycle actions shaped as EventBridge delivers them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib.autoscaling import LifecycleActionGone
from chalicelib.lifecycle import parse_lifecycle_event
from sim.clock import ManualClock
from sim.demo_group import LAUNCH_HOOK, TERMINATE_HOOK, GroupApi, LiveGroup, Notice
from sim.events import lifecycle_action_event
from sim.whatif.model import Model

EVENTS = Path(__file__).resolve().parents[1] / "events"


@pytest.fixture
def world() -> tuple[ManualClock, LiveGroup, list[Notice]]:
    clock = ManualClock()
    notices: list[Notice] = []
    group = LiveGroup("jibri-demo", clock, Model(cold_launch_s=240, warm_start_s=45, minimum=0), notices.append)
    return clock, group, notices


def kinds(notices: list[Notice]) -> list[tuple[str, str]]:
    return [(n.kind, n.instance_id) for n in notices]


def test_a_launch_waits_in_its_hook_boots_after_the_delay_and_serves_once_completed(world) -> None:
    clock, group, notices = world
    group.set_desired_capacity(1)
    ((kind, instance_id),) = kinds(notices)
    assert kind == "action" and group.lifecycle(instance_id) == "Pending:Wait"
    event = notices[0].event
    assert event is not None and (event.hook_name, event.origin, event.destination) == (
        LAUNCH_HOOK,
        "EC2",
        "AutoScalingGroup",
    )
    clock.advance(239)
    group.advance()
    assert len(notices) == 1  # not booted yet
    clock.advance(1)
    group.advance()
    assert kinds(notices)[1] == ("booted", instance_id) and not notices[1].into_warm_pool
    group.complete_lifecycle_action(LAUNCH_HOOK, event.token, instance_id, "CONTINUE")
    assert group.lifecycle(instance_id) == "InService" and group.counts()["in_service"] == 1
    with pytest.raises(LifecycleActionGone):  # a duplicate completion
        group.complete_lifecycle_action(LAUNCH_HOOK, event.token, instance_id, "CONTINUE")


def test_termination_is_held_by_its_hook_until_completed(world) -> None:
    clock, group, notices = world
    (instance_id,) = group.start(1)
    group.terminate(instance_id)
    action = notices[-1].event
    assert action is not None and action.hook_name == TERMINATE_HOOK
    assert group.lifecycle(instance_id) == "Terminating:Wait" and group.group_size().desired == 0
    clock.advance(3600)
    group.record_lifecycle_action_heartbeat(TERMINATE_HOOK, action.token, instance_id)
    assert ("terminated", instance_id) not in kinds(notices)
    group.complete_lifecycle_action(TERMINATE_HOOK, action.token, instance_id, "CONTINUE")
    assert kinds(notices)[-1] == ("terminated", instance_id) and group.lifecycle(instance_id) is None
    billing = group.billing()
    assert billing["instance_hours"] == pytest.approx(1.0) and billing["cost_usd"] > 0


def test_a_warm_pool_instance_is_prepared_then_stopped_and_starts_faster(world) -> None:
    clock, group, notices = world
    group.put_warm_pool(1)
    action = notices[-1].event
    assert action is not None and action.destination == "WarmPool"
    clock.advance(240)
    group.advance()
    assert notices[-1].kind == "booted" and notices[-1].into_warm_pool
    group.complete_lifecycle_action(LAUNCH_HOOK, action.token, action.instance_id, "CONTINUE")
    assert kinds(notices)[-1] == ("stopped", action.instance_id) and group.counts()["warm"] == 1
    seen = len(notices)
    group.set_desired_capacity(1)
    started = [n.event for n in notices[seen:] if n.event is not None]
    # Out of the pool, and a cold launch to refill it.
    assert [(e.instance_id, e.origin, e.destination) for e in started] == [
        (action.instance_id, "WarmPool", "AutoScalingGroup"),
        (started[1].instance_id, "EC2", "WarmPool"),
    ]
    clock.advance(45)
    group.advance()
    assert kinds(notices)[-1] == ("booted", action.instance_id) and not notices[-1].into_warm_pool


@pytest.fixture
def api(world) -> Iterator[tuple[GroupApi, LiveGroup]]:
    _, group, _ = world
    served = GroupApi(group).start()
    yield served, group
    served.stop()


def test_the_agents_auto_scaling_calls_reach_the_group(api) -> None:
    served, group = api
    (instance_id,) = group.start(1)
    client = boto3.client(
        "autoscaling",
        endpoint_url=served.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    found = client.describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"]
    assert [
        (i["InstanceId"], i["AutoScalingGroupName"], i["LifecycleState"], i["ProtectedFromScaleIn"]) for i in found
    ] == [(instance_id, "jibri-demo", "InService", False)]
    client.set_instance_protection(
        InstanceIds=[instance_id], AutoScalingGroupName="jibri-demo", ProtectedFromScaleIn=True
    )
    assert group.is_protected(instance_id)
    assert client.describe_auto_scaling_instances(InstanceIds=["i-0000000000000ffff"])["AutoScalingInstances"] == []
    with pytest.raises(ClientError) as refused:
        client.set_instance_protection(
            InstanceIds=[instance_id], AutoScalingGroupName="other", ProtectedFromScaleIn=False
        )
    assert refused.value.response["Error"]["Code"] == "ValidationError" and group.is_protected(instance_id)


@pytest.mark.parametrize(
    "fixture",
    [
        "eventbridge_launch_lifecycle_action.json",
        "eventbridge_launch_lifecycle_action_from_warm_pool.json",
        "eventbridge_launch_lifecycle_action_to_warm_pool.json",
        "eventbridge_terminate_lifecycle_action.json",
    ],
)
def test_lifecycle_actions_are_shaped_as_eventbridge_delivers_them(fixture: str) -> None:
    real = json.loads((EVENTS / fixture).read_text())
    parsed = parse_lifecycle_event(real)
    assert parsed is not None
    built = lifecycle_action_event(parsed)
    assert built.keys() == real.keys() and built["detail"].keys() == real["detail"].keys()
    for key in ("detail-type", "source", "time", "resources", "version", "detail"):
        assert built[key] == real[key], key
    assert parse_lifecycle_event(built) == parsed
