"""The demo's bookings: requests announced ahead go to `POST /v1/bookings`, the evaluator counts them,
and a booking the API refuses is an error that fails the demo."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import pytest

from sim import demo
from sim.demo_scenario import Scenario, workday
from sim.demo_world import Demo, DemoConfig
from sim.whatif.trace import TraceRequest

# One request nobody announced, then a spike of four at 8:00: two booked before the run, two at 1:00.
# The evaluator looks cold lead (240 s) + margin (300 s) ahead, so every booking counts from the start,
# and the recorders it asks for are idle minutes before the spike: all four are served at once.
BOOKED = Scenario(
    "booked spike",
    (
        TraceRequest(0, 30.0, 120.0),
        TraceRequest(1, 480.0, 150.0, -600.0),
        TraceRequest(2, 485.0, 150.0, -600.0),
        TraceRequest(3, 490.0, 150.0, 60.0),
        TraceRequest(4, 495.0, 150.0, 60.0),
    ),
)

# Request 0 is announced at its own start, which the API refuses (start_at is not ahead); request 1 is
# booked before the run and goes through.
LATE = Scenario("late booking", (TraceRequest(0, 20.0, 60.0, 20.0), TraceRequest(1, 90.0, 60.0, -60.0)))


def run(scenario: Scenario, tail_s: float, group_name: str) -> dict[str, Any]:
    # A group of its own: moto's state outlives a run in this process, and another run's pool must not show.
    config = DemoConfig(
        scenario=scenario,
        speed=60,
        initial=2,
        tail_s=tail_s,
        wall_limit_s=60,
        out=io.StringIO(),
        group_name=group_name,
    )
    report = Demo(config).run()
    report["table"] = config.out.getvalue() if isinstance(config.out, io.StringIO) else ""
    return report


@pytest.fixture(scope="module")
def booked_run() -> dict[str, Any]:
    return run(BOOKED, tail_s=60, group_name="jibri-demo-booked")


@pytest.fixture(scope="module")
def late_run() -> dict[str, Any]:
    return run(LATE, tail_s=30, group_name="jibri-demo-late")


def test_announced_requests_are_booked_through_the_api_at_their_announcement(booked_run: dict[str, Any]) -> None:
    assert booked_run["errors"] == []
    assert booked_run["invariants_broken"] == []
    bookings = {b["index"]: b for b in booked_run["bookings"]}
    assert sorted(bookings) == [1, 2, 3, 4]
    start_epoch = booked_run["start_epoch"]
    for index, booking in bookings.items():
        request = booked_run["requests"][index]
        assert booking["failure"] is None
        # The API's id carries the start it stored (ms): the clock time of the request's second.
        assert booking["booking_id"] == request["booking_id"]
        start_ms = int(booking["booking_id"].split("-")[1])
        assert start_ms / 1000 == pytest.approx(start_epoch + request["request_at"], abs=0.01)
        # Listed by GET /v1/bookings while upcoming.
        assert booking["listed"], booking
        assert booking["room"] == request["room"]
    # Booked before the run: sent at the start, before the first request; the others at their announcement.
    assert bookings[1]["sent_at"] < 30 and bookings[2]["sent_at"] < 30
    assert 60 <= bookings[3]["sent_at"] < 150 and 60 <= bookings[4]["sent_at"] < 150
    assert all(b["made_at"] >= b["sent_at"] for b in bookings.values())
    assert booked_run["requests"][0]["booking_id"] is None
    summary = booked_run["summary"]
    assert summary["bookings_made"] == 4 and summary["bookings_failed"] == 0
    assert demo.exit_status(booked_run) == 0


def test_the_evaluator_counts_the_bookings_and_the_booked_spike_is_served_at_once(booked_run: dict[str, Any]) -> None:
    decisions = booked_run["decisions"]
    # The decision reasons of GET /v1/pool: two booked from the first evaluation, four once all are made.
    first = min((d for d in decisions if d["trigger"] == "schedule"), key=lambda d: d["t"])
    assert first["t"] < 60 and first["booked"] == 2 and "booked 2" in first["reason"]
    assert any(d["booked"] == 4 and "booked 4" in d["reason"] for d in decisions if d["t"] < 480)
    # Once every booked start has passed, nothing is counted any more.
    assert all(d["booked"] == 0 for d in decisions if d["t"] > 500)
    summary = booked_run["summary"]
    assert summary["booked_max_counted"] == 4 and summary["decisions_counting_bookings"] > 0
    assert max(s["booked"] for s in booked_run["timeline"]) == 4
    assert " booked" in booked_run["table"].splitlines()[0]
    # Scaled out ahead of the spike: more than the two initial recorders plus the one taken at 0:30.
    assert max(s["desired"] for s in booked_run["timeline"] if s["t"] < 480) >= 6
    # Every booked request found an idle recorder on arrival, and every recording reached S3 verified.
    assert summary["booked_requests"] == 4
    assert summary["booked_served_at_once"] == 4 and summary["booked_served_after_wait"] == 0
    assert summary["failed"] == 0 and summary["recordings_verified"] == summary["recordings_made"] == 5
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        demo.print_summary(booked_run)
    assert "bookings                4 made, 0 refused; booked requests served at once 4 of 4" in output.getvalue()


def test_a_booking_the_api_refuses_is_an_error_and_fails_the_demo(late_run: dict[str, Any]) -> None:
    errors = late_run["errors"]
    assert len(errors) == 1, errors
    assert errors[0].startswith("booking for request 0 (room-000, starting at 20 s, announced at 20 s) failed:")
    assert "POST /v1/bookings answered 400" in errors[0] and "start_at is in the past" in errors[0]
    bookings = {b["index"]: b for b in late_run["bookings"]}
    refused, made = bookings[0], bookings[1]
    assert refused["index"] == 0 and refused["booking_id"] is None and refused["failure"]
    assert made["index"] == 1 and made["booking_id"] and made["failure"] is None
    summary = late_run["summary"]
    assert summary["bookings_made"] == 1 and summary["bookings_failed"] == 1
    # The requests themselves still came, and were served.
    assert summary["requests"] == 2 and summary["failed"] == 0
    assert late_run["invariants_broken"] == []
    assert demo.exit_status(late_run) == 1


def test_announce_spike_books_only_the_workday_s_spike_and_is_off_by_default() -> None:
    plain, booked = workday(), workday(announce_spike=10)
    assert all(r.announced_at is None for r in plain.requests)
    assert [(r.request_at, r.duration) for r in booked.requests] == [(r.request_at, r.duration) for r in plain.requests]
    announced = [r for r in booked.requests if r.announced_at is not None]
    assert len(announced) == 10
    assert all(r.announced_at == pytest.approx(r.request_at - 600) for r in announced)
    assert "booked 10 min ahead" in booked.name and "booked" not in plain.name
    assert demo.parse_args([]).announce_spike == 0
    assert demo.scenario_of(demo.parse_args(["--announce-spike", "10"])).requests == booked.requests
    with pytest.raises(SystemExit):
        demo.parse_args(["--announce-spike", "-1"])
    with pytest.raises(SystemExit):
        demo.parse_args(["--announce-spike", "5", "--trace", "sim/traces/webinar_spike.csv"])
