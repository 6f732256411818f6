"""Assigning recorders to requests: atomic reservation, FIFO queue, leases, waits, cancel, idempotency."""

from __future__ import annotations

import threading

import pytest

from chalicelib.assignment import AssignmentService, AssignmentSettings, Conflict
from chalicelib.errors import BadRequest, NotFound
from chalicelib.memory_registry import MemoryRegistry
from chalicelib.registry import Recorder
from chalicelib.states import RecorderState
from chalicelib.status import StatusReport, StatusService
from chalicelib.tickets import MemoryTicketStore
from sim.clock import ManualClock

S = RecorderState
T0 = 1_795_500_000.0


class AnyGroup:
    group_name = "pool"

    def is_member(self, instance_id: str) -> bool:
        return True


class World:
    def __init__(self, idle: int = 0, **settings: float) -> None:
        self.clock = ManualClock(T0)
        self.registry = MemoryRegistry("pool")
        self.tickets = MemoryTicketStore()
        self.queued_triggers = 0
        self.service = AssignmentService(
            self.registry, self.tickets, self.clock, AssignmentSettings(**settings), on_queued=self._queued
        )
        self.status = StatusService(
            self.registry,
            AnyGroup(),
            self.clock,  # type: ignore[arg-type]
            on_idle=lambda r: self.service.assign_queue([r]),
            on_busy=self.service.on_busy,
            on_reservation_lost=self.service.on_reservation_lost,
        )
        for n in range(idle):
            self.report(f"i-{n:02d}", "IDLE")

    def _queued(self) -> None:
        self.queued_triggers += 1

    def report(self, instance_id: str, busy: str) -> dict[str, object]:
        self.clock.advance(0.001)
        return self.status.apply(instance_id, StatusReport(busy, "HEALTHY", 0, self.clock.now())).body()

    def ask(self, room: str = "room", key: str | None = None) -> tuple[int, dict[str, object]]:
        return self.service.create({"room": room, "kind": "recording"}, key)

    def state(self, instance_id: str) -> RecorderState:
        recorder = self.registry.get(instance_id)
        assert recorder is not None
        return recorder.state


def test_an_idle_recorder_is_reserved_at_once() -> None:
    world = World(idle=1)
    status, body = world.ask()
    assert status == 201 and body["status"] == "assigned"
    assert body["recorder"] == {"instance_id": "i-00", "private_ip": None}  # type: ignore[comparison-overlap]
    assert world.state("i-00") is S.RESERVED and world.queued_triggers == 0


def test_without_an_idle_recorder_the_request_is_queued_and_capacity_asked_for() -> None:
    world = World(idle=0)
    status, body = world.ask()
    assert (status, body["status"], body["position"], body["retry_after"]) == (202, "queued", 1, 10)
    assert world.queued_triggers == 1


def test_a_recorder_that_comes_free_serves_the_queue_head_first() -> None:
    world = World(idle=0)
    ids = [world.ask(f"room-{n}")[1]["request_id"] for n in range(3)]
    reply = world.report("i-new", "IDLE")
    assert reply["state"] == "reserved" and reply["protect"] is True
    heads = [world.service.get(str(i)) for i in ids]
    assert [h["status"] for h in heads] == ["assigned", "queued", "queued"]
    assert [h.get("position") for h in heads[1:]] == [1, 2]


def test_parallel_requests_never_share_a_recorder() -> None:
    world = World(idle=5)
    results: list[tuple[int, dict[str, object]]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def ask() -> None:
        barrier.wait()
        result = world.ask()
        with lock:
            results.append(result)

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assigned = [b["recorder"]["instance_id"] for s, b in results if s == 201]  # type: ignore[index]
    assert len(assigned) == 5 and len(set(assigned)) == 5
    positions = sorted(b["position"] for s, b in results if s == 202)  # type: ignore[type-var]
    assert positions == list(range(1, 16))


def test_a_reservation_without_a_recording_returns_the_recorder_after_its_lease() -> None:
    world = World(idle=1, lease_seconds=90)
    request_id = str(world.ask()[1]["request_id"])
    world.clock.advance(89)
    world.service.tick()
    assert world.state("i-00") is S.RESERVED
    world.clock.advance(2)
    world.service.tick()
    assert world.state("i-00") is S.IDLE
    assert world.service.get(request_id)["status"] == "expired"


def test_a_queued_request_gives_up_after_its_wait() -> None:
    world = World(idle=0, wait_seconds=600)
    request_id = str(world.ask()[1]["request_id"])
    world.clock.advance(601)
    world.service.tick()
    assert world.service.get(request_id)["status"] == "expired"
    world.report("i-new", "IDLE")
    assert world.state("i-new") is S.IDLE  # nobody is waiting any more


def test_a_recording_on_the_reserved_recorder_consumes_the_ticket() -> None:
    world = World(idle=1)
    request_id = str(world.ask()[1]["request_id"])
    world.report("i-00", "BUSY")
    assert world.service.get(request_id)["status"] == "consumed" and world.state("i-00") is S.BUSY
    assert world.registry.get("i-00").reserved_for is None  # type: ignore[union-attr]


def test_a_recording_that_jicofo_put_elsewhere_consumes_the_oldest_ticket_and_frees_its_recorder() -> None:
    world = World(idle=2)
    first = str(world.ask("a")[1]["request_id"])
    held = world.service.get(first)["recorder"]["instance_id"]  # type: ignore[index]
    other = "i-01" if held == "i-00" else "i-00"
    world.report(other, "BUSY")
    assert world.service.get(first)["status"] == "consumed"
    assert world.state(held) is S.IDLE


@pytest.mark.parametrize("assigned", [True, False])
def test_cancel_releases_or_dequeues_and_is_idempotent(assigned: bool) -> None:
    world = World(idle=1 if assigned else 0)
    request_id = str(world.ask()[1]["request_id"])
    assert world.service.cancel(request_id)["status"] == "cancelled"
    assert world.service.cancel(request_id)["status"] == "cancelled"
    if assigned:
        assert world.state("i-00") is S.IDLE


def test_the_same_idempotency_key_gives_the_same_answer_and_a_different_body_conflicts() -> None:
    world = World(idle=2)
    first = world.ask(key="k-1")
    again = world.ask(key="k-1")
    assert first == again and len(world.registry.list_by_state(S.RESERVED)) == 1
    with pytest.raises(Conflict):
        world.ask(room="another", key="k-1")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"kind": "recording"}, "room"),
        ({"room": "  ", "kind": "recording"}, "room"),
        ({"room": "r" * 257, "kind": "recording"}, "room"),
        ({"room": "r", "kind": "transcription"}, "kind is 'transcription'"),
        ({"room": "r"}, "kind is missing"),
        ({"room": "r", "kind": "recording", "meeting_url": "ftp://x"}, "meeting_url"),
        ({"room": "r", "kind": "recording", "meeting_url": 5}, "meeting_url"),
        ({"room": "r", "kind": "recording", "requester": ["me"]}, "requester"),
        ({"room": "r", "kind": "recording", "priority": 1}, r"unknown field\(s\) priority"),
        (["room"], "JSON object"),
    ],
)
def test_bad_requests_name_the_field_and_change_nothing(body: object, named: str) -> None:
    world = World(idle=1)
    with pytest.raises(BadRequest, match=named):
        world.service.create(body, None)
    assert world.state("i-00") is S.IDLE and world.tickets.list_status("queued") == []


def test_unknown_request_ids_are_404() -> None:
    world = World()
    with pytest.raises(NotFound):
        world.service.get("req-nope")
    with pytest.raises(NotFound):
        world.service.cancel("x" * 500)


def test_a_stale_idle_recorder_is_not_handed_out() -> None:
    world = World(idle=1)
    world.clock.advance(120)
    assert world.ask()[0] == 202


def test_a_reservation_left_by_a_crash_between_the_two_writes_is_released() -> None:
    world = World(idle=1, lease_seconds=90)
    recorder = world.registry.get("i-00")
    assert recorder is not None
    world.registry.save(
        recorder,
        Recorder(**{**recorder.__dict__, "state": S.RESERVED, "reserved_for": "req-lost", "reserved_until": T0 + 10}),
    )
    world.clock.advance(60)
    world.service.tick()
    assert world.state("i-00") is S.IDLE


def test_requests_that_arrive_for_a_booking_are_served_first() -> None:
    world = World(idle=0)
    world.service = AssignmentService(
        world.registry,
        world.tickets,
        world.clock,
        on_queued=world._queued,
        is_booked=lambda room, at: room == "keynote",
    )
    world.status = StatusService(
        world.registry,
        AnyGroup(),
        world.clock,  # type: ignore[arg-type]
        on_idle=lambda r: world.service.assign_queue([r]),
        on_busy=world.service.on_busy,
    )
    walk_in = str(world.ask("standup")[1]["request_id"])
    booked = world.ask("keynote")[1]
    assert booked["position"] == 1 and world.service.get(walk_in)["position"] == 2
    world.report("i-new", "IDLE")
    assert world.service.get(str(booked["request_id"]))["status"] == "assigned"
    assert world.service.get(walk_in)["status"] == "queued"


def test_a_reserved_recorder_whose_jibri_goes_offline_sends_its_request_back_first_in_line() -> None:
    world = World(idle=1)
    _, first = world.ask("first")
    _, second = world.ask("second")
    assert first["status"] == "assigned" and second["status"] == "queued"
    world.report("i-00", "OFFLINE")  # Jibri left before any recording started

    again = world.service.get(str(first["request_id"]))
    assert again["status"] == "queued" and again["position"] == 1 and "recorder" not in again
    world.report("i-01", "IDLE")  # the next recorder to come free serves the oldest request
    assert world.service.get(str(first["request_id"]))["status"] == "assigned"
    assert world.service.get(str(second["request_id"]))["status"] == "queued"
    world.report("i-00", "IDLE")  # back in service: it serves the second, never the first twice
    held = {t.instance_id for t in world.tickets.list_status("assigned")}
    assert held == {"i-00", "i-01"}


def test_the_evaluator_tick_requeues_a_request_whose_recorder_lost_its_reservation_elsewhere() -> None:
    world = World(idle=1)
    _, first = world.ask()
    recorder = world.registry.get("i-00")
    assert recorder is not None
    from chalicelib.registry import transition

    world.registry.save(recorder, transition(recorder, S.UNHEALTHY, world.clock.now()))  # no hook ran
    assert any("waiting again" in line for line in world.service.tick())
    assert world.service.get(str(first["request_id"]))["status"] == "queued"
