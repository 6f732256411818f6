"""GET /v1/pool, invoked with API Gateway proxy events."""

from __future__ import annotations

import pytest
from conftest import Api, report_body

from chalicelib.memory_registry import MemoryRegistry
from chalicelib.registry import Recorder
from chalicelib.states import RecorderState
from sim.clock import ManualClock

S = RecorderState


def seed(registry: MemoryRegistry, clock: ManualClock, states: dict[str, RecorderState], heartbeat_age: float = 0):
    now = clock.now()
    for instance_id, state in states.items():
        registry.create(Recorder("jibri-dev", instance_id, state, now, now, now, last_heartbeat_at=now - heartbeat_age))


def test_counts_by_state_and_group_size(api: Api, registry: MemoryRegistry, clock: ManualClock) -> None:
    seed(registry, clock, {"i-01": S.IDLE, "i-02": S.IDLE, "i-03": S.BUSY, "i-04": S.DRAINING, "i-05": S.TERMINATED})
    status, body = api.pool()
    assert status == 200
    assert body["group"] == {"name": "jibri-dev", "desired": 4, "min": 1, "max": 20}
    assert body["counts"] == {
        "launching": 0,
        "warm": 0,
        "idle": 2,
        "reserved": 0,
        "busy": 1,
        "draining": 1,
        "terminating": 0,
        "unhealthy": 0,
    }


def test_a_silent_recorder_counts_as_unhealthy(api: Api, registry: MemoryRegistry, clock: ManualClock) -> None:
    seed(registry, clock, {"i-01": S.IDLE, "i-02": S.BUSY})
    clock.advance(91)
    api.report(
        report_body(sent_at="2026-11-24T01:03:34Z"),
        instance_id="i-01",
        caller_arn="arn:aws:sts::123456789012:assumed-role/jibri-agent-dev/i-01",
    )
    status, body = api.pool({"limit": "100"})
    assert status == 200
    assert body["counts"]["unhealthy"] == 1 and body["counts"]["idle"] == 1 and body["counts"]["busy"] == 0
    silent = next(r for r in body["recorders"] if r["instance_id"] == "i-02")
    assert (silent["state"], silent["recorded_state"], silent["stale"]) == ("unhealthy", "busy", True)


def test_listing_pages_through_every_recorder(api: Api, registry: MemoryRegistry, clock: ManualClock) -> None:
    seed(registry, clock, {f"i-{n:02d}": S.IDLE for n in range(5)})
    seen, token = [], None
    for _ in range(10):
        status, body = api.pool({"limit": "2", **({"next_token": token} if token else {})})
        assert status == 200 and len(body["recorders"]) <= 2
        seen += [r["instance_id"] for r in body["recorders"]]
        token = body["next_token"]
        if token is None:
            break
    assert seen == [f"i-{n:02d}" for n in range(5)]


def test_listing_by_state(api: Api, registry: MemoryRegistry, clock: ManualClock) -> None:
    seed(registry, clock, {"i-01": S.IDLE, "i-02": S.BUSY, "i-03": S.BUSY})
    status, body = api.pool({"state": "busy"})
    assert status == 200 and [r["instance_id"] for r in body["recorders"]] == ["i-02", "i-03"]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "\u00b2"}, "limit"),
        ({"limit": "0050"}, "limit"),
        ({"next_token": "!!!"}, "next_token"),
        ({"state": "sleeping"}, "state 'sleeping'"),
        ({"state": "terminated"}, "state 'terminated'"),
        ({"colour": "red"}, "unknown query parameter(s) colour"),
    ],
)
def test_bad_queries_get_a_400_naming_the_parameter(api: Api, query: dict[str, str], named: str) -> None:
    status, body = api.pool(query)
    assert status == 400 and named in body["error"]["message"]


def test_pool_needs_an_iam_caller(api: Api) -> None:
    event = api.event("apigateway_get_pool.json")
    event["requestContext"]["identity"]["userArn"] = None
    status, body = api.invoke(event)
    assert status == 401 and body["error"]["code"] == "unauthorized"
