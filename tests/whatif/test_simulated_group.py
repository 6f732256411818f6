"""The simulated Auto Scaling group: launch delays, the warm pool, scale-in, billing."""

from __future__ import annotations

import pytest

from sim.whatif.engine import Engine
from sim.whatif.group import GroupListener, Segment, SimulatedGroup, billed_seconds
from sim.whatif.model import Model


class Listener(GroupListener):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.ready: list[tuple[str, float]] = []
        self.terminated: list[tuple[str, float]] = []

    def on_in_service(self, instance_id: str) -> None:
        self.ready.append((instance_id, self.engine.now()))

    def on_terminated(self, instance_id: str) -> None:
        self.terminated.append((instance_id, self.engine.now()))


def make(model: Model | None = None) -> tuple[Engine, SimulatedGroup, Listener]:
    engine = Engine()
    listener = Listener(engine)
    group = SimulatedGroup(engine, model or Model(minimum=0, cold_launch_s=240, warm_start_s=45), listener)
    return engine, group, listener


def test_raising_desired_launches_cold_instances_ready_after_the_cold_delay() -> None:
    engine, group, listener = make()
    engine.run(until=10)
    group.set_desired_capacity(2)
    assert [i.lifecycle_state for i in group.describe().instances] == ["Pending", "Pending"]
    engine.run(until=249)
    assert listener.ready == []
    engine.run(until=250)
    assert [at for _, at in listener.ready] == [250, 250]
    assert {i.lifecycle_state for i in group.describe().instances} == {"InService"}


def test_the_warm_pool_fills_cold_then_starts_warm() -> None:
    engine, group, listener = make()
    group.put_warm_pool(2)
    assert group.describe().warm_pool_size == 2
    engine.run(until=240)  # the pool's instances initialize, then stop
    group.set_desired_capacity(1)
    (member,) = group.describe().instances
    assert member.from_warm_pool
    engine.run(until=284)
    assert listener.ready == []
    engine.run(until=285)
    assert listener.ready == [(member.instance_id, 285)]
    # The pool was refilled to its size at once, by a cold launch.
    assert group.describe().warm_pool_size == 2


def test_a_smaller_warm_pool_gives_back_its_instances() -> None:
    engine, group, _ = make()
    group.put_warm_pool(3)
    engine.run(until=300)
    group.put_warm_pool(1)
    assert group.describe().warm_pool_size == 1


def test_terminate_ends_that_instance_and_decrements_desired() -> None:
    engine, group, listener = make()
    first, second = group.start(2)
    engine.run(until=100)
    group.terminate(first)
    assert group.desired == 1
    assert group.in_group() == [second]
    assert listener.terminated == [(first, 100)]
    engine.run(until=1000)
    assert group.in_group() == [second]  # not replaced


def test_terminate_refuses_to_go_below_the_minimum() -> None:
    _engine, group, _ = make(Model(minimum=1))
    (only,) = group.start(1)
    with pytest.raises(ValueError):
        group.terminate(only)


def test_desired_capacity_outside_min_max_is_refused() -> None:
    _, group, _ = make(Model(minimum=1, maximum=3))
    with pytest.raises(ValueError):
        group.set_desired_capacity(4)
    with pytest.raises(ValueError):
        group.set_desired_capacity(0)


def test_scale_in_picks_only_unprotected_instances() -> None:
    engine, group, listener = make()
    ids = group.start(3)
    group.set_instance_protection(ids[:2], True)
    group.set_desired_capacity(1)
    assert [victim for victim, _ in listener.terminated] == [ids[2]]
    assert group.in_group() == ids[:2]
    # Too few unprotected: the group keeps trying, and succeeds once protection is gone.
    group.set_instance_protection([ids[1]], False)
    engine.run(until=60)
    assert group.in_group() == [ids[0]]


def test_scale_in_picks_the_instance_closest_to_its_next_billing_hour() -> None:
    engine, group, listener = make()
    (older,) = group.start(1)
    engine.run(until=1000)
    group.set_desired_capacity(2)
    engine.run(until=2000)
    group.set_desired_capacity(1)
    assert listener.terminated == [(older, 2000)]  # 2000 s into its hour, the newer one 1000 s


def test_billing_is_per_second_with_a_60_second_minimum_per_run() -> None:
    engine, group, _ = make()
    short, _long = group.start(2)
    engine.run(until=30)
    group.terminate(short)
    engine.run(until=500)
    group.close()
    assert billed_seconds(group.segments, "run", 0, 500) == 60 + 500


def test_a_stopped_warm_pool_instance_is_billed_as_parked() -> None:
    engine, group, _ = make()
    group.put_warm_pool(1)
    engine.run(until=1240)
    group.close()
    assert billed_seconds(group.segments, "run", 0, 1240) == 240  # initializing, then stopped
    assert billed_seconds(group.segments, "park", 0, 1240) == 1000


def test_billing_in_a_window_charges_the_minimum_where_a_run_starts() -> None:
    segments = [Segment("a", "run", 100, 110), Segment("b", "run", 0, 200)]
    assert billed_seconds(segments, "run", 0, 1000) == 60 + 200
    assert billed_seconds(segments, "run", 150, 1000) == 50
