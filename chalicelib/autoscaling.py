"""The Auto Scaling port and its boto3 adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import ClientError


@dataclass(frozen=True)
class GroupSize:
    desired: int
    minimum: int
    maximum: int


@dataclass(frozen=True)
class GroupInstance:
    instance_id: str
    lifecycle_state: str  # Auto Scaling's: Pending, Pending:Wait, InService, Terminating, ...
    protected: bool = False
    from_warm_pool: bool = False


@dataclass(frozen=True)
class GroupState:
    size: GroupSize
    instances: tuple[GroupInstance, ...]
    warm_pool_size: int = 0  # instances parked in the warm pool


class AutoScaling(Protocol):
    group_name: str

    def is_member(self, instance_id: str) -> bool:
        """True when the instance belongs to the managed group."""
        ...

    def group_size(self) -> GroupSize: ...

    def describe(self) -> GroupState: ...

    def set_desired_capacity(self, desired: int) -> None: ...

    def terminate(self, instance_id: str) -> None:
        """Terminate one instance and lower desired capacity by one: the group never picks a victim."""
        ...

    def put_warm_pool(self, min_size: int) -> None: ...

    def complete_lifecycle_action(self, hook_name: str, token: str, instance_id: str, result: str) -> None:
        """Finish a lifecycle action with CONTINUE or ABANDON."""
        ...

    def record_lifecycle_action_heartbeat(self, hook_name: str, token: str, instance_id: str) -> None: ...

    def set_instance_health(self, instance_id: str, healthy: bool) -> None: ...

    def set_instance_protection(self, instance_ids: list[str], protected: bool) -> None: ...


class LifecycleActionGone(Exception):
    """Auto Scaling no longer knows the action: it was completed, abandoned or timed out."""


PROTECTION_BATCH = 50  # SetInstanceProtection takes at most 50 instance ids


class Boto3AutoScaling:
    def __init__(self, client: Any, group_name: str, warm_pool_state: str = "Stopped") -> None:
        self._client = client
        self.group_name = group_name
        self._warm_pool_state = warm_pool_state

    def is_member(self, instance_id: str) -> bool:
        found = self._client.describe_auto_scaling_instances(InstanceIds=[instance_id]).get("AutoScalingInstances", [])
        return any(i.get("AutoScalingGroupName") == self.group_name for i in found)

    def group_size(self) -> GroupSize:
        return _size(self._group())

    def describe(self) -> GroupState:
        group = self._group()
        instances = tuple(
            GroupInstance(
                instance_id=i["InstanceId"],
                lifecycle_state=i["LifecycleState"],
                protected=bool(i.get("ProtectedFromScaleIn", False)),
            )
            for i in group.get("Instances", [])
        )
        return GroupState(size=_size(group), instances=instances, warm_pool_size=int(group.get("WarmPoolSize", 0)))

    def set_desired_capacity(self, desired: int) -> None:
        # HonorCooldown=False: the control plane decides; group cooldowns are for alarm policies.
        self._client.set_desired_capacity(
            AutoScalingGroupName=self.group_name, DesiredCapacity=desired, HonorCooldown=False
        )

    def terminate(self, instance_id: str) -> None:
        self._client.terminate_instance_in_auto_scaling_group(
            InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
        )

    def put_warm_pool(self, min_size: int) -> None:
        # Equal MinSize and MaxGroupPreparedCapacity make the pool exactly this size; MinSize
        # alone lets Auto Scaling keep max - desired instances warm.
        self._client.put_warm_pool(
            AutoScalingGroupName=self.group_name,
            MinSize=min_size,
            MaxGroupPreparedCapacity=min_size,
            PoolState=self._warm_pool_state,
        )

    def complete_lifecycle_action(self, hook_name: str, token: str, instance_id: str, result: str) -> None:
        self._lifecycle_call(
            self._client.complete_lifecycle_action,
            LifecycleHookName=hook_name,
            AutoScalingGroupName=self.group_name,
            LifecycleActionToken=token,
            LifecycleActionResult=result,
            InstanceId=instance_id,
        )

    def record_lifecycle_action_heartbeat(self, hook_name: str, token: str, instance_id: str) -> None:
        self._lifecycle_call(
            self._client.record_lifecycle_action_heartbeat,
            LifecycleHookName=hook_name,
            AutoScalingGroupName=self.group_name,
            LifecycleActionToken=token,
            InstanceId=instance_id,
        )

    def set_instance_health(self, instance_id: str, healthy: bool) -> None:
        self._client.set_instance_health(
            InstanceId=instance_id, HealthStatus="Healthy" if healthy else "Unhealthy", ShouldRespectGracePeriod=False
        )

    def set_instance_protection(self, instance_ids: list[str], protected: bool) -> None:
        for start in range(0, len(instance_ids), PROTECTION_BATCH):
            self._client.set_instance_protection(
                InstanceIds=instance_ids[start : start + PROTECTION_BATCH],
                AutoScalingGroupName=self.group_name,
                ProtectedFromScaleIn=protected,
            )

    def _lifecycle_call(self, call: Any, **params: Any) -> None:
        try:
            call(**params)
        except ClientError as error:
            # Auto Scaling answers ValidationError "No active Lifecycle Action found" once the
            # action is over: a duplicate or late completion, not a failure.
            message = error.response.get("Error", {}).get("Message", "")
            if (
                error.response.get("Error", {}).get("Code") == "ValidationError"
                and "No active Lifecycle Action" in message
            ):
                raise LifecycleActionGone(message) from error
            raise

    def _group(self) -> dict[str, Any]:
        groups = self._client.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group_name])
        found = groups.get("AutoScalingGroups", [])
        if not found:
            raise LookupError(f"Auto Scaling group {self.group_name!r} does not exist")
        return dict(found[0])


def _size(group: dict[str, Any]) -> GroupSize:
    return GroupSize(desired=group["DesiredCapacity"], minimum=group["MinSize"], maximum=group["MaxSize"])
