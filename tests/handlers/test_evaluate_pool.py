"""The scheduled evaluator, invoked with an EventBridge scheduled event, and its trace in GET /v1/pool."""

from __future__ import annotations

import json

from chalice.local import LambdaContext
from conftest import EVENTS, INSTANCE, Api, FakeAutoScaling, report_body

import app as app_module
from chalicelib.control import MemoryControlStore
from chalicelib.memory_registry import MemoryRegistry
from chalicelib.states import RecorderState


def scheduled_event() -> dict:
    return json.loads((EVENTS / "eventbridge_scheduled_event.json").read_text())


def invoke() -> None:
    app_module.evaluate_pool(scheduled_event(), LambdaContext("jibri-autoscaler-dev-evaluate_pool", 512))


def test_the_schedule_runs_the_evaluator_which_scales_out_for_the_demand_it_saw(
    api: Api, group: FakeAutoScaling, registry: MemoryRegistry
) -> None:
    group.members = {INSTANCE}
    api.report(report_body("BUSY"))
    invoke()
    # The BUSY report counted as an arrival: 1 in the last hour, over a 240 s launch decided
    # plus the 30 s reaction margin, is a forecast of 1 (mean 0.07 arrivals).
    assert group.scaling() == [("desired", 2)]
    status, pool = api.pool()
    assert status == 200 and pool["scale_in_paused"] is False
    latest = pool["decisions"][0]
    assert (latest["trigger"], latest["previous_desired"], latest["desired"], latest["busy"]) == ("schedule", 1, 2, 1)
    assert "forecast 1 for 0.07 arrivals in 270 s" in latest["reason"] and latest["at"].endswith("Z")
    assert registry.get(INSTANCE).state is RecorderState.BUSY  # type: ignore[union-attr]


def test_a_paused_pool_shows_it_and_drains_nothing(
    api: Api, group: FakeAutoScaling, control: MemoryControlStore, registry: MemoryRegistry
) -> None:
    for instance_id in sorted(group.members):
        api.report(
            report_body(),
            instance_id=instance_id,
            caller_arn=f"arn:aws:sts::123456789012:assumed-role/jibri-agent-dev/{instance_id}",
        )
    api.runtime.clock.advance(3600)  # type: ignore[attr-defined]
    control.set_paused(True, "incident", api.runtime.clock.now())
    invoke()
    assert registry.list_by_state(RecorderState.DRAINING) == []
    status, pool = api.pool()
    assert status == 200 and pool["scale_in_paused"] is True and "paused" in pool["decisions"][0]["reason"]
