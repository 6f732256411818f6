"""The reference traces, from a seeded generator: `python -m sim.traces.generate [--seed N] [--out DIR]`.

Every trace starts at second 0 and is written as CSV with the header
`request_at_s,duration_s` (plus `announced_at_s` when some requests were booked
ahead). The same seed always writes the same files.

- workday: 10 hours, a morning and an afternoon peak, 400 recordings, median 40 min.
- webinar_spike: 4 quiet hours (about 6 requests an hour) and 40 requests within
  90 s at 2:00, each recording a one-hour webinar.
- conference: 9 hours; 15 parallel sessions start around each hour from 1:00 to 8:00
  (from a minute early to three late), 50 min each, over a background of ad-hoc meetings.
- conference_announced: the same requests, the sessions booked a day ahead.
- week: five 24-hour days of the same weekday pattern (quiet nights, two peaks).
- quiet_night: 10 hours of a night, 20 recordings, more early and late.
- day_1000: 24 hours, 1,000 recordings: the speed benchmark.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable
from pathlib import Path

from sim.whatif.trace import TraceRequest, write_trace

HOUR = 3600.0
DAY = 24 * HOUR
DEFAULT_SEED = 2026
OUT = Path(__file__).resolve().parent


def _bump(t: float, center: float, width: float) -> float:
    return math.exp(-0.5 * ((t - center) / width) ** 2)


def _arrivals(rng: random.Random, count: int, length: float, rate: Callable[[float], float]) -> list[float]:
    """`count` arrival times on [0, length) with density proportional to `rate` (rejection sampling)."""
    peak = max(rate(length * i / 2000) for i in range(2001))
    times: list[float] = []
    while len(times) < count:
        t = rng.uniform(0.0, length)
        if rng.uniform(0.0, peak) < rate(t):
            times.append(float(int(t)))
    return sorted(times)


def _duration(rng: random.Random, median: float, sigma: float = 0.5) -> float:
    return float(int(min(4 * HOUR, max(120.0, rng.lognormvariate(math.log(median), sigma)))))


def _requests(rows: list[tuple[float, float, float | None]]) -> list[TraceRequest]:
    rows.sort(key=lambda r: r[0])
    return [TraceRequest(i, at, duration, announced) for i, (at, duration, announced) in enumerate(rows)]


def _weekday_rate(t: float) -> float:
    """Arrivals over a day from midnight: a quiet night, a morning and an afternoon peak."""
    hour = (t % DAY) / HOUR
    return 0.04 + 0.25 * _bump(hour, 8.5, 3.0) + _bump(hour, 10.5, 0.9) + 0.85 * _bump(hour, 15.0, 1.1)


def workday(seed: int) -> list[TraceRequest]:
    rng = random.Random(f"{seed}:workday")

    def rate(t: float) -> float:
        hour = t / HOUR
        return 0.15 + _bump(hour, 2.5, 0.9) + 0.85 * _bump(hour, 7.0, 1.1)

    return _requests([(at, _duration(rng, 40 * 60), None) for at in _arrivals(rng, 400, 10 * HOUR, rate)])


def webinar_spike(seed: int) -> list[TraceRequest]:
    rng = random.Random(f"{seed}:webinar")
    rows: list[tuple[float, float, float | None]] = []
    t = rng.expovariate(6 / HOUR)
    while t < 4 * HOUR:
        rows.append((float(int(t)), _duration(rng, 30 * 60), None))
        t += rng.expovariate(6 / HOUR)
    for _ in range(40):
        rows.append((float(int(2 * HOUR + rng.uniform(0, 90))), float(int(rng.gauss(60 * 60, 4 * 60))), None))
    return _requests(rows)


def _conference(seed: int, announced: bool) -> list[TraceRequest]:
    rng = random.Random(f"{seed}:conference")
    rows: list[tuple[float, float, float | None]] = []
    for hour in range(1, 9):
        for _ in range(15):
            at = float(int(hour * HOUR + rng.uniform(-60, 180)))
            length = float(int(min(58 * 60, max(40 * 60, rng.gauss(50 * 60, 3 * 60)))))
            rows.append((at, length, at - DAY if announced else None))
    for at in _arrivals(rng, 36, 9 * HOUR, lambda t: 1.0):
        rows.append((at, _duration(rng, 30 * 60), None))
    return _requests(rows)


def conference(seed: int) -> list[TraceRequest]:
    return _conference(seed, announced=False)


def conference_announced(seed: int) -> list[TraceRequest]:
    return _conference(seed, announced=True)


def week(seed: int) -> list[TraceRequest]:
    rng = random.Random(f"{seed}:week")
    rows: list[tuple[float, float, float | None]] = []
    for day in range(5):
        for at in _arrivals(rng, 420, DAY, _weekday_rate):
            rows.append((day * DAY + at, _duration(rng, 40 * 60), None))
    return _requests(rows)


def quiet_night(seed: int) -> list[TraceRequest]:
    rng = random.Random(f"{seed}:night")

    def rate(t: float) -> float:
        hour = t / HOUR
        return 0.2 + _bump(hour, 0.5, 1.2) + 0.6 * _bump(hour, 9.5, 1.0)

    return _requests([(at, _duration(rng, 40 * 60), None) for at in _arrivals(rng, 20, 10 * HOUR, rate)])


def day_1000(seed: int) -> list[TraceRequest]:
    rng = random.Random(f"{seed}:day1000")
    return _requests([(at, _duration(rng, 40 * 60), None) for at in _arrivals(rng, 1000, DAY, _weekday_rate)])


TRACES: dict[str, Callable[[int], list[TraceRequest]]] = {
    "workday": workday,
    "webinar_spike": webinar_spike,
    "conference": conference,
    "conference_announced": conference_announced,
    "week": week,
    "quiet_night": quiet_night,
    "day_1000": day_1000,
}


def write_all(out: Path, seed: int = DEFAULT_SEED) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in TRACES.items():
        path = out / f"{name}.csv"
        write_trace(path, make(seed))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.traces.generate", description="Write the reference traces.")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=OUT, help="directory for the CSV files (default: sim/traces)")
    args = parser.parse_args(argv)
    for path in write_all(args.out, args.seed):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
