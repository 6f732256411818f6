"""The agent's status report: parsing, the state it leads to, and applying it."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.autoscaling import AutoScaling
from chalicelib.clock import Clock
from chalicelib.control import ControlStore
from chalicelib.demand import DemandStore
from chalicelib.errors import BadRequest, Forbidden, Gone
from chalicelib.observability import logger
from chalicelib.registry import LostRace, Recorder, Registry, transition
from chalicelib.states import HOLDS_INSTANCE, RecorderState

S = RecorderState
BUSY_STATUSES = ("IDLE", "BUSY", "EXPIRED", "OFFLINE")
HEALTH_STATUSES = ("HEALTHY", "UNHEALTHY")
_FIELDS = {
    "busy_status",
    "health",
    "pending_uploads",
    "sent_at",
    "jibri",
    "target_lifecycle_state",
    "private_ip",
    "disk_free_bytes",
    "failed_uploads",
}
MAX_DISK_BYTES = 1 << 60
_LIFECYCLE_STATE = re.compile(r"^[A-Za-z]+(:[A-Za-z]+)*$")
# A report stamped further ahead than this would shadow every later one.
MAX_CLOCK_SKEW_SECONDS = 300
_MAX_SAVE_ATTEMPTS = 8


@dataclass(frozen=True)
class StatusReport:
    busy_status: str
    health: str
    pending_uploads: int
    sent_at: float
    jibri: dict[str, Any] | None = None
    target_lifecycle_state: str | None = None  # instance metadata's autoscaling/target-lifecycle-state
    private_ip: str | None = None  # instance metadata's local-ipv4: where Jibri can be reached
    disk_free_bytes: int | None = None  # free space where recordings are written
    failed_uploads: int = 0  # of pending_uploads, sessions refused by the control plane (kept on disk)


@dataclass(frozen=True)
class StatusReply:
    protect: bool
    drain: bool
    state: str
    applied: bool
    stop_recording: bool = False

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"protect": self.protect, "drain": self.drain, "state": self.state}
        if self.stop_recording:
            body["stop_recording"] = True
        return body


def parse_report(body: Any, now: float) -> StatusReport:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with busy_status, health, pending_uploads and sent_at")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_FIELDS))}")
    busy_status = _one_of(body, "busy_status", BUSY_STATUSES)
    health = _one_of(body, "health", HEALTH_STATUSES)
    pending = body.get("pending_uploads")
    if isinstance(pending, bool) or not isinstance(pending, int) or not 0 <= pending <= 10_000:
        raise BadRequest("pending_uploads must be a whole number from 0 to 10000")
    sent_at = _timestamp(body.get("sent_at"))
    if sent_at > now + MAX_CLOCK_SKEW_SECONDS:
        raise BadRequest(
            f"sent_at is more than {MAX_CLOCK_SKEW_SECONDS} s ahead of the control plane's clock;"
            " check the instance's time sync"
        )
    jibri = body.get("jibri")
    if jibri is not None and not isinstance(jibri, dict):
        raise BadRequest("jibri must be the JSON object of Jibri's health endpoint, or null")
    lifecycle = body.get("target_lifecycle_state")
    if lifecycle is not None and (
        not isinstance(lifecycle, str) or len(lifecycle) > 64 or not _LIFECYCLE_STATE.match(lifecycle)
    ):
        raise BadRequest("target_lifecycle_state must be Auto Scaling's state name, e.g. InService or Warmed:Stopped")
    private_ip = body.get("private_ip")
    if private_ip is not None:
        try:
            if not isinstance(private_ip, str):
                raise ValueError(private_ip)
            private_ip = str(ipaddress.ip_address(private_ip))
        except ValueError:
            raise BadRequest("private_ip must be an IPv4 or IPv6 address") from None
    disk = body.get("disk_free_bytes")
    if disk is not None and (isinstance(disk, bool) or not isinstance(disk, int) or not 0 <= disk <= MAX_DISK_BYTES):
        raise BadRequest("disk_free_bytes must be a whole number of bytes, 0 or more")
    failed = body.get("failed_uploads", 0)
    if isinstance(failed, bool) or not isinstance(failed, int) or not 0 <= failed <= pending:
        raise BadRequest("failed_uploads must be a whole number from 0 to pending_uploads")
    return StatusReport(
        busy_status=busy_status,
        health=health,
        pending_uploads=pending,
        sent_at=sent_at,
        jibri=jibri,
        target_lifecycle_state=lifecycle,
        private_ip=private_ip,
        disk_free_bytes=disk,
        failed_uploads=failed,
    )


def _one_of(body: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = body.get(name)
    if value not in allowed:
        shown = "missing" if value is None else repr(value)
        raise BadRequest(f"{name} is {shown}; expected one of {', '.join(allowed)}")
    return str(value)


def _timestamp(value: Any) -> float:
    expects = "an ISO-8601 time with a zone, e.g. 2026-01-31T12:00:00Z"
    if not isinstance(value, str) or len(value) > 40:
        raise BadRequest(f"sent_at must be {expects}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadRequest(f"sent_at {value!r} is not {expects}") from None
    if parsed.tzinfo is None:
        raise BadRequest(f"sent_at {value!r} has no zone; expected {expects}")
    stamp = parsed.timestamp()
    if not math.isfinite(stamp):
        raise BadRequest(f"sent_at must be {expects}")
    return stamp


def next_state(current: RecorderState, report: StatusReport) -> RecorderState:
    """Where a report moves a recorder. States owned by other flows are left alone."""
    if current in (S.WARM, S.DRAINING, S.TERMINATING, S.TERMINATED):
        # Draining ends by termination or by the evaluator withdrawing it, never by a report;
        # a busy draining recorder stays draining and is held by its busy_status.
        return current
    if report.busy_status == "BUSY":
        return S.BUSY
    if report.busy_status == "IDLE" and report.health == "HEALTHY":
        # A reservation ends with its lease or a BUSY report, not with IDLE.
        return S.RESERVED if current is S.RESERVED else S.IDLE
    if current is S.LAUNCHING and report.busy_status == "OFFLINE":
        return S.LAUNCHING  # Jibri is still starting
    return S.UNHEALTHY


def must_protect(recorder: Recorder) -> bool:
    return recorder.state in HOLDS_INSTANCE or recorder.busy_status == "BUSY" or recorder.pending_uploads > 0


def must_drain(recorder: Recorder) -> bool:
    return recorder.state in (S.DRAINING, S.TERMINATING)


def reply_for(recorder: Recorder, applied: bool) -> StatusReply:
    return StatusReply(
        protect=must_protect(recorder),
        drain=must_drain(recorder),
        state=recorder.state.value,
        applied=applied,
        stop_recording=recorder.stop_recording,
    )


class EvaluateOnBusy:
    """Asks for capacity the moment a recording takes an idle recorder, instead of at the next scheduled run.

    Called after a report moved a recorder to busy. It evaluates the pool at once when fewer
    idle recorders are left than the buffer target of the last decision (or when there is no
    decision yet). Checking costs two reads (the latest decision, the idle recorders); a run
    costs a lease, an Auto Scaling describe and a dozen or more reads and writes, so a pool with
    idle recorders to spare pays only the check. The target is the last run's: where this very
    arrival raises it, the next scheduled run catches up. Runs that overlap fold into one
    through the evaluator's lease. True when it evaluated.
    """

    def __init__(self, registry: Registry, control: ControlStore, evaluate: Callable[[], object]) -> None:
        self._registry = registry
        self._control = control
        self._evaluate = evaluate

    def __call__(self, recorder: Recorder) -> bool:
        latest = self._control.latest_decisions(1)
        if latest and len(self._registry.list_by_state(S.IDLE)) >= latest[0].buffer_target:
            return False
        self._evaluate()
        return True


class StatusService:
    def __init__(
        self,
        registry: Registry,
        autoscaling: AutoScaling,
        clock: Clock,
        on_transition: Callable[[Recorder | None, Recorder], None] | None = None,
        demand: DemandStore | None = None,
        count_busy_as_arrivals: bool = True,
        settle: Callable[[Recorder], Recorder] | None = None,
        on_idle: Callable[[Recorder], object] | None = None,
        on_busy: Callable[[Recorder | None, Recorder], bool] | None = None,
        on_started: Callable[[Recorder], object] | None = None,
        on_started_error: Callable[[Exception], None] | None = None,
        on_reservation_lost: Callable[[Recorder], object] | None = None,
    ) -> None:
        self._on_reservation_lost = on_reservation_lost
        # Runs after a report moved a recorder to busy (e.g. `EvaluateOnBusy`). Its failure is
        # logged and passed to on_started_error; the report is stored and answered all the same.
        self._on_started = on_started
        self._on_started_error = on_started_error or (lambda error: None)
        # Hand a recorder that came free to the oldest waiting request, and let a recording
        # that starts consume the request it serves (see assignment.py).
        self._on_idle = on_idle
        self._on_busy = on_busy
        # Completes the recorder's open lifecycle action when the report frees it (see lifecycle.py).
        self._settle = settle or (lambda recorder: recorder)
        self._registry = registry
        self._autoscaling = autoscaling
        self._clock = clock
        self._on_transition = on_transition or (lambda before, after: None)
        self._demand = demand
        # Until requests come through the request endpoint, every recording Jicofo
        # starts is an arrival; where requests are counted on arrival, pass False.
        self._count_busy_as_arrivals = count_busy_as_arrivals

    def apply(self, instance_id: str, report: StatusReport) -> StatusReply:
        checked_membership = False
        for _ in range(_MAX_SAVE_ATTEMPTS):
            now = self._clock.now()
            current = self._registry.get(instance_id)
            if current is None:
                if not checked_membership:
                    if not self._autoscaling.is_member(instance_id):
                        raise Forbidden(
                            f"instance {instance_id} is not in Auto Scaling group {self._autoscaling.group_name}"
                        )
                    checked_membership = True
                result = self._registry.create(self._new_recorder(instance_id, report, now))
                if isinstance(result, LostRace):
                    continue
                self._changed(None, result.recorder, now)
                return reply_for(self._after(result.recorder, became_idle=True), applied=True)
            if current.state is S.TERMINATED:
                raise Gone(f"instance {instance_id} was terminated; its reports are no longer accepted")
            if current.last_report_sent_at is not None and report.sent_at <= current.last_report_sent_at:
                return reply_for(current, applied=False)
            target = next_state(current.state, report)
            if current.hook is not None and current.hook.destination == "WarmPool" and current.state is S.LAUNCHING:
                target = S.LAUNCHING  # on its way into the warm pool, never into service
            fields = _fields(report, now)
            if report.busy_status == "OFFLINE" and current.busy_status == "OFFLINE":
                fields["offline_since"] = current.offline_since or now
            updated = transition(current, target, now, **fields)
            result = self._registry.save(current, updated)
            if isinstance(result, LostRace):
                continue
            if updated.state is not current.state:
                self._changed(current, result.recorder, now)
            lost = current.state is S.RESERVED and result.recorder.state not in (S.RESERVED, S.BUSY)
            if lost and self._on_reservation_lost is not None:
                self._on_reservation_lost(current)
            became_idle = current.state is not S.IDLE
            recorder = self._after(result.recorder, became_idle)
            if result.recorder.state is S.BUSY and current.state is not S.BUSY:
                self._started(recorder)
            return reply_for(recorder, applied=True)
        raise RuntimeError(f"recorder {instance_id} kept changing during {_MAX_SAVE_ATTEMPTS} attempts")

    def _after(self, recorder: Recorder, became_idle: bool) -> Recorder:
        """The recorder once its lifecycle action is settled and, if it just came free, the queue served."""
        if recorder.hook is not None:
            try:
                recorder = self._settle(recorder)
            except Exception:
                # The report is stored; the open action is settled by the next evaluator run. A 500
                # here would only make the agent send the same report again.
                logger.exception(
                    "lifecycle action not settled; the next run does it", extra={"instance_id": recorder.instance_id}
                )
        if became_idle and recorder.state is S.IDLE and self._on_idle is not None:
            self._on_idle(recorder)
            recorder = self._registry.get(recorder.instance_id) or recorder
        return recorder

    def _started(self, recorder: Recorder) -> None:
        if self._on_started is None:
            return
        try:
            self._on_started(recorder)
        except Exception as error:
            # The scheduled run asks for the capacity a minute later at worst; a 500 would only
            # make the agent send a report that is already stored.
            logger.exception("evaluation after a busy report failed", extra={"instance_id": recorder.instance_id})
            self._on_started_error(error)

    def _changed(self, before: Recorder | None, after: Recorder, now: float) -> None:
        self._on_transition(before, after)
        if self._demand is not None and before is not None and before.state is S.LAUNCHING and after.state is S.IDLE:
            self._demand.record_lead_time(before.launch_kind or "cold", now - before.created_at, now)
        started = after.busy_status == "BUSY" and (before is None or before.busy_status != "BUSY")
        served_a_request = started and self._on_busy is not None and self._on_busy(before, after)
        if started and self._count_busy_as_arrivals and not served_a_request and self._demand is not None:
            self._demand.record_arrival(now)

    def _new_recorder(self, instance_id: str, report: StatusReport, now: float) -> Recorder:
        return Recorder(
            pool=self._registry.pool,
            instance_id=instance_id,
            state=next_state(S.LAUNCHING, report),
            created_at=now,
            updated_at=now,
            state_changed_at=now,
            **_fields(report, now),
        )


def _fields(report: StatusReport, now: float) -> dict[str, Any]:
    return {
        "last_heartbeat_at": now,
        "last_report_sent_at": report.sent_at,
        "busy_status": report.busy_status,
        "health": report.health,
        "pending_uploads": report.pending_uploads,
        "failed_uploads": report.failed_uploads,
        "jibri": report.jibri,
        "target_lifecycle_state": report.target_lifecycle_state,
        "offline_since": now if report.busy_status == "OFFLINE" else None,
        **({"private_ip": report.private_ip} if report.private_ip else {}),
        **({"disk_free_bytes": report.disk_free_bytes} if report.disk_free_bytes is not None else {}),
    }
