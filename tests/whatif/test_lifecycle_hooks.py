"""Lifecycle hooks: the simulated group's waits and timeouts, and the real control plane completing them."""

from __future__ import annotations

import contextlib
import itertools
import json
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from whatif_helpers import trace, world

from chalicelib.autoscaling import LifecycleActionGone
from chalicelib.lifecycle import OFFLINE_CONFIRM_SECONDS, LifecycleEvent, LifecycleSettings
from sim.whatif import cli
from sim.whatif.engine import Engine
from sim.whatif.group import ActionOutcome, GroupListener, LifecycleHookConfig, SimulatedGroup
from sim.whatif.model import Model
from sim.whatif.policies.forecast import ForecastController
from sim.whatif.runner import simulate
from sim.whatif.trace import read_trace
from sim.whatif.world import World

WORKDAY = Path(__file__).resolve().parents[2] / "sim" / "traces" / "workday.csv"

# --- the group's mechanics -------------------------------------------------------------------


class Listener(GroupListener):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.events: list[LifecycleEvent] = []
        self.booted: list[tuple[str, bool, float]] = []
        self.ready: list[tuple[str, float]] = []
        self.terminated: list[tuple[str, float]] = []

    def on_lifecycle_action(self, event: LifecycleEvent) -> None:
        self.events.append(event)

    def on_booted_waiting(self, instance_id: str, into_warm_pool: bool) -> None:
        self.booted.append((instance_id, into_warm_pool, self.engine.now()))

    def on_in_service(self, instance_id: str) -> None:
        self.ready.append((instance_id, self.engine.now()))

    def on_terminated(self, instance_id: str) -> None:
        self.terminated.append((instance_id, self.engine.now()))


MODEL = Model(minimum=0, cold_launch_s=240, warm_start_s=45)


def make(
    heartbeat_s: float = 600, launch: bool = True, terminate: bool = True
) -> tuple[Engine, SimulatedGroup, Listener]:
    engine = Engine()
    listener = Listener(engine)
    group = SimulatedGroup(
        engine,
        MODEL,
        listener,
        launch_hook=LifecycleHookConfig("launch-hook", heartbeat_s) if launch else None,
        terminate_hook=LifecycleHookConfig("terminate-hook", heartbeat_s) if terminate else None,
    )
    return engine, group, listener


def complete(group: SimulatedGroup, event: LifecycleEvent, result: str = "CONTINUE") -> None:
    group.complete_lifecycle_action(event.hook_name, event.token, event.instance_id, result)


def test_a_launch_waits_in_pending_wait_with_its_agent_up_until_continued() -> None:
    engine, group, listener = make()
    engine.run(until=10)
    group.set_desired_capacity(1)
    (event,) = listener.events
    instance_id = event.instance_id
    assert (event.transition, event.group, event.hook_name) == ("launch", group.group_name, "launch-hook")
    assert (event.origin, event.destination) == ("EC2", "AutoScalingGroup")
    assert event.time == MODEL.epoch + 10
    assert str(uuid.UUID(event.token)) == event.token
    assert group.lifecycle(instance_id) == "Pending:Wait"
    assert group.open_action(instance_id) == event
    engine.run(until=400)
    # Booted at 250: its agent runs, but the instance stays out of service until the action is completed.
    assert listener.booted == [(instance_id, False, 250)]
    assert group.lifecycle(instance_id) == "Pending:Wait" and listener.ready == []
    complete(group, event)
    assert group.lifecycle(instance_id) == "InService"
    assert listener.ready == [(instance_id, 400)]
    assert group.outcomes == [ActionOutcome(400, instance_id, "launch", "CONTINUE", "completed")]


def test_a_launch_continued_before_it_booted_comes_into_service_once_booted() -> None:
    engine, group, listener = make()
    group.set_desired_capacity(1)
    (event,) = listener.events
    engine.run(until=100)
    complete(group, event)
    assert group.lifecycle(event.instance_id) == "Pending"
    engine.run(until=240)
    assert listener.ready == [(event.instance_id, 240)]
    assert listener.booted == []


def test_a_heartbeat_restarts_the_timeout_and_then_the_default_result_abandons_and_replaces() -> None:
    engine, group, listener = make(heartbeat_s=600)
    group.set_desired_capacity(1)
    (event,) = listener.events
    engine.run(until=500)
    group.record_lifecycle_action_heartbeat(event.hook_name, event.token, event.instance_id)
    engine.run(until=1099)
    assert group.lifecycle(event.instance_id) == "Pending:Wait"  # 600 s after the heartbeat, not after the launch
    engine.run(until=1100)
    assert group.lifecycle(event.instance_id) is None
    assert group.outcomes == [ActionOutcome(1100, event.instance_id, "launch", "ABANDON", "heartbeat timeout")]
    assert group.heartbeats == [(500, event.instance_id)]
    # Abandoned: terminated, and the group launches a replacement with an action of its own.
    replacement = listener.events[-1]
    assert replacement.instance_id != event.instance_id and replacement.token != event.token
    assert group.desired == 1 and group.in_group() == [replacement.instance_id]


def test_a_closed_or_unknown_action_is_gone_as_auto_scaling_answers() -> None:
    _, group, listener = make()
    group.set_desired_capacity(1)
    (event,) = listener.events
    with pytest.raises(LifecycleActionGone):
        group.complete_lifecycle_action(event.hook_name, str(uuid.uuid4()), event.instance_id, "CONTINUE")
    with pytest.raises(LifecycleActionGone):
        group.record_lifecycle_action_heartbeat("another-hook", event.token, event.instance_id)
    with pytest.raises(ValueError):
        complete(group, event, "MAYBE")
    complete(group, event)
    with pytest.raises(LifecycleActionGone):
        complete(group, event)
    with pytest.raises(LifecycleActionGone):
        group.record_lifecycle_action_heartbeat(event.hook_name, event.token, event.instance_id)


def by_terminate(group: SimulatedGroup, ids: list[str]) -> None:
    group.terminate(ids[0])


def by_scale_in(group: SimulatedGroup, ids: list[str]) -> None:
    group.set_instance_protection([ids[1]], True)
    group.set_desired_capacity(1)


def by_health(group: SimulatedGroup, ids: list[str]) -> None:
    group.set_instance_health(ids[0], healthy=False)


ENDINGS: dict[str, Callable[[SimulatedGroup, list[str]], None]] = {
    "TerminateInstanceInAutoScalingGroup": by_terminate,
    "scale-in": by_scale_in,
    "unhealthy": by_health,
}


@pytest.mark.parametrize("how", list(ENDINGS))
def test_every_termination_waits_in_terminating_wait_until_its_action_is_completed(how: str) -> None:
    engine, group, listener = make(launch=False)
    ids = group.start(2)
    engine.run(until=100)
    ENDINGS[how](group, ids)
    (event,) = listener.events
    assert (event.transition, event.instance_id, event.hook_name) == ("terminate", ids[0], "terminate-hook")
    assert (event.origin, event.destination) == ("AutoScalingGroup", "EC2")
    assert group.lifecycle(ids[0]) == "Terminating:Wait"
    # No longer counted toward desired capacity, still listed and running.
    assert ids[0] not in group.in_group()
    assert ("Terminating:Wait", ids[0]) in [(i.lifecycle_state, i.instance_id) for i in group.describe().instances]
    assert group.size_changes[-1][1] >= 2
    engine.run(until=500)
    assert listener.terminated == []
    complete(group, event)
    assert listener.terminated == [(ids[0], 500)]
    assert [s.end for s in group.segments if s.instance_id == ids[0]] == [500]


def test_a_held_termination_ends_at_the_global_timeout_whatever_the_heartbeats() -> None:
    assert LifecycleHookConfig("h", 7200).global_timeout_s == 48 * 3600
    engine, group, listener = make(heartbeat_s=30, launch=False)
    assert LifecycleHookConfig("h", 30).global_timeout_s == 3000
    ids = group.start(2)
    group.terminate(ids[0])
    (event,) = listener.events

    def beat() -> None:
        with contextlib.suppress(LifecycleActionGone):
            group.record_lifecycle_action_heartbeat(event.hook_name, event.token, event.instance_id)

    engine.every(20, beat, first=20)
    engine.run(until=2999)
    assert group.lifecycle(ids[0]) == "Terminating:Wait"
    engine.run(until=3000)
    assert listener.terminated == [(ids[0], 3000)]
    assert group.outcomes == [ActionOutcome(3000, ids[0], "terminate", "ABANDON", "global timeout")]


def test_warm_pool_launches_wait_too_into_the_pool_and_out_of_it() -> None:
    engine, group, listener = make()
    group.put_warm_pool(1)
    (into_pool,) = listener.events
    assert (into_pool.origin, into_pool.destination) == ("EC2", "WarmPool")
    assert group.lifecycle(into_pool.instance_id) == "Warmed:Pending:Wait"
    engine.run(until=240)
    assert listener.booted == [(into_pool.instance_id, True, 240)]
    complete(group, into_pool)
    assert group.lifecycle(into_pool.instance_id) == "Warmed:Stopped"
    engine.run(until=1000)
    group.set_desired_capacity(1)
    out_of_pool = next(e for e in listener.events if e.instance_id == into_pool.instance_id and e is not into_pool)
    assert (out_of_pool.origin, out_of_pool.destination) == ("WarmPool", "AutoScalingGroup")
    assert out_of_pool.time > into_pool.time
    assert group.lifecycle(into_pool.instance_id) == "Pending:Wait"


def test_without_hooks_nothing_waits() -> None:
    engine, group, listener = make(launch=False, terminate=False)
    group.set_desired_capacity(1)
    engine.run(until=240)
    (instance_id,) = group.in_service()
    group.terminate(instance_id)
    assert listener.events == [] and listener.terminated == [(instance_id, 240)]


# --- the real control plane completing them ---------------------------------------------------------


def hooked(heartbeat_s: float = 7200.0) -> Model:
    return Model(warm_pool="off", lifecycle_hooks=True, hook_heartbeat_timeout_s=heartbeat_s)


def run(w: World) -> ForecastController:
    forecast = ForecastController()
    w.run(forecast)
    return forecast


def operator_terminates(w: World) -> None:
    w.terminate_instance_of(w.records[0])


def operator_terminates_decrementing(w: World) -> None:
    w.terminate_instance_of(w.records[0], decrement=True)


def operator_marks_unhealthy(w: World) -> None:
    w.group.set_instance_health(str(w.records[0].instance_id), healthy=False)


OPERATOR: dict[str, Callable[[World], None]] = {
    "terminate, replaced": operator_terminates,
    "terminate, decrementing": operator_terminates_decrementing,
    "marked unhealthy": operator_marks_unhealthy,
}


@pytest.mark.parametrize("how", list(OPERATOR))
def test_a_busy_recorder_terminated_by_hand_is_held_until_its_recording_ends(how: str) -> None:
    # A 300 s heartbeat timeout: without the control plane's heartbeats it would go at 900. A later
    # meeting keeps the run going past the moment the held instance is let go.
    w = world(trace((100, 3600), (3750, 300)), hooked(heartbeat_s=300))
    seen: list[tuple[float, str | None]] = []

    def look() -> None:
        seen.append((w.engine.now(), w.group.lifecycle(str(w.records[0].instance_id))))

    def operator() -> None:
        OPERATOR[how](w)
        look()

    w.engine.at(600, operator)
    w.engine.at(2000, look)
    forecast = run(w)
    record = w.records[0]
    instance_id = record.instance_id
    assert seen == [(600, "Terminating:Wait"), (2000, "Terminating:Wait")]
    assert record.killed_at is None and record.ended_at == 3700
    # Let go once Jibri has been gone for the confirmation time, at the next evaluator run after that.
    (done,) = [o for o in w.group.outcomes if o.instance_id == str(instance_id) and o.transition == "terminate"]
    assert (done.result, done.cause) == ("CONTINUE", "completed")
    assert 3700 + OFFLINE_CONFIRM_SECONDS <= done.at <= 3700 + OFFLINE_CONFIRM_SECONDS + 60
    beats = [at for at, beaten in w.group.heartbeats if beaten == instance_id]
    assert beats[0] == 600 and beats[-1] >= 3600
    assert max(b - a for a, b in itertools.pairwise(beats)) <= 60
    assert [s.end for s in w.group.segments if s.instance_id == instance_id] == [done.at]
    assert forecast.alerts == []


def test_a_launch_whose_agent_never_becomes_healthy_is_abandoned_and_replaced() -> None:
    # The first launch after the initial instance is the broken one.
    broken = "i-00000000000000002"
    w = world(trace((100, 3000), (1500, 600), (2000, 600)), hooked(), never_healthy={broken})
    run(w)
    (abandoned,) = [o for o in w.group.outcomes if o.instance_id == broken]
    (launched_at,) = [s.start for s in w.group.segments if s.instance_id == broken]
    # By the control plane (a completed ABANDON), once the launch timeout is over; not by the hook's timeout.
    assert (abandoned.transition, abandoned.result, abandoned.cause) == ("launch", "ABANDON", "completed")
    assert abandoned.at - launched_at > LifecycleSettings().launch_timeout_seconds
    assert all(r.instance_id != broken for r in w.records)
    (replacement,) = [s.instance_id for s in w.group.segments if s.start == abandoned.at]
    # Its agent reported once booted, in Pending:Wait, and that put it in service.
    assert ActionOutcome(abandoned.at + 240, replacement, "launch", "CONTINUE", "completed") in w.group.outcomes
    assert w.records[1].instance_id == replacement and w.records[1].started_at == 1500
    assert all(r.gave_up_at is None and r.killed_at is None for r in w.records)


def test_a_normal_day_with_hooks_kills_nothing_fails_nothing_and_costs_the_same() -> None:
    requests = read_trace(WORKDAY)
    model = Model(lifecycle_hooks=True)
    engine = Engine()
    group = SimulatedGroup(engine, model)
    w = World(engine, group, model, requests)
    forecast = run(w)
    assert all(r.killed_at is None and r.gave_up_at is None for r in w.records)
    assert {(o.transition, o.result, o.cause) for o in group.outcomes} == {
        ("launch", "CONTINUE", "completed"),
        ("terminate", "CONTINUE", "completed"),
    }
    assert forecast.alerts == []
    # Every action is completed as soon as it may be. The one wait hooks add: an instance entering the
    # warm pool is let go only once its Jibri has been out of service for the confirmation time.
    with_hooks = simulate(requests, "forecast", model).result
    without = simulate(requests, "forecast", Model()).result
    assert with_hooks.config == "warm pool auto, lifecycle hooks"
    same = ("requests", "served_immediately_pct", "waited", "failed", "recordings_killed")
    assert [getattr(with_hooks, f) for f in same] == [getattr(without, f) for f in same]
    assert without.cost_usd <= with_hooks.cost_usd <= without.cost_usd * 1.02


def test_a_termination_held_past_the_global_timeout_is_alerted_before_it_kills() -> None:
    # Heartbeat timeout 300 s: the global timeout is 30 000 s, shorter than this recording.
    w = world(trace((100, 40_000)), hooked(heartbeat_s=300))
    w.engine.at(600, partial(operator_terminates, w))
    forecast = run(w)
    (record,) = w.records
    assert record.killed_at == 600 + 30_000
    assert ActionOutcome(30_600, str(record.instance_id), "terminate", "ABANDON", "global timeout") in w.group.outcomes
    (alert,) = [a for a in forecast.alerts if "global timeout" in a[2]]
    at, instance_id, _ = alert
    assert instance_id == record.instance_id
    assert 600 + LifecycleSettings(heartbeat_timeout_seconds=300).alert_after_seconds <= at < record.killed_at


def test_the_command_line_turns_hooks_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "small.csv"
    path.write_text("request_at_s,duration_s\n10,600\n400,1200\n")
    argv = ["--trace", str(path), "--policy", "forecast", "--json", "--lifecycle-hooks"]
    assert cli.main(argv) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["config"] == "warm pool auto, lifecycle hooks"
    assert item["recordings_killed"] == 0
    with pytest.raises(SystemExit):
        cli.main([*argv, "--hook-heartbeat-timeout-s", "10"])
