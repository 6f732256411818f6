"""What a run is judged on: service to requests, and what the instances cost."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from sim.whatif.group import Segment, billed_seconds
from sim.whatif.model import Model
from sim.whatif.policies.lower_bound import lower_bound_cost, peak_concurrency
from sim.whatif.trace import TraceRequest
from sim.whatif.world import RequestRecord


@dataclass(frozen=True)
class Result:
    policy: str
    config: str  # the baseline's thresholds, or the forecast's warm pool setting
    requests: int
    served_immediately_pct: float
    waited: int  # served, after a wait
    failed: int  # gave up waiting
    wait_p50_s: float  # over all requests: 0 when served at once, the time to give up when failed
    wait_p95_s: float
    wait_max_s: float
    recordings_killed: int
    instance_hours: float  # running instances, billed: per second, 60 s minimum per run
    warm_pool_hours: float  # stopped instances parked in the warm pool
    cost_usd: float
    lower_bound_usd: float
    cost_vs_lower_bound: float
    delivered_recording_hours: float  # recorded time of recordings that were not killed
    cost_per_recording_hour: float
    peak_instances: int
    from_s: float  # the reporting window starts here (trace seconds)

    def as_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def percentile(values: list[float], pct: float) -> float:
    """Nearest rank: the smallest value with at least pct % of the values at or below it."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100.0 * len(ordered)) - 1)]


def summarize(
    policy: str,
    config: str,
    records: list[RequestRecord],
    segments: list[Segment],
    size_changes: list[tuple[float, int]],
    model: Model,
    end: float,
    since: float = 0.0,
) -> Result:
    chosen = [r for r in records if r.trace.request_at >= since]
    waits = [r.wait for r in chosen]
    immediate = sum(1 for r in chosen if r.started_at is not None and r.started_at == r.trace.request_at)
    delivered = sum(
        r.ended_at - r.started_at
        for r in chosen
        if r.started_at is not None and r.ended_at is not None and r.killed_at is None
    )
    run_hours = billed_seconds(segments, "run", since, end) / 3600.0
    park_hours = billed_seconds(segments, "park", since, end) / 3600.0
    cost = run_hours * model.price_per_hour + park_hours * model.warm_price_per_hour
    bound = lower_bound_cost([r.trace for r in records], model, since)
    return Result(
        policy=policy,
        config=config,
        requests=len(chosen),
        served_immediately_pct=100.0 * immediate / len(chosen) if chosen else 100.0,
        waited=sum(1 for r in chosen if r.started_at is not None and r.started_at > r.trace.request_at),
        failed=sum(1 for r in chosen if r.gave_up_at is not None),
        wait_p50_s=percentile(waits, 50),
        wait_p95_s=percentile(waits, 95),
        wait_max_s=max(waits, default=0.0),
        recordings_killed=sum(1 for r in chosen if r.killed_at is not None),
        instance_hours=run_hours,
        warm_pool_hours=park_hours,
        cost_usd=cost,
        lower_bound_usd=bound,
        cost_vs_lower_bound=cost / bound if bound else math.inf,
        delivered_recording_hours=delivered / 3600.0,
        cost_per_recording_hour=cost / (delivered / 3600.0) if delivered else math.inf,
        peak_instances=_peak(size_changes, since),
        from_s=since,
    )


def lower_bound_result(trace: list[TraceRequest], model: Model, since: float = 0.0) -> Result:
    chosen = [r for r in trace if r.request_at >= since]
    hours = sum(r.duration for r in chosen) / 3600.0
    cost = lower_bound_cost(trace, model, since)
    return Result(
        policy="lower_bound",
        config="-",
        requests=len(chosen),
        served_immediately_pct=100.0,
        waited=0,
        failed=0,
        wait_p50_s=0.0,
        wait_p95_s=0.0,
        wait_max_s=0.0,
        recordings_killed=0,
        instance_hours=hours,
        warm_pool_hours=0.0,
        cost_usd=cost,
        lower_bound_usd=cost,
        cost_vs_lower_bound=1.0 if cost else math.inf,
        delivered_recording_hours=hours,
        cost_per_recording_hour=model.price_per_hour if hours else math.inf,
        peak_instances=peak_concurrency(trace, since),
        from_s=since,
    )


def _peak(size_changes: list[tuple[float, int]], since: float) -> int:
    before = [size for at, size in size_changes if at <= since]
    during = [size for at, size in size_changes if at > since]
    return max(before[-1:] + during, default=0)
