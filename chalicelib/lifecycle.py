"""Auto Scaling lifecycle actions: follow each instance in and out, and hold a
termination while the recorder is busy, reserved or uploading.

Launch into service: the recorder is `launching` with the open action, which is
completed with CONTINUE when its agent first reports IDLE and HEALTHY (from the
status handler), or with ABANDON if that never comes within the launch timeout.
Launch into the warm pool: CONTINUE once the agent reports that it has prepared
the instance (Jibri out of service while the target state is Warmed:*); the
recorder is then `warm`. Terminate: the recorder is `terminating`; the action is
completed with CONTINUE as soon as it is free, and held with heartbeats on every
evaluator run until then, with an alert well before the hook's global timeout.

Every event is applied at most once: a repeated or older event changes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.autoscaling import AutoScaling, LifecycleActionGone
from chalicelib.clock import Clock
from chalicelib.observability import logger
from chalicelib.registry import LifecycleHook, LostRace, Recorder, Registry, Written, transition
from chalicelib.states import RecorderState, can_transition

S = RecorderState
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
WARM_POOL = "WarmPool"
MAX_GLOBAL_TIMEOUT = 48 * 3600
# One OFFLINE report may be a health check that timed out while Jibri records; Jibri counts
# as gone only after this long unreachable (the agent reports every 30 s, and on change).
OFFLINE_CONFIRM_SECONDS = 45.0
_MAX_ATTEMPTS = 8


class BadEvent(ValueError):
    """Not a lifecycle action this handler can act on; the message says why."""


@dataclass(frozen=True)
class LifecycleEvent:
    transition: str  # "launch" or "terminate"
    group: str
    instance_id: str
    hook_name: str
    token: str
    time: float
    origin: str | None = None
    destination: str | None = None

    @property
    def into_warm_pool(self) -> bool:
        return self.transition == "launch" and self.destination == WARM_POOL


@dataclass(frozen=True)
class LifecycleSettings:
    heartbeat_timeout_seconds: int = 7200  # the hooks' HeartbeatTimeout, as the template creates them
    launch_timeout_seconds: int = 900  # a launch whose agent never reports healthy is abandoned after this
    offline_confirm_seconds: float = OFFLINE_CONFIRM_SECONDS

    @property
    def global_timeout_seconds(self) -> int:
        return min(MAX_GLOBAL_TIMEOUT, 100 * self.heartbeat_timeout_seconds)

    @property
    def alert_after_seconds(self) -> int:
        # Well before the global timeout: a tenth of it, and at least two heartbeat timeouts.
        return self.global_timeout_seconds - max(self.global_timeout_seconds // 10, 2 * self.heartbeat_timeout_seconds)


def parse_lifecycle_event(event: Mapping[str, Any]) -> LifecycleEvent | None:
    """The action, or None for a test notification. BadEvent for anything malformed."""
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        raise BadEvent("the event has no detail object")
    if "TEST_NOTIFICATION" in str(detail.get("Event", "")):
        return None
    kinds = {LAUNCHING: "launch", TERMINATING: "terminate"}
    kind = kinds.get(str(detail.get("LifecycleTransition")))
    if kind is None:
        raise BadEvent(f"unknown LifecycleTransition {detail.get('LifecycleTransition')!r}")
    fields = {}
    for name in ("AutoScalingGroupName", "EC2InstanceId", "LifecycleHookName", "LifecycleActionToken"):
        value = detail.get(name)
        if not isinstance(value, str) or not value:
            raise BadEvent(f"detail.{name} is missing")
        fields[name] = value
    return LifecycleEvent(
        transition=kind,
        group=fields["AutoScalingGroupName"],
        instance_id=fields["EC2InstanceId"],
        hook_name=fields["LifecycleHookName"],
        token=fields["LifecycleActionToken"],
        time=_event_time(event.get("time")),
        origin=detail.get("Origin"),
        destination=detail.get("Destination"),
    )


def _event_time(value: Any) -> float:
    if not isinstance(value, str):
        raise BadEvent("the event has no time")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise BadEvent(f"the event time {value!r} is not ISO-8601") from None


def is_free(recorder: Recorder, now: float, confirm: float = OFFLINE_CONFIRM_SECONDS) -> bool:
    """Nothing on the instance needs it: no recording, no live reservation, no upload in flight."""
    reserved = recorder.reserved_for is not None and (recorder.reserved_until or 0.0) > now
    quiet = recorder.busy_status in ("IDLE", "EXPIRED", None) or recorder.gone_offline(now, confirm)
    return quiet and not reserved and recorder.state is not S.RESERVED and recorder.pending_uploads == 0


def prepared_for_pool(recorder: Recorder, now: float, confirm: float = OFFLINE_CONFIRM_SECONDS) -> bool:
    return (recorder.target_lifecycle_state or "").startswith("Warmed:") and recorder.gone_offline(now, confirm)


class LifecycleService:
    def __init__(
        self,
        registry: Registry,
        autoscaling: AutoScaling,
        clock: Clock,
        settings: LifecycleSettings | None = None,
        on_alert: Callable[[Recorder, str], None] | None = None,
    ) -> None:
        self._registry = registry
        self._autoscaling = autoscaling
        self._clock = clock
        self.settings = settings or LifecycleSettings()
        self._on_alert = on_alert or (lambda recorder, message: None)

    # -- events ---------------------------------------------------------------------------------

    def handle(self, event: LifecycleEvent) -> str:
        """Apply one lifecycle event; returns what was done, for the log."""
        if event.group != self._autoscaling.group_name:
            return f"ignored: group {event.group} is not {self._autoscaling.group_name}"
        for _ in range(_MAX_ATTEMPTS):
            now = self._clock.now()
            current = self._registry.get(event.instance_id)
            if current is not None and current.last_event_at is not None and event.time <= current.last_event_at:
                return "ignored: already applied, or older than one that was"
            if current is None:
                result = self._registry.create(self._new_recorder(event, now))
            elif current.state is S.TERMINATED:
                if event.transition != "terminate":
                    return "ignored: the instance was terminated"
                if not is_free(current, now, self.settings.offline_confirm_seconds):
                    # Buried while its terminate action waited (the group listed it as Terminating:Wait
                    # before this event arrived): last known busy, reserved or uploading, so it is not
                    # released here; Auto Scaling's heartbeat timeout ends the action.
                    return "left open: the recorder was buried while busy, reserved or uploading"
                self._complete(event.hook_name, event.token, event.instance_id, "CONTINUE")
                return "completed: the recorder was already gone"
            else:
                updated = self._apply(current, event, now)
                if updated is None:
                    return "ignored: the instance is leaving"
                result = self._registry.save(current, updated)
            if isinstance(result, Written):
                self.settle(result.recorder)
                return f"{event.transition} action recorded ({event.origin or '-'} -> {event.destination or '-'})"
        raise RuntimeError(f"recorder {event.instance_id} kept changing during {_MAX_ATTEMPTS} attempts")

    def _new_recorder(self, event: LifecycleEvent, now: float) -> Recorder:
        hook = self._hook(event)
        state = S.LAUNCHING if event.transition == "launch" else S.TERMINATING
        return Recorder(
            pool=self._registry.pool,
            instance_id=event.instance_id,
            state=state,
            created_at=min(event.time, now),
            updated_at=now,
            state_changed_at=now,
            launch_kind="warm" if event.origin == WARM_POOL else "cold",
            hook=hook,
            last_event_at=event.time,
        )

    def _apply(self, current: Recorder, event: LifecycleEvent, now: float) -> Recorder | None:
        hook = self._hook(event)
        if event.transition == "terminate":
            target = S.TERMINATING
        elif current.state is S.TERMINATING:
            return None  # a launch that arrives after the termination began
        elif current.state in (S.WARM, S.LAUNCHING) or can_transition(current.state, S.LAUNCHING):
            target = S.LAUNCHING
        else:
            target = current.state  # already in service: the action is completed at once below
        # A reservation outlives the termination's start: the hook holds until its lease ends.
        changes: dict[str, Any] = {
            "hook": hook,
            "last_event_at": event.time,
            "reserved_for": current.reserved_for,
            "reserved_until": current.reserved_until,
        }
        if target is S.LAUNCHING and current.state is S.WARM:
            changes.update(created_at=min(event.time, now), launch_kind="warm")
        return transition(current, target, now, **changes)

    @staticmethod
    def _hook(event: LifecycleEvent) -> LifecycleHook:
        return LifecycleHook(
            name=event.hook_name,
            token=event.token,
            transition=event.transition,
            started_at=event.time,
            destination=event.destination,
            origin=event.origin,
        )

    # -- completing, holding ---------------------------------------------------------------------

    def settle(self, recorder: Recorder) -> Recorder:
        """Complete the recorder's open action if it may go on now; returns the recorder as stored."""
        hook = recorder.hook
        if hook is None:
            return recorder
        now = self._clock.now()
        if hook.transition == "terminate":
            if not is_free(recorder, now, self.settings.offline_confirm_seconds):
                return recorder
            return self._finish(recorder, "CONTINUE", recorder.state)
        if hook.destination == WARM_POOL:
            if recorder.state is S.LAUNCHING and prepared_for_pool(
                recorder, now, self.settings.offline_confirm_seconds
            ):
                return self._finish(recorder, "CONTINUE", S.WARM)
            return recorder
        if recorder.state in (S.IDLE, S.BUSY, S.RESERVED, S.DRAINING) or (
            recorder.state is S.UNHEALTHY and recorder.busy_status == "BUSY"
        ):
            return self._finish(recorder, "CONTINUE", recorder.state)
        return recorder

    def tick(self) -> list[str]:
        """On every evaluator run: settle, hold busy terminations, abandon launches that never came up."""
        done: list[str] = []
        now = self._clock.now()
        for listed in self._registry.list_all():
            if listed.hook is None or listed.state is S.TERMINATED:
                continue
            # The listing may lag a report: decide on a consistent read of this recorder.
            recorder = self._registry.get(listed.instance_id)
            if recorder is None or recorder.hook is None:
                continue
            try:
                line = self._tick_one(recorder, now)
            except Exception:
                # One failed Auto Scaling call (throttled, say) must not stop the other actions or the
                # evaluator run behind this; the action is still open and the next run tries again.
                logger.exception(
                    "lifecycle action not handled; the next run tries again",
                    extra={"instance_id": recorder.instance_id},
                )
                continue
            if line:
                done.append(line)
        return done

    def _tick_one(self, recorder: Recorder, now: float) -> str | None:
        hook = recorder.hook
        assert hook is not None
        settled = self.settle(recorder)
        if settled.hook is None:
            return f"{recorder.instance_id}: {hook.transition} action completed"
        if hook.transition == "terminate":
            return self._hold(settled, now)
        if hook.destination != WARM_POOL and now - hook.started_at > self.settings.launch_timeout_seconds:
            self._finish(settled, "ABANDON", S.UNHEALTHY if settled.state is not S.WARM else S.WARM)
            return f"{recorder.instance_id}: launch abandoned, never healthy"
        if now - (hook.heartbeat_at or hook.started_at) >= self.settings.heartbeat_timeout_seconds / 2:
            # A launch may take longer than a short heartbeat timeout: keep it open until the
            # agent reports healthy or the launch timeout decides.
            return self._keep_open(settled, now)
        return None

    def _hold(self, recorder: Recorder, now: float) -> str:
        hook = recorder.hook
        assert hook is not None
        alert = not hook.alerted and now - hook.started_at >= self.settings.alert_after_seconds
        if not self._beat(recorder, now, alerted=hook.alerted or alert):
            return f"{recorder.instance_id}: terminate action already over"
        if alert:
            left = self.settings.global_timeout_seconds - (now - hook.started_at)
            self._on_alert(
                recorder,
                f"termination held {now - hook.started_at:.0f} s; {left:.0f} s before "
                "Auto Scaling terminates it anyway (global timeout)",
            )
        return f"{recorder.instance_id}: termination held (busy, reserved or uploading)"

    def _keep_open(self, recorder: Recorder, now: float) -> str:
        if not self._beat(recorder, now, alerted=False):
            return f"{recorder.instance_id}: launch action already over"
        return f"{recorder.instance_id}: launch action kept open"

    def _beat(self, recorder: Recorder, now: float, alerted: bool) -> bool:
        """Heartbeat the open action; False (and the hook forgotten) when Auto Scaling already closed it."""
        hook = recorder.hook
        assert hook is not None
        try:
            self._autoscaling.record_lifecycle_action_heartbeat(hook.name, hook.token, recorder.instance_id)
        except LifecycleActionGone:
            self._save_hook(recorder, None, recorder.state)
            return False
        self._save_hook(recorder, dataclasses.replace(hook, heartbeat_at=now, alerted=alerted), recorder.state)
        return True

    def _finish(self, recorder: Recorder, result: str, state: RecorderState) -> Recorder:
        hook = recorder.hook
        assert hook is not None
        self._complete(hook.name, hook.token, recorder.instance_id, result)
        return self._save_hook(recorder, None, state)

    def _complete(self, hook_name: str, token: str, instance_id: str, result: str) -> None:
        # A gone action was completed before (a duplicate) or timed out: nothing is waiting.
        with contextlib.suppress(LifecycleActionGone):
            self._autoscaling.complete_lifecycle_action(hook_name, token, instance_id, result)

    def _save_hook(self, recorder: Recorder, hook: LifecycleHook | None, state: RecorderState) -> Recorder:
        current = recorder
        for _ in range(_MAX_ATTEMPTS):
            updated = transition(
                current, state if can_transition(current.state, state) else current.state, self._clock.now(), hook=hook
            )
            result = self._registry.save(current, updated)
            if isinstance(result, Written):
                return result.recorder
            assert isinstance(result, LostRace)
            if (
                result.current is None
                or result.current.hook is None
                or result.current.hook.token != (recorder.hook.token if recorder.hook else None)
            ):
                return result.current or recorder
            current = result.current
        raise RuntimeError(f"recorder {recorder.instance_id} kept changing while its lifecycle action was saved")


def handle_lifecycle_event(service: LifecycleService, raw: Mapping[str, Any]) -> str:
    """The Lambda's whole job: parse, apply, say what happened. Malformed events are not retried."""
    try:
        event = parse_lifecycle_event(raw)
    except BadEvent as error:
        return f"ignored: {error}"
    if event is None:
        return "ignored: test notification"
    return f"{event.instance_id}: {service.handle(event)}"
