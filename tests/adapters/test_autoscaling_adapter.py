"""The boto3 Auto Scaling adapter against moto in server mode."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from chalicelib.autoscaling import Boto3AutoScaling, LifecycleActionGone
from sim.aws import create_group, group_instances

TOKEN = "c4a1e8f2-5b3d-4a7e-9f6c-1d2e3f4a5b6c"


def test_membership_and_size(aws, unique: str) -> None:  # type: ignore[no-untyped-def]
    members = create_group(aws, f"jibri-{unique}", desired=2, minimum=1, maximum=6)
    others = create_group(aws, f"other-{unique}", desired=1)
    group = Boto3AutoScaling(aws.client("autoscaling"), f"jibri-{unique}")
    assert all(group.is_member(i) for i in members)
    assert not group.is_member(others[0])
    assert not group.is_member("i-0deadbeefdeadbeef")
    size = group.group_size()
    assert (size.desired, size.minimum, size.maximum) == (2, 1, 6)


def test_a_missing_group_is_named(aws, unique: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LookupError, match=f"nope-{unique}"):
        Boto3AutoScaling(aws.client("autoscaling"), f"nope-{unique}").group_size()


def test_describe_set_desired_and_terminate_on_moto(aws, unique: str) -> None:  # type: ignore[no-untyped-def]
    members = create_group(aws, f"jibri-{unique}", desired=3, maximum=8)
    group = Boto3AutoScaling(aws.client("autoscaling"), f"jibri-{unique}")
    state = group.describe()
    assert sorted(i.instance_id for i in state.instances) == members
    assert all(i.lifecycle_state == "InService" and not i.protected for i in state.instances)
    group.set_desired_capacity(5)
    assert group.group_size().desired == 5
    group.terminate(members[0])
    assert group.group_size().desired == 4
    assert members[0] not in group_instances(aws, f"jibri-{unique}")


def test_exact_requests_to_auto_scaling() -> None:
    client = boto3.client("autoscaling", region_name="us-east-1")
    group = Boto3AutoScaling(client, "jibri-dev")
    with Stubber(client) as stub:
        stub.add_response(
            "terminate_instance_in_auto_scaling_group",
            {
                "Activity": {
                    "ActivityId": "a",
                    "AutoScalingGroupName": "jibri-dev",
                    "Cause": "c",
                    "StartTime": "2026-11-24T00:00:00Z",
                    "StatusCode": "InProgress",
                }
            },
            {"InstanceId": "i-0123456789abcdef0", "ShouldDecrementDesiredCapacity": True},
        )
        stub.add_response(
            "set_desired_capacity",
            {},
            {"AutoScalingGroupName": "jibri-dev", "DesiredCapacity": 7, "HonorCooldown": False},
        )
        stub.add_response(
            "put_warm_pool",
            {},
            {"AutoScalingGroupName": "jibri-dev", "MinSize": 4, "MaxGroupPreparedCapacity": 4, "PoolState": "Stopped"},
        )
        group.terminate("i-0123456789abcdef0")
        group.set_desired_capacity(7)
        group.put_warm_pool(4)
        stub.assert_no_pending_responses()


def test_health_and_protection_requests_and_the_50_id_batches() -> None:
    client = boto3.client("autoscaling", region_name="us-east-1")
    group = Boto3AutoScaling(client, "jibri-dev", warm_pool_state="Hibernated")
    ids = [f"i-{n:017x}" for n in range(120)]
    with Stubber(client) as stub:
        stub.add_response(
            "set_instance_health",
            {},
            {"InstanceId": ids[0], "HealthStatus": "Unhealthy", "ShouldRespectGracePeriod": False},
        )
        for batch in (ids[:50], ids[50:100], ids[100:]):
            stub.add_response(
                "set_instance_protection",
                {},
                {"InstanceIds": batch, "AutoScalingGroupName": "jibri-dev", "ProtectedFromScaleIn": True},
            )
        stub.add_response(
            "put_warm_pool",
            {},
            {
                "AutoScalingGroupName": "jibri-dev",
                "MinSize": 2,
                "MaxGroupPreparedCapacity": 2,
                "PoolState": "Hibernated",
            },
        )
        group.set_instance_health(ids[0], healthy=False)
        group.set_instance_protection(ids, True)
        group.put_warm_pool(2)
        stub.assert_no_pending_responses()


def test_a_lifecycle_action_auto_scaling_closed_is_told_apart_from_other_errors() -> None:
    client = boto3.client("autoscaling", region_name="us-east-1")
    group = Boto3AutoScaling(client, "jibri-dev")
    with Stubber(client) as stub:
        stub.add_client_error(
            "complete_lifecycle_action",
            "ValidationError",
            "No active Lifecycle Action found with instance ID i-0123456789abcdef0",
        )
        stub.add_client_error("record_lifecycle_action_heartbeat", "Throttling", "Rate exceeded")
        with pytest.raises(LifecycleActionGone):
            group.complete_lifecycle_action("jibri-launch", TOKEN, "i-0123456789abcdef0", "CONTINUE")
        with pytest.raises(ClientError):
            group.record_lifecycle_action_heartbeat("jibri-terminate", TOKEN, "i-0123456789abcdef0")
