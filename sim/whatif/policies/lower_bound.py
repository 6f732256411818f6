"""The lower bound: a recorder exists exactly while a recording runs, and nobody waits.

Its cost is the sum of recording durations at the on-demand price: no boot, no idle
time, no 60 s minimum. No policy can do better, so it is the yardstick for cost.
"""

from __future__ import annotations

from sim.whatif.model import Model
from sim.whatif.trace import TraceRequest
from sim.whatif.world import Sample


def lower_bound_cost(trace: list[TraceRequest], model: Model, since: float = 0.0) -> float:
    return sum(r.duration for r in trace if r.request_at >= since) / 3600.0 * model.price_per_hour


def peak_concurrency(trace: list[TraceRequest], since: float = 0.0) -> int:
    changes = sorted(
        [(r.request_at, 1) for r in trace if r.ends_at > since] + [(r.ends_at, -1) for r in trace if r.ends_at > since]
    )
    running = peak = 0
    for at, step in changes:  # an end sorts before a start at the same instant
        running += step
        if at >= since:
            peak = max(peak, running)
    return peak


def samples(trace: list[TraceRequest], every: float = 60.0) -> list[Sample]:
    """Demand and capacity are the same curve; nothing is idle."""
    end = max((r.ends_at for r in trace), default=0.0)
    starts = sorted(r.request_at for r in trace)
    ends = sorted(r.ends_at for r in trace)
    out, s, e, at = [], 0, 0, 0.0
    while at <= end:
        while s < len(starts) and starts[s] <= at:
            s += 1
        while e < len(ends) and ends[e] <= at:
            e += 1
        out.append(Sample(at=at, recording=s - e, queued=0, capacity=s - e, idle=0, warm_pool=0))
        at += every
    return out
