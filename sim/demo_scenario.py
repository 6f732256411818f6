"""The demo's scenarios: recorder requests in sim/traces' CSV format, or the built-in short workday."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from sim.whatif.trace import TraceError, TraceRequest, read_trace

__all__ = ["Scenario", "TraceError", "load_scenario", "workday"]


@dataclass(frozen=True)
class Scenario:
    name: str
    requests: tuple[TraceRequest, ...]

    @property
    def span(self) -> float:
        """Seconds from the start until the last recording ends."""
        return max((r.ends_at for r in self.requests), default=0.0)

    def peak(self) -> int:
        """The most recordings that overlap, if every request were served at once."""
        edges = sorted([(r.request_at, 1) for r in self.requests] + [(r.ends_at, -1) for r in self.requests])
        running = best = 0
        for _, step in edges:
            running += step
            best = max(best, running)
        return best


def workday(seed: int = 7, spike: int = 10, minutes: float = 75.0, announce_spike: float = 0.0) -> Scenario:
    """A short workday: a morning ramp, a plateau, `spike` requests within three minutes at mid-day (an
    all-hands that everyone records), then a quiet end. Recordings last 8 to 25 minutes. With
    `announce_spike` > 0 each of the spike's requests is booked that many minutes ahead of it (before
    the run when that is earlier than its start); the requests are the same either way."""
    rng = random.Random(seed)
    end = minutes * 60.0
    rate_per_s = [(0.0, 0.10), (0.2 * end, 0.40), (0.75 * end, 0.20)]  # (from, arrivals per minute)
    times: list[tuple[float, bool]] = []  # (when, one of the spike's)
    t = 0.0
    while True:
        rate = next(r for start, r in reversed(rate_per_s) if t >= start) / 60.0
        t += rng.expovariate(rate)
        if t >= end:
            break
        times.append((t, False))
    spike_at = 0.5 * end
    times += [(spike_at + rng.uniform(0.0, 180.0), True) for _ in range(spike)]
    ahead = announce_spike * 60.0
    requests = [
        TraceRequest(
            i,
            round(at, 1),
            round(rng.uniform(8 * 60, 25 * 60), 1),
            round(at - ahead, 1) if in_spike and ahead > 0 else None,
        )
        for i, (at, in_spike) in enumerate(sorted(times))
    ]
    booked = f", booked {announce_spike:g} min ahead" if ahead > 0 else ""
    return Scenario(
        f"workday ({len(requests)} requests over {minutes:g} min, a spike of {spike}{booked})", tuple(requests)
    )


def load_scenario(path: str | Path, time_scale: float = 1.0, limit: int | None = None) -> Scenario:
    """A trace CSV (request_at_s,duration_s[,announced_at_s]); `time_scale` multiplies every time in it."""
    if time_scale <= 0:
        raise TraceError("the time scale must be positive")
    requests = read_trace(path)[:limit]
    scaled = tuple(
        TraceRequest(
            r.index,
            r.request_at * time_scale,
            r.duration * time_scale,
            None if r.announced_at is None else r.announced_at * time_scale,
        )
        for r in requests
    )
    scale = "" if time_scale == 1 else f", times x{time_scale:g}"
    return Scenario(f"{Path(path).name} ({len(scaled)} requests{scale})", scaled)
