"""POST /v1/recorders/{instance_id}/status, invoked with API Gateway proxy events."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import INSTANCE, Api, FakeAutoScaling, report_body

from chalicelib.memory_registry import MemoryRegistry
from chalicelib.registry import Recorder, Written, transition
from chalicelib.states import RecorderState
from sim.clock import ManualClock

S = RecorderState


def stored(registry: MemoryRegistry, instance_id: str = INSTANCE) -> Recorder:
    recorder = registry.get(instance_id)
    assert recorder is not None
    return recorder


def test_first_report_from_a_group_member_registers_it_idle(api: Api, registry: MemoryRegistry) -> None:
    status, body = api.report(report_body())
    assert status == 200
    assert body == {"protect": False, "drain": False, "state": "idle"}
    recorder = stored(registry)
    assert (recorder.state, recorder.busy_status, recorder.health, recorder.pending_uploads) == (
        S.IDLE,
        "IDLE",
        "HEALTHY",
        0,
    )
    assert recorder.jibri == report_body()["jibri"]


def test_busy_report_is_applied_and_asks_for_protection(api: Api, registry: MemoryRegistry, clock: ManualClock) -> None:
    api.report(report_body())
    clock.advance(5)
    status, body = api.report(report_body("BUSY", sent_at="2026-11-24T01:02:08Z"))
    assert (status, body) == (200, {"protect": True, "drain": False, "state": "busy"})
    assert stored(registry).state is S.BUSY
    clock.advance(5)
    status, body = api.report(report_body("IDLE", pending=1, sent_at="2026-11-24T01:02:13Z"))
    assert (status, body) == (200, {"protect": True, "drain": False, "state": "idle"})
    clock.advance(5)
    status, body = api.report(report_body("IDLE", sent_at="2026-11-24T01:02:18Z"))
    assert body["protect"] is False


def test_membership_is_checked_once_per_instance(api: Api, group: FakeAutoScaling) -> None:
    for second in range(3):
        assert api.report(report_body(sent_at=f"2026-11-24T01:02:0{3 + second}Z"))[0] == 200
    assert group.membership_checks == [INSTANCE]


def test_an_instance_outside_the_group_is_refused_and_not_registered(api: Api, registry: MemoryRegistry) -> None:
    stranger = "i-0fffffffffffffff9"
    status, body = api.report(
        report_body(),
        instance_id=stranger,
        caller_arn=f"arn:aws:sts::123456789012:assumed-role/jibri-agent-dev/{stranger}",
    )
    assert status == 403
    assert body["error"]["code"] == "forbidden" and "not in Auto Scaling group jibri-dev" in body["error"]["message"]
    assert registry.get(stranger) is None


def test_a_terminated_instance_never_comes_back_as_idle(api: Api, registry: MemoryRegistry, clock: ManualClock) -> None:
    tomb = Recorder("jibri-dev", INSTANCE, S.TERMINATED, clock.now(), clock.now(), clock.now(), expires_at=1)
    assert isinstance(registry.create(tomb), Written)
    before = stored(registry)
    status, body = api.report(report_body(sent_at="2026-11-24T01:02:09Z"))
    assert status == 410 and body["error"]["code"] == "gone"
    assert stored(registry) == before


@pytest.mark.parametrize(
    "caller",
    [
        "arn:aws:sts::123456789012:assumed-role/jibri-agent-dev/i-0aaaaaaaaaaaaaaa1",  # another instance's agent
        "arn:aws:sts::123456789012:assumed-role/some-other-role/i-0123456789abcdef0",  # right session, wrong role
        "arn:aws:iam::123456789012:user/operator",  # a user, not an instance
    ],
)
def test_a_report_for_another_instance_is_forbidden_and_changes_nothing(
    api: Api, registry: MemoryRegistry, caller: str
) -> None:
    api.report(report_body())
    before = stored(registry)
    status, body = api.report(report_body("BUSY", sent_at="2026-11-24T01:02:09Z"), caller_arn=caller)
    assert status == 403 and body["error"]["code"] == "forbidden"
    assert stored(registry) == before


def test_a_request_without_an_iam_caller_is_refused(api: Api, registry: MemoryRegistry) -> None:
    event = api.event("apigateway_status_report.json")
    event["requestContext"]["identity"]["userArn"] = None
    status, body = api.invoke(event)
    assert status == 401 and "SigV4" in body["error"]["message"]
    assert registry.get(INSTANCE) is None


def test_a_stale_report_is_ignored(api: Api, registry: MemoryRegistry, clock: ManualClock) -> None:
    api.report(report_body("BUSY", sent_at="2026-11-24T01:02:10Z"))
    before = stored(registry)
    clock.advance(10)
    status, body = api.report(report_body("IDLE", sent_at="2026-11-24T01:02:05Z"))
    assert (status, body) == (200, {"protect": True, "drain": False, "state": "busy"})
    assert stored(registry) == before
    # the same report delivered twice is applied once
    status, _ = api.report(report_body("BUSY", sent_at="2026-11-24T01:02:10Z"))
    assert status == 200 and stored(registry) == before


def test_a_draining_recorder_is_told_to_drain_and_stays_protected_while_busy(
    api: Api, registry: MemoryRegistry, clock: ManualClock
) -> None:
    api.report(report_body())
    idle = stored(registry)
    registry.save(idle, transition(idle, S.DRAINING, clock.now()))
    status, body = api.report(report_body("BUSY", sent_at="2026-11-24T01:02:20Z"))
    assert (status, body) == (200, {"protect": True, "drain": True, "state": "draining"})
    status, body = api.report(report_body("IDLE", sent_at="2026-11-24T01:02:30Z"))
    assert body == {"protect": False, "drain": True, "state": "draining"}


BAD_BODIES = [
    ({"health": "HEALTHY", "pending_uploads": 0, "sent_at": "2026-11-24T01:02:09Z"}, "busy_status is missing"),
    ({**report_body(), "busy_status": "busy"}, "busy_status is 'busy'"),
    ({**report_body(), "busy_status": 1}, "busy_status is 1"),
    ({k: v for k, v in report_body().items() if k != "health"}, "health is missing"),
    ({**report_body(), "health": "OK"}, "health is 'OK'"),
    ({k: v for k, v in report_body().items() if k != "pending_uploads"}, "pending_uploads"),
    ({**report_body(), "pending_uploads": -1}, "pending_uploads"),
    ({**report_body(), "pending_uploads": "2"}, "pending_uploads"),
    ({**report_body(), "pending_uploads": 1.5}, "pending_uploads"),
    ({**report_body(), "pending_uploads": True}, "pending_uploads"),
    ({**report_body(), "pending_uploads": 10_001}, "pending_uploads"),
    ({k: v for k, v in report_body().items() if k != "sent_at"}, "sent_at"),
    ({**report_body(), "sent_at": "2026-11-24T01:02:09"}, "has no zone"),
    ({**report_body(), "sent_at": "yesterday"}, "sent_at 'yesterday'"),
    ({**report_body(), "sent_at": 1795482129}, "sent_at"),
    ({**report_body(), "sent_at": "2026-11-24T02:02:09Z"}, "ahead of the control plane's clock"),
    ({**report_body(), "jibri": ["IDLE"]}, "jibri must be"),
    ({**report_body(), "jibri": "IDLE"}, "jibri must be"),
    ({**report_body(), "instance_id": "i-0aaaaaaaaaaaaaaa1"}, "unknown field(s) instance_id"),
    ({**report_body(), "target_lifecycle_state": "Warmed Stopped"}, "target_lifecycle_state must be"),
    ({**report_body(), "target_lifecycle_state": 5}, "target_lifecycle_state must be"),
    (["IDLE"], "must be a JSON object"),
    ("IDLE", "must be a JSON object"),
]


@pytest.mark.parametrize(("body", "named"), BAD_BODIES)
def test_every_malformed_field_gets_a_400_naming_it_and_changes_nothing(
    api: Api, registry: MemoryRegistry, body: object, named: str
) -> None:
    api.report(report_body(sent_at="2026-11-24T01:02:00Z"))
    before = stored(registry)
    status, reply = api.report(body)
    assert status == 400, reply
    assert reply["error"]["code"] == "bad_request"
    assert named in reply["error"]["message"]
    assert stored(registry) == before


@pytest.mark.parametrize(
    ("raw", "status", "named"),
    [
        ("{not json", 400, "not valid JSON"),
        ("", 400, "body is empty"),
        ('{"busy_status": "IDLE", "jibri": {"pad": "' + "x" * 70_000 + '"}}', 413, "at most 65536"),
    ],
)
def test_unreadable_bodies_are_refused_and_change_nothing(
    api: Api, registry: MemoryRegistry, raw: str, status: int, named: str
) -> None:
    status_code, reply = api.report(raw=raw)
    assert status_code == status and named in reply["error"]["message"]
    assert registry.get(INSTANCE) is None


def test_a_body_that_is_not_json_typed_gets_415_in_the_api_error_shape(api: Api, registry: MemoryRegistry) -> None:
    status, reply = api.report(report_body(), content_type="text/plain")
    assert status == 415
    assert reply == {"error": {"code": "unsupported_media_type", "message": "Unsupported media type: text/plain"}}
    assert registry.get(INSTANCE) is None


def test_an_unknown_method_gets_405_in_the_api_error_shape(api: Api) -> None:
    event = api.event("apigateway_status_report.json")
    event["httpMethod"] = event["requestContext"]["httpMethod"] = "PUT"
    status, reply = api.invoke(event)
    assert status == 405 and reply["error"]["code"] == "method_not_allowed"


def test_a_failing_store_is_a_500_in_the_api_error_shape_without_internals(
    api: Api, registry: MemoryRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise ConnectionError("dynamodb endpoint unreachable: secret-host-name")

    monkeypatch.setattr(registry, "get", broken)
    status, reply = api.report(report_body())
    assert status == 500
    assert reply["error"]["code"] == "internal_error" and "secret-host-name" not in reply["error"]["message"]


def test_a_report_racing_a_drain_is_applied_on_top_of_it(
    api: Api, registry: MemoryRegistry, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluator drains the recorder between the handler's read and its write: the report retries."""
    api.report(report_body())
    idle = stored(registry)
    real_save = registry.save
    raced = []

    def save_after_a_drain(expected: Recorder, updated: Recorder):  # type: ignore[no-untyped-def]
        if not raced:
            raced.append(real_save(idle, transition(idle, S.DRAINING, clock.now())))
        return real_save(expected, updated)

    monkeypatch.setattr(registry, "save", save_after_a_drain)
    status, body = api.report(report_body("BUSY", sent_at="2026-11-24T01:02:30Z"))
    assert (status, body) == (200, {"protect": True, "drain": True, "state": "draining"})
    final = stored(registry)
    assert final.busy_status == "BUSY" and final.version == idle.version + 2
    assert dataclasses.replace(final, busy_status="IDLE").state is S.DRAINING


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (
            '{"busy_status": "IDLE", "health": "HEALTHY", "pending_uploads": NaN, "sent_at": "2026-11-24T01:02:03Z"}',
            "NaN is not a JSON value",
        ),
        ('{"busy_status": "IDLE", "jibri": {"x": Infinity}}', "Infinity is not a JSON value"),
        ('{"jibri": ' + "[" * 5000 + "]" * 5000 + "}", "nests too deeply"),
        ('{"jibri": ' + "[" * 40 + "]" * 40 + "}", "nests deeper than 32 levels"),
    ],
)
def test_json_that_is_not_json_is_refused(api: Api, registry: MemoryRegistry, raw: str, named: str) -> None:
    status, reply = api.report(raw=raw)
    assert status == 400 and named in reply["error"]["message"]
    assert registry.get(INSTANCE) is None


def test_free_disk_is_optional_stored_when_sent_and_checked(api: Api, registry: MemoryRegistry) -> None:
    assert api.report(report_body())[0] == 200
    assert stored(registry).disk_free_bytes is None
    body = {**report_body(sent_at="2026-11-24T01:02:04Z"), "disk_free_bytes": 12_345_678_912}
    assert api.report(body)[0] == 200
    assert stored(registry).disk_free_bytes == 12_345_678_912
    for bad in (-1, True, "12 GB", 1.5):
        status, reply = api.report({**report_body(sent_at="2026-11-24T01:02:05Z"), "disk_free_bytes": bad})
        assert (status, reply["error"]["code"]) == (400, "bad_request")
        assert "disk_free_bytes" in reply["error"]["message"]
    assert stored(registry).disk_free_bytes == 12_345_678_912


def test_failed_uploads_are_part_of_pending_stored_and_shown_in_the_pool(api: Api, registry: MemoryRegistry) -> None:
    body = {**report_body(pending=2), "failed_uploads": 1}
    assert api.report(body)[0] == 200
    assert stored(registry).failed_uploads == 1
    recorder = next(r for r in api.pool()[1]["recorders"] if r["instance_id"] == INSTANCE)
    assert (recorder["pending_uploads"], recorder["failed_uploads"]) == (2, 1)
    for bad in (3, -1, True, "1"):
        status, reply = api.report({**report_body(pending=2, sent_at="2026-11-24T01:02:09Z"), "failed_uploads": bad})
        assert (status, reply["error"]["code"]) == (400, "bad_request")
        assert "failed_uploads" in reply["error"]["message"]
