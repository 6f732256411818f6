"""The registry of recorders: the model, the port, and the one way to change state.

Two adapters implement the port: `memory_registry.MemoryRegistry` and
`dynamodb_registry.DynamoDBRegistry`; one contract suite runs against both.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from chalicelib.states import HEARTBEAT_STATES, RecorderState, can_transition


@dataclass(frozen=True)
class LifecycleHook:
    """An open Auto Scaling lifecycle action on the instance, until it is completed."""

    name: str
    token: str
    transition: str  # "launch" or "terminate"
    started_at: float  # when Auto Scaling started it (the event's time)
    destination: str | None = None  # "AutoScalingGroup", "WarmPool" or "EC2", where given
    origin: str | None = None
    heartbeat_at: float | None = None
    alerted: bool = False  # the near-timeout alert has fired

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LifecycleHook:
        return cls(**data)


@dataclass(frozen=True)
class Recorder:
    pool: str
    instance_id: str
    state: RecorderState
    created_at: float
    updated_at: float
    state_changed_at: float
    version: int = 0
    last_heartbeat_at: float | None = None
    last_report_sent_at: float | None = None
    busy_status: str | None = None
    health: str | None = None
    pending_uploads: int = 0
    jibri: dict[str, Any] | None = field(default=None, compare=False)
    expires_at: int | None = None
    launch_kind: str | None = None  # "cold" or "warm" (from the warm pool), when the launch was seen
    hook: LifecycleHook | None = None
    # Lifecycle events already applied, by their time: a late or repeated one changes nothing.
    last_event_at: float | None = None
    stop_recording: bool = False  # a Spot interruption: the agent stops Jibri's session now
    target_lifecycle_state: str | None = None  # as the agent read it from instance metadata
    replace_requested_at: float | None = None  # when the reconciler told Auto Scaling it is unhealthy
    reserved_for: str | None = None  # the ticket holding this recorder while it is `reserved`
    reserved_until: float | None = None  # the reservation's lease
    private_ip: str | None = None  # as the agent read it from instance metadata
    offline_since: float | None = None  # first of an unbroken run of OFFLINE reports
    # Why it is draining: "scale-in" (the evaluator's, withdrawn when demand returns) or "rebalance".
    drain_reason: str | None = None
    disk_free_bytes: int | None = None  # as the agent last reported it
    failed_uploads: int = 0  # of pending_uploads, sessions the control plane refused (the files stay)

    def gone_offline(self, now: float, confirm_after: float) -> bool:
        """Jibri has been unreachable long enough to be sure it left, not merely slow to answer once."""
        return (
            self.busy_status == "OFFLINE"
            and self.offline_since is not None
            and now - self.offline_since >= (confirm_after)
        )

    def is_stale(self, now: float, stale_after: float) -> bool:
        seen = self.last_heartbeat_at if self.last_heartbeat_at is not None else self.created_at
        return now - seen > stale_after

    def effective_state(self, now: float, stale_after: float) -> RecorderState:
        """The state as the pool should count it: a silent agent is unhealthy."""
        if self.state in HEARTBEAT_STATES and self.is_stale(now, stale_after):
            return RecorderState.UNHEALTHY
        return self.state


class InvalidTransition(ValueError):
    """A programming error: the transition table forbids this change."""


def transition(recorder: Recorder, target: RecorderState, now: float, **changes: Any) -> Recorder:
    """The recorder as it would be after moving to `target`; checked against the table."""
    if target is not recorder.state and not can_transition(recorder.state, target):
        raise InvalidTransition(f"{recorder.instance_id}: {recorder.state.value} -> {target.value} is not allowed")
    state_changed_at = now if target is not recorder.state else recorder.state_changed_at
    if recorder.state is RecorderState.DRAINING and target is not RecorderState.DRAINING:
        changes.setdefault("drain_reason", None)
    if recorder.state is RecorderState.RESERVED and target is not RecorderState.RESERVED:
        # Leaving `reserved` ends the reservation, unless the caller carries it on (a termination
        # that must wait for the lease).
        changes.setdefault("reserved_for", None)
        changes.setdefault("reserved_until", None)
    return dataclasses.replace(recorder, state=target, updated_at=now, state_changed_at=state_changed_at, **changes)


@dataclass(frozen=True)
class Written:
    recorder: Recorder


@dataclass(frozen=True)
class LostRace:
    """Someone else changed (or created) the recorder first; `current` is what is stored now."""

    current: Recorder | None


WriteResult = Written | LostRace


class BadPageToken(ValueError):
    pass


def encode_page_token(instance_id: str) -> str:
    return base64.urlsafe_b64encode(instance_id.encode()).decode().rstrip("=")


def decode_page_token(token: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise BadPageToken("the page token is not one this API handed out") from error
    if not raw or len(raw) > 64 or not raw.isprintable():
        raise BadPageToken("the page token is not one this API handed out")
    return raw


class Registry(Protocol):
    pool: str

    def get(self, instance_id: str) -> Recorder | None: ...

    def create(self, recorder: Recorder) -> WriteResult:
        """Store a new recorder; LostRace when one with that id exists already."""
        ...

    def save(self, expected: Recorder, updated: Recorder) -> WriteResult:
        """Write `updated` if the stored recorder still has `expected`'s state and version.

        The written recorder carries version `expected.version + 1`.
        """
        ...

    def list_by_state(self, state: RecorderState) -> list[Recorder]: ...

    def list_all(self) -> Iterator[Recorder]:
        """Every recorder of the pool, tombstones included."""
        ...

    def list_page(self, limit: int, token: str | None) -> tuple[list[Recorder], str | None]:
        """One page of live recorders ordered by instance id, and the token of the next page."""
        ...


def checked_save_target(expected: Recorder, updated: Recorder) -> Recorder:
    """What an adapter writes for `save`: the transition checked, the version bumped."""
    if updated.instance_id != expected.instance_id or updated.pool != expected.pool:
        raise ValueError("save() must keep the recorder's pool and instance id")
    if updated.state is not expected.state and not can_transition(expected.state, updated.state):
        raise InvalidTransition(
            f"{expected.instance_id}: {expected.state.value} -> {updated.state.value} is not allowed"
        )
    return dataclasses.replace(updated, version=expected.version + 1)
