from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from chalicelib.schedule import ScheduleError, min_idle_at, parse_schedule


def at(text: str, zone: str = "UTC") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def test_weekday_hours() -> None:
    schedule = parse_schedule("mon-fri 08:45-18:00 min_idle=5")
    assert min_idle_at(schedule, at("2026-11-24T08:45")) == 5  # Tuesday
    assert min_idle_at(schedule, at("2026-11-24T08:44")) == 0
    assert min_idle_at(schedule, at("2026-11-24T18:00")) == 0
    assert min_idle_at(schedule, at("2026-11-28T10:00")) == 0  # Saturday


def test_zone_and_daylight_saving() -> None:
    schedule = parse_schedule("daily 09:00-10:00 min_idle=3", "Europe/Berlin")
    assert min_idle_at(schedule, at("2026-07-01T07:30")) == 3  # CEST, UTC+2
    assert min_idle_at(schedule, at("2026-12-01T08:30")) == 3  # CET, UTC+1
    assert min_idle_at(schedule, at("2026-12-01T07:30")) == 0


def test_overnight_lists_and_the_largest_wins() -> None:
    schedule = parse_schedule("fri 22:00-02:00 min_idle=2; sat,sun 00:00-24:00 min_idle=1;  sat 01:00-01:30 min_idle=4")
    assert min_idle_at(schedule, at("2026-11-27T23:00")) == 2  # Friday night
    assert min_idle_at(schedule, at("2026-11-28T01:10")) == 4  # early Saturday: 2, 1 and 4 apply
    assert min_idle_at(schedule, at("2026-11-28T01:45")) == 2
    assert min_idle_at(schedule, at("2026-11-28T03:00")) == 1
    assert min_idle_at(schedule, at("2026-11-26T23:00")) == 0  # Thursday


def test_wrapping_day_range() -> None:
    schedule = parse_schedule("sat-mon 10:00-11:00 min_idle=1")
    assert min_idle_at(schedule, at("2026-11-30T10:30")) == 1  # Monday
    assert min_idle_at(schedule, at("2026-11-24T10:30")) == 0  # Tuesday


@pytest.mark.parametrize(
    ("text", "zone", "named"),
    [
        ("weekdays 08:00-18:00 min_idle=5", "UTC", "days must be"),
        ("mon-fri 8-18 min_idle=5", "UTC", "is not like"),
        ("mon-fri 08:00-25:00 min_idle=5", "UTC", "not a time of day"),
        ("mon-fri 08:00-18:00 min_idle=five", "UTC", "is not like"),
        ("mon-fri 08:00-18:00 min_idle=5", "Mars/Olympus", "not an IANA zone"),
    ],
)
def test_errors_say_what_is_wrong(text: str, zone: str, named: str) -> None:
    with pytest.raises(ScheduleError, match=named):
        parse_schedule(text, zone)
