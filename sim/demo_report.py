"""The demo's report: the summary, DESIGN.md's invariants checked on what was observed, the timeline picture.

Everything here reads the report's plain data (what `sim.demo_world` recorded while the demo ran), so
the checks can be fed a report by hand and must fail on a violation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sim.whatif.metrics import percentile


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    requests = report["requests"]
    served = [r for r in requests if r.get("assigned_at") is not None]
    at_once = [r for r in served if r.get("answer") == 201]
    waits = [r["assigned_at"] - r["request_at"] for r in served]
    failed = [r for r in requests if r.get("failure")]
    recordings = report["recordings"]
    verified = [r for r in recordings if r.get("verified")]
    bookings = report.get("bookings", [])
    booked = [r for r in requests if r.get("booking_id")]
    counting = [d["booked"] for d in report.get("decisions", []) if d.get("booked")]
    return {
        "requests": len(requests),
        "served_at_once": len(at_once),
        "served_after_wait": len(served) - len(at_once),
        "wait_p50_s": round(percentile(waits, 50), 1),
        "wait_p95_s": round(percentile(waits, 95), 1),
        "wait_max_s": round(max(waits, default=0.0), 1),
        "failed": len(failed),
        "failures": sorted({r["failure"] for r in failed}),
        "recordings_made": len(recordings),
        "recordings_verified": len(verified),
        "instance_hours": round(report["billing"]["instance_hours"], 2),
        "warm_pool_hours": round(report["billing"]["warm_pool_hours"], 2),
        "cost_usd": round(report["billing"]["cost_usd"], 2),
        "peak_desired": max((s["desired"] for s in report["timeline"]), default=0),
        # Bookings (requests announced ahead): made through the API, refused, and how the booked requests fared.
        "bookings_made": sum(1 for b in bookings if b.get("booking_id")),
        "bookings_failed": sum(1 for b in bookings if b.get("failure")),
        "booked_requests": len(booked),
        "booked_served_at_once": sum(1 for r in booked if r.get("answer") == 201),
        "booked_served_after_wait": sum(1 for r in booked if r.get("assigned_at") is not None and r["answer"] != 201),
        "decisions_counting_bookings": len(counting),
        "booked_max_counted": max(counting, default=0),
    }


def check_invariants(report: dict[str, Any]) -> list[str]:
    """Every broken invariant, one line each; empty when none broke."""
    broken: list[str] = []
    # 1. A busy or reserved recorder, or one with uploads in flight, is never terminated.
    for t in report["terminations"]:
        why = [
            what
            for what, held in (
                ("recording", t.get("busy")),
                ("held for a request", t.get("assigned")),
                (f"{t.get('uploads', 0)} upload(s) in flight", t.get("uploads")),
            )
            if held
        ]
        if t.get("spool_error"):
            why.append(f"its uploads could not be counted ({t['spool_error']})")
        if why:
            broken.append(f"{t['instance_id']} was terminated at {t['at']:.0f} s while {' and '.join(why)}")
    # 2. One recorder is never assigned to two tickets: no two holds on one instance overlap.
    holds: dict[str, list[tuple[float, float, int]]] = {}
    for r in report["requests"]:
        if r.get("instance_id") and r.get("assigned_at") is not None:
            end = r.get("released_at")
            holds.setdefault(r["instance_id"], []).append(
                (r["assigned_at"], math.inf if end is None else end, r["index"])
            )
    for instance_id, spans in sorted(holds.items()):
        spans.sort()
        held_until, holder = -math.inf, -1
        for start, end, index in spans:
            if start < held_until:
                broken.append(f"{instance_id} was assigned to requests {holder} and {index} at once")
            if end > held_until:
                held_until, holder = end, index
    for refusal in report.get("refused_starts", []):
        broken.append(f"{refusal['instance_id']} was already busy when request {refusal['index']} started it")
    # 3. No recording is lost: every file a Jibri wrote is in S3 with its checksum, and in the manifest.
    for rec in report["recordings"]:
        if not rec.get("verified"):
            broken.append(f"recording {rec['session_id']} is not in S3 as made: {rec.get('problem', 'missing')}")
    return broken


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def write_timeline(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = report["timeline"]
    minutes = [s["t"] / 60.0 for s in timeline]
    figure, axis = plt.subplots(figsize=(10, 4.2), dpi=100)
    axis.step(minutes, [s["demand"] for s in timeline], where="post", label="demand (recording or waiting)", lw=2)
    axis.step(minutes, [s["desired"] for s in timeline], where="post", label="desired capacity", lw=1.5)
    axis.step(minutes, [s["in_service"] for s in timeline], where="post", label="in service", lw=1, ls="--")
    axis.step(minutes, [s["idle"] for s in timeline], where="post", label="idle", lw=1, color="green")
    axis.step(minutes, [s["queued"] for s in timeline], where="post", label="queued", lw=1.5, color="red")
    if any(s.get("warm") for s in timeline):
        axis.step(minutes, [s["warm"] for s in timeline], where="post", label="warm pool", lw=1, ls=":")
    if any(s.get("booked") for s in timeline):
        booked = [s.get("booked", 0) for s in timeline]
        axis.step(minutes, booked, where="post", label="booked ahead (as the evaluator counts)", lw=1, color="purple")
    summary = report["summary"]
    axis.set_title(
        f"{report['scenario']}: {summary['served_at_once']}/{summary['requests']} served at once, "
        f"p95 wait {summary['wait_p95_s']:.0f} s, {summary['recordings_verified']}/{summary['recordings_made']}"
        " recordings verified in S3"
        + (
            f"; {summary['booked_served_at_once']}/{summary['booked_requests']} booked served at once"
            if summary.get("booked_requests")
            else ""
        ),
        fontsize=9,
    )
    axis.set_xlabel("simulated minutes")
    axis.set_ylabel("recorders")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
