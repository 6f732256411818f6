"""`make demo` end to end on a short scenario, its invariant checker, and its clean-up on failure."""

from __future__ import annotations

import copy
import io
import itertools
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from sim import demo
from sim.demo_report import check_invariants, summarize
from sim.demo_scenario import Scenario, load_scenario, workday
from sim.demo_world import Demo, DemoConfig
from sim.whatif.trace import TraceRequest

# Six requests in five simulated minutes (three at once), each recording for 3 to 8 minutes, at 60x.
SHORT = Scenario(
    "short",
    tuple(
        TraceRequest(i, at, duration)
        for i, (at, duration) in enumerate([(30, 240), (40, 300), (45, 180), (90, 420), (200, 200), (260, 480)])
    ),
)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    config = DemoConfig(scenario=SHORT, speed=60, initial=2, tail_s=120, wall_limit_s=50, out=io.StringIO())
    report = Demo(config).run()
    out = tmp_path_factory.mktemp("demo")
    report["table"] = config.out.getvalue() if isinstance(config.out, io.StringIO) else ""
    (out / "report.json").write_text(json.dumps(report, default=str))
    return report


def test_a_short_scenario_serves_every_request_and_every_recording_reaches_s3_verified(
    short_run: dict[str, Any],
) -> None:
    summary = short_run["summary"]
    assert short_run["errors"] == []
    assert summary["requests"] == 6 and summary["failed"] == 0
    assert summary["served_at_once"] + summary["served_after_wait"] == 6
    # Every request was recorded, and every file a Jibri wrote is in S3 with the checksum it was made with.
    assert summary["recordings_made"] == 6
    assert all(r["verified"] for r in short_run["recordings"])
    assert summary["recordings_verified"] == 6
    assert short_run["invariants_broken"] == []
    # Three requests at once against two idle recorders: the group launched more, through lifecycle actions.
    assert summary["peak_desired"] > 2 and short_run["lifecycle_actions"] > 0
    assert summary["instance_hours"] > 0 and summary["cost_usd"] > 0
    assert "desired" in short_run["table"] and "queued" in short_run["table"]


def test_nothing_was_assigned_twice_and_no_busy_recorder_was_terminated(short_run: dict[str, Any]) -> None:
    by_instance: dict[str, list[tuple[float, float]]] = {}
    for r in short_run["requests"]:
        by_instance.setdefault(r["instance_id"], []).append((r["assigned_at"], r["released_at"]))
    for spans in by_instance.values():
        spans.sort()
        assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))
    assert short_run["refused_starts"] == []
    assert not any(t["busy"] or t["uploads"] or t["assigned"] for t in short_run["terminations"])


def test_the_invariant_checker_fails_on_a_terminated_busy_recorder(short_run: dict[str, Any]) -> None:
    report = copy.deepcopy(short_run)
    report["terminations"].append(
        {"instance_id": "i-0000000000000abcd", "at": 300.0, "busy": True, "uploads": 0, "assigned": False}
    )
    broken = check_invariants(report)
    assert broken == ["i-0000000000000abcd was terminated at 300 s while recording"]


def test_the_invariant_checker_fails_when_a_terminated_recorder_s_uploads_could_not_be_counted(
    short_run: dict[str, Any],
) -> None:
    report = copy.deepcopy(short_run)
    report["terminations"].append(
        {
            "instance_id": "i-0000000000000abcd",
            "at": 300.0,
            "busy": False,
            "uploads": 0,
            "assigned": False,
            "spool_error": "cannot list the spool /spool: Permission denied",
        }
    )
    assert check_invariants(report) == [
        "i-0000000000000abcd was terminated at 300 s while its uploads could not be counted"
        " (cannot list the spool /spool: Permission denied)"
    ]


def test_the_invariant_checker_fails_on_a_double_assignment_and_a_lost_recording(short_run: dict[str, Any]) -> None:
    report = copy.deepcopy(short_run)
    first, second = report["requests"][0], report["requests"][1]
    second["instance_id"] = first["instance_id"]
    second["assigned_at"] = (first["assigned_at"] + first["released_at"]) / 2
    report["recordings"][0]["verified"] = False
    report["recordings"][0]["problem"] = "no manifest in S3"
    broken = check_invariants(report)
    assert f"{first['instance_id']} was assigned to requests 0 and 1 at once" in broken
    assert any("is not in S3 as made: no manifest in S3" in line for line in broken)
    assert summarize(report)["recordings_verified"] == 5


def test_an_exception_mid_run_leaves_no_server_listening(monkeypatch: pytest.MonkeyPatch) -> None:
    config = DemoConfig(scenario=SHORT, speed=60, initial=1, wall_limit_s=30, out=io.StringIO())
    runner = Demo(config)
    ports: list[int] = []

    def fail(record: Any) -> None:
        assert runner.stack is not None and runner.stack.gateway is not None and runner.api is not None
        urls = [runner.stack.moto.url, runner.stack.gateway.url, runner.api.url]
        for recorder in runner.stack.recorders.values():
            urls += [recorder.jibri.health_url, recorder.jibri.internal_url, recorder.imds.url]
        ports.extend(urlsplit(url).port or 0 for url in urls)
        raise RuntimeError("injected failure")

    monkeypatch.setattr(Demo, "_loop", lambda self: fail(None))
    with pytest.raises(RuntimeError, match="injected failure"):
        runner.run()
    assert len(ports) >= 5
    assert not [port for port in ports if listening(port)]
    assert not [t for t in runner._threads if t.is_alive()]


def test_scenarios_from_a_trace_are_scaled_and_bad_options_are_refused(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("request_at_s,duration_s\n100,600\n50,1200\n")
    scenario = load_scenario(trace, time_scale=0.5)
    assert [(r.request_at, r.duration) for r in scenario.requests] == [(25.0, 600.0), (50.0, 300.0)]
    assert scenario.peak() == 2
    assert workday().peak() >= 10  # the spike overlaps
    bad = tmp_path / "bad.csv"
    bad.write_text("when,how_long\n1,2\n")
    assert demo.main(["--trace", str(bad)]) == 2
    with pytest.raises(SystemExit):
        demo.parse_args(["--set", "min_idle"])
    with pytest.raises(SystemExit):
        demo.parse_args(["--speed", "0"])
