"""Our policy, through the real evaluator and status service, on small traces."""

from __future__ import annotations

from whatif_helpers import trace, world

from sim.whatif.model import Model
from sim.whatif.policies.forecast import ForecastController
from sim.whatif.runner import simulate


def test_a_small_trace_is_served_and_nothing_is_killed() -> None:
    requests = trace((100, 1200), (110, 1200), (120, 1200), (900, 600), (2400, 600))
    result = simulate(requests, "forecast", Model()).result
    assert result.failed == 0
    assert result.recordings_killed == 0
    assert result.requests == 5


def test_surplus_recorders_are_drained_then_terminated_after_their_recordings() -> None:
    requests = trace(*[(100 + i, 1800) for i in range(6)], (6000, 60))
    w = world(requests, Model(warm_pool="off"))
    forecast = ForecastController()
    w.run(forecast)
    assert all(r.killed_at is None for r in w.records)
    assert any(d.drain for _, d in forecast.decisions)
    # After the burst's recordings end (1900 s) the group shrinks back to a small buffer.
    assert max(size for _, size in w.group.size_changes) >= 6
    assert min(size for at, size in w.group.size_changes if 2500 < at < 6000) <= 3


def test_announced_requests_find_recorders_ready() -> None:
    booked = [(3600 + i, 1800, -86_400) for i in range(8)]
    result = simulate(trace(*booked), "forecast", Model()).result
    assert result.served_immediately_pct == 100.0
    unannounced = simulate(trace(*[(at, d) for at, d, _ in booked]), "forecast", Model()).result
    assert unannounced.served_immediately_pct < 100.0


def test_a_request_that_finds_no_idle_recorder_triggers_an_evaluation_at_once() -> None:
    w = world(trace((30, 600), (31, 600), (32, 600)), Model(warm_pool="off"))
    forecast = ForecastController()
    w.run(forecast)
    assert any(30 <= at < 60 for at, _ in forecast.decisions)


def test_a_busy_report_that_leaves_the_pool_short_evaluates_at_once_when_the_trigger_is_on() -> None:
    # The group starts with one idle recorder: the request at 30 s takes it, so none is left.
    for on in (True, False):
        w = world(trace((30, 600)), Model(warm_pool="off", evaluate_on_busy=on))
        forecast = ForecastController()
        w.run(forecast)
        assert forecast.settings.evaluate_on_busy is on
        assert any(at == 30 for at, _ in forecast.decisions) is on
        assert w.records[0].wait == 0
