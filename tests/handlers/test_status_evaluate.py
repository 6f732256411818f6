"""A busy report evaluates the pool at once (EVALUATE_ON_BUSY), through the status route."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from conftest import AGENT_ROLE, INSTANCE, Api, FakeAutoScaling, report_body

import app as app_module
from chalicelib.config import Settings, SettingsError
from chalicelib.control import DecisionRecord, MemoryControlStore
from chalicelib.memory_registry import MemoryRegistry
from chalicelib.states import RecorderState

S = RecorderState
OTHER = "i-0aaaaaaaaaaaaaaa1"
REQUIRED = {"TABLE_NAME": "jibri", "ASG_NAME": "jibri-dev", "AGENT_ROLE_NAME": AGENT_ROLE}


def report(api: Api, busy: str, second: int, instance_id: str = INSTANCE) -> tuple[int, dict]:
    return api.report(
        report_body(busy, sent_at=f"2026-11-24T01:03:{second:02d}Z"),
        instance_id=instance_id,
        caller_arn=f"arn:aws:sts::123456789012:assumed-role/{AGENT_ROLE}/{instance_id}",
    )


def busy_runs(control: MemoryControlStore) -> list[DecisionRecord]:
    return [d for d in control.latest_decisions(100) if d.trigger == "busy"]


def decided(control: MemoryControlStore, buffer_target: int) -> None:
    control.append_decision(
        DecisionRecord(0.0, "schedule", 2, 2, (), (), 0, buffer_target, 2, 0, 0, "earlier run", True), 86_400
    )


@pytest.fixture
def two_idle(api: Api, group: FakeAutoScaling) -> Api:
    group.members = {INSTANCE, OTHER}
    for instance_id in (INSTANCE, OTHER):
        assert report(api, "IDLE", 0, instance_id)[0] == 200
    return api


def test_a_busy_report_runs_one_evaluation_and_a_repeated_one_none(two_idle: Api, control: MemoryControlStore) -> None:
    decided(control, buffer_target=2)  # one idle recorder left after the report: short of 2
    status, body = report(two_idle, "BUSY", 5)
    assert (status, body) == (200, {"protect": True, "drain": False, "state": "busy"})
    runs = busy_runs(control)
    assert len(runs) == 1 and runs[0].busy == 1 and runs[0].idle == 1

    assert report(two_idle, "BUSY", 10)[0] == 200
    assert len(busy_runs(control)) == 1


def test_no_evaluation_while_enough_idle_recorders_are_left(two_idle: Api, control: MemoryControlStore) -> None:
    decided(control, buffer_target=1)  # one idle recorder left after the report: enough
    assert report(two_idle, "BUSY", 5)[0] == 200
    assert busy_runs(control) == []


def test_before_any_decision_a_busy_report_evaluates(two_idle: Api, control: MemoryControlStore) -> None:
    assert report(two_idle, "BUSY", 5)[0] == 200
    assert len(busy_runs(control)) == 1


def test_a_failing_evaluation_is_logged_and_counted_and_the_report_still_answered(
    two_idle: Api,
    control: MemoryControlStore,
    group: FakeAutoScaling,
    registry: MemoryRegistry,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def throttled() -> None:
        raise RuntimeError("Rate exceeded")

    monkeypatch.setattr(group, "describe", throttled)
    capsys.readouterr()
    status, body = report(two_idle, "BUSY", 5)
    assert (status, body) == (200, {"protect": True, "drain": False, "state": "busy"})
    assert registry.get(INSTANCE).state is S.BUSY  # type: ignore[union-attr]
    assert busy_runs(control) == []
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any(r.get("BusyEvaluationErrors") == [1.0] for r in emitted)
    # The lease was given back: the next trigger runs.
    monkeypatch.undo()
    assert report(two_idle, "IDLE", 10)[0] == 200
    assert report(two_idle, "BUSY", 15)[0] == 200
    assert len(busy_runs(control)) == 1


@pytest.fixture
def switched_off(api: Api) -> Iterator[Api]:
    settings = Settings.from_env({**REQUIRED, "POOL_NAME": "jibri-dev", "EVALUATE_ON_BUSY": "false"})
    api.runtime._settings = settings  # type: ignore[attr-defined]
    yield api


def test_evaluate_on_busy_false_leaves_it_to_the_schedule(
    switched_off: Api, control: MemoryControlStore, group: FakeAutoScaling
) -> None:
    group.members = {INSTANCE, OTHER}
    for instance_id in (INSTANCE, OTHER):
        report(switched_off, "IDLE", 0, instance_id)
    assert report(switched_off, "BUSY", 5)[0] == 200
    assert busy_runs(control) == [] and group.scaling() == []
    assert app_module.runtime.settings.policy().evaluate_on_busy is False


@pytest.mark.parametrize(("raw", "expected"), [("", True), ("true", True), ("off", False), ("0", False)])
def test_evaluate_on_busy_setting(raw: str, expected: bool) -> None:
    settings = Settings.from_env({**REQUIRED, "EVALUATE_ON_BUSY": raw})
    assert settings.evaluate_on_busy is expected
    assert settings.policy().evaluate_on_busy is expected


def test_a_bad_evaluate_on_busy_names_the_setting() -> None:
    with pytest.raises(SettingsError, match="EVALUATE_ON_BUSY='sometimes' is invalid: expected true or false"):
        Settings.from_env({**REQUIRED, "EVALUATE_ON_BUSY": "sometimes"})
