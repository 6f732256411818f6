"""Lifecycle actions delivered by EventBridge (fixtures shaped as AWS sends them), each twice and in
swapped order, with the Auto Scaling calls pinned by botocore's Stubber on the real boto3 adapter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from chalice.local import LambdaContext
from conftest import EVENTS, INSTANCE, Api

import app as app_module
from chalicelib.autoscaling import Boto3AutoScaling
from chalicelib.memory_registry import MemoryRegistry
from chalicelib.states import RecorderState
from sim.clock import ManualClock

S = RecorderState
NOW = datetime(2026, 11, 24, 10, 5, tzinfo=UTC).timestamp()  # after every fixture's time


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def stub() -> Iterator[Stubber]:
    client = boto3.client("autoscaling", region_name="us-east-1")
    with Stubber(client) as stubber:
        stubber.client = client  # type: ignore[attr-defined]
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def group(stub: Stubber) -> Boto3AutoScaling:  # replaces the handlers' fake: the real adapter, stubbed
    return Boto3AutoScaling(stub.client, "jibri-dev")  # type: ignore[attr-defined]


def deliver(name: str) -> dict[str, Any]:
    event = json.loads((EVENTS / name).read_text())
    app_module.on_lifecycle_action(event, LambdaContext("jibri-autoscaler-dev-on_lifecycle_action", 512))
    return event


def expect(stub: Stubber, call: str, event: dict[str, Any], result: str | None = None) -> None:
    detail = event["detail"]
    params = {
        "LifecycleHookName": detail["LifecycleHookName"],
        "AutoScalingGroupName": "jibri-dev",
        "LifecycleActionToken": detail["LifecycleActionToken"],
        "InstanceId": INSTANCE,
    }
    if result is not None:
        params["LifecycleActionResult"] = result
    stub.add_response(call, {}, params)


def fixture(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def report(api: Api, clock: ManualClock, busy: str = "IDLE", lifecycle: str | None = None, pending: int = 0) -> Any:
    clock.advance(1)
    sent_at = datetime.fromtimestamp(clock.now(), tz=UTC).isoformat().replace("+00:00", "Z")
    body: dict[str, Any] = {
        "busy_status": busy,
        "health": "UNHEALTHY" if busy == "OFFLINE" else "HEALTHY",
        "pending_uploads": pending,
        "sent_at": sent_at,
    }
    if lifecycle:
        body["target_lifecycle_state"] = lifecycle
    status, reply = api.report(body)
    assert status == 200, reply
    return reply


def state(registry: MemoryRegistry) -> RecorderState:
    recorder = registry.get(INSTANCE)
    assert recorder is not None
    return recorder.state


def test_launch_delivered_twice_is_continued_once_when_the_agent_is_healthy(
    api: Api, stub: Stubber, registry: MemoryRegistry, clock: ManualClock
) -> None:
    deliver("eventbridge_launch_lifecycle_action.json")
    deliver("eventbridge_launch_lifecycle_action.json")
    assert state(registry) is S.LAUNCHING
    report(api, clock, "OFFLINE")  # Jibri still starting: nothing to complete yet
    expect(stub, "complete_lifecycle_action", fixture("eventbridge_launch_lifecycle_action.json"), "CONTINUE")
    assert report(api, clock)["state"] == "idle"
    stub.assert_no_pending_responses()
    report(api, clock)  # later reports complete nothing more


@pytest.mark.parametrize(
    "name", ["eventbridge_terminate_lifecycle_action.json", "eventbridge_terminate_lifecycle_action_plain.json"]
)
def test_a_busy_recorder_holds_its_termination_with_heartbeats_until_the_recording_ends(
    api: Api, stub: Stubber, registry: MemoryRegistry, clock: ManualClock, name: str
) -> None:
    stub.add_response(
        "describe_auto_scaling_instances",
        {
            "AutoScalingInstances": [
                {
                    "InstanceId": INSTANCE,
                    "AutoScalingGroupName": "jibri-dev",
                    "AvailabilityZone": "us-east-1a",
                    "LifecycleState": "InService",
                    "HealthStatus": "HEALTHY",
                    "ProtectedFromScaleIn": True,
                }
            ]
        },
        {"InstanceIds": [INSTANCE]},
    )
    report(api, clock, "BUSY")  # an instance first seen through its agent: membership checked once
    deliver(name)
    deliver(name)  # twice: still one action, still held
    assert state(registry) is S.TERMINATING
    event = fixture(name)
    for _ in range(2):
        clock.advance(60)
        expect(stub, "record_lifecycle_action_heartbeat", event)
        api.runtime.lifecycle().tick()
    reply = report(api, clock, "BUSY")
    assert (reply["protect"], reply["drain"]) == (True, True)
    expect(stub, "complete_lifecycle_action", event, "CONTINUE")
    report(api, clock, "IDLE")  # the recording ended: let go at once


def test_terminate_before_launch_the_late_launch_changes_nothing(
    api: Api, stub: Stubber, registry: MemoryRegistry
) -> None:
    terminate = fixture("eventbridge_terminate_lifecycle_action.json")
    expect(stub, "complete_lifecycle_action", terminate, "CONTINUE")  # never reported: nothing to wait for
    deliver("eventbridge_terminate_lifecycle_action.json")
    deliver("eventbridge_launch_lifecycle_action.json")  # sent earlier, delivered later
    deliver("eventbridge_terminate_lifecycle_action.json")
    assert state(registry) is S.TERMINATING


def test_into_the_warm_pool_then_out_of_it(
    api: Api, stub: Stubber, registry: MemoryRegistry, clock: ManualClock
) -> None:
    deliver("eventbridge_launch_lifecycle_action_to_warm_pool.json")
    assert report(api, clock, "IDLE", "Warmed:Stopped")["state"] == "launching"  # never into service
    expect(
        stub, "complete_lifecycle_action", fixture("eventbridge_launch_lifecycle_action_to_warm_pool.json"), "CONTINUE"
    )
    report(api, clock, "OFFLINE", "Warmed:Stopped")  # Jibri kept out of service...
    clock.advance(45)
    report(api, clock, "OFFLINE", "Warmed:Stopped")  # ...and still gone 45 s later: prepared
    assert state(registry) is S.WARM
    deliver("eventbridge_launch_lifecycle_action_from_warm_pool.json")
    deliver("eventbridge_launch_lifecycle_action_to_warm_pool.json")  # a late duplicate of the first
    assert state(registry) is S.LAUNCHING
    expect(
        stub,
        "complete_lifecycle_action",
        fixture("eventbridge_launch_lifecycle_action_from_warm_pool.json"),
        "CONTINUE",
    )
    assert report(api, clock, "IDLE", "InService")["state"] == "idle"


def test_out_of_the_pool_delivered_before_into_it(
    api: Api, stub: Stubber, registry: MemoryRegistry, clock: ManualClock
) -> None:
    deliver("eventbridge_launch_lifecycle_action_from_warm_pool.json")
    deliver("eventbridge_launch_lifecycle_action_to_warm_pool.json")  # older: ignored
    recorder = registry.get(INSTANCE)
    assert recorder is not None and recorder.hook is not None and recorder.hook.destination == "AutoScalingGroup"
    expect(
        stub,
        "complete_lifecycle_action",
        fixture("eventbridge_launch_lifecycle_action_from_warm_pool.json"),
        "CONTINUE",
    )
    report(api, clock, "IDLE", "InService")


def test_a_malformed_event_changes_nothing(registry: MemoryRegistry, api: Api) -> None:
    event = fixture("eventbridge_launch_lifecycle_action.json")
    del event["detail"]["LifecycleActionToken"]
    app_module.on_lifecycle_action(event, LambdaContext("jibri-autoscaler-dev-on_lifecycle_action", 512))
    assert registry.get(INSTANCE) is None
