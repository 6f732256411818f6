"""Demand traces: one CSV row per recording request."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

HEADER = ("request_at_s", "duration_s", "announced_at_s")


@dataclass(frozen=True)
class TraceRequest:
    index: int
    request_at: float  # seconds from the start of the trace
    duration: float  # the meeting's length from the request: the recording ends with it
    announced_at: float | None = None  # when it was booked ahead; None when it was not

    @property
    def ends_at(self) -> float:
        return self.request_at + self.duration


class TraceError(ValueError):
    pass


def read_trace(path: str | Path) -> list[TraceRequest]:
    with open(path, newline="") as handle:
        return parse_trace(handle.read().splitlines(), str(path))


def parse_trace(lines: list[str], name: str = "trace") -> list[TraceRequest]:
    rows = list(csv.reader(lines))
    if not rows or tuple(c.strip() for c in rows[0][:2]) != HEADER[:2]:
        raise TraceError(f"{name}: the first line must be the header request_at_s,duration_s[,announced_at_s]")
    with_announcements = len(rows[0]) > 2 and rows[0][2].strip() == HEADER[2]
    requests: list[TraceRequest] = []
    for number, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        try:
            request_at, duration = float(row[0]), float(row[1])
            announced = row[2].strip() if with_announcements and len(row) > 2 else ""
            announced_at = float(announced) if announced else None
        except (ValueError, IndexError):
            raise TraceError(f"{name}:{number}: expected numbers, got {row!r}") from None
        values = [request_at, duration] + ([announced_at] if announced_at is not None else [])
        if not all(math.isfinite(v) for v in values) or request_at < 0 or duration <= 0:
            raise TraceError(f"{name}:{number}: request_at_s must be >= 0 and duration_s > 0")
        if announced_at is not None and announced_at > request_at:
            raise TraceError(f"{name}:{number}: announced_at_s is after request_at_s")
        requests.append(TraceRequest(len(requests), request_at, duration, announced_at))
    requests.sort(key=lambda r: (r.request_at, r.index))
    return [TraceRequest(i, r.request_at, r.duration, r.announced_at) for i, r in enumerate(requests)]


def write_trace(path: str | Path, requests: list[TraceRequest]) -> None:
    announced = any(r.announced_at is not None for r in requests)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER if announced else HEADER[:2])
        for r in requests:
            row = [_num(r.request_at), _num(r.duration)]
            if announced:
                row.append("" if r.announced_at is None else _num(r.announced_at))
            writer.writerow(row)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"
