"""Requests, Jicofo's choice, the queue and its patience, and recordings killed by termination."""

from __future__ import annotations

from whatif_helpers import trace, world

from sim.whatif.model import Model
from sim.whatif.world import Controller, RequestRecord


class Recorder(Controller):
    """Does nothing but write down what the world tells it."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, str]] = []

    def on_unserved(self, record: RequestRecord) -> None:
        self.heard.append(("unserved", str(record.trace.index)))

    def on_busy(self, instance_id: str) -> None:
        self.heard.append(("busy", instance_id))

    def on_idle(self, instance_id: str) -> None:
        self.heard.append(("idle", instance_id))


def test_a_request_takes_an_idle_jibri_at_once_and_records_until_the_meeting_ends() -> None:
    w = world(trace((100, 600)))
    w.run(Recorder())
    (record,) = w.records
    assert record.started_at == 100 and record.ended_at == 700 and record.wait == 0


def test_jicofo_picks_the_first_idle_jibri_in_brewery_order() -> None:
    w = world(trace((10, 100), (20, 100), (200, 100)))
    w.run(Recorder(), initial=2)
    first, second, third = w.records
    assert first.instance_id != second.instance_id
    assert third.instance_id == first.instance_id  # both free again: the first joined wins


def test_a_waiting_request_gives_up_after_the_patience_limit() -> None:
    w = world(trace((10, 3600), (20, 3600)))
    controller = Recorder()
    w.run(controller)
    served, waiting = w.records
    assert served.wait == 0
    assert waiting.started_at is None
    assert waiting.gave_up_at == 20 + 300 and waiting.wait == 300
    assert ("unserved", "1") in controller.heard


def test_patience_is_a_model_parameter_and_a_meeting_shorter_than_it_ends_the_wait() -> None:
    w = world(trace((10, 3600), (20, 3600), (30, 50)), Model(patience_s=120))
    w.run(Recorder())
    assert [r.gave_up_at for r in w.records] == [None, 140, 80]


def test_the_queue_is_served_first_come_first_served_when_a_jibri_frees_up() -> None:
    w = world(trace((0, 100), (10, 1000), (20, 1000)))
    w.run(Recorder())
    _first, second, third = w.records
    assert second.started_at == 100 and second.wait == 90
    assert third.gave_up_at == 320


def test_terminating_an_instance_under_a_recording_kills_it() -> None:
    w = world(trace((10, 600)))
    w.engine.at(100, lambda: w.group.terminate(w.group.in_group()[0]))
    w.run(Recorder(), initial=2)
    (record,) = w.records
    assert record.killed_at == 100


def test_a_drained_jibri_takes_no_new_recording_and_finishes_its_own() -> None:
    w = world(trace((10, 600), (20, 600)))
    gone: list[str] = []

    class Draining(Recorder):
        def on_busy(self, instance_id: str) -> None:
            w.drain(instance_id)

        def on_gone(self, instance_id: str) -> None:
            gone.append(instance_id)

    w.run(Draining(), initial=2)
    first, second = w.records
    assert first.ended_at == 610 and first.killed_at is None
    assert second.instance_id != first.instance_id
    assert len(gone) == 2
