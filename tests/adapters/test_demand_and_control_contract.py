"""Demand tracking and the evaluator's control items: one contract, in memory and on DynamoDB (moto)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from chalicelib.bootstrap import ensure_table
from chalicelib.control import ControlStore, DecisionRecord, DynamoDBControlStore, MemoryControlStore
from chalicelib.demand import (
    DAY,
    DemandStore,
    DynamoDBDemandStore,
    MemoryDemandStore,
    demand_stats,
    learned_lead,
)
from chalicelib.policy import PolicySettings

NOW = 1_795_000_040.0  # 20 s into a minute


@pytest.fixture(params=["memory", "dynamodb"])
def table(request: pytest.FixtureRequest, unique: str) -> Any:
    if request.param == "memory":
        return None
    session = request.getfixturevalue("aws")
    ensure_table(session.client("dynamodb"), f"demand-{unique}")
    return session.resource("dynamodb").Table(f"demand-{unique}")


@pytest.fixture
def demand(table: Any) -> DemandStore:
    return MemoryDemandStore() if table is None else DynamoDBDemandStore(table, "pool-a")


@pytest.fixture
def control(table: Any) -> ControlStore:
    return MemoryControlStore() if table is None else DynamoDBControlStore(table, "pool-a")


def test_arrivals_are_counted_per_minute(demand: DemandStore) -> None:
    demand.record_arrival(NOW)
    demand.record_arrival(NOW + 45, count=2)  # next minute
    demand.record_arrival(NOW - 600)
    assert demand.arrivals(NOW - 20, NOW + 40) == 1
    assert demand.arrivals(NOW - 20, NOW + 100) == 3
    assert demand.arrivals(NOW - 620, NOW + 100) == 4
    assert demand.arrivals(NOW + 100, NOW + 100) == 0
    assert demand.had_arrivals_on_day(NOW - NOW % DAY)
    assert not demand.had_arrivals_on_day(NOW - NOW % DAY - DAY)


def test_concurrent_arrivals_are_all_counted(demand: DemandStore) -> None:
    threads = [threading.Thread(target=demand.record_arrival, args=(NOW,)) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert demand.arrivals(NOW - 20, NOW + 40) == 10


def test_lead_time_is_the_default_until_enough_launches_are_seen(demand: DemandStore) -> None:
    for n, seconds in enumerate([200, 210, 220, 230]):
        demand.record_lead_time("cold", seconds, NOW + n)
    assert learned_lead(demand, "cold", 240.0) == 240.0
    demand.record_lead_time("cold", 300, NOW + 10)
    demand.record_lead_time("warm", 40, NOW + 11)
    assert learned_lead(demand, "cold", 240.0) == 300.0  # the 90th percentile of five
    assert demand.lead_times("cold")[0] == 300.0  # newest first
    assert learned_lead(demand, "warm", 45.0) == 45.0  # warm and cold are learned apart


def test_stats_look_back_at_recent_minutes_and_the_same_slot_on_earlier_days(demand: DemandStore) -> None:
    settings = PolicySettings()
    assert demand_stats(demand, NOW, settings).history_rate_per_second is None
    for n in range(6):  # 6 arrivals in the last 10 minutes
        demand.record_arrival(NOW - 60 * n)
    for days_back in (1, 2):  # 9 arrivals in the coming 9 minutes, a day and two days ago
        for n in range(9):
            demand.record_arrival(NOW - days_back * DAY + 60 * n)
    stats = demand_stats(demand, NOW, settings, booked=lambda start, end: 3 if end - start == 540 else -1)
    assert stats.recent_rate_per_second == pytest.approx(6 / 600)
    assert stats.history_rate_per_second == pytest.approx(9 / 540)
    assert stats.booked == 3  # over the cold lead time plus the look-ahead margin
    assert (stats.cold_lead_seconds, stats.warm_lead_seconds) == (240.0, 45.0)


def test_one_lease_at_a_time_and_a_trigger_meanwhile_is_folded_into_a_rerun(control: ControlStore) -> None:
    assert control.acquire_lease("a", NOW, 60)
    assert not control.acquire_lease("b", NOW + 1, 60)  # requests a rerun from a
    assert not control.release_lease("a")  # a must run once more
    assert control.release_lease("a")
    assert control.acquire_lease("b", NOW + 2, 60)


def test_an_expired_lease_can_be_taken_over(control: ControlStore) -> None:
    assert control.acquire_lease("a", NOW, 60)
    assert control.acquire_lease("b", NOW + 61, 60)
    assert control.release_lease("a")  # not a's any more: nothing to do
    assert not control.acquire_lease("c", NOW + 62, 60)


def test_racing_evaluations_take_the_lease_once(control: ControlStore) -> None:
    won: list[str] = []
    barrier = threading.Barrier(8)

    def take(name: str) -> None:
        barrier.wait()
        if control.acquire_lease(name, NOW, 60):
            won.append(name)

    threads = [threading.Thread(target=take, args=(f"e{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1


def test_pause_switch(control: ControlStore) -> None:
    assert control.paused() is False
    control.set_paused(True, "incident", NOW)
    assert control.paused() is True
    control.set_paused(False, "over", NOW + 5)
    assert control.paused() is False


def test_decisions_come_back_newest_first(control: ControlStore) -> None:
    for n in range(5):
        control.append_decision(
            DecisionRecord(NOW + n, "schedule", n, n, ("i-1",) if n else (), (), 0, 1, n, 0, 0, f"run {n}", True),
            keep_seconds=3600,
        )
    latest = control.latest_decisions(3)
    assert [d.reason for d in latest] == ["run 4", "run 3", "run 2"]
    assert latest[0].drained == ("i-1",) and latest[0].at == NOW + 4


def test_a_couple_of_arrivals_are_noise_three_in_ten_minutes_are_a_surge(demand: DemandStore) -> None:
    settings = PolicySettings()
    demand.record_arrival(NOW - 60)
    demand.record_arrival(NOW)
    assert demand_stats(demand, NOW, settings).recent_rate_per_second == pytest.approx(2 / 3600)
    demand.record_arrival(NOW)
    assert demand_stats(demand, NOW, settings).recent_rate_per_second == pytest.approx(3 / 600)


def test_the_peak_rate_remembers_the_busiest_ten_minutes_of_the_last_two_hours(demand: DemandStore) -> None:
    for n in range(12):  # 12 arrivals within 10 minutes, 90 minutes ago
        demand.record_arrival(NOW - 5400 + 30 * n)
    stats = demand_stats(demand, NOW, PolicySettings())
    assert stats.recent_rate_per_second == 0.0  # older than the last hour
    assert stats.peak_rate_per_second == pytest.approx(12 / 600)


def test_launch_errors_count_once_per_activity_until_a_later_success(control: ControlStore) -> None:
    assert control.launch_errors() == []
    assert control.record_launch_error("activity-1", NOW)
    assert not control.record_launch_error("activity-1", NOW)  # delivered twice
    assert control.record_launch_error("activity-2", NOW + 60)
    control.record_launch_success(NOW + 30)  # between the two: only the later error is left
    assert control.launch_errors() == [NOW + 60]
    control.record_launch_success(NOW + 10)  # an older success arriving late changes nothing
    assert control.launch_errors() == [NOW + 60]
    control.record_launch_success(NOW + 120)
    assert control.launch_errors() == []
