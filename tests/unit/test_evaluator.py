"""The evaluator with in-memory adapters and a recording fake of the Auto Scaling port."""

from __future__ import annotations

import pytest

from chalicelib.autoscaling import GroupInstance, GroupSize, GroupState
from chalicelib.control import MemoryControlStore
from chalicelib.demand import MemoryDemandStore
from chalicelib.evaluator import Evaluator, EvaluatorOptions, PoolHealth, pool_health
from chalicelib.memory_registry import MemoryRegistry
from chalicelib.policy import PolicySettings
from chalicelib.registry import Recorder, WriteResult
from chalicelib.states import RecorderState
from chalicelib.status import StatusReport, StatusService
from sim.clock import ManualClock

S = RecorderState
START = 1_795_000_000.0


class FakeGroup:
    """Just enough of a group to see what the evaluator asks of it."""

    group_name = "pool"

    def __init__(self, instances: list[str], minimum: int = 0, maximum: int = 50) -> None:
        self.instances = {i: GroupInstance(i, "InService") for i in instances}
        self.desired, self.minimum, self.maximum = len(instances), minimum, maximum
        self.calls: list[tuple[str, object]] = []
        self.fail_terminate = False

    def is_member(self, instance_id: str) -> bool:
        return instance_id in self.instances

    def group_size(self) -> GroupSize:
        return GroupSize(self.desired, self.minimum, self.maximum)

    def describe(self) -> GroupState:
        return GroupState(self.group_size(), tuple(self.instances.values()))

    def set_desired_capacity(self, desired: int) -> None:
        self.calls.append(("desired", desired))
        for n in range(len(self.instances), desired):  # launched at once, as the simulated group does
            self.instances[f"i-new{n}"] = GroupInstance(f"i-new{n}", "Pending")
        self.desired = desired

    def terminate(self, instance_id: str) -> None:
        if self.fail_terminate:
            raise ConnectionError("Auto Scaling unreachable")
        self.calls.append(("terminate", instance_id))
        self.instances[instance_id] = GroupInstance(instance_id, "Terminating")
        self.desired -= 1

    def put_warm_pool(self, min_size: int) -> None:
        self.calls.append(("warm_pool", min_size))


class World:
    def __init__(self, instances: list[str], settings: PolicySettings | None = None, **options: object) -> None:
        self.clock = ManualClock(START)
        self.registry = MemoryRegistry("pool")
        self.group = FakeGroup(instances)
        self.demand = MemoryDemandStore()
        self.control = MemoryControlStore()
        self.status = StatusService(self.registry, self.group, self.clock, demand=self.demand)
        self.evaluator = Evaluator(
            self.registry,
            self.group,
            self.demand,
            self.control,
            self.clock,
            settings or PolicySettings(warm_pool="off"),
            # Staleness is the reconciler's business, tested on its own: these agents never go silent.
            options=EvaluatorOptions(**{"stale_after": 10_000.0, **options}),  # type: ignore[arg-type]
        )

    def report(self, instance_id: str, busy: str = "IDLE", pending: int = 0) -> None:
        health = "UNHEALTHY" if busy == "OFFLINE" else "HEALTHY"
        self.status.apply(instance_id, StatusReport(busy, health, pending, self.clock.now()))
        self.clock.advance(0.001)
        if busy == "OFFLINE":
            self.clock.advance(45)  # unreachable long enough to count as gone

    def state(self, instance_id: str) -> RecorderState:
        recorder = self.registry.get(instance_id)
        assert recorder is not None
        return recorder.state

    def terminated(self) -> list[object]:
        return [target for call, target in self.group.calls if call == "terminate"]


def idle_pool(n: int, busy: int = 0, idle_for: float = 3600.0) -> World:
    ids = [f"i-{k:02d}" for k in range(n)]
    world = World(ids)
    for k, instance_id in enumerate(ids):
        world.report(instance_id, "BUSY" if k < busy else "IDLE")
    world.clock.advance(idle_for)
    for instance_id in ids:  # fresh heartbeats; states unchanged
        world.report(instance_id, "BUSY" if int(instance_id[2:]) < busy else "IDLE")
    return world


def test_group_instances_it_does_not_know_are_registered_as_launching() -> None:
    world = World(["i-a", "i-b"])
    world.group.instances["i-b"] = GroupInstance("i-b", "Pending", from_warm_pool=True)
    world.evaluator.run()
    a, b = world.registry.get("i-a"), world.registry.get("i-b")
    assert a is not None and b is not None
    assert (a.state, a.launch_kind, b.state, b.launch_kind) == (S.LAUNCHING, "cold", S.LAUNCHING, "warm")
    world.clock.advance(50)
    world.report("i-b")  # ready: the warm launch took 50 s
    assert world.demand.lead_times("warm") == [pytest.approx(50.0)]


def test_scale_out_raises_desired_capacity_for_the_buffer_and_registers_the_launches() -> None:
    world = idle_pool(3, busy=3)
    decision = world.evaluator.run()
    assert decision is not None and decision.desired == 4
    assert world.group.calls == [("desired", 4)]
    launched = world.registry.get("i-new3")
    assert launched is not None and launched.state is S.LAUNCHING and launched.created_at == world.clock.now()


def test_scale_in_only_ever_drains_idle_recorders() -> None:
    world = idle_pool(10, busy=4)
    world.evaluator.run()
    drained = [r.instance_id for r in world.registry.list_by_state(S.DRAINING)]
    assert len(drained) == 2
    assert all(int(i[2:]) >= 4 for i in drained), "a busy recorder was drained"
    assert world.terminated() == [] and ("desired", 9) not in world.group.calls


def test_a_drained_recorder_is_terminated_only_once_jibri_is_gone() -> None:
    world = idle_pool(6)
    world.evaluator.run()
    chosen = [r.instance_id for r in world.registry.list_by_state(S.DRAINING)]
    world.evaluator.run()
    assert world.terminated() == []  # the agents have not reported OFFLINE yet
    world.report(chosen[0], "OFFLINE")
    world.report(chosen[1], "OFFLINE", pending=1)  # still uploading
    world.evaluator.run()
    assert world.terminated() == [chosen[0]]
    assert world.state(chosen[0]) is S.TERMINATING and world.group.desired == 5
    world.report(chosen[1], "OFFLINE", pending=0)
    world.evaluator.run()
    assert world.terminated() == [chosen[0], chosen[1]]


def test_a_draining_recorder_that_jicofo_gave_a_recording_stays_until_it_ends() -> None:
    world = idle_pool(6)
    world.evaluator.run()
    victim = world.registry.list_by_state(S.DRAINING)[0].instance_id
    world.report(victim, "BUSY")
    world.evaluator.run()
    assert victim not in world.terminated() and world.state(victim) is S.DRAINING
    world.report(victim, "OFFLINE")
    world.evaluator.run()
    assert victim in world.terminated()


class RacingRegistry(MemoryRegistry):
    """A report lands between the evaluator's read and its conditional write."""

    def __init__(self, pool: str) -> None:
        super().__init__(pool)
        self.race: tuple[RecorderState, StatusReport] | None = None
        self.status: StatusService | None = None

    def save(self, expected: Recorder, updated: Recorder) -> WriteResult:
        if self.race and updated.state is self.race[0] and self.status:
            _target, report = self.race
            self.race = None
            self.status.apply(expected.instance_id, report)
        return super().save(expected, updated)


def racing_world(n: int) -> tuple[World, RacingRegistry]:
    world = idle_pool(n)
    racing = RacingRegistry("pool")
    for recorder in world.registry.list_all():
        racing.create(recorder)
    world.registry = racing
    world.status = StatusService(racing, world.group, world.clock)
    racing.status = world.status
    world.evaluator = Evaluator(
        racing, world.group, world.demand, world.control, world.clock, PolicySettings(warm_pool="off")
    )
    return world, racing


def test_a_lost_drain_race_drains_and_terminates_nothing() -> None:
    world, racing = racing_world(4)
    racing.race = (S.DRAINING, StatusReport("BUSY", "HEALTHY", 0, world.clock.now() + 1))
    world.evaluator.run()
    drained = racing.list_by_state(S.DRAINING)
    busy = racing.list_by_state(S.BUSY)
    assert len(busy) == 1 and busy[0].instance_id not in [r.instance_id for r in drained]
    for _ in range(3):
        world.evaluator.run()
    assert busy[0].instance_id not in world.terminated()


def test_a_report_racing_the_termination_write_terminates_nothing() -> None:
    world, racing = racing_world(4)
    world.evaluator.run()
    victim = racing.list_by_state(S.DRAINING)[0].instance_id
    world.report(victim, "OFFLINE")
    # Jibri comes back and takes a recording just as the evaluator decides to terminate.
    racing.race = (S.TERMINATING, StatusReport("BUSY", "HEALTHY", 0, world.clock.now() + 1))
    world.evaluator.run()
    assert victim not in world.terminated()


def test_pause_stops_scale_in_but_not_scale_out() -> None:
    world = idle_pool(6)
    world.control.set_paused(True, "incident", world.clock.now())
    world.evaluator.run()
    assert world.registry.list_by_state(S.DRAINING) == []
    record = world.control.latest_decisions(1)[0]
    assert not record.acted and "paused" in record.reason
    busy = idle_pool(2, busy=2)
    busy.control.set_paused(True, "incident", busy.clock.now())
    busy.evaluator.run()
    assert busy.group.calls == [("desired", 3)]


def test_dry_run_decides_and_logs_without_acting() -> None:
    ids = [f"i-{k}" for k in range(6)]
    world = World(ids, dry_run=True)
    for instance_id in ids:
        world.report(instance_id)
    world.clock.advance(3600)
    for instance_id in ids:
        world.report(instance_id)
    decision = world.evaluator.run()
    assert decision is not None and decision.drain
    assert world.group.calls == [] and world.registry.list_by_state(S.DRAINING) == []
    assert "dry run" in world.control.latest_decisions(1)[0].reason


def test_a_trigger_during_a_run_is_folded_into_one_rerun() -> None:
    world = idle_pool(3, busy=3)
    runs: list[str] = []
    original = world.evaluator._evaluate

    def evaluate(trigger: str):  # type: ignore[no-untyped-def]
        runs.append(trigger)
        if len(runs) == 1:
            assert world.evaluator.run("request") is None  # arrives meanwhile: folded, not run
        return original(trigger)

    world.evaluator._evaluate = evaluate  # type: ignore[method-assign]
    world.evaluator.run("schedule")
    assert runs == ["schedule", "rerun"]
    assert world.control.acquire_lease("next", world.clock.now(), 60)


def test_a_failing_termination_is_tried_again_later_and_the_lease_released() -> None:
    world = idle_pool(6)
    world.evaluator.run()
    drained = [r.instance_id for r in world.registry.list_by_state(S.DRAINING)]
    for instance_id in drained:
        world.report(instance_id, "OFFLINE")
    world.group.fail_terminate = True
    world.evaluator.run()
    assert world.terminated() == [] and all(world.state(i) is S.TERMINATING for i in drained)
    assert world.control.acquire_lease("next", world.clock.now(), 60)
    world.control.release_lease("next")
    world.group.fail_terminate = False
    world.evaluator.run()
    assert world.terminated() == []  # not before the retry delay
    world.clock.advance(121)
    world.evaluator.run()
    assert sorted(world.terminated()) == sorted(drained)


def test_vanished_instances_are_buried_and_fresh_registrations_are_not() -> None:
    world = idle_pool(3)
    del world.group.instances["i-00"]
    world.evaluator.run()
    assert world.state("i-00") is S.TERMINATED
    # An instance that registered after the group was described is left alone.
    late = Recorder(
        "pool",
        "i-new",
        S.IDLE,
        world.clock.now(),
        world.clock.now(),
        world.clock.now(),
        last_heartbeat_at=world.clock.now(),
    )
    world.registry.create(late)
    world.evaluator.run()
    assert world.state("i-new") is S.IDLE


def test_desired_capacity_stays_within_the_group_bounds() -> None:
    world = idle_pool(5, busy=5)
    world.group.maximum = 5
    decision = world.evaluator.run()
    assert decision is not None and decision.desired == 5 and world.group.calls == []
    calm = idle_pool(2)
    calm.group.minimum = 2
    calm.evaluator.run()
    assert calm.registry.list_by_state(S.DRAINING) == []


def test_the_warm_pool_is_sized_when_one_is_configured_and_only_on_change() -> None:
    ids = ["i-0"]
    world = World(ids, settings=PolicySettings(warm_pool="3"), apply_warm_pool=True)
    world.report("i-0")
    world.evaluator.run()
    world.evaluator.run()
    assert [c for c in world.group.calls if c[0] == "warm_pool"] == [("warm_pool", 3)]


def test_busy_reports_count_as_arrivals_once_per_recording() -> None:
    world = idle_pool(1)
    before = world.demand.arrivals(START - 60, world.clock.now() + 60)
    world.report("i-00", "BUSY")
    world.report("i-00", "BUSY")
    world.report("i-00", "IDLE")
    world.report("i-00", "BUSY")
    assert world.demand.arrivals(START - 60, world.clock.now() + 60) - before == 2


def test_a_draining_recorder_briefly_unreachable_while_recording_is_not_terminated() -> None:
    world = idle_pool(6)
    world.evaluator.run()
    victim = world.registry.list_by_state(S.DRAINING)[0].instance_id
    world.report(victim, "BUSY")
    world.status.apply(victim, StatusReport("OFFLINE", "UNHEALTHY", 0, world.clock.now()))  # one slow check
    world.clock.advance(10)
    world.evaluator.run()
    assert victim not in world.terminated()


def _drained_then_demand(world: World) -> list[str]:
    world.evaluator.run()
    chosen = sorted(r.instance_id for r in world.registry.list_by_state(S.DRAINING))
    assert chosen, "the idle pool should have had a surplus to drain"
    for instance_id in world.registry.list_by_state(S.IDLE):  # demand: every other recorder goes busy
        world.report(instance_id.instance_id, "BUSY")
    return chosen


def test_scale_out_first_withdraws_drains_whose_jibri_is_still_in_service() -> None:
    world, twin = idle_pool(6), idle_pool(6)
    chosen = _drained_then_demand(world)
    assert _drained_then_demand(twin) == chosen
    twin.evaluator._withdraw_drains = lambda recorders, wanted, now: ()  # type: ignore[method-assign]

    decision, without = world.evaluator.run(), twin.evaluator.run()

    assert decision is not None and without is not None
    assert world.registry.list_by_state(S.DRAINING) == []
    assert all(world.state(i) is S.IDLE for i in chosen)
    assert f"withdrew the drain of {', '.join(chosen)}" in decision.reason
    # The withdrawn recorders are capacity at once: that many fewer launches.
    assert without.desired - decision.desired == len(chosen)
    assert world.terminated() == []


def test_a_drain_whose_jibri_already_left_service_is_not_withdrawn() -> None:
    world = idle_pool(6)
    chosen = _drained_then_demand(world)
    for instance_id in chosen:
        world.report(instance_id, "OFFLINE")

    decision = world.evaluator.run()

    assert decision is not None and "withdrew" not in decision.reason
    assert sorted(world.terminated()) == chosen  # they left service: terminated, and replaced by launches
    assert any(call == "desired" for call, _ in world.group.calls)


def test_a_withdrawal_racing_a_report_withdraws_nothing() -> None:
    world = idle_pool(6)
    chosen = _drained_then_demand(world)
    registry_save = world.registry.save

    def racing_save(expected: Recorder, updated: Recorder) -> WriteResult:
        if expected.state is S.DRAINING and updated.state is S.IDLE:
            # The agent's OFFLINE report lands between the evaluator's read and its write.
            registry_save(expected, _offline(expected, world.clock.now()))
        return registry_save(expected, updated)

    world.registry.save = racing_save  # type: ignore[method-assign]
    decision = world.evaluator.run()
    assert decision is not None and "withdrew" not in decision.reason
    assert all(world.state(i) is S.DRAINING for i in chosen)


def _offline(recorder: Recorder, now: float) -> Recorder:
    import dataclasses

    return dataclasses.replace(recorder, busy_status="OFFLINE", health="UNHEALTHY", updated_at=now)


def test_a_failed_warm_pool_sizing_still_records_the_decision() -> None:
    world = idle_pool(3, busy=3)
    world.evaluator = Evaluator(
        world.registry,
        world.group,
        world.demand,
        world.control,
        world.clock,
        PolicySettings(warm_pool="2"),
        options=EvaluatorOptions(stale_after=10_000.0, apply_warm_pool=True),
    )

    def failing(min_size: int) -> None:
        raise ConnectionError("Auto Scaling throttled")

    world.group.put_warm_pool = failing  # type: ignore[method-assign]
    decision = world.evaluator.run()
    assert decision is not None
    (record,) = world.control.latest_decisions(1)
    assert "warm pool sizing failed" in record.reason
    assert ("desired", 4) in world.group.calls


def test_pool_health_counts_stale_agents_pending_uploads_and_the_least_free_disk() -> None:
    world = idle_pool(3)
    world.status.apply(
        "i-00", StatusReport("IDLE", "HEALTHY", 2, world.clock.now(), disk_free_bytes=5_000_000_000, failed_uploads=1)
    )
    world.status.apply("i-01", StatusReport("BUSY", "HEALTHY", 0, world.clock.now(), disk_free_bytes=700_000_000))
    seen: list[PoolHealth] = []
    world.evaluator._on_health = seen.append
    world.evaluator.run()
    assert seen == [PoolHealth(stale=0, min_disk_free_bytes=700_000_000, pending_uploads=2, failed_uploads=1)]
    recorders = {r.instance_id: r for r in world.registry.list_all()}
    later = world.clock.now() + 91
    assert pool_health(recorders, later, 90.0).stale == 3


def test_a_drain_the_agent_was_already_told_of_is_not_withdrawn() -> None:
    world = idle_pool(6)
    chosen = _drained_then_demand(world)
    for instance_id in chosen:
        world.report(instance_id, "IDLE")  # answered drain=true: its Jibri is leaving service now

    decision = world.evaluator.run()

    assert decision is not None and "withdrew" not in decision.reason
    assert all(world.state(i) is S.DRAINING for i in chosen)
