"""AWS event shapes the local stack's clock delivers to the app's event handlers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from chalicelib.lifecycle import LAUNCHING, TERMINATING, LifecycleEvent


def scheduled_event(
    rule_name: str, at: float, region: str = "us-east-1", account: str = "123456789012"
) -> dict[str, Any]:
    """What EventBridge sends a scheduled rule's target."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{account}:rule/{rule_name}"],
        "detail": {},
    }


def lifecycle_action_event(
    event: LifecycleEvent,
    region: str = "us-east-1",
    account: str = "123456789012",
    group_id: str = "3f0e6b9a-8c2d-4d71-b5a4-6e2f1c9d7a30",
) -> dict[str, Any]:
    """What EventBridge delivers for an Auto Scaling lifecycle action (tests/events/eventbridge_*lifecycle_action*)."""
    launching = event.transition == "launch"
    detail: dict[str, Any] = {
        "LifecycleActionToken": event.token,
        "AutoScalingGroupName": event.group,
        "LifecycleHookName": event.hook_name,
        "EC2InstanceId": event.instance_id,
        "LifecycleTransition": LAUNCHING if launching else TERMINATING,
        "NotificationMetadata": event.group,
    }
    if event.origin is not None:
        detail["Origin"] = event.origin
    if event.destination is not None:
        detail["Destination"] = event.destination
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": f"EC2 Instance-{'launch' if launching else 'terminate'} Lifecycle Action",
        "source": "aws.autoscaling",
        "account": account,
        "time": datetime.fromtimestamp(event.time, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [
            f"arn:aws:autoscaling:{region}:{account}:autoScalingGroup:{group_id}:autoScalingGroupName/{event.group}"
        ],
        "detail": detail,
    }
