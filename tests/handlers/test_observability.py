"""Structured logs with the request's correlation id, and EMF metrics, from the middleware."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from conftest import Api, report_body

from chalicelib.observability import logger


class _CurrentStdout:
    """Writes wherever sys.stdout points now; the logger took hold of stdout at import."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture(autouse=True)
def log_to_captured_stdout() -> Iterator[None]:
    handler = logger.registered_handler
    previous = handler.stream  # type: ignore[attr-defined]
    handler.stream = _CurrentStdout()  # type: ignore[attr-defined]
    yield
    handler.stream = previous  # type: ignore[attr-defined]


def emitted(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    lines = capsys.readouterr().out.splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_a_report_logs_its_transition_with_the_correlation_id_and_emits_metrics(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    status, _ = api.report(report_body("BUSY"))
    assert status == 200
    records = emitted(capsys)
    transition = next(r for r in records if r.get("message") == "recorder transition")
    assert transition["correlation_id"] == "4f1a6c2e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"  # the fixture's requestId
    assert (transition["instance_id"], transition["from_state"], transition["to_state"]) == (
        "i-0123456789abcdef0",
        "new",
        "busy",
    )
    metrics = {
        name
        for r in records
        if "_aws" in r
        for d in r["_aws"]["CloudWatchMetrics"]
        for name in (m["Name"] for m in d["Metrics"])
    }
    assert {"StatusReports", "RecorderTransitions"} <= metrics
    assert any("RecorderTransitionsToBusy" in r for r in records)


def test_an_ignored_report_is_counted_apart(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    api.report(report_body(sent_at="2026-11-24T01:02:03Z"))
    capsys.readouterr()
    api.report(report_body(sent_at="2026-11-24T01:02:01Z"))
    records = emitted(capsys)
    assert any("StatusReportsIgnored" in r for r in records)
    assert not any(r.get("message") == "recorder transition" for r in records)
