"""The reconciler: on every evaluator run, repair what drifted between the registry and the group.

- Launches that never reported: a recorder `launching` without an open launch action
  (the evaluator saw the instance before any hook did) longer than the launch timeout
  is marked unhealthy in Auto Scaling, so the group replaces it.
- Silent agents: a recorder whose heartbeat is stale becomes `unhealthy` and is
  reported unhealthy to Auto Scaling, unless it was last known busy or holding
  uploads; then only once it has been silent for `lost_after_seconds` (it counts as lost).
- Protection drift: a recorder that must be protected but is not gets protection;
  one that has been idle for `protection_idle_seconds` but is protected (whoever set
  it) loses it. The agent protects before it reports BUSY, so an agent that just
  went busy sets it again at once; and the control plane never lets the group pick
  a victim, so the gap is not an opening for scale-in.
- A recording longer than `max_recording_seconds` raises an alert.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chalicelib.autoscaling import AutoScaling, GroupState
from chalicelib.observability import logger
from chalicelib.registry import Recorder, Registry, Written, transition
from chalicelib.states import HEARTBEAT_STATES, RecorderState, can_transition
from chalicelib.status import must_protect

S = RecorderState


@dataclass(frozen=True)
class ReconcilerSettings:
    launch_timeout_seconds: float = 900.0
    stale_after_seconds: float = 90.0
    lost_after_seconds: float = 900.0
    protection_idle_seconds: float = 600.0
    max_recording_seconds: float = 6 * 3600.0
    replace_expired: bool = False  # EXPIRED (single-use Jibri): replace the instance instead of restarting Jibri


class Reconciler:
    def __init__(
        self,
        registry: Registry,
        autoscaling: AutoScaling,
        settings: ReconcilerSettings,
        on_alert: Callable[[Recorder, str], None] | None = None,
        on_reservation_lost: Callable[[Recorder], object] | None = None,
    ) -> None:
        self._on_reservation_lost = on_reservation_lost or (lambda recorder: None)
        self._registry = registry
        self._autoscaling = autoscaling
        self.settings = settings
        self._on_alert = on_alert or (lambda recorder, message: None)

    def run(self, group: GroupState, recorders: dict[str, Recorder], now: float, replace: bool = True) -> list[str]:
        """Repair drift; with `replace` False (scale-in paused) no instance is marked unhealthy."""
        done: list[str] = []
        instances = {i.instance_id: i for i in group.instances}
        protect: list[str] = []
        unprotect: list[str] = []
        for recorder in list(recorders.values()):
            instance = instances.get(recorder.instance_id)
            if instance is None or (instance.lifecycle_state != "InService" and recorder.state is not S.LAUNCHING):
                continue
            replaced = self._replace_if_broken(recorder, now, done) if replace else None
            if replaced is not None:
                recorders[recorder.instance_id] = replaced
                continue
            if must_protect(recorder) and not instance.protected:
                protect.append(recorder.instance_id)
            elif (
                instance.protected
                and not must_protect(recorder)
                and recorder.state is S.IDLE
                and recorder.busy_status == "IDLE"
                and now - recorder.state_changed_at >= self.settings.protection_idle_seconds
            ):
                unprotect.append(recorder.instance_id)
            if (
                recorder.busy_status == "BUSY"
                and recorder.state is S.BUSY
                and (now - recorder.state_changed_at > self.settings.max_recording_seconds)
            ):
                self._on_alert(recorder, f"recording for {(now - recorder.state_changed_at) / 3600:.1f} h")
        # Drift is repaired on every run: a failed call (throttled, say) is left to the next one rather
        # than failing this run, whose scale-out must not wait for protection flags.
        if protect and self._protect(protect, True):
            done.append(f"protected {', '.join(protect)}: busy, reserved or uploading but unprotected")
        if unprotect and self._protect(unprotect, False):
            done.append(f"unprotected {', '.join(unprotect)}: idle for long but protected")
        return done

    def _protect(self, instance_ids: list[str], protected: bool) -> bool:
        try:
            self._autoscaling.set_instance_protection(instance_ids, protected)
        except Exception:
            logger.exception("protection not changed; the next run tries again", extra={"instance_ids": instance_ids})
            return False
        return True

    def _replace_if_broken(self, recorder: Recorder, now: float, done: list[str]) -> Recorder | None:
        settings = self.settings
        silent = now - (recorder.last_heartbeat_at or recorder.created_at)
        why = ""
        if recorder.state is S.LAUNCHING and recorder.hook is None and silent > settings.launch_timeout_seconds:
            why = f"never reported healthy in {silent:.0f} s"
        elif recorder.state in HEARTBEAT_STATES or recorder.state is S.UNHEALTHY:
            holding = recorder.busy_status == "BUSY" or recorder.pending_uploads > 0 or recorder.state is S.RESERVED
            limit = settings.lost_after_seconds if holding else settings.stale_after_seconds
            if silent > limit:
                why = f"silent for {silent:.0f} s" + (" while busy or uploading: lost" if holding else "")
            elif settings.replace_expired and recorder.busy_status == "EXPIRED" and recorder.pending_uploads == 0:
                why = "Jibri expired (single use)"
        if not why or recorder.state is S.TERMINATING or recorder.replace_requested_at is not None:
            return None
        target = S.UNHEALTHY if can_transition(recorder.state, S.UNHEALTHY) else recorder.state
        result = self._registry.save(recorder, transition(recorder, target, now, replace_requested_at=now))
        if not isinstance(result, Written):
            return None  # it reported meanwhile: alive after all
        if recorder.state is S.RESERVED and target is not S.RESERVED:
            self._on_reservation_lost(recorder)
        try:
            self._autoscaling.set_instance_health(recorder.instance_id, healthy=False)
        except Exception:
            # Forget the request so that the next run tries again; this run goes on (its scale-out
            # must not wait for the replacement).
            logger.exception(
                "replacement not requested; the next run tries again", extra={"instance_id": recorder.instance_id}
            )
            self._registry.save(
                result.recorder, transition(result.recorder, result.recorder.state, now, replace_requested_at=None)
            )
            return None
        done.append(f"{recorder.instance_id}: replaced, {why}")
        return result.recorder
