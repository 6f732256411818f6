"""The custom resource that suspends AZRebalance and attaches notifications, run with its exact requests pinned."""

from __future__ import annotations

import sys
import types
from typing import Any

import boto3
from botocore.stub import Stubber

from chalicelib.bootstrap import load_template

TYPES = [
    "autoscaling:EC2_INSTANCE_LAUNCH",
    "autoscaling:EC2_INSTANCE_LAUNCH_ERROR",
    "autoscaling:EC2_INSTANCE_TERMINATE",
    "autoscaling:EC2_INSTANCE_TERMINATE_ERROR",
    "autoscaling:TEST_NOTIFICATION",
]
TOPIC = "arn:aws:sns:us-east-1:123456789012:jibri-autoscaler-asg-notifications"


def _handler(sent: list[tuple[str, str]]) -> Any:
    """The function's inline code, with CloudFormation's cfnresponse module recording what it is told."""
    cfnresponse = types.ModuleType("cfnresponse")
    cfnresponse.SUCCESS, cfnresponse.FAILED = "SUCCESS", "FAILED"  # type: ignore[attr-defined]
    cfnresponse.send = lambda event, context, status, data, physical_id, reason=None: sent.append(  # type: ignore[attr-defined]
        (status, physical_id)
    )
    source = load_template()["Resources"]["GroupSettingsFunction"]["Properties"]["Code"]["ZipFile"]
    module = types.ModuleType("group_settings")
    previous = sys.modules.get("cfnresponse")
    sys.modules["cfnresponse"] = cfnresponse
    try:
        exec(compile(source, "group_settings", "exec"), module.__dict__)
    finally:
        if previous is None:
            sys.modules.pop("cfnresponse")
        else:
            sys.modules["cfnresponse"] = previous
    return module.handler


def _client() -> Any:
    return boto3.session.Session(region_name="us-east-1").client("autoscaling")


def test_an_existing_group_gets_azrebalance_suspended_and_its_notifications() -> None:
    sent: list[tuple[str, str]] = []
    client = _client()
    with Stubber(client) as stub:
        stub.add_response(
            "suspend_processes", {}, {"AutoScalingGroupName": "jibri-dev", "ScalingProcesses": ["AZRebalance"]}
        )
        stub.add_response(
            "put_notification_configuration",
            {},
            {"AutoScalingGroupName": "jibri-dev", "TopicARN": TOPIC, "NotificationTypes": TYPES},
        )
        event = {
            "RequestType": "Create",
            "ResourceProperties": {"GroupName": "jibri-dev", "NotificationTopicArn": TOPIC},
        }
        _handler(sent)(event, None, client=client)
        stub.assert_no_pending_responses()
    assert sent == [("SUCCESS", "jibri-dev")]


def test_a_created_group_only_gets_azrebalance_suspended_and_deletion_keeps_it_suspended() -> None:
    sent: list[tuple[str, str]] = []
    client = _client()
    with Stubber(client) as stub:
        stub.add_response(
            "suspend_processes", {}, {"AutoScalingGroupName": "jibri-dev", "ScalingProcesses": ["AZRebalance"]}
        )
        handler = _handler(sent)
        handler(
            {"RequestType": "Update", "ResourceProperties": {"GroupName": "jibri-dev", "NotificationTopicArn": ""}},
            None,
            client=client,
        )
        stub.add_response("delete_notification_configuration", {}, {"AutoScalingGroupName": "g", "TopicARN": TOPIC})
        handler(
            {"RequestType": "Delete", "ResourceProperties": {"GroupName": "g", "NotificationTopicArn": TOPIC}},
            None,
            client=client,
        )
        stub.assert_no_pending_responses()
    assert sent == [("SUCCESS", "jibri-dev"), ("SUCCESS", "g")]


def test_a_failure_is_reported_to_cloudformation_instead_of_leaving_it_waiting() -> None:
    sent: list[tuple[str, str]] = []
    client = _client()
    with Stubber(client) as stub:
        stub.add_client_error("suspend_processes", "ValidationError", "group jibri-dev not found")
        event = {"RequestType": "Create", "ResourceProperties": {"GroupName": "jibri-dev", "NotificationTopicArn": ""}}
        _handler(sent)(event, None, client=client)
    assert sent == [("FAILED", "jibri-dev")]
