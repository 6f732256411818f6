"""The operator's view of the pool: group size, counts by state, recorders page by page."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.autoscaling import AutoScaling
from chalicelib.clock import iso
from chalicelib.control import ControlStore
from chalicelib.errors import BadRequest
from chalicelib.registry import BadPageToken, Recorder, Registry
from chalicelib.states import RecorderState

DEFAULT_PAGE = 50
MAX_PAGE = 100
LIVE_STATES = [s for s in RecorderState if s is not RecorderState.TERMINATED]


def parse_query(params: Mapping[str, str] | None) -> tuple[int, str | None, RecorderState | None]:
    params = params or {}
    unknown = sorted(set(params) - {"limit", "next_token", "state"})
    if unknown:
        raise BadRequest(f"unknown query parameter(s) {', '.join(unknown)}; allowed: limit, next_token, state")
    raw_limit = params.get("limit", str(DEFAULT_PAGE))
    if not (raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 3) or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_PAGE}")
    state = params.get("state")
    if state is not None and state not in {s.value for s in LIVE_STATES}:
        raise BadRequest(f"state {state!r} is unknown; expected one of {', '.join(s.value for s in LIVE_STATES)}")
    if state is not None and "next_token" in params:
        raise BadRequest("next_token pages the full listing; it does not combine with state")
    return int(raw_limit), params.get("next_token"), RecorderState(state) if state else None


def pool_view(
    registry: Registry,
    autoscaling: AutoScaling,
    now: float,
    stale_after: float,
    query: Mapping[str, str] | None,
) -> dict[str, Any]:
    limit, token, state = parse_query(query)
    counts = {s.value: 0 for s in LIVE_STATES}
    for recorder in registry.list_all():
        if recorder.state is not RecorderState.TERMINATED:
            counts[recorder.effective_state(now, stale_after).value] += 1
    next_token: str | None = None
    if state is not None:
        page = [r for r in registry.list_by_state(state)][:limit]
    else:
        try:
            page, next_token = registry.list_page(limit, token)
        except BadPageToken as error:
            raise BadRequest(f"next_token: {error}") from None
    size = autoscaling.group_size()
    return {
        "pool": registry.pool,
        "group": {
            "name": autoscaling.group_name,
            "desired": size.desired,
            "min": size.minimum,
            "max": size.maximum,
        },
        "counts": counts,
        "heartbeat_stale_seconds": stale_after,
        "recorders": [_recorder_view(r, now, stale_after) for r in page],
        "next_token": next_token,
    }


def _recorder_view(recorder: Recorder, now: float, stale_after: float) -> dict[str, Any]:
    return {
        "instance_id": recorder.instance_id,
        "state": recorder.effective_state(now, stale_after).value,
        "recorded_state": recorder.state.value,
        "stale": recorder.is_stale(now, stale_after),
        "busy_status": recorder.busy_status,
        "health": recorder.health,
        "pending_uploads": recorder.pending_uploads,
        "failed_uploads": recorder.failed_uploads,
        "last_heartbeat_at": iso(recorder.last_heartbeat_at) if recorder.last_heartbeat_at is not None else None,
        "state_changed_at": iso(recorder.state_changed_at),
        "created_at": iso(recorder.created_at),
    }


def control_view(control: ControlStore, decisions: int) -> dict[str, Any]:
    return {
        "scale_in_paused": control.paused(),
        "decisions": [{**d.view(), "at": iso(d.at)} for d in control.latest_decisions(decisions)],
    }
