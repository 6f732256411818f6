"""The transition table and the rules that turn a status report into a state."""

from __future__ import annotations

import pytest

from chalicelib.registry import InvalidTransition, Recorder, transition
from chalicelib.states import TRANSITIONS, RecorderState, can_transition
from chalicelib.status import StatusReport, must_drain, must_protect, next_state

S = RecorderState


def report(busy: str = "IDLE", health: str = "HEALTHY", pending: int = 0) -> StatusReport:
    return StatusReport(busy_status=busy, health=health, pending_uploads=pending, sent_at=0.0)


def test_every_state_has_a_row_and_terminated_is_final() -> None:
    assert set(TRANSITIONS) == set(RecorderState)
    assert TRANSITIONS[S.TERMINATED] == frozenset()
    assert all(S.TERMINATED in targets for state, targets in TRANSITIONS.items() if state is not S.TERMINATED)


@pytest.mark.parametrize("source", [S.BUSY, S.RESERVED, S.TERMINATING, S.LAUNCHING, S.WARM, S.UNHEALTHY])
def test_only_an_idle_recorder_can_be_chosen_for_draining(source: RecorderState) -> None:
    assert not can_transition(source, S.DRAINING)
    assert can_transition(S.IDLE, S.DRAINING)


def test_transition_refuses_what_the_table_forbids() -> None:
    busy = Recorder("p", "i-1", S.BUSY, 0.0, 0.0, 0.0)
    with pytest.raises(InvalidTransition):
        transition(busy, S.DRAINING, 1.0)
    moved = transition(busy, S.IDLE, 5.0)
    assert (moved.state, moved.state_changed_at, moved.updated_at) == (S.IDLE, 5.0, 5.0)
    same = transition(busy, S.BUSY, 7.0)
    assert same.state_changed_at == 0.0 and same.updated_at == 7.0


@pytest.mark.parametrize(
    ("current", "busy", "health", "expected"),
    [
        (S.LAUNCHING, "IDLE", "HEALTHY", S.IDLE),
        (S.LAUNCHING, "OFFLINE", "UNHEALTHY", S.LAUNCHING),
        (S.LAUNCHING, "BUSY", "HEALTHY", S.BUSY),
        (S.IDLE, "BUSY", "HEALTHY", S.BUSY),
        (S.IDLE, "BUSY", "UNHEALTHY", S.BUSY),  # a busy recorder is held whatever its health
        (S.BUSY, "IDLE", "HEALTHY", S.IDLE),
        (S.IDLE, "IDLE", "UNHEALTHY", S.UNHEALTHY),
        (S.IDLE, "EXPIRED", "HEALTHY", S.UNHEALTHY),
        (S.IDLE, "OFFLINE", "UNHEALTHY", S.UNHEALTHY),
        (S.BUSY, "OFFLINE", "UNHEALTHY", S.UNHEALTHY),
        (S.UNHEALTHY, "IDLE", "HEALTHY", S.IDLE),
        (S.RESERVED, "IDLE", "HEALTHY", S.RESERVED),
        (S.RESERVED, "BUSY", "HEALTHY", S.BUSY),
        (S.DRAINING, "BUSY", "HEALTHY", S.DRAINING),
        (S.DRAINING, "OFFLINE", "UNHEALTHY", S.DRAINING),
        (S.TERMINATING, "IDLE", "HEALTHY", S.TERMINATING),
        (S.WARM, "IDLE", "HEALTHY", S.WARM),
    ],
)
def test_next_state(current: RecorderState, busy: str, health: str, expected: RecorderState) -> None:
    target = next_state(current, report(busy, health))
    assert target is expected
    assert target is current or can_transition(current, target)


@pytest.mark.parametrize(
    ("state", "busy", "pending", "protect", "drain"),
    [
        (S.IDLE, "IDLE", 0, False, False),
        (S.IDLE, "IDLE", 2, True, False),
        (S.BUSY, "BUSY", 0, True, False),
        (S.RESERVED, "IDLE", 0, True, False),
        (S.DRAINING, "BUSY", 0, True, True),
        (S.DRAINING, "OFFLINE", 0, False, True),
        (S.TERMINATING, "IDLE", 1, True, True),
        (S.UNHEALTHY, "OFFLINE", 0, False, False),
    ],
)
def test_protect_and_drain(state: RecorderState, busy: str, pending: int, protect: bool, drain: bool) -> None:
    recorder = Recorder("p", "i-1", state, 0.0, 0.0, 0.0, busy_status=busy, pending_uploads=pending)
    assert (must_protect(recorder), must_drain(recorder)) == (protect, drain)


def test_staleness_makes_a_recorder_count_unhealthy_only_where_heartbeats_matter() -> None:
    idle = Recorder("p", "i-1", S.IDLE, 0.0, 0.0, 0.0, last_heartbeat_at=100.0)
    assert idle.effective_state(190.0, 90) is S.IDLE
    assert idle.effective_state(190.5, 90) is S.UNHEALTHY
    launching = Recorder("p", "i-2", S.LAUNCHING, 0.0, 0.0, 0.0)
    assert launching.effective_state(10_000.0, 90) is S.LAUNCHING
