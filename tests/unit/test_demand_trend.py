"""Demand tracking tells the policy when arrivals are climbing."""

from __future__ import annotations

from chalicelib.demand import MemoryDemandStore, demand_stats
from chalicelib.policy import PolicySettings

NOW = 1_795_000_000.0 - 1_795_000_000.0 % 3600  # on the hour
SETTINGS = PolicySettings()


def store_with(arrivals: dict[float, int]) -> MemoryDemandStore:
    """Arrivals at seconds before NOW."""
    store = MemoryDemandStore()
    for seconds_ago, count in arrivals.items():
        store.record_arrival(NOW - seconds_ago, count)
    return store


def test_more_arrivals_in_the_last_half_hour_than_in_the_one_before_is_rising() -> None:
    assert demand_stats(store_with({2400: 2, 600: 4}), NOW, SETTINGS).rising


def test_steady_or_falling_demand_is_not_rising() -> None:
    assert not demand_stats(store_with({2400: 4, 600: 4}), NOW, SETTINGS).rising
    assert not demand_stats(store_with({2400: 6, 600: 3}), NOW, SETTINGS).rising


def test_a_couple_of_arrivals_after_silence_are_not_a_trend() -> None:
    assert not demand_stats(store_with({600: 2}), NOW, SETTINGS).rising
    assert demand_stats(store_with({600: 3}), NOW, SETTINGS).rising


def test_arrivals_older_than_an_hour_do_not_count() -> None:
    assert demand_stats(store_with({5400: 10, 600: 3}), NOW, SETTINGS).rising
