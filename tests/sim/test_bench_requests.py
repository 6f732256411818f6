"""The request-path benchmark, run tiny: the report's shape and the DynamoDB calls it counts (no timings)."""

from __future__ import annotations

import json

import pytest

from sim import bench_requests


def test_a_tiny_run_reports_both_paths_and_the_fast_path_dynamodb_calls(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_requests.main(["--requests", "10", "--recorders", "3", "--concurrency", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)

    assert (summary["requests"], summary["sent"], summary["recorders"], summary["concurrency"]) == (10, 10, 3, 2)
    assert summary["rounds"] == 3  # 3 fast + 1 queued, twice; then the last 2 fast
    assert summary["cleanup_failures"] == 0
    fast, keyed, queued = summary["fast"], summary["fast_with_idempotency_key"], summary["queued"]
    assert (fast["sent"], keyed["sent"], queued["sent"]) == (5, 3, 2)
    for path in (fast, keyed, queued):
        assert path["count"] == path["sent"] and path["errors"] == 0 and path["error_rate"] == 0.0
        assert path["other_2xx"] == 0
        assert path["p50_ms"] <= path["p99_ms"] <= path["max_ms"]
        calls = path["dynamodb_calls"]
        assert 1 <= calls["min"] <= calls["median"] <= calls["max"]

    # Every fast-path assignment queries the idle recorders, reserves one, and stores its ticket together
    # with the arrival count in one transaction.
    typical = fast["dynamodb_calls_typical"]
    assert len(typical) == fast["dynamodb_calls"]["median"]
    assert typical == ["Query by_state", "PutItem RECORDER", "TransactWriteItems"]
    assert keyed["dynamodb_calls"]["min"] == fast["dynamodb_calls"]["min"] + 1
    assert "PutItem IDEMPOTENCY" in keyed["dynamodb_calls_typical"]
    assert queued["dynamodb_calls"]["min"] > fast["dynamodb_calls"]["max"]  # a queued request runs the evaluator
    assert summary["target_dynamodb_calls_per_assignment"] == 3
    assert summary["target_met"] == (fast["dynamodb_calls"]["max"] <= 3)


def test_the_text_report_names_the_paths_and_the_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_requests.main(["--requests", "4", "--recorders", "2"]) == 0
    out = capsys.readouterr().out
    assert "| fast (201) |" in out and "| queued (202) |" in out
    assert "target: at most 3 DynamoDB calls per fast-path assignment" in out


@pytest.mark.parametrize("argv", [["--requests", "0"], ["--recorders", "0"], ["--concurrency", "65"]])
def test_out_of_bounds_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench_requests.main(argv)
    assert exit_.value.code == 2
