"""The results as a Markdown table or as JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from sim.whatif.metrics import Result

COLUMNS: tuple[tuple[str, str], ...] = (
    ("policy", "policy"),
    ("requests", "requests"),
    ("served_immediately_pct", "served at once %"),
    ("waited", "waited"),
    ("failed", "failed"),
    ("wait_p50_s", "wait p50 s"),
    ("wait_p95_s", "wait p95 s"),
    ("wait_max_s", "wait max s"),
    ("recordings_killed", "killed"),
    ("instance_hours", "instance-h"),
    ("warm_pool_hours", "warm-pool h"),
    ("cost_usd", "cost $"),
    ("cost_vs_lower_bound", "cost ÷ LB"),
    ("cost_per_recording_hour", "$ per rec-h"),
    ("peak_instances", "peak"),
)
_FORMATS = {
    "served_immediately_pct": "{:.1f}",
    "wait_p50_s": "{:.0f}",
    "wait_p95_s": "{:.0f}",
    "wait_max_s": "{:.0f}",
    "instance_hours": "{:.1f}",
    "warm_pool_hours": "{:.1f}",
    "cost_usd": "{:.2f}",
    "cost_vs_lower_bound": "{:.2f}",
    "cost_per_recording_hour": "{:.3f}",
}


def cell(result: Result, key: str) -> str:
    value = getattr(result, key)
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    return _FORMATS.get(key, "{}").format(value)


def table(results: Sequence[Result], columns: Sequence[tuple[str, str]] = COLUMNS) -> str:
    rows = [[title for _, title in columns], ["---"] * len(columns)]
    rows += [[cell(r, key) for key, _ in columns] for r in results]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def as_json(results: Sequence[Result]) -> str:
    return json.dumps([_finite(r.as_json()) for r in results], indent=2)


def _finite(item: dict[str, Any]) -> dict[str, Any]:
    # JSON has no infinity: a ratio over nothing is null.
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in item.items()}
