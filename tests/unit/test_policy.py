"""The scaling policy, rule by rule, on cases small enough to check by hand."""

from __future__ import annotations

import dataclasses
import math

import pytest

from chalicelib.policy import (
    DemandStats,
    IdleRecorder,
    PolicySettings,
    PoolSnapshot,
    decide,
    poisson_pmf,
    poisson_quantile,
    reaction_seconds,
)
from chalicelib.schedule import parse_schedule

NOW = 1_795_000_000.0  # a Tuesday, 2026-11-17 08:26:40 UTC
QUIET = DemandStats(0.0, 0.0, None, 0, cold_lead_seconds=240.0, warm_lead_seconds=45.0)
# The rules one at a time: the spared-waits limit is off unless a test is about it.
SETTINGS = PolicySettings(warm_pool="off", min_spared_per_hour=0.0)


def settings(**changes: object) -> PolicySettings:
    return dataclasses.replace(SETTINGS, **changes)  # type: ignore[arg-type]


def snapshot(
    idle: int = 0,
    busy: int = 0,
    launching: int = 0,
    leaving: int = 0,
    queued: int = 0,
    desired: int | None = None,
    minimum: int = 0,
    maximum: int = 50,
    idle_for: float = 3600.0,
    warm: int = 0,
) -> PoolSnapshot:
    recorders = tuple(IdleRecorder(f"i-{n:02d}", NOW - idle_for - n) for n in range(idle))
    total = idle + busy + launching + leaving
    return PoolSnapshot(
        NOW, total if desired is None else desired, minimum, maximum, recorders, busy, launching, leaving, warm, queued
    )


def rate(per_minute: float, history: float | None = None, booked: int = 0) -> DemandStats:
    return DemandStats(per_minute / 60, per_minute / 60, None if history is None else history / 60, booked, 240.0, 45.0)


@pytest.mark.parametrize(
    ("mean", "level", "expected"),
    [(0.0, 0.995, 0), (1.0, 0.5, 1), (1.0, 0.9, 2), (1.0, 0.995, 4), (4.0, 0.995, 10), (10.0, 0.995, 19)],
)
def test_poisson_quantile(mean: float, level: float, expected: int) -> None:
    assert poisson_quantile(mean, level) == expected


def test_poisson_quantile_of_a_huge_mean_stays_finite() -> None:
    assert poisson_quantile(5000.0, 0.995) >= 5000
    assert math.isfinite(poisson_quantile(1e6, 0.995))


def test_quiet_pool_keeps_min_idle() -> None:
    decision = decide(snapshot(idle=0), QUIET, SETTINGS)
    assert (decision.desired, decision.buffer_target, decision.drain) == (1, 1, ())
    assert "scale out to 1" in decision.reason


def test_buffer_covers_arrivals_during_the_lead_time_and_the_evaluation_interval() -> None:
    # 1 arrival per minute over a 240 s cold launch decided up to 60 s late: mean 5, 99.5 % quantile 12.
    decision = decide(snapshot(idle=3, busy=5), rate(1.0), SETTINGS)
    assert decision.buffer_target == 12
    assert decision.desired == 5 + 12


def test_a_warm_pool_shortens_the_lead_time_and_the_buffer() -> None:
    auto = settings(warm_pool="auto")
    decision = decide(snapshot(idle=0, busy=5, warm=6), rate(1.0), auto)
    # 45 s + 60 s at 1/min: mean 1.75, 99.5 % quantile 6, and the pool holds 6.
    assert decision.buffer_target == 6
    # The pool covers a cold refill (240 s, mean 4) at the warm pool's own level: 9 at 99 %, 10 at 99.5 %.
    assert decision.warm_pool_size == 9
    assert (
        decide(snapshot(idle=1), rate(1.0), settings(warm_pool="auto", warm_pool_service_level=0.995)).warm_pool_size
        == 10
    )


def test_a_warm_pool_too_small_for_the_buffer_leaves_it_to_cold_launches() -> None:
    decision = decide(snapshot(idle=0, busy=5, warm=5), rate(1.0), settings(warm_pool="5"))
    assert decision.buffer_target == 12


def test_launches_in_flight_count_toward_the_buffer() -> None:
    decision = decide(snapshot(idle=1, launching=11, busy=5), rate(1.0), SETTINGS)
    assert decision.desired == 17 and decision.drain == ()


def test_queued_and_booked_requests_add_to_the_buffer() -> None:
    decision = decide(snapshot(idle=1, queued=3), rate(0.0, booked=2), SETTINGS)
    assert decision.buffer_target == 1 + 2 + 3
    assert decision.desired == 6


def test_history_raises_the_buffer_ahead_of_a_known_peak() -> None:
    calm = decide(snapshot(idle=1), rate(0.0), SETTINGS)
    ahead = decide(snapshot(idle=1), rate(0.0, history=2.0), SETTINGS)
    assert calm.buffer_target == 1
    assert ahead.buffer_target == 19 == poisson_quantile(10.0, 0.995) and "history" in ahead.reason


def test_history_never_lowers_the_buffer_below_what_is_arriving_now() -> None:
    decision = decide(snapshot(idle=1), rate(1.0, history=0.1), SETTINGS)
    assert decision.buffer_target == 12


def test_schedule_override_raises_min_idle_in_its_zone() -> None:
    schedule = parse_schedule("mon-fri 08:00-18:00 min_idle=5", "Europe/Berlin")  # 09:26 in Berlin
    decision = decide(snapshot(idle=1), QUIET, dataclasses.replace(SETTINGS, schedule=schedule))
    assert decision.buffer_target == 5
    elsewhere = parse_schedule("mon-fri 08:00-18:00 min_idle=5", "America/New_York")  # 03:26 there
    assert decide(snapshot(idle=1), QUIET, dataclasses.replace(SETTINGS, schedule=elsewhere)).buffer_target == 1


def test_scale_in_drains_only_idle_recorders_held_long_enough_oldest_first_by_a_bounded_step() -> None:
    snap = snapshot(idle=6, busy=4)
    decision = decide(snap, QUIET, SETTINGS)
    assert decision.drain == ("i-05", "i-04")  # the two idle longest
    assert decision.desired == snap.desired  # desired falls as each drained recorder is terminated


def test_scale_in_waits_for_the_hold_time_while_arrivals_are_expected_within_it() -> None:
    busy = rate(1.0)  # 5 arrivals expected in the 300 s hold (and the cold lead): buffer 12
    assert decide(snapshot(idle=16, idle_for=299.0 - 16), busy, SETTINGS).drain == ()
    assert "held" in decide(snapshot(idle=16, idle_for=100.0), busy, SETTINGS).reason
    assert decide(snapshot(idle=16, idle_for=300.0), busy, SETTINGS).drain == ("i-15", "i-14")


def test_with_less_than_one_arrival_expected_in_the_hold_a_surplus_waits_one_evaluation_only() -> None:
    assert decide(snapshot(idle=6, idle_for=60.0 - 6), QUIET, SETTINGS).drain == ()
    assert decide(snapshot(idle=6, idle_for=60.0), QUIET, SETTINGS).drain == ("i-05", "i-04")
    trickle = rate(0.15)  # 0.75 arrivals in 300 s: buffer 4
    assert decide(snapshot(idle=8, busy=3, idle_for=60.0), trickle, SETTINGS).drain == ("i-07", "i-06")


def test_rising_demand_holds_the_surplus_of_a_busy_pool() -> None:
    climbing = dataclasses.replace(rate(1.0), rising=True)
    decision = decide(snapshot(idle=16, busy=20), climbing, SETTINGS)
    assert decision.drain == () and "demand rising" in decision.reason
    # A trickle that happens to climb is still too thin to be worth holding for.
    trickle = dataclasses.replace(rate(0.15), rising=True)
    assert decide(snapshot(idle=8, busy=3), trickle, SETTINGS).drain == ("i-07", "i-06")


def test_scale_in_never_goes_below_the_group_minimum() -> None:
    decision = decide(snapshot(idle=3, minimum=2), QUIET, SETTINGS)
    assert len(decision.drain) == 1


def test_desired_is_clamped_to_the_group_maximum() -> None:
    decision = decide(snapshot(busy=48, maximum=50), rate(1.0), SETTINGS)
    assert decision.desired == 50 and "clamped" in decision.reason


def test_desired_is_never_lowered_by_the_policy() -> None:
    decision = decide(snapshot(idle=2, desired=9), QUIET, SETTINGS)
    assert decision.desired == 9


def test_no_flapping_a_steady_pool_at_its_buffer_does_nothing() -> None:
    decision = decide(snapshot(idle=12, busy=5), rate(1.0), SETTINGS)
    assert (decision.desired, decision.drain) == (17, ())
    assert "at buffer" in decision.reason


@pytest.mark.parametrize(("mode", "expected"), [("off", 0), ("7", 7), ("auto", 9)])
def test_warm_pool_size(mode: str, expected: int) -> None:
    assert decide(snapshot(idle=1), rate(1.0), settings(warm_pool=mode)).warm_pool_size == expected


def test_with_the_busy_trigger_the_buffer_covers_the_lead_time_and_the_reaction_margin_only() -> None:
    # 4 arrivals an hour over a warm start: 45 + 60 s expects 0.117 arrivals (P(<= 1) = 0.9937, so 2
    # at 0.995); 45 + 30 s expects 0.083 (P(<= 1) = 0.9967, so 1).
    demand = dataclasses.replace(rate(4 / 60), cold_lead_seconds=240.0, warm_lead_seconds=45.0)
    pool = snapshot(idle=0, busy=1, warm=5)
    scheduled = decide(pool, demand, settings(warm_pool="5"))
    triggered = decide(pool, demand, settings(warm_pool="5", evaluate_on_busy=True))
    assert scheduled.buffer_target == 2 and "in 105 s" in scheduled.reason
    assert triggered.buffer_target == 1 and "in 75 s" in triggered.reason


def test_the_reaction_margin_never_exceeds_the_evaluation_interval() -> None:
    margin = settings(warm_pool="off", evaluate_on_busy=True, busy_reaction_seconds=600.0)
    assert reaction_seconds(margin) == margin.evaluation_interval_seconds
    assert reaction_seconds(dataclasses.replace(margin, evaluate_on_busy=False)) == 60.0
    assert reaction_seconds(dataclasses.replace(margin, busy_reaction_seconds=30.0)) == 30.0


def test_with_the_busy_trigger_a_smaller_warm_pool_is_enough_for_warm_launches() -> None:
    # 1 arrival a minute: over 45 + 60 s the buffer needs 6, more than the pool's 5, so launches are
    # cold; over 45 + 30 s (mean 1.25) it needs 5, which the pool holds.
    pool = snapshot(idle=0, busy=5, warm=5)
    assert decide(pool, rate(1.0), settings(warm_pool="5")).buffer_target == 12
    assert decide(pool, rate(1.0), settings(warm_pool="5", evaluate_on_busy=True)).buffer_target == 5


@pytest.mark.parametrize(("mean", "k", "expected"), [(0.0, 0, 1.0), (0.0, 2, 0.0), (1.0, 0, 0.3679), (2.0, 3, 0.1804)])
def test_poisson_pmf(mean: float, k: int, expected: float) -> None:
    assert poisson_pmf(mean, k) == pytest.approx(expected, abs=1e-4)


def test_poisson_pmf_of_a_huge_mean_stays_finite() -> None:
    assert poisson_pmf(5000.0, 5000) == pytest.approx(1 / math.sqrt(2 * math.pi * 5000), rel=1e-3)
    assert poisson_pmf(1e6, 2_000_000) == 0.0


def test_a_second_idle_recorder_that_would_spare_few_waits_is_not_kept() -> None:
    # 5 arrivals an hour over a warm start decided up to 60 s late (105 s): mean 0.146, and
    # P(N <= 1) = 0.990 < 0.995, so the service level asks for 2. The second idle recorder serves only
    # the arrivals that find the first one taken: 5 x P(N = 1) = 0.63 an hour.
    demand = rate(5 / 60)
    pool = snapshot(idle=0, busy=1, warm=5)
    strict = decide(pool, demand, settings(warm_pool="5"))
    lean = decide(pool, demand, settings(warm_pool="5", min_spared_per_hour=1.0))
    generous = decide(pool, demand, settings(warm_pool="5", min_spared_per_hour=0.5))
    assert strict.buffer_target == 2
    assert lean.buffer_target == 1 and "idle recorder 2 not kept: it would serve 0.63" in lean.reason
    assert generous.buffer_target == 2


def test_in_a_busy_hour_the_spared_waits_limit_trims_only_the_tail() -> None:
    # 1 arrival a minute over 240 + 60 s: mean 5, 12 at 99.5 %. The 12th serves 60 x P(N = 11) = 0.49
    # waiting requests an hour, the 11th 60 x P(N = 10) = 1.09: only the 12th goes.
    decision = decide(snapshot(idle=3, busy=5), rate(1.0), settings(min_spared_per_hour=1.0))
    assert decision.buffer_target == 11


def test_the_spared_waits_limit_never_goes_below_the_floor() -> None:
    # 1 arrival a minute over 240 + 60 s: mean 5, 12 at 99.5 %. Asking each recorder to spare 5 waiting
    # requests an hour keeps 8 (the 8th spares 60 x P(N = 7) = 6.3, the 9th 60 x P(N = 8) = 3.9); a
    # schedule override's floor of 10 is kept whatever the limit says.
    demand = rate(1.0)
    strict = settings(min_spared_per_hour=5.0)
    assert decide(snapshot(idle=3, busy=5), demand, strict).buffer_target == 8
    schedule = parse_schedule("mon-fri 08:00-18:00 min_idle=10")  # NOW is a Tuesday at 08:26 UTC
    held = decide(snapshot(idle=3, busy=5), demand, dataclasses.replace(strict, schedule=schedule))
    assert held.buffer_target == 10 and "idle recorder 11 not kept" in held.reason
    # A quiet pool keeps min_idle however little its one recorder would spare.
    assert decide(snapshot(idle=0), rate(1 / 1440), settings(min_spared_per_hour=100.0)).buffer_target == 1


def test_booked_and_queued_requests_are_never_trimmed_by_the_spared_waits_limit() -> None:
    decision = decide(snapshot(idle=0, queued=2), rate(5 / 60, booked=3), settings(min_spared_per_hour=100.0))
    assert decision.buffer_target == 1 + 3 + 2


def test_an_auto_pool_is_never_smaller_than_what_makes_launches_warm() -> None:
    # 1 arrival a minute: a cold refill (240 s, mean 4) at 50 % asks for a pool of 4, but the buffer counts on
    # warm launches only with 6 parked (45 + 60 s, mean 1.75, at 99.5 %): the pool is made 6.
    loose = settings(warm_pool="auto", warm_pool_service_level=0.5)
    assert poisson_quantile(4.0, 0.5) == 4
    assert decide(snapshot(idle=1), rate(1.0), loose).warm_pool_size == 6
