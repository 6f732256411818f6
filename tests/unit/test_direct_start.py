"""Direct start against a fake Jibri over real HTTP on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from chalicelib.assignment import AssignmentService
from chalicelib.direct_start import DirectStarter, DirectStartSettings, call_params
from chalicelib.memory_registry import MemoryRegistry
from chalicelib.registry import Recorder
from chalicelib.states import RecorderState
from chalicelib.tickets import MemoryTicketStore, Ticket
from sim.clock import ManualClock
from sim.jibri import FakeJibri

LOGIN = {"domain": "recorder.meet.example.com", "username": "recorder", "password": "s3cret"}


@pytest.fixture
def jibri() -> Iterator[FakeJibri]:
    fake = FakeJibri("jibri-direct").start()
    try:
        yield fake
    finally:
        fake.stop()


def port(jibri: FakeJibri) -> int:
    return int(jibri.health_url.split(":")[2].split("/")[0])


def ticket(**changes: object) -> Ticket:
    base = Ticket(
        "req-1",
        "assigned",
        "weekly",
        "recording",
        0.0,
        0,
        600.0,
        meeting_url="https://meet.example.com/acme/weekly",
        instance_id="i-1",
        private_ip="127.0.0.1",
    )
    return Ticket(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def starter(jibri: FakeJibri, login: bool = True) -> DirectStarter:
    settings = DirectStartSettings(
        enabled=True, jibri_port=port(jibri), call_login_parameter="/jibri/login" if login else None
    )
    return DirectStarter(settings, read_secret=lambda name: json.dumps(LOGIN).encode())


def test_call_params_split_the_tenant_from_the_room() -> None:
    assert call_params("https://meet.example.com/acme/weekly", "x") == {
        "callUrlInfo": {"baseUrl": "https://meet.example.com/acme", "callName": "weekly"}
    }
    assert call_params("https://meet.example.com/weekly", "x")["callUrlInfo"] == {
        "baseUrl": "https://meet.example.com",
        "callName": "weekly",
    }


def test_an_idle_jibri_is_started_with_jibris_own_request_shape(jibri: FakeJibri) -> None:
    assert starter(jibri).start(ticket(), None)["status"] == "started"
    (body,) = jibri.start_service_requests
    assert body == {
        "sessionId": "req-1",
        "callParams": {"callUrlInfo": {"baseUrl": "https://meet.example.com/acme", "callName": "weekly"}},
        "sinkType": "FILE",
        "callLoginParams": LOGIN,
    }
    assert jibri.busy_status == "BUSY"


def test_a_busy_jibri_refuses_and_the_reply_says_so(jibri: FakeJibri) -> None:
    jibri.set_busy_status("BUSY")
    outcome = starter(jibri).start(ticket(), None)
    assert outcome == {"status": "failed", "message": "Jibri answered 412"}


@pytest.mark.parametrize(
    ("changes", "stream_key", "says"),
    [
        ({"private_ip": None}, None, "private address"),
        ({"meeting_url": None}, None, "meeting_url"),
        ({"kind": "streaming"}, None, "stream_key"),
    ],
)
def test_what_direct_start_needs_is_named(
    jibri: FakeJibri, changes: dict[str, object], stream_key: str | None, says: str
) -> None:
    outcome = starter(jibri).start(ticket(**changes), stream_key)
    assert outcome["status"] == "failed" and says in outcome["message"]
    assert jibri.start_service_requests == []


def test_a_stream_carries_its_key(jibri: FakeJibri) -> None:
    assert starter(jibri, login=False).start(ticket(kind="streaming"), "yt-key")["status"] == "started"
    (body,) = jibri.start_service_requests
    assert (body["sinkType"], body["youTubeStreamKey"]) == ("STREAM", "yt-key") and "callLoginParams" not in body


def test_an_unreachable_jibri_is_a_failed_start_not_an_error(jibri: FakeJibri) -> None:
    jibri.stop()
    assert starter(jibri).start(ticket(), None)["status"] == "failed"


def test_the_request_endpoint_reports_the_direct_start(jibri: FakeJibri) -> None:
    clock = ManualClock(1_795_500_000.0)
    registry = MemoryRegistry("pool")
    now = clock.now()
    registry.create(
        Recorder(
            "pool",
            "i-1",
            RecorderState.IDLE,
            now,
            now,
            now,
            last_heartbeat_at=now,
            busy_status="IDLE",
            private_ip="127.0.0.1",
        )
    )
    service = AssignmentService(registry, MemoryTicketStore(), clock, starter=starter(jibri))
    status, body = service.create(
        {"room": "weekly", "kind": "recording", "meeting_url": "https://meet.example.com/acme/weekly"}, None
    )
    assert status == 201 and body["direct_start"]["status"] == "started"
    assert body["recorder"] == {"instance_id": "i-1", "private_ip": "127.0.0.1"}
