"""The demo's Auto Scaling group: the what-if simulator's group, run on a clock, behind the Auto Scaling port.

moto's Auto Scaling has no lifecycle engine (instances are InService at once, lifecycle
calls are not implemented), so the demo's group is `sim.whatif.group.SimulatedGroup`
(launch delays, warm pool, lifecycle hooks and their timeouts, the default termination
policy, billing) driven by a discrete-event engine that is advanced to the clock's time
before every call. `LiveGroup` is what the control plane's `Runtime(autoscaling=...)`
gets; `GroupApi` answers the two Auto Scaling calls the agent makes
(DescribeAutoScalingInstances, SetInstanceProtection) over HTTP on loopback, so each
agent's protection lands in the same group that picks scale-in victims.

What the group does to machines is told to `on_notice` while the group's lock is held:
keep that callback short (queue the work, check an invariant), never call back in.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from chalicelib.autoscaling import GroupSize, GroupState
from chalicelib.clock import Clock
from chalicelib.lifecycle import LifecycleEvent
from sim.net import LoopbackServer
from sim.whatif.engine import Engine
from sim.whatif.group import GroupListener, LifecycleHookConfig, Segment, SimulatedGroup, billed_seconds
from sim.whatif.model import Model

LAUNCH_HOOK = "jibri-launch"
TERMINATE_HOOK = "jibri-terminate"
WARMED_STOPPED = "Warmed:Stopped"


@dataclass(frozen=True)
class Notice:
    """Something the group did to an instance: `booted` (its agent runs from now on; `into_warm_pool` when it
    is being prepared for the pool), `stopped` (parked in the warm pool), `terminated`, or `action` (a
    lifecycle action began; EventBridge delivers `event` to the control plane)."""

    kind: str
    instance_id: str
    into_warm_pool: bool = False
    event: LifecycleEvent | None = None


class _Listener(GroupListener):
    def __init__(self, notify: Callable[[Notice], None]) -> None:
        self._notify = notify

    def on_in_service(self, instance_id: str) -> None:
        self._notify(Notice("booted", instance_id))

    def on_booted_waiting(self, instance_id: str, into_warm_pool: bool) -> None:
        self._notify(Notice("booted", instance_id, into_warm_pool=into_warm_pool))

    def on_terminated(self, instance_id: str) -> None:
        self._notify(Notice("terminated", instance_id))

    def on_lifecycle_action(self, event: LifecycleEvent) -> None:
        self._notify(Notice("action", event.instance_id, event=event))


class LiveGroup:
    """chalicelib's `AutoScaling` port over the simulated group, thread-safe, in the clock's time."""

    def __init__(
        self,
        name: str,
        clock: Clock,
        model: Model,
        on_notice: Callable[[Notice], None],
        *,
        hooks: bool = True,
        hook_heartbeat_timeout_s: float = 7200.0,
    ) -> None:
        self.group_name = name
        self._clock = clock
        self._lock = threading.RLock()
        self._on_notice = on_notice
        self.epoch = clock.now()
        self._engine = Engine(0.0)
        self.model = replace(model, epoch=self.epoch)
        launch = LifecycleHookConfig(LAUNCH_HOOK, hook_heartbeat_timeout_s) if hooks else None
        terminate = LifecycleHookConfig(TERMINATE_HOOK, hook_heartbeat_timeout_s) if hooks else None
        self._group = SimulatedGroup(
            self._engine, self.model, _Listener(self._notice), launch_hook=launch, terminate_hook=terminate
        )
        self._group.group_name = name
        self._parked: set[str] = set()

    # -- the AutoScaling port ----------------------------------------------------------------------

    def is_member(self, instance_id: str) -> bool:
        with self._now():
            return self._group.is_member(instance_id)

    def group_size(self) -> GroupSize:
        with self._now():
            return self._group.group_size()

    def describe(self) -> GroupState:
        with self._now():
            return self._group.describe()

    def set_desired_capacity(self, desired: int) -> None:
        with self._now():
            self._group.set_desired_capacity(desired)

    def terminate(self, instance_id: str) -> None:
        with self._now():
            self._group.terminate(instance_id)

    def put_warm_pool(self, min_size: int) -> None:
        with self._now():
            self._group.put_warm_pool(min_size)

    def complete_lifecycle_action(self, hook_name: str, token: str, instance_id: str, result: str) -> None:
        with self._now():
            self._group.complete_lifecycle_action(hook_name, token, instance_id, result)

    def record_lifecycle_action_heartbeat(self, hook_name: str, token: str, instance_id: str) -> None:
        with self._now():
            self._group.record_lifecycle_action_heartbeat(hook_name, token, instance_id)

    def set_instance_health(self, instance_id: str, healthy: bool) -> None:
        with self._now():
            self._group.set_instance_health(instance_id, healthy)

    def set_instance_protection(self, instance_ids: list[str], protected: bool) -> None:
        with self._now():
            self._group.set_instance_protection(instance_ids, protected)

    # -- the world around it -----------------------------------------------------------------------

    def start(self, count: int) -> list[str]:
        """The group as it stands when the demo begins: `count` instances in service."""
        with self._now():
            return self._group.start(count)

    def advance(self) -> None:
        """Run the group's timers (boots, timeouts, scale-in retries) up to the clock's time."""
        with self._now():
            pass

    def lifecycle(self, instance_id: str) -> str | None:
        with self._now():
            return self._group.lifecycle(instance_id)

    def is_protected(self, instance_id: str) -> bool:
        with self._now():
            return self._group.is_protected(instance_id)

    def counts(self) -> dict[str, int]:
        """desired, in group (counting toward it), in service, pending, warm pool."""
        with self._now():
            g = self._group
            return {
                "desired": g.desired,
                "in_group": len(g.in_group()),
                "in_service": len(g.in_service()),
                "pending": len(g.pending()),
                "warm": g.warm_pool_count(),
            }

    def billing(self) -> dict[str, float]:
        """Instance-hours run and parked so far, and what they cost at the model's prices."""
        with self._now():
            now = self._engine.now()
            segments = list(self._group.segments)
            # The open segments end now in this copy only: the group keeps running.
            for instance in self._group.all_instances():
                if instance.run_started is not None:
                    segments.append(Segment(instance.instance_id, "run", instance.run_started, now))
                if instance.park_started is not None:
                    segments.append(Segment(instance.instance_id, "park", instance.park_started, now))
        run_h = billed_seconds(segments, "run", 0.0, now + 1.0) / 3600.0
        park_h = billed_seconds(segments, "park", 0.0, now + 1.0) / 3600.0
        cost = run_h * self.model.price_per_hour + park_h * self.model.warm_price_per_hour
        return {"instance_hours": run_h, "warm_pool_hours": park_h, "cost_usd": cost}

    def _now(self) -> _Advanced:
        return _Advanced(self)

    def _advance_locked(self) -> None:
        self._engine.run(max(self._engine.now(), self._clock.now() - self.epoch))
        # Parking has no listener call: find the instances that stopped in the pool since the last look.
        parked = {
            i.instance_id
            for i in self._group.all_instances()  # the group lists no pool states
            if i.lifecycle == WARMED_STOPPED
        }
        for instance_id in sorted(parked - self._parked):
            self._on_notice(Notice("stopped", instance_id))
        self._parked = parked

    def _notice(self, notice: Notice) -> None:
        self._on_notice(notice)


class _Advanced:
    """Hold the group's lock with its engine advanced to now; look for parked instances on the way out."""

    def __init__(self, group: LiveGroup) -> None:
        self._group = group

    def __enter__(self) -> None:
        self._group._lock.acquire()
        try:
            self._group._advance_locked()
        except BaseException:
            self._group._lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            self._group._advance_locked()
        finally:
            self._group._lock.release()


# -- the agent's side: Auto Scaling's query API on loopback ------------------------------------------

_XMLNS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"


class GroupApi:
    """DescribeAutoScalingInstances and SetInstanceProtection, as the agent's boto3 client calls them."""

    def __init__(self, group: LiveGroup, availability_zone: str = "us-east-1a") -> None:
        self.group = group
        self.availability_zone = availability_zone
        self.calls: list[tuple[str, str]] = []  # (action, instance id) as they came
        self._server = LoopbackServer(type("GroupApiHandler", (_GroupApiHandler,), {"api": self}))

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> GroupApi:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def answer(self, form: dict[str, list[str]]) -> tuple[int, str]:
        action = (form.get("Action") or [""])[0]
        ids = [v[0] for k, v in sorted(form.items()) if k.startswith("InstanceIds.member.")]
        for instance_id in ids:
            self.calls.append((action, instance_id))
        if action == "DescribeAutoScalingInstances":
            members = []
            for instance_id in ids:
                state = self.group.lifecycle(instance_id)
                if state is None:
                    continue
                members.append(
                    "<member>"
                    f"<InstanceId>{escape(instance_id)}</InstanceId>"
                    f"<AutoScalingGroupName>{escape(self.group.group_name)}</AutoScalingGroupName>"
                    f"<AvailabilityZone>{self.availability_zone}</AvailabilityZone>"
                    f"<LifecycleState>{escape(state)}</LifecycleState><HealthStatus>HEALTHY</HealthStatus>"
                    f"<ProtectedFromScaleIn>{str(self.group.is_protected(instance_id)).lower()}"
                    "</ProtectedFromScaleIn></member>"
                )
            result = f"<AutoScalingInstances>{''.join(members)}</AutoScalingInstances>"
            return 200, _response(action, result)
        if action == "SetInstanceProtection":
            group = (form.get("AutoScalingGroupName") or [""])[0]
            if group != self.group.group_name:
                return 400, _error("ValidationError", f"AutoScalingGroup name not found - {group}")
            protected = (form.get("ProtectedFromScaleIn") or [""])[0].lower() == "true"
            self.group.set_instance_protection(ids, protected)
            return 200, _response(action, "")
        return 400, _error("InvalidAction", f"{action or 'no action'} is not served by the simulated group")


def _response(action: str, result: str) -> str:
    return (
        f'<{action}Response xmlns="{_XMLNS}"><{action}Result>{result}</{action}Result>'
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></{action}Response>"
    )


def _error(code: str, message: str) -> str:
    return (
        f'<ErrorResponse xmlns="{_XMLNS}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )


class _GroupApiHandler(BaseHTTPRequestHandler):
    api: GroupApi

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode("utf-8") if length else "")
        status, body = self.api.answer(form)
        payload = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass
