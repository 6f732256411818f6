"""Recorder states and the one table of the transitions allowed between them."""

from __future__ import annotations

from enum import StrEnum


class RecorderState(StrEnum):
    LAUNCHING = "launching"
    WARM = "warm"
    IDLE = "idle"
    RESERVED = "reserved"
    BUSY = "busy"
    DRAINING = "draining"
    TERMINATING = "terminating"
    UNHEALTHY = "unhealthy"
    # A tombstone: the instance is gone. Kept for a while (TTL) so that a late
    # report from it is refused instead of bringing it back as idle.
    TERMINATED = "terminated"


S = RecorderState

TRANSITIONS: dict[RecorderState, frozenset[RecorderState]] = {
    S.LAUNCHING: frozenset({S.WARM, S.IDLE, S.BUSY, S.UNHEALTHY, S.TERMINATING, S.TERMINATED}),
    S.WARM: frozenset({S.LAUNCHING, S.TERMINATING, S.TERMINATED}),
    S.IDLE: frozenset({S.RESERVED, S.BUSY, S.DRAINING, S.UNHEALTHY, S.TERMINATING, S.TERMINATED}),
    S.RESERVED: frozenset({S.IDLE, S.BUSY, S.UNHEALTHY, S.TERMINATING, S.TERMINATED}),
    S.BUSY: frozenset({S.IDLE, S.UNHEALTHY, S.TERMINATING, S.TERMINATED}),
    S.DRAINING: frozenset({S.IDLE, S.UNHEALTHY, S.TERMINATING, S.TERMINATED}),
    S.TERMINATING: frozenset({S.TERMINATED}),
    S.UNHEALTHY: frozenset({S.IDLE, S.BUSY, S.TERMINATING, S.TERMINATED}),
    S.TERMINATED: frozenset(),
}

# States in which the control plane never lets the instance be terminated.
HOLDS_INSTANCE = frozenset({S.BUSY, S.RESERVED})
# States whose liveness is judged by the agent's heartbeat.
HEARTBEAT_STATES = frozenset({S.IDLE, S.RESERVED, S.BUSY, S.DRAINING})


def can_transition(source: RecorderState, target: RecorderState) -> bool:
    return target in TRANSITIONS[source]
