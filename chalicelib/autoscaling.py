"""The Auto Scaling port and its boto3 adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class GroupSize:
    desired: int
    minimum: int
    maximum: int


class AutoScaling(Protocol):
    group_name: str

    def is_member(self, instance_id: str) -> bool:
        """True when the instance belongs to the managed group."""
        ...

    def group_size(self) -> GroupSize: ...


class Boto3AutoScaling:
    def __init__(self, client: Any, group_name: str) -> None:
        self._client = client
        self.group_name = group_name

    def is_member(self, instance_id: str) -> bool:
        found = self._client.describe_auto_scaling_instances(InstanceIds=[instance_id]).get("AutoScalingInstances", [])
        return any(i.get("AutoScalingGroupName") == self.group_name for i in found)

    def group_size(self) -> GroupSize:
        groups = self._client.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group_name])
        found = groups.get("AutoScalingGroups", [])
        if not found:
            raise LookupError(f"Auto Scaling group {self.group_name!r} does not exist")
        group = found[0]
        return GroupSize(desired=group["DesiredCapacity"], minimum=group["MinSize"], maximum=group["MaxSize"])
