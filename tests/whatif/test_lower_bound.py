"""The lower bound: instances exactly while recordings run."""

from __future__ import annotations

import pytest
from whatif_helpers import trace

from sim.whatif.metrics import lower_bound_result
from sim.whatif.model import Model
from sim.whatif.runner import simulate


def test_cost_is_the_sum_of_durations_at_the_hourly_price() -> None:
    requests = trace((0, 1800), (100, 3600), (5000, 30))
    result = lower_bound_result(requests, Model(price_per_hour=0.2))
    assert result.cost_usd == pytest.approx((1800 + 3600 + 30) / 3600 * 0.2)
    assert result.cost_vs_lower_bound == 1.0
    assert result.served_immediately_pct == 100.0 and result.failed == 0
    assert result.peak_instances == 2


def test_the_window_counts_only_requests_from_its_start() -> None:
    requests = trace((0, 3600), (90_000, 1800))
    result = simulate(requests, "lower_bound", Model(), since=86_400).result
    assert result.requests == 1
    assert result.cost_usd == pytest.approx(0.5 * 0.17)
