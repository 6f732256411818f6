"""The reference traces: seeded, deterministic, in the documented CSV shape."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from sim.traces import generate
from sim.whatif.trace import TraceError, parse_trace, read_trace


def test_the_same_seed_writes_the_same_files(tmp_path: Path) -> None:
    first = generate.write_all(tmp_path / "a", seed=7)
    second = generate.write_all(tmp_path / "b", seed=7)
    assert [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_another_seed_writes_other_traces(tmp_path: Path) -> None:
    assert generate.workday(1) != generate.workday(2)


def test_every_file_starts_with_the_header_and_reads_back(tmp_path: Path) -> None:
    for path in generate.write_all(tmp_path, seed=generate.DEFAULT_SEED):
        header = path.read_text().splitlines()[0]
        assert header in ("request_at_s,duration_s", "request_at_s,duration_s,announced_at_s")
        assert read_trace(path)


def test_the_checked_in_traces_are_what_the_generator_writes(tmp_path: Path) -> None:
    for path in generate.write_all(tmp_path, seed=generate.DEFAULT_SEED):
        assert (Path(generate.__file__).parent / path.name).read_bytes() == path.read_bytes()


def test_the_workday_has_about_400_recordings_with_a_median_of_40_minutes() -> None:
    workday = generate.workday(generate.DEFAULT_SEED)
    assert len(workday) == 400
    assert 36 * 60 <= statistics.median(r.duration for r in workday) <= 44 * 60
    assert max(r.request_at for r in workday) < 10 * 3600


def test_the_webinar_spike_has_40_requests_within_90_seconds() -> None:
    spike = [r for r in generate.webinar_spike(generate.DEFAULT_SEED) if 7200 <= r.request_at <= 7290]
    assert len(spike) >= 40


def test_announced_conference_sessions_were_booked_a_day_ahead() -> None:
    plain = generate.conference(generate.DEFAULT_SEED)
    announced = generate.conference_announced(generate.DEFAULT_SEED)
    assert [(r.request_at, r.duration) for r in plain] == [(r.request_at, r.duration) for r in announced]
    booked = [r for r in announced if r.announced_at is not None]
    assert len(booked) == 8 * 15
    assert all(r.request_at - r.announced_at == 86_400 for r in booked if r.announced_at is not None)


def test_a_trace_without_the_header_is_refused() -> None:
    with pytest.raises(TraceError):
        parse_trace(["10,600"])
    with pytest.raises(TraceError):
        parse_trace(["request_at_s,duration_s", "10,-1"])
    with pytest.raises(TraceError):
        parse_trace(["request_at_s,duration_s,announced_at_s", "10,60,20"])


def test_rows_are_sorted_and_an_empty_announcement_means_none() -> None:
    rows = parse_trace(["request_at_s,duration_s,announced_at_s", "20,60,", "10,60,-5"])
    assert [(r.request_at, r.announced_at) for r in rows] == [(10, -5), (20, None)]
