"""Schedule overrides: `mon-fri 08:45-18:00 min_idle=5`, in an IANA time zone.

Several overrides are separated by `;`. Days are `mon`..`sun`, ranges (`mon-fri`),
lists (`sat,sun`) or `daily`. A range whose end is not after its start runs past
midnight into the next day. Where several overrides match, the largest applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_OVERRIDE = re.compile(
    r"^(?P<days>[a-z,\-]+)\s+(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})\s+min_idle=(?P<min_idle>\d{1,3})$"
)


class ScheduleError(ValueError):
    pass


@dataclass(frozen=True)
class ScheduleOverride:
    days: frozenset[int]  # 0 = Monday
    start: time
    end: time
    min_idle: int
    zone: str = "UTC"

    def applies(self, epoch: float) -> bool:
        local = datetime.fromtimestamp(epoch, tz=ZoneInfo(self.zone))
        now, day = local.time(), local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= now < self.end
        # Past midnight: the evening of a listed day, or the early hours after one.
        return (day in self.days and now >= self.start) or ((day - 1) % 7 in self.days and now < self.end)


def min_idle_at(overrides: tuple[ScheduleOverride, ...], epoch: float) -> int:
    return max((o.min_idle for o in overrides if o.applies(epoch)), default=0)


def parse_schedule(text: str, zone: str = "UTC") -> tuple[ScheduleOverride, ...]:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"time zone {zone!r} is not an IANA zone such as Europe/Berlin") from None
    return tuple(_parse_one(part.strip().lower(), zone) for part in text.split(";") if part.strip())


def _parse_one(text: str, zone: str) -> ScheduleOverride:
    match = _OVERRIDE.match(re.sub(r"\s+", " ", text))
    if match is None:
        raise ScheduleError(f"{text!r} is not like 'mon-fri 08:45-18:00 min_idle=5'")
    return ScheduleOverride(
        days=_days(match["days"], text),
        start=_time(match["start"], text),
        end=_time(match["end"], text),
        min_idle=int(match["min_idle"]),
        zone=zone,
    )


def _days(spec: str, text: str) -> frozenset[int]:
    if spec in ("daily", "all"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ScheduleError(f"{text!r}: days must be among {', '.join(DAYS)} (or daily)")
        a, b = DAYS.index(first), DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(days)


def _time(value: str, text: str) -> time:
    hours, minutes = (int(v) for v in value.split(":"))
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        raise ScheduleError(f"{text!r}: {value} is not a time of day")
    return time(0, 0) if hours == 24 else time(hours, minutes)
