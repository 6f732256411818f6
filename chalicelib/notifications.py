"""Auto Scaling notifications delivered through SNS: launches, terminations and their errors.

AWS sends the message as JSON; the same fields also come as `Key: Value` lines
(what e-mail subscribers see, and what some relays forward). Both are accepted.
Launch errors back scale-out off exponentially; terminations bury the recorder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.clock import Clock
from chalicelib.control import ControlStore
from chalicelib.registry import Registry, Written, transition
from chalicelib.states import RecorderState

S = RecorderState
LAUNCH = "autoscaling:EC2_INSTANCE_LAUNCH"
LAUNCH_ERROR = "autoscaling:EC2_INSTANCE_LAUNCH_ERROR"
TERMINATE = "autoscaling:EC2_INSTANCE_TERMINATE"
TERMINATE_ERROR = "autoscaling:EC2_INSTANCE_TERMINATE_ERROR"
TEST = "autoscaling:TEST_NOTIFICATION"
BACKOFF_BASE_SECONDS = 60
BACKOFF_CAP_SECONDS = 1800


class BadNotification(ValueError):
    pass


@dataclass(frozen=True)
class AsgNotification:
    event: str
    group: str
    instance_id: str | None
    activity_id: str | None
    time: float | None
    description: str
    cause: str
    status_message: str


def parse_notification(message: str) -> AsgNotification:
    fields = _json_fields(message)
    if fields is None:
        fields = _text_fields(message)
    event = str(fields.get("Event") or "")
    if not event.startswith("autoscaling:"):
        raise BadNotification("not an Auto Scaling notification: no autoscaling:* Event")
    group = str(fields.get("AutoScalingGroupName") or "")
    if not group:
        raise BadNotification("the notification names no AutoScalingGroupName")
    return AsgNotification(
        event=event,
        group=group,
        instance_id=str(fields.get("EC2InstanceId") or "") or None,
        activity_id=str(fields.get("ActivityId") or "") or None,
        time=_time(fields.get("Time") or fields.get("EndTime") or fields.get("StartTime")),
        description=str(fields.get("Description") or ""),
        cause=str(fields.get("Cause") or ""),
        status_message=str(fields.get("StatusMessage") or ""),
    )


def _json_fields(message: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(message)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _text_fields(message: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for line in message.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key.strip() and " " not in key.strip():
            fields[key.strip()] = value.strip()
    return fields


def _time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def launch_backoff_seconds(consecutive_errors: int) -> int:
    """60 s after the first error, doubling, at most 30 minutes."""
    if consecutive_errors <= 0:
        return 0
    return int(min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (consecutive_errors - 1)))


class NotificationService:
    def __init__(
        self,
        registry: Registry,
        control: ControlStore,
        clock: Clock,
        group_name: str,
        tombstone_seconds: int,
        on_alert: Callable[[str, AsgNotification], None] | None = None,
    ) -> None:
        self._registry = registry
        self._control = control
        self._clock = clock
        self._group = group_name
        self._tombstone_seconds = tombstone_seconds
        self._on_alert = on_alert or (lambda kind, note: None)

    def handle(self, note: AsgNotification) -> str:
        if note.event == TEST:
            return "test notification: the topic reaches the control plane"
        if note.group != self._group:
            return f"ignored: group {note.group} is not {self._group}"
        now = self._clock.now()
        at = note.time or now
        if note.event == LAUNCH:
            self._control.record_launch_success(at)
            return f"launched {note.instance_id}: {note.cause or note.description}"
        if note.event == LAUNCH_ERROR:
            fresh = self._control.record_launch_error(note.activity_id or f"{at}", at)
            if fresh:
                self._on_alert("LaunchErrors", note)
            return f"launch failed ({'new' if fresh else 'repeated'}): {note.status_message or note.description}"
        if note.event == TERMINATE:
            return f"terminated {note.instance_id}: {self._bury(note.instance_id, now)}; {note.cause}"
        if note.event == TERMINATE_ERROR:
            self._on_alert("TerminateErrors", note)
            return f"termination failed for {note.instance_id}: {note.status_message or note.description}"
        return f"ignored: event {note.event}"

    def _bury(self, instance_id: str | None, now: float) -> str:
        if not instance_id:
            return "no instance named"
        for _ in range(8):
            current = self._registry.get(instance_id)
            if current is None or current.state is S.TERMINATED:
                return "not in the registry"
            updated = transition(current, S.TERMINATED, now, hook=None, expires_at=int(now) + self._tombstone_seconds)
            if isinstance(self._registry.save(current, updated), Written):
                return f"recorder {current.state.value} -> terminated"
        raise RuntimeError(f"recorder {instance_id} kept changing while it was buried")


def handle_notification(service: NotificationService, message: str) -> str:
    """Parse and apply; a message that is not an Auto Scaling notification is logged, not retried."""
    try:
        note = parse_notification(message)
    except BadNotification as error:
        return f"ignored: {error}"
    return service.handle(note)
