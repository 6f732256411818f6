"""`make demo`: the control plane on an embedded AWS (moto), replaying a day of recorder requests.

Everything runs on this machine, on loopback: moto in server mode is DynamoDB, S3, SNS and SSM; the
Chalice app is served over HTTP behind the local API gateway (SigV4 and the Jitsi JWT authorizer as
API Gateway would); the evaluator and the lifecycle handlers get EventBridge's events on a clock that
runs faster than real time; a simulated Auto Scaling group boots instances with launch delays,
lifecycle hooks and an optional warm pool; each instance runs the real agent beside a fake Jibri.
Jicofo's part is played by the demo: each request of the scenario goes to `POST /v1/requests` with
a Jitsi token, and the assigned Jibri is started and, when the meeting ends, stopped; its recording
goes through the real finalize script and uploader to S3. A request booked ahead (a trace's
announced_at_s, or --announce-spike) is first announced with `POST /v1/bookings` when it is announced.
The summary checks every recording in S3 against what was recorded, and the exit status is 1 if any
invariant of DESIGN.md broke or the API refused a booking.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from sim.demo_report import write_json, write_timeline
from sim.demo_scenario import Scenario, TraceError, load_scenario, workday
from sim.demo_world import Demo, DemoConfig, quiet_logs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sim.demo", description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--trace",
        help="a CSV of requests (request_at_s,duration_s[,announced_at_s]), e.g. "
        "sim/traces/webinar_spike.csv; default: a built-in 75-minute workday with a spike",
    )
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply the trace's times by this")
    parser.add_argument("--limit", type=int, help="only the first N requests of the trace")
    parser.add_argument("--spike", type=int, default=10, help="requests in the built-in workday's spike (10)")
    parser.add_argument("--minutes", type=float, default=75.0, help="the built-in workday's length (75)")
    parser.add_argument(
        "--announce-spike",
        type=float,
        default=0.0,
        metavar="MINUTES",
        help="book the built-in workday's spike this many simulated minutes ahead of each of its requests "
        "(POST /v1/bookings); 0, the default: not booked",
    )
    parser.add_argument("--speed", type=float, default=60.0, help="simulated seconds per wall second (60)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a control-plane setting, e.g. --set MIN_IDLE=2 --set WARM_POOL=2 (repeatable)",
    )
    parser.add_argument("--initial", type=int, default=2, help="instances in service at the start (2)")
    parser.add_argument("--max-size", type=int, default=40, help="the group's maximum size (40)")
    parser.add_argument("--tail", type=float, default=300.0, help="simulated seconds after the last recording (300)")
    parser.add_argument("--out", default="demo-output", help="where the report and timeline go (demo-output/)")
    parser.add_argument("--verbose", action="store_true", help="also print the control plane's and agents' logs")
    args = parser.parse_args(argv)
    if not 1 <= args.speed <= 240:
        parser.error("--speed must be from 1 to 240")
    if not 0 <= args.announce_spike <= 24 * 60:
        parser.error("--announce-spike must be from 0 to 1440 minutes")
    if args.announce_spike and args.trace:
        parser.error("--announce-spike is for the built-in workday; a trace announces requests in announced_at_s")
    if not 0 <= args.initial <= args.max_size <= 200:
        parser.error("--initial and --max-size must satisfy 0 <= initial <= max-size <= 200")
    for item in args.set:
        name, eq, _ = item.partition("=")
        if not eq or not name.isupper():
            parser.error(f"--set takes NAME=VALUE with an upper-case setting name, not {item!r}")
    return args


def scenario_of(args: argparse.Namespace) -> Scenario:
    if args.trace:
        return load_scenario(args.trace, args.time_scale, args.limit)
    return workday(spike=args.spike, minutes=args.minutes, announce_spike=args.announce_spike)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        scenario = scenario_of(args)
    except (OSError, TraceError) as error:
        print(f"demo: {error}", file=sys.stderr)
        return 2
    if not scenario.requests:
        print("demo: the scenario has no requests", file=sys.stderr)
        return 2
    if not args.verbose:
        quiet_logs()
    settings = dict(item.split("=", 1) for item in args.set)
    config = DemoConfig(
        scenario=scenario,
        speed=args.speed,
        settings=settings,
        initial=args.initial,
        maximum=args.max_size,
        tail_s=args.tail,
        verbose=args.verbose,
    )
    print(f"Scenario: {scenario.name}; {scenario.peak()} recordings at the peak if all were served at once.")
    announced = [r for r in scenario.requests if r.announced_at is not None]
    if announced:
        before = sum(1 for r in announced if r.announced_at is not None and r.announced_at <= 0)
        print(
            f"{len(announced)} requests are booked ahead: POST /v1/bookings when each is announced"
            f" ({before} at the start, booked before the run)."
        )
    print(
        f"Time runs {args.speed:g}x faster than real time (one simulated minute every {60 / args.speed:.1f} s): "
        "launches, hooks, the evaluator's schedule and recordings all follow it."
    )
    print("Starting moto (server mode), the table, bucket and topics, the API and the simulated group on loopback.\n")
    _stop_on_sigterm()
    started = time.monotonic()
    demo = Demo(config)
    try:
        report = demo.run()
    except KeyboardInterrupt:
        print("\ndemo: interrupted; everything it started is stopped.", file=sys.stderr)
        return 130
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(report, out / "report.json")
    write_timeline(report, out / "timeline.png")
    print_summary(report)
    print(f"\nReport: {out / 'report.json'}\nTimeline: {out / 'timeline.png'}")
    return exit_status(report)


def exit_status(report: dict[str, Any]) -> int:
    """1 when an invariant broke or the API refused a booking (both are in the report), else 0."""
    return 1 if report["invariants_broken"] or report["summary"].get("bookings_failed") else 0


def print_summary(report: dict[str, object]) -> None:
    s = report["summary"]
    assert isinstance(s, dict)
    broken = report["invariants_broken"]
    assert isinstance(broken, list)
    minutes = float(str(report["simulated_seconds"])) / 60
    print(f"\nSummary ({minutes:.0f} simulated minutes in {report.get('wall_seconds', '?')} s of wall time)")
    print(f"  requests                {s['requests']}")
    print(f"  served at once          {s['served_at_once']}")
    print(
        f"  served after a wait     {s['served_after_wait']}  (wait p50 {s['wait_p50_s']:.0f} s, "
        f"p95 {s['wait_p95_s']:.0f} s, max {s['wait_max_s']:.0f} s)"
    )
    failures = f"  ({'; '.join(s['failures'])})" if s["failures"] else ""
    print(f"  failed                  {s['failed']}{failures}")
    print(
        f"  recordings in S3        {s['recordings_verified']} of {s['recordings_made']} made, "
        "SHA-256 checked against the file and the manifest"
    )
    print(
        f"  instance-hours          {s['instance_hours']:.2f} (+ {s['warm_pool_hours']:.2f} stopped in the warm pool)"
        f", ${s['cost_usd']:.2f}; peak desired capacity {s['peak_desired']}"
    )
    if s.get("bookings_made") or s.get("bookings_failed"):
        print(
            f"  bookings                {s['bookings_made']} made, {s['bookings_failed']} refused; booked requests "
            f"served at once {s['booked_served_at_once']} of {s['booked_requests']}; "
            f"{s['decisions_counting_bookings']} decisions counted bookings (up to {s['booked_max_counted']})"
        )
    print(f"  lifecycle actions       {report['lifecycle_actions']} delivered; {report['evaluations']} evaluations")
    errors = report.get("errors") or []
    assert isinstance(errors, list)
    for line in errors[:10]:
        print(f"  error: {line}")
    if broken:
        print("  INVARIANTS BROKEN:")
        for line in broken:
            print(f"    - {line}")
    else:
        print("  invariants              held (no recording lost, no busy recorder terminated, none assigned twice)")


def _stop_on_sigterm() -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


if __name__ == "__main__":
    sys.exit(main())
