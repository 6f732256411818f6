"""Auto Scaling notifications through SNS (fixtures as AWS delivers them, JSON and `Key: Value` text),
each delivered twice and in swapped order."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chalice.local import LambdaContext
from conftest import EVENTS, INSTANCE, Api, FakeAutoScaling, report_body

import app as app_module
from chalicelib.control import MemoryControlStore
from chalicelib.memory_registry import MemoryRegistry
from chalicelib.notifications import launch_backoff_seconds, parse_notification
from chalicelib.states import RecorderState

S = RecorderState


def fixture(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


def deliver(name: str) -> None:
    app_module.on_asg_notification(fixture(name), LambdaContext("jibri-autoscaler-dev-on_asg_notification", 512))


@pytest.mark.parametrize("name", ["sns_asg_launch", "sns_asg_launch_text"])
def test_json_and_text_messages_read_the_same(name: str) -> None:
    note = parse_notification(fixture(name)["Records"][0]["Sns"]["Message"])
    assert (note.event, note.group, note.instance_id) == ("autoscaling:EC2_INSTANCE_LAUNCH", "jibri-dev", INSTANCE)
    assert "desired capacity" in note.cause


@pytest.mark.parametrize("name", ["sns_asg_test_notification", "sns_asg_test_notification_text"])
def test_test_notifications_change_nothing(
    api: Api, registry: MemoryRegistry, control: MemoryControlStore, name: str
) -> None:
    deliver(name)
    deliver(name)
    assert list(registry.list_all()) == [] and control.launch_errors() == []


def test_a_termination_buries_the_recorder_once_whatever_the_order(api: Api, registry: MemoryRegistry) -> None:
    api.report(report_body())
    deliver("sns_asg_terminate")
    deliver("sns_asg_terminate")
    deliver("sns_asg_launch")  # the launch notification arrives last
    recorder = registry.get(INSTANCE)
    assert recorder is not None and recorder.state is S.TERMINATED and recorder.expires_at
    status, _ = api.report(report_body(sent_at="2026-11-24T01:02:05Z"))
    assert status == 410  # and its agent cannot bring it back


def test_launch_errors_back_scale_out_off_until_a_launch_succeeds(
    api: Api, group: FakeAutoScaling, control: MemoryControlStore, clock: Any
) -> None:
    deliver("sns_asg_launch_error")
    deliver("sns_asg_launch_error")  # the same activity twice counts once
    assert len(control.launch_errors()) == 1
    group.members = {INSTANCE}
    api.report(report_body("BUSY"))
    clock.set(control.launch_errors()[0] + 30)  # within the first minute of backoff
    app_module.evaluate_pool(
        json.loads((EVENTS / "eventbridge_scheduled_event.json").read_text()),
        LambdaContext("jibri-autoscaler-dev-evaluate_pool", 512),
    )
    assert group.scaling() == []
    latest = control.latest_decisions(1)[0]
    assert "held back" in latest.reason and "1 launch error" in latest.reason
    later = fixture("sns_asg_launch")  # a launch that succeeded after the error ends the backoff
    message = json.loads(later["Records"][0]["Sns"]["Message"])
    message["Time"] = "2026-11-24T23:00:00Z"
    later["Records"][0]["Sns"]["Message"] = json.dumps(message)
    app_module.on_asg_notification(later, LambdaContext("jibri-autoscaler-dev-on_asg_notification", 512))
    app_module.evaluate_pool(
        json.loads((EVENTS / "eventbridge_scheduled_event.json").read_text()),
        LambdaContext("jibri-autoscaler-dev-evaluate_pool", 512),
    )
    assert group.scaling() and group.scaling()[0][0] == "desired"


def test_a_failed_termination_is_alerted_and_changes_nothing(api: Api, registry: MemoryRegistry) -> None:
    api.report(report_body())
    before = registry.get(INSTANCE)
    deliver("sns_asg_terminate_error")
    assert registry.get(INSTANCE) == before


def test_the_backoff_doubles_and_is_bounded() -> None:
    assert [launch_backoff_seconds(n) for n in range(7)] == [0, 60, 120, 240, 480, 960, 1800]
    assert launch_backoff_seconds(50) == 1800


def test_a_message_that_is_not_from_auto_scaling_is_ignored(api: Api, registry: MemoryRegistry) -> None:
    event = fixture("sns_asg_launch")
    event["Records"][0]["Sns"]["Message"] = "hello"
    app_module.on_asg_notification(event, LambdaContext("jibri-autoscaler-dev-on_asg_notification", 512))
    assert list(registry.list_all()) == []
