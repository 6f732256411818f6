"""The world the stateful tests drive: the real services wired as chalicelib/runtime.py wires
them (in-memory stores or DynamoDB on moto), a faulty Auto Scaling group, and a model of each
instance's Jibri and agent that knows the truth the control plane can only learn from reports.

Invariants are judged on that truth, limited to what the control plane was told: a recording
counts as known once a report sent after it began was stored (an agent that crashed before
reporting a recording cannot be protected by anyone but itself).

Terminations are judged by who had a hand in them. One the control plane asks for, or a
terminate action it completes, is always judged. One that ends when Auto Scaling's heartbeat
timeout runs out, whoever began it (Spot, an operator, a health check, a scale-in), is judged
only if the control plane had a chance to hold it: an evaluator run during which no Auto
Scaling fault fired, after the control plane was given the action's token and after the
action's last heartbeat, at a moment the instance was known busy, reserved or uploading.
Holding is the evaluator's job (lifecycle.py: "held with heartbeats on every evaluator run");
the event handler only records the token and a status report never heartbeats. A run that
leaves such an action without a heartbeat is the control plane's fault if the action then
times out; an action that times out with no such run in its window (the machine may let two
hours pass without one, where the deployment runs the evaluator every minute) was lost by
nobody the oracle can blame. This keeps long silences in the machine (bounding the gap
between runs would stop it exploring what they do to everything else) and judges Spot and
health terminations too: the model lets any terminate hook be held (EC2 would reclaim a Spot
instance after two minutes whatever the hook says), and the control plane, which cannot tell
the cause from the event, holds every terminate action the same way.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from chalicelib.bookings import MemoryBookingStore
from chalicelib.config import Settings
from chalicelib.control import MemoryControlStore
from chalicelib.demand import MemoryDemandStore
from chalicelib.errors import ApiError
from chalicelib.lifecycle import handle_lifecycle_event
from chalicelib.memory_registry import MemoryRegistry
from chalicelib.registry import Recorder, Registry
from chalicelib.runtime import Runtime
from chalicelib.states import RecorderState
from chalicelib.status import StatusReply, StatusReport
from chalicelib.tickets import ASSIGNED, MemoryTicketStore, TicketStore
from sim.clock import ManualClock
from tests.property.faulty_aws import INJECTED, FaultyGroup

S = RecorderState
START = 1_795_482_000.0
POOL = "jibri-prop"


@dataclass
class Jibri:
    """One instance as it really is: Jibri's state, its uploads, and whether its agent runs."""

    instance_id: str
    agent_up: bool = True
    jibri: str = "idle"  # idle | busy | offline (shut down after a drain)
    in_brewery: bool = True  # Jicofo can hand it a recording
    drained: bool = False  # the agent asked Jibri to shut down gracefully
    pending: int = 0
    busy_since: float | None = None
    uploads_since: float | None = None
    in_flight: list[StatusReport] = field(default_factory=list)  # sent, not yet arrived
    last_delivered: StatusReport | None = None


def settings() -> Settings:
    return Settings(
        table_name="unused",
        asg_name=POOL,
        agent_role_name="jibri-agent",
        pool_name=POOL,
        min_idle=1,
        scale_in_hold_seconds=60,
        max_scale_in_step=2,
    )


class PoolWorld:
    def __init__(
        self,
        registry: Registry | None = None,
        tickets: TicketStore | None = None,
        minimum: int = 1,
        maximum: int = 6,
        desired: int = 2,
    ) -> None:
        self.clock = ManualClock(START)
        self.jibris: dict[str, Jibri] = {}
        self.gone: set[str] = set()
        self.violations: list[str] = []
        self.faults_fired = 0
        self.group = FaultyGroup(self.clock.now, minimum=minimum, maximum=maximum, desired=desired, group_name=POOL)
        self.group.on_launch = self._launched
        self.group.on_terminate_request = self._check_termination
        self.group.on_gone = self._gone
        self.registry = registry or MemoryRegistry(POOL)
        self.demand = MemoryDemandStore()
        self.tickets = tickets or MemoryTicketStore(on_arrival=self.demand.record_arrival)
        self.runtime = Runtime(
            settings=settings(),
            registry=self.registry,
            autoscaling=self.group,
            clock=self.clock,
            demand=self.demand,
            control=MemoryControlStore(),
            tickets=self.tickets,
            bookings=MemoryBookingStore(),
        )
        self.events: list[dict[str, Any]] = []  # every lifecycle event the group emitted
        self.delivered_ok: set[int] = set()
        # instance id -> (time, why) of the last fault-free evaluator run that left its terminate action,
        # held for a known reason, without a heartbeat: the chance the control plane had to hold it
        self.missed_holds: dict[str, tuple[float, list[str]]] = {}
        self.requests: dict[str, tuple[str, str | None]] = {}  # request id -> (room, idempotency key)
        self.keys: dict[str, tuple[str, str]] = {}  # idempotency key -> (room, request id)
        self.group.start()

    # -- truth ------------------------------------------------------------------------------------

    def _launched(self, instance_id: str) -> None:
        self.jibris[instance_id] = Jibri(instance_id)

    def _gone(self, instance_id: str, cause: str) -> None:
        if "heartbeat timeout" not in cause:
            self._check_termination(instance_id, cause)  # the control plane asked for it or released it
        else:
            # Judged only if the control plane had a chance to hold it since its last heartbeat (see above).
            missed = self.missed_holds.get(instance_id)
            instance = self.group.instances.get(instance_id)
            if missed is not None and instance is not None and missed[0] > instance.action_heartbeat:
                at, why = missed
                chance = f"the evaluator run at +{at - START:.3f} s did not hold it (known then: {', '.join(why)})"
                self._check_termination(instance_id, f"{cause}; {chance}")
        self.missed_holds.pop(instance_id, None)
        self.jibris.pop(instance_id, None)
        self.gone.add(instance_id)

    def _holds(self, instance_id: str) -> list[str]:
        """What the control plane was told that holds this instance now: a live reservation, a
        recording or uploads that a stored report (sent after they began) shows."""
        jibri = self.jibris.get(instance_id)
        recorder = self.registry.get(instance_id)
        if recorder is None or jibri is None:
            return []
        why = []
        told = recorder.last_report_sent_at if recorder.last_report_sent_at is not None else float("-inf")
        # A reservation holds its recorder for its lease (DESIGN: "held for a ticket for a bounded lease");
        # one whose lease ran out while no evaluator ran to release it holds nothing.
        if recorder.reserved_for and (recorder.reserved_until or 0) > self.clock.now():
            why.append("reserved")
        if jibri.busy_since is not None and told >= jibri.busy_since:
            why.append("recording")
        if jibri.uploads_since is not None and told >= jibri.uploads_since:
            why.append(f"{jibri.pending} upload(s) in flight")
        return why

    def _check_termination(self, instance_id: str, cause: str) -> None:
        why = self._holds(instance_id)
        if why:
            recorder = self.registry.get(instance_id)
            self.violations.append(f"{instance_id} terminated while {', '.join(why)} ({cause}): {recorder}")

    def _has_token(self, instance_id: str, token: str) -> bool:
        """The control plane was given this action: its event was handled, or its token is stored."""
        recorder = self.registry.get(instance_id)
        if recorder is not None and recorder.hook is not None and recorder.hook.token == token:
            return True
        return any(self.events[i]["detail"]["LifecycleActionToken"] == token for i in self.delivered_ok)

    def _note_missed_holds(self) -> None:
        """After a fault-free evaluator run: every terminate action it could and should have held
        (token given, instance known busy, reserved or uploading) that it did not heartbeat."""
        now = self.clock.now()
        for instance in self.group.instances.values():
            token = instance.action_token
            if token is None or instance.action_transition != "terminate" or instance.action_heartbeat >= now:
                continue  # no action, or its timeout starts afresh now: this run cost it nothing
            why = self._holds(instance.instance_id)
            if why and self._has_token(instance.instance_id, token):
                self.missed_holds[instance.instance_id] = (now, why)

    # -- what happens on an instance --------------------------------------------------------------

    def start_recording(self, instance_id: str) -> bool:
        """Jicofo hands the recording to an idle Jibri in the brewery; the agent protects first."""
        jibri = self.jibris.get(instance_id)
        if jibri is None or jibri.jibri != "idle" or not jibri.in_brewery:
            return False
        # After any report of the same instant: such a report could not have seen the recording.
        jibri.jibri, jibri.busy_since = "busy", self.clock.advance(0.001)
        if jibri.agent_up:
            self.group.protect([instance_id], True)
        return True

    def end_recording(self, instance_id: str) -> bool:
        jibri = self.jibris.get(instance_id)
        if jibri is None or jibri.jibri != "busy":
            return False
        jibri.jibri = "offline" if jibri.drained else "idle"
        jibri.busy_since = None
        if jibri.pending == 0:
            jibri.uploads_since = self.clock.advance(0.001)
        jibri.pending += 1  # the finalize script spools the session for upload
        return True

    def upload_done(self, instance_id: str) -> bool:
        jibri = self.jibris.get(instance_id)
        if jibri is None or jibri.pending == 0:
            return False
        jibri.pending -= 1
        if jibri.pending == 0:
            jibri.uploads_since = None
        return True

    def report(self, instance_id: str, hold: bool = False) -> StatusReply | None:
        """The agent reports what it sees; a held report arrives later (a slow network)."""
        jibri = self.jibris.get(instance_id)
        if jibri is None or not jibri.agent_up:
            return None
        busy = {"idle": "IDLE", "busy": "BUSY", "offline": "OFFLINE"}[jibri.jibri]
        report = StatusReport(
            busy_status=busy,
            health="UNHEALTHY" if busy == "OFFLINE" else "HEALTHY",
            pending_uploads=jibri.pending,
            sent_at=self.clock.now(),
            target_lifecycle_state="InService",
        )
        if hold:
            jibri.in_flight.append(report)
            return None
        return self.deliver(instance_id, report)

    def deliver(self, instance_id: str, report: StatusReport, obey: bool = True) -> StatusReply | None:
        try:
            reply = self.runtime.status_service().apply(instance_id, report)
        except ApiError:
            return None  # 403 not a member / 410 gone: the agent logs it
        except INJECTED:
            self.faults_fired += 1
            return None  # a 500: the agent reports again on its next interval
        jibri = self.jibris.get(instance_id)
        if jibri is not None:
            jibri.last_delivered = report
            if jibri.agent_up and obey:
                self._obey(jibri, reply)
        return reply

    def _obey(self, jibri: Jibri, reply: StatusReply) -> None:
        self.group.protect([jibri.instance_id], reply.protect or jibri.jibri == "busy" or jibri.pending > 0)
        if reply.drain and not jibri.drained:
            jibri.drained, jibri.in_brewery = True, False
            if jibri.jibri == "idle":
                jibri.jibri = "offline"
        elif not reply.drain and jibri.drained:  # the drain was withdrawn: back into service
            jibri.drained, jibri.in_brewery = False, True
            if jibri.jibri == "offline":
                jibri.jibri = "idle"

    # -- the control plane's other inputs -----------------------------------------------------------

    def tick(self) -> None:
        fired = self.group.fired
        try:
            self.runtime.evaluator().run("schedule")
        except INJECTED:
            self.faults_fired += 1  # the Lambda fails; the next scheduled run starts afresh
        if self.group.fired == fired:
            self._note_missed_holds()
        self.collect_events()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.group.expire_actions()
        self.collect_events()

    def deliver_event(self, index: int) -> str | None:
        event = copy.deepcopy(self.events[index])
        try:
            outcome = handle_lifecycle_event(self.runtime.lifecycle(), event)
        except INJECTED:
            self.faults_fired += 1
            return None  # EventBridge retries the invocation: the same event again
        self.delivered_ok.add(index)
        self.collect_events()
        return outcome

    def request(self, room: str, key: str | None) -> tuple[int, dict[str, Any]]:
        status, reply = self.runtime.assignment().create({"room": room, "kind": "recording"}, key)
        self.collect_events()
        return status, reply

    def cancel(self, request_id: str) -> dict[str, Any]:
        return self.runtime.assignment().cancel(request_id)

    def collect_events(self) -> None:
        self.events.extend(self.group.outbox)
        self.group.outbox.clear()

    # -- what the invariants read -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Recorder]:
        return {r.instance_id: r for r in self.registry.list_all()}

    def group_snapshot(self) -> Any:
        return (self.group.desired, {k: dataclasses.astuple(v) for k, v in self.group.instances.items()})

    def check(self) -> list[str]:
        problems = list(self.violations) + list(self.group.violations)
        size = self.group
        if not size.minimum <= size.desired <= size.maximum:
            problems.append(f"desired {size.desired} outside [{size.minimum}, {size.maximum}]")
        assigned = self.tickets.list_status(ASSIGNED)
        holders: dict[str, str] = {}
        for ticket in assigned:
            if ticket.instance_id is None:
                problems.append(f"assigned ticket {ticket.request_id} names no recorder")
                continue
            if ticket.instance_id in holders:
                problems.append(
                    f"{ticket.instance_id} assigned to {holders[ticket.instance_id]} and {ticket.request_id}"
                )
            holders[ticket.instance_id] = ticket.request_id
            recorder = self.registry.get(ticket.instance_id)
            if recorder is not None and recorder.state is S.RESERVED and recorder.reserved_for != ticket.request_id:
                problems.append(
                    f"{ticket.instance_id} reserved for {recorder.reserved_for}, assigned to {ticket.request_id}"
                )
        for recorder in self.registry.list_by_state(S.RESERVED):
            if recorder.reserved_for is None or recorder.reserved_until is None:
                problems.append(f"{recorder.instance_id} reserved for nobody or without a lease")
        return problems
