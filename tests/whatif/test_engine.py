"""The event loop: a virtual clock, and a fixed order for events at the same instant."""

from __future__ import annotations

import pytest

from sim.whatif.engine import Engine, EpochClock, Phase


def test_events_run_in_time_order_and_the_clock_follows() -> None:
    engine = Engine()
    seen: list[tuple[str, float]] = []
    engine.at(30, lambda: seen.append(("b", engine.now())))
    engine.at(10, lambda: seen.append(("a", engine.now())))
    engine.run(until=100)
    assert seen == [("a", 10), ("b", 30)]
    assert engine.now() == 100


def test_same_instant_runs_by_phase_then_in_scheduling_order() -> None:
    engine = Engine()
    seen: list[str] = []
    engine.at(5, lambda: seen.append("control 1"), Phase.CONTROL)
    engine.at(5, lambda: seen.append("request"), Phase.REQUEST)
    engine.at(5, lambda: seen.append("control 2"), Phase.CONTROL)
    engine.at(5, lambda: seen.append("instance"), Phase.INSTANCE)
    engine.at(5, lambda: seen.append("recording end"), Phase.RECORDING_END)
    engine.run(until=5)
    assert seen == ["instance", "recording end", "request", "control 1", "control 2"]


def test_an_event_may_schedule_another_at_the_same_instant() -> None:
    engine = Engine()
    seen: list[str] = []

    def first() -> None:
        engine.after(0, lambda: seen.append("follow-up"))

    engine.at(1, first)
    engine.run(until=1)
    assert seen == ["follow-up"]


def test_cancelled_events_do_not_run() -> None:
    engine = Engine()
    seen: list[int] = []
    event = engine.at(1, lambda: seen.append(1))
    event.cancel()
    engine.run(until=2)
    assert seen == []


def test_every_repeats_from_first_until_the_run_ends() -> None:
    engine = Engine()
    ticks: list[float] = []
    engine.every(60, lambda: ticks.append(engine.now()), first=0)
    engine.run(until=180)
    assert ticks == [0, 60, 120, 180]
    engine.run(until=200)
    assert ticks == [0, 60, 120, 180]


def test_the_past_cannot_be_scheduled() -> None:
    engine = Engine()
    engine.run(until=10)
    with pytest.raises(ValueError):
        engine.at(5, lambda: None)


def test_epoch_clock_is_the_engine_clock_shifted() -> None:
    engine = Engine()
    clock = EpochClock(engine, epoch=1_000_000.0)
    engine.run(until=42)
    assert clock.now() == 1_000_042.0
