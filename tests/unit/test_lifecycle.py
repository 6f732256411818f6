"""Lifecycle actions with in-memory adapters and a fake Auto Scaling that records the lifecycle calls."""

from __future__ import annotations

import pytest

from chalicelib.autoscaling import GroupInstance, GroupSize, GroupState, LifecycleActionGone
from chalicelib.lifecycle import LifecycleEvent, LifecycleService, LifecycleSettings
from chalicelib.memory_registry import MemoryRegistry
from chalicelib.states import RecorderState
from chalicelib.status import StatusReport, StatusService
from sim.clock import ManualClock

S = RecorderState
T0 = 1_795_482_000.0
ID = "i-0123456789abcdef0"


class LifecycleGroup:
    group_name = "jibri-dev"

    def __init__(self) -> None:
        self.completed: list[tuple[str, str, str]] = []  # (token, instance, result)
        self.heartbeats: list[str] = []
        self.gone: set[str] = set()  # tokens Auto Scaling no longer knows

    def is_member(self, instance_id: str) -> bool:
        return True

    def group_size(self) -> GroupSize:
        return GroupSize(1, 0, 10)

    def describe(self) -> GroupState:
        return GroupState(self.group_size(), (GroupInstance(ID, "InService"),))

    def set_desired_capacity(self, desired: int) -> None: ...

    def terminate(self, instance_id: str) -> None: ...

    def put_warm_pool(self, min_size: int) -> None: ...

    def complete_lifecycle_action(self, hook_name: str, token: str, instance_id: str, result: str) -> None:
        if token in self.gone:
            raise LifecycleActionGone("No active Lifecycle Action found with token " + token)
        self.gone.add(token)
        self.completed.append((token, instance_id, result))

    def record_lifecycle_action_heartbeat(self, hook_name: str, token: str, instance_id: str) -> None:
        if token in self.gone:
            raise LifecycleActionGone("No active Lifecycle Action found with token " + token)
        self.heartbeats.append(token)

    def set_instance_health(self, instance_id: str, healthy: bool) -> None: ...

    def set_instance_protection(self, instance_ids: list[str], protected: bool) -> None: ...


class World:
    def __init__(self, **settings: int) -> None:
        self.clock = ManualClock(T0)
        self.registry = MemoryRegistry("jibri-dev")
        self.group = LifecycleGroup()
        self.alerts: list[str] = []
        self.lifecycle = LifecycleService(
            self.registry,
            self.group,
            self.clock,
            LifecycleSettings(**settings),
            on_alert=lambda recorder, message: self.alerts.append(message),
        )
        self.status = StatusService(self.registry, self.group, self.clock, settle=self.lifecycle.settle)

    def event(
        self,
        transition: str,
        token: str,
        *,
        at: float | None = None,
        origin: str | None = None,
        destination: str | None = None,
        group: str = "jibri-dev",
    ) -> str:
        when = self.clock.now() if at is None else at
        return self.lifecycle.handle(
            LifecycleEvent(transition, group, ID, f"jibri-{transition}", token, when, origin, destination)
        )

    def report(self, busy: str = "IDLE", pending: int = 0, lifecycle: str | None = None) -> dict[str, object]:
        self.clock.advance(1)
        health = "UNHEALTHY" if busy == "OFFLINE" else "HEALTHY"
        reply = self.status.apply(
            ID, StatusReport(busy, health, pending, self.clock.now(), target_lifecycle_state=lifecycle)
        )
        return reply.body()

    def state(self) -> RecorderState:
        recorder = self.registry.get(ID)
        assert recorder is not None
        return recorder.state


def test_a_launch_is_continued_when_the_agent_first_reports_healthy() -> None:
    world = World()
    world.event("launch", "t-launch")
    assert world.state() is S.LAUNCHING and world.group.completed == []
    world.report("OFFLINE")  # Jibri still starting
    assert world.group.completed == []
    world.report("IDLE")
    assert world.group.completed == [("t-launch", ID, "CONTINUE")]
    assert world.state() is S.IDLE and world.registry.get(ID).hook is None  # type: ignore[union-attr]


def test_a_launch_event_that_arrives_after_the_agent_is_healthy_is_continued_at_once() -> None:
    world = World()
    world.report("IDLE")
    world.event("launch", "t-late", at=T0 - 30)
    assert world.group.completed == [("t-late", ID, "CONTINUE")]
    assert world.state() is S.IDLE


def test_duplicate_events_are_applied_once() -> None:
    world = World()
    world.event("launch", "t-launch")
    world.report("IDLE")
    assert "already applied" in world.event("launch", "t-launch", at=T0)
    assert world.group.completed == [("t-launch", ID, "CONTINUE")]
    assert world.state() is S.IDLE


def test_a_launch_arriving_after_the_termination_changes_nothing() -> None:
    world = World()
    world.report("IDLE")
    world.event("terminate", "t-term", at=T0 + 10)
    assert world.state() is S.TERMINATING
    world.event("launch", "t-launch", at=T0)  # older: delivered late
    assert world.state() is S.TERMINATING
    assert [c[0] for c in world.group.completed] == ["t-term"]


def test_a_free_recorder_is_let_go_at_once() -> None:
    world = World()
    world.report("IDLE")
    world.event("terminate", "t-term")
    assert world.group.completed == [("t-term", ID, "CONTINUE")]
    reply = world.report("IDLE")
    assert reply["drain"] is True and reply["state"] == "terminating"


@pytest.mark.parametrize(("busy", "pending"), [("BUSY", 0), ("IDLE", 2)])
def test_a_busy_or_uploading_recorder_holds_the_termination_with_heartbeats_until_free(busy: str, pending: int) -> None:
    world = World()
    world.report(busy, pending)
    world.event("terminate", "t-term")
    for _ in range(3):
        world.clock.advance(60)
        world.lifecycle.tick()
    assert world.group.completed == [] and world.group.heartbeats == ["t-term"] * 3
    assert world.report(busy, pending)["protect"] is True
    world.report("IDLE", 0)  # the recording ended, the uploads are in: let go at once
    assert world.group.completed == [("t-term", ID, "CONTINUE")]
    world.lifecycle.tick()
    assert world.group.heartbeats == ["t-term"] * 3


def test_a_held_termination_alerts_once_well_before_the_global_timeout() -> None:
    world = World(heartbeat_timeout_seconds=600)  # global timeout 60000 s, alert after 54000 s
    world.report("BUSY")
    world.event("terminate", "t-term")
    world.clock.advance(53_000)
    world.lifecycle.tick()
    assert world.alerts == []
    world.clock.advance(2_000)
    world.lifecycle.tick()
    world.clock.advance(60)
    world.lifecycle.tick()
    assert len(world.alerts) == 1 and "global timeout" in world.alerts[0]


def test_the_default_heartbeat_timeout_gives_a_48_hour_global_timeout() -> None:
    settings = LifecycleSettings()
    assert settings.global_timeout_seconds == 48 * 3600
    assert settings.alert_after_seconds == 48 * 3600 - 17_280  # a tenth of it: 4.8 h ahead


def test_a_launch_that_never_becomes_healthy_is_abandoned() -> None:
    world = World(launch_timeout_seconds=900)
    world.event("launch", "t-launch")
    world.report("OFFLINE")
    world.clock.advance(800)
    world.lifecycle.tick()
    assert world.group.completed == []
    world.clock.advance(200)
    world.lifecycle.tick()
    assert world.group.completed == [("t-launch", ID, "ABANDON")]
    assert world.state() is S.UNHEALTHY


def test_into_the_warm_pool_and_back_out() -> None:
    world = World()
    world.event("launch", "t-pool", origin="EC2", destination="WarmPool")
    assert world.report("IDLE", lifecycle="Warmed:Stopped")["state"] == "launching"  # never in service
    world.report("OFFLINE", lifecycle="Warmed:Stopped")  # the agent took Jibri out of service...
    assert world.group.completed == []  # ...one unanswered health check is not proof
    world.clock.advance(45)
    world.report("OFFLINE", lifecycle="Warmed:Stopped")
    assert world.group.completed == [("t-pool", ID, "CONTINUE")] and world.state() is S.WARM
    world.clock.advance(3600)
    world.event("launch", "t-out", origin="WarmPool", destination="AutoScalingGroup")
    recorder = world.registry.get(ID)
    assert recorder is not None and recorder.state is S.LAUNCHING and recorder.launch_kind == "warm"
    world.report("IDLE", lifecycle="InService")
    assert world.group.completed[-1] == ("t-out", ID, "CONTINUE") and world.state() is S.IDLE


def test_an_action_auto_scaling_already_closed_is_not_an_error() -> None:
    world = World()
    world.report("IDLE")
    world.group.gone.add("t-term")  # timed out, or completed by an earlier delivery
    world.event("terminate", "t-term")
    assert world.registry.get(ID).hook is None  # type: ignore[union-attr]


def test_events_of_other_groups_are_ignored() -> None:
    world = World()
    assert "ignored" in world.event("launch", "t-x", group="someone-else")
    assert world.registry.get(ID) is None


def test_a_slow_launch_is_kept_open_past_a_short_heartbeat_timeout() -> None:
    world = World(heartbeat_timeout_seconds=120, launch_timeout_seconds=900)
    world.event("launch", "t-launch")
    world.clock.advance(30)
    world.lifecycle.tick()
    assert world.group.heartbeats == []  # not due before half the heartbeat timeout
    for _ in range(4):
        world.clock.advance(60)
        world.lifecycle.tick()
    assert world.group.heartbeats == ["t-launch"] * 4
    world.report("IDLE")  # ready after about 4.5 minutes: still continued, not timed out
    assert world.group.completed == [("t-launch", ID, "CONTINUE")]


def test_one_unanswered_health_check_does_not_release_a_held_termination() -> None:
    world = World()
    world.report("BUSY")
    world.event("terminate", "t-term")
    world.report("OFFLINE")  # Jibri slow to answer once, mid-recording
    world.lifecycle.tick()
    assert world.group.completed == []
    world.report("BUSY")  # it was recording all along
    world.clock.advance(60)
    world.lifecycle.tick()
    assert world.group.completed == []
    world.report("OFFLINE")
    world.clock.advance(45)  # now really gone
    world.lifecycle.tick()
    assert world.group.completed == [("t-term", ID, "CONTINUE")]


def test_a_reserved_recorder_holds_its_termination_until_the_lease_ends() -> None:
    world = World()
    world.report("IDLE")
    recorder = world.registry.get(ID)
    assert recorder is not None
    from chalicelib.registry import transition

    world.registry.save(
        recorder,
        transition(
            recorder, S.RESERVED, world.clock.now(), reserved_for="req-1", reserved_until=world.clock.now() + 90
        ),
    )
    world.event("terminate", "t-term")
    assert world.group.completed == []
    for _ in range(2):  # heartbeats and reports meanwhile keep the reservation
        world.clock.advance(30)
        world.lifecycle.tick()
        world.report("IDLE")
    assert world.group.completed == []
    world.clock.advance(31)
    world.lifecycle.tick()
    assert world.group.completed == [("t-term", ID, "CONTINUE")]
