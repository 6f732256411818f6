"""An Auto Scaling group behind the port of chalicelib/autoscaling.py that fails on demand.

It keeps what the invariants are judged on: desired capacity and its bounds, each
instance's lifecycle state and protection, lifecycle actions (emitted as EventBridge
events for the caller to deliver in any order, any number of times) and every
termination with its cause. Faults are armed per method and fire on the next call:

- ``throttle``: ``Throttling`` before anything happens (what a busy account answers),
- ``5xx``: ``ServiceUnavailable`` (HTTP 503) before anything happens,
- ``timeout``: the connection times out before the request is sent,
- ``lost_reply``: the call takes effect, then the reply is lost (a read timeout).

The group behaves as Auto Scaling does where the control plane relies on it:
SetDesiredCapacity and a decrementing termination outside [min, max] are refused
with ``ValidationError``; every termination, whoever starts it, goes through the
terminate hook when one is configured; protection does not stop a termination the
control plane asks for, nor a health replacement; the group picks an unprotected
victim itself only when desired capacity drops below the instances it has.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError

from chalicelib.autoscaling import GroupInstance, GroupSize, GroupState, LifecycleActionGone

FAULTS = ("throttle", "5xx", "timeout", "lost_reply")
INJECTED = (ClientError, ConnectTimeoutError, ReadTimeoutError)
TERMINATE_HOOK = "jibri-terminate"
LAUNCH_HOOK = "jibri-launch"


def client_error(code: str, message: str, operation: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


@dataclass
class Instance:
    instance_id: str
    lifecycle_state: str  # Pending:Wait, InService, Terminating:Wait, Terminated
    protected: bool = False
    action_token: str | None = None
    action_transition: str | None = None
    action_heartbeat: float = 0.0
    termination_cause: str | None = None


@dataclass
class FaultyGroup:
    clock: Callable[[], float]
    minimum: int = 1
    maximum: int = 8
    desired: int = 2
    terminate_hook: bool = True
    launch_hook: bool = False
    heartbeat_timeout: float = 7200.0
    group_name: str = "jibri-prop"
    instances: dict[str, Instance] = field(default_factory=dict)
    outbox: list[dict[str, Any]] = field(default_factory=list)  # lifecycle events not yet delivered
    armed: dict[str, list[str]] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    terminations: list[tuple[str, str]] = field(default_factory=list)  # (instance id, cause), when gone
    violations: list[str] = field(default_factory=list)
    # Called when the control plane asks for a termination, and when an instance is gone.
    on_terminate_request: Callable[[str, str], None] = lambda instance_id, cause: None
    on_gone: Callable[[str, str], None] = lambda instance_id, cause: None
    on_launch: Callable[[str], None] = lambda instance_id: None
    fired: int = 0  # faults that went off
    _serial: int = 0

    def start(self) -> FaultyGroup:
        self._converge()
        return self

    # -- faults -----------------------------------------------------------------------------------

    def arm(self, method: str, kind: str) -> None:
        self.armed.setdefault(method, []).append(kind)

    def _fault_before(self, method: str, operation: str) -> str | None:
        queue = self.armed.get(method)
        if not queue:
            return None
        kind = queue.pop(0)
        self.fired += 1
        if kind == "throttle":
            raise client_error("Throttling", "Rate exceeded", operation)
        if kind == "5xx":
            raise client_error("ServiceUnavailable", "Service is unavailable", operation, 503)
        if kind == "timeout":
            raise ConnectTimeoutError(endpoint_url="https://autoscaling.us-east-1.amazonaws.com")
        return kind  # lost_reply: raised after the effect

    @staticmethod
    def _fault_after(kind: str | None) -> None:
        if kind == "lost_reply":
            raise ReadTimeoutError(endpoint_url="https://autoscaling.us-east-1.amazonaws.com")

    # -- the port ---------------------------------------------------------------------------------

    def is_member(self, instance_id: str) -> bool:
        kind = self._fault_before("is_member", "DescribeAutoScalingInstances")
        self._fault_after(kind)
        instance = self.instances.get(instance_id)
        return instance is not None and instance.lifecycle_state != "Terminated"

    def group_size(self) -> GroupSize:
        kind = self._fault_before("describe", "DescribeAutoScalingGroups")
        self._fault_after(kind)
        return GroupSize(self.desired, self.minimum, self.maximum)

    def describe(self) -> GroupState:
        kind = self._fault_before("describe", "DescribeAutoScalingGroups")
        self._fault_after(kind)
        live = tuple(
            GroupInstance(i.instance_id, i.lifecycle_state, protected=i.protected)
            for i in sorted(self.instances.values(), key=lambda i: i.instance_id)
            if i.lifecycle_state != "Terminated"
        )
        return GroupState(GroupSize(self.desired, self.minimum, self.maximum), live)

    def set_desired_capacity(self, desired: int) -> None:
        kind = self._fault_before("set_desired_capacity", "SetDesiredCapacity")
        self.calls.append(("desired", desired))
        if not self.minimum <= desired <= self.maximum:
            self.violations.append(f"desired {desired} asked outside [{self.minimum}, {self.maximum}]")
            raise client_error(
                "ValidationError", f"New SetDesiredCapacity value {desired} is out of bounds", "SetDesiredCapacity"
            )
        self.desired = desired
        self._converge()
        self._fault_after(kind)

    def terminate(self, instance_id: str) -> None:
        kind = self._fault_before("terminate", "TerminateInstanceInAutoScalingGroup")
        self.calls.append(("terminate", instance_id))
        instance = self.instances.get(instance_id)
        if instance is None or instance.lifecycle_state == "Terminated":
            raise client_error(
                "ValidationError", f"Instance Id not found - {instance_id}", "TerminateInstanceInAutoScalingGroup"
            )
        if instance.lifecycle_state.startswith("Terminating"):
            self._fault_after(kind)
            return  # already on its way out: Auto Scaling accepts and changes nothing
        if self.desired - 1 < self.minimum:
            raise client_error(
                "ValidationError",
                f"Currently, desiredCapacity {self.desired} and minSize {self.minimum}; terminating would go below it",
                "TerminateInstanceInAutoScalingGroup",
            )
        self.on_terminate_request(instance_id, "control plane terminate")
        self.desired -= 1
        self._begin_termination(instance, "control plane terminate")
        self._fault_after(kind)

    def put_warm_pool(self, min_size: int) -> None:
        kind = self._fault_before("put_warm_pool", "PutWarmPool")
        self.calls.append(("warm_pool", min_size))
        self._fault_after(kind)

    def complete_lifecycle_action(self, hook_name: str, token: str, instance_id: str, result: str) -> None:
        kind = self._fault_before("complete_lifecycle_action", "CompleteLifecycleAction")
        self.calls.append(("complete", (instance_id, result)))
        instance = self.instances.get(instance_id)
        if instance is None or instance.action_token != token:
            raise LifecycleActionGone(f"No active Lifecycle Action found with token {token}")
        self._finish_action(instance, result, "completed by the control plane")
        self._fault_after(kind)

    def record_lifecycle_action_heartbeat(self, hook_name: str, token: str, instance_id: str) -> None:
        kind = self._fault_before("record_lifecycle_action_heartbeat", "RecordLifecycleActionHeartbeat")
        self.calls.append(("heartbeat", instance_id))
        instance = self.instances.get(instance_id)
        if instance is None or instance.action_token != token:
            raise LifecycleActionGone(f"No active Lifecycle Action found with token {token}")
        instance.action_heartbeat = self.clock()
        self._fault_after(kind)

    def set_instance_health(self, instance_id: str, healthy: bool) -> None:
        kind = self._fault_before("set_instance_health", "SetInstanceHealth")
        self.calls.append(("health", (instance_id, healthy)))
        instance = self.instances.get(instance_id)
        if not healthy and instance is not None and instance.lifecycle_state == "InService":
            self._begin_termination(instance, "health replacement")
        self._fault_after(kind)

    def set_instance_protection(self, instance_ids: list[str], protected: bool) -> None:
        kind = self._fault_before("set_instance_protection", "SetInstanceProtection")
        if len(instance_ids) > 50:
            raise client_error("ValidationError", "at most 50 instance ids", "SetInstanceProtection")
        self.calls.append(("protect", (tuple(instance_ids), protected)))
        self.protect(instance_ids, protected)
        self._fault_after(kind)

    # -- what the group does on its own ------------------------------------------------------------

    def protect(self, instance_ids: list[str], protected: bool) -> None:
        """Protection as anyone may set it: the agent on its own instance, or a stranger."""
        for instance_id in instance_ids:
            instance = self.instances.get(instance_id)
            if instance is not None and instance.lifecycle_state != "Terminated":
                instance.protected = protected

    def begin_external_termination(self, instance_id: str, cause: str) -> None:
        """A termination the control plane did not ask for: Spot, an operator, a health check."""
        instance = self.instances.get(instance_id)
        if instance is not None and instance.lifecycle_state == "InService":
            self._begin_termination(instance, cause)

    def expire_actions(self) -> None:
        """Lifecycle actions not heartbeated within the heartbeat timeout end with ABANDON."""
        now = self.clock()
        for instance in list(self.instances.values()):
            if instance.action_token is not None and now - instance.action_heartbeat > self.heartbeat_timeout:
                self._finish_action(instance, "ABANDON", "heartbeat timeout")

    def live(self) -> list[Instance]:
        return [i for i in self.instances.values() if not i.lifecycle_state.startswith("Terminat")]

    def _converge(self) -> None:
        live = self.live()
        while len(live) < self.desired:
            live.append(self._launch())
        surplus = len(live) - self.desired
        for instance in sorted(live, key=lambda i: i.instance_id, reverse=True):
            if surplus <= 0:
                break
            if not instance.protected and instance.lifecycle_state == "InService":
                self._begin_termination(instance, "group scale-in")
                surplus -= 1

    def _launch(self) -> Instance:
        self._serial += 1
        instance_id = f"i-{self._serial:017x}"
        instance = Instance(instance_id, "Pending:Wait" if self.launch_hook else "InService")
        self.instances[instance_id] = instance
        if self.launch_hook:
            self._open_action(instance, "launch")
        self.on_launch(instance_id)
        return instance

    def _begin_termination(self, instance: Instance, cause: str) -> None:
        instance.termination_cause = cause
        if self.terminate_hook:
            instance.lifecycle_state = "Terminating:Wait"
            self._open_action(instance, "terminate")
        else:
            self._gone(instance, cause)

    def _open_action(self, instance: Instance, transition: str) -> None:
        instance.action_token = str(uuid.uuid4())
        instance.action_transition = transition
        instance.action_heartbeat = self.clock()
        self.outbox.append(self._event(instance, transition))

    def _finish_action(self, instance: Instance, result: str, how: str) -> None:
        transition = instance.action_transition
        instance.action_token = instance.action_transition = None
        if transition == "launch" and result == "CONTINUE":
            instance.lifecycle_state = "InService"
            return
        if transition == "launch":  # ABANDON: terminated and replaced
            self._gone(instance, f"launch abandoned ({how})")
            self._converge()
            return
        self._gone(instance, f"{instance.termination_cause}, action {result} {how}")
        self._converge()

    def _gone(self, instance: Instance, cause: str) -> None:
        instance.lifecycle_state = "Terminated"
        instance.protected = False
        self.terminations.append((instance.instance_id, cause))
        self.on_gone(instance.instance_id, cause)

    def _event(self, instance: Instance, transition: str) -> dict[str, Any]:
        at = datetime.fromtimestamp(self.clock(), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # EventBridge: whole seconds
        terminate = transition == "terminate"
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": f"EC2 Instance-{'terminate' if terminate else 'launch'} Lifecycle Action",
            "source": "aws.autoscaling",
            "account": "123456789012",
            "time": at,
            "region": "us-east-1",
            "resources": [],
            "detail": {
                "LifecycleActionToken": instance.action_token,
                "AutoScalingGroupName": self.group_name,
                "LifecycleHookName": TERMINATE_HOOK if terminate else LAUNCH_HOOK,
                "EC2InstanceId": instance.instance_id,
                "LifecycleTransition": f"autoscaling:EC2_INSTANCE_{'TERMINATING' if terminate else 'LAUNCHING'}",
                "Origin": "AutoScalingGroup" if terminate else "EC2",
                "Destination": "EC2" if terminate else "AutoScalingGroup",
            },
        }
