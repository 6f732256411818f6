"""python -m sim: the command, its table, its JSON and its plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.whatif import cli

KEYS = {
    "policy",
    "requests",
    "served_immediately_pct",
    "waited",
    "failed",
    "wait_p95_s",
    "wait_max_s",
    "recordings_killed",
    "instance_hours",
    "warm_pool_hours",
    "cost_usd",
    "cost_vs_lower_bound",
    "cost_per_recording_hour",
    "peak_instances",
}


@pytest.fixture
def small_trace(tmp_path: Path) -> Path:
    path = tmp_path / "small.csv"
    path.write_text("request_at_s,duration_s\n10,600\n20,600\n400,1200\n405,1200\n3000,600\n")
    return path


def test_json_lists_every_policy_with_the_documented_keys(
    small_trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--trace", str(small_trace), "--json", "--jobs", "1"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [i["policy"] for i in items] == ["forecast", "classic", "jitsi", "lower_bound"]
    for item in items:
        assert set(item) >= KEYS
        assert item["requests"] == 5


def test_the_table_has_a_row_per_policy(small_trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--trace", str(small_trace), "--policy", "lower_bound"]) == 0
    out = capsys.readouterr().out
    assert "| lower_bound | 5 | 100.0 |" in out
    assert "cost ÷ LB" in out


def test_model_flags_change_the_model(small_trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--trace", str(small_trace), "--policy", "lower_bound", "--json", "--price", "1.0"]
    assert cli.main(argv) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["cost_usd"] == pytest.approx(1.0 * (600 + 600 + 1200 + 1200 + 600) / 3600, abs=1e-3)


def test_from_day_reports_only_later_requests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "two_days.csv"
    path.write_text("request_at_s,duration_s\n100,600\n86500,600\n86600,600\n")
    assert cli.main(["--trace", str(path), "--policy", "classic", "--json", "--from-day", "2"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["requests"] == 2


def test_plot_writes_a_png(small_trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "plot.png"
    assert cli.main(["--trace", str(small_trace), "--plot", str(out), "--jobs", "1"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_bad_input_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("when,how_long\n1,2\n")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--trace", str(path)])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["--trace", str(path), "--warm-pool", "lots"])


def test_the_busy_trigger_is_on_by_default_and_can_be_switched_off() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["--trace", "t.csv"]).evaluate_on_busy is True
    assert parser.parse_args(["--trace", "t.csv", "--no-evaluate-on-busy"]).evaluate_on_busy is False
