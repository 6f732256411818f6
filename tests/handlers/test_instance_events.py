"""Spot interruption warnings, rebalance recommendations and state changes, from EventBridge fixtures,
each delivered twice and in swapped order."""

from __future__ import annotations

import json
from typing import Any

from chalice.local import LambdaContext
from conftest import EVENTS, INSTANCE, Api, FakeAutoScaling, report_body

import app as app_module
from chalicelib.memory_registry import MemoryRegistry
from chalicelib.states import RecorderState

S = RecorderState


def deliver(name: str) -> None:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    app_module.on_instance_event(event, LambdaContext("jibri-autoscaler-dev-on_instance_event", 512))


def test_an_interruption_warning_stops_the_recording_and_asks_for_a_replacement_at_once(
    api: Api, registry: MemoryRegistry, group: FakeAutoScaling
) -> None:
    name = "eventbridge_spot_interruption_warning"
    group.members = {INSTANCE}
    api.report(report_body("BUSY"))
    deliver(name)
    deliver(name)  # twice: one replacement, one order
    recorder = registry.get(INSTANCE)
    assert recorder is not None and recorder.state is S.UNHEALTHY and recorder.stop_recording
    assert [c for c in group.calls if c[0] == "desired"] == [("desired", 2)]
    status, reply = api.report(report_body("BUSY", sent_at="2026-11-24T01:02:05Z"))
    assert status == 200 and reply["stop_recording"] is True and reply["protect"] is True


def test_a_terminated_instance_is_buried_and_a_late_warning_changes_nothing(
    api: Api, registry: MemoryRegistry, group: FakeAutoScaling
) -> None:
    api.report(report_body())
    deliver("eventbridge_instance_state_terminated")
    deliver("eventbridge_spot_interruption_warning")  # sent before, delivered after
    recorder = registry.get(INSTANCE)
    assert recorder is not None and recorder.state is S.TERMINATED and not recorder.stop_recording
    assert group.scaling() == []


def test_events_about_instances_outside_the_pool_change_nothing(api: Api, registry: MemoryRegistry) -> None:
    deliver("eventbridge_spot_interruption_warning")
    assert registry.get(INSTANCE) is None


def test_a_rebalance_recommendation_lets_a_recording_finish(
    api: Api, registry: MemoryRegistry, group: FakeAutoScaling
) -> None:
    api.report(report_body("BUSY"))
    deliver("eventbridge_rebalance_recommendation")
    recorder = registry.get(INSTANCE)
    assert recorder is not None and recorder.state is S.BUSY and not recorder.stop_recording


def test_a_rebalance_recommendation_drains_an_idle_recorder_and_asks_for_a_replacement(
    api: Api, registry: MemoryRegistry, group: FakeAutoScaling
) -> None:
    group.members = {INSTANCE}
    api.report(report_body("IDLE"))
    deliver("eventbridge_rebalance_recommendation")
    deliver("eventbridge_rebalance_recommendation")
    recorder = registry.get(INSTANCE)
    assert recorder is not None and recorder.state is S.DRAINING and not recorder.stop_recording
    assert [c for c in group.calls if c[0] == "desired"] == [("desired", 2)]
