"""EC2 events about one instance: Spot interruption warnings, rebalance recommendations, state changes.

A Spot warning gives two minutes. The recorder is marked unavailable (unhealthy,
so the pool counts it as leaving and replaces it at once), and its agent is told
in its next status reply to stop Jibri's session, so that the finalize handoff
starts inside the notice and what was recorded is uploaded. A rebalance
recommendation only says an interruption may follow: an idle recorder is drained
(out of service, replaced at once), a busy one finishes its recording. An instance
that reached `terminated` is buried.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.clock import Clock
from chalicelib.registry import Recorder, Registry, Written, transition
from chalicelib.states import RecorderState, can_transition

S = RecorderState
SPOT_WARNING = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
STATE_CHANGE = "EC2 Instance State-change Notification"
DETAIL_TYPES = [SPOT_WARNING, REBALANCE, STATE_CHANGE]


@dataclass(frozen=True)
class InstanceEvent:
    kind: str
    instance_id: str
    time: float
    state: str | None = None


def parse_instance_event(event: Mapping[str, Any]) -> InstanceEvent | None:
    kind = event.get("detail-type")
    detail = event.get("detail")
    if kind not in DETAIL_TYPES or not isinstance(detail, Mapping):
        return None
    instance_id = detail.get("instance-id")
    if not isinstance(instance_id, str) or not instance_id:
        return None
    try:
        at = datetime.fromisoformat(str(event.get("time", "")).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return InstanceEvent(kind=str(kind), instance_id=instance_id, time=at, state=detail.get("state"))


class InstanceEventService:
    def __init__(
        self,
        registry: Registry,
        clock: Clock,
        tombstone_seconds: int,
        on_reservation_lost: Callable[[Recorder], object] | None = None,
    ) -> None:
        self._on_reservation_lost = on_reservation_lost or (lambda recorder: None)
        self._registry = registry
        self._clock = clock
        self._tombstone_seconds = tombstone_seconds

    def handle(self, event: InstanceEvent) -> tuple[str, bool]:
        """What was done, and whether replacement capacity should be asked for now."""
        for _ in range(8):
            now = self._clock.now()
            current = self._registry.get(event.instance_id)
            if current is None or current.state is S.TERMINATED:
                return "not a recorder of this pool, or already gone", False
            if event.kind == STATE_CHANGE:
                if event.state != "terminated":
                    return f"state {event.state}: nothing to do", False
                updated = transition(
                    current, S.TERMINATED, now, hook=None, expires_at=int(now) + self._tombstone_seconds
                )
            elif event.kind == REBALANCE:
                # Only a recommendation: take an idle recorder out of service and replace it, but let
                # a recording finish (an interruption warning, if one follows, stops it).
                if current.state is not S.IDLE:
                    return f"recorder {current.state.value}: left to finish, replaced if interrupted", False
                updated = transition(current, S.DRAINING, now, drain_reason="rebalance")
            else:
                if current.stop_recording:
                    return "already told to stop recording", False
                target = S.UNHEALTHY if can_transition(current.state, S.UNHEALTHY) else current.state
                updated = transition(current, target, now, stop_recording=True)
            if isinstance(self._registry.save(current, updated), Written):
                if current.state is S.RESERVED and updated.state is not S.RESERVED:
                    self._on_reservation_lost(current)
                if event.kind == STATE_CHANGE:
                    return f"recorder {current.state.value} -> terminated", False
                if event.kind == REBALANCE:
                    return "idle recorder drained ahead of a possible interruption", True
                return f"recorder {current.state.value} -> {updated.state.value}, told to stop recording", True
        raise RuntimeError(f"recorder {event.instance_id} kept changing")


def handle_instance_event(service: InstanceEventService, raw: Mapping[str, Any], replace: Callable[[], object]) -> str:
    """Apply an EC2 instance event; on an interruption, ask for replacement capacity at once."""
    event = parse_instance_event(raw)
    if event is None:
        return "ignored: not an event about one instance"
    outcome, needs_replacement = service.handle(event)
    if needs_replacement:
        replace()
    return f"{event.instance_id}: {outcome}"
