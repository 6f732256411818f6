"""The recorded-calls check: calls map to IAM actions, and a policy missing one fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.local import LambdaContext

import app as app_module
from chalicelib.bootstrap import ensure_table
from chalicelib.config import Settings
from chalicelib.runtime import Runtime
from sim.aws import create_group
from tests.aws_calls import CallRecorder, also_recording, iam_actions, policy_files, policy_problems, running

EVENTS = Path(__file__).resolve().parent.parent / "events"


def test_calls_map_to_the_actions_iam_checks() -> None:
    transact = {"TransactItems": [{"Put": {}}, {"Update": {}}, {"Update": {}}]}
    assert iam_actions("dynamodb", "TransactWriteItems", transact) == ("dynamodb:PutItem", "dynamodb:UpdateItem")
    assert iam_actions("dynamodb", "TransactWriteItems", {"TransactItems": [{"ConditionCheck": {}}]}) == (
        "dynamodb:ConditionCheckItem",
    )
    assert iam_actions("s3", "UploadPart") == ("s3:PutObject",)
    assert iam_actions("s3", "ListParts") == ("s3:ListMultipartUploadParts",)
    assert iam_actions("s3", "HeadObject") == ("s3:GetObject",)
    assert iam_actions("s3", "CreateMultipartUpload", {"Tagging": "a=b", "ServerSideEncryption": "aws:kms"}) == (
        "s3:PutObject",
        "s3:PutObjectTagging",
        "kms:GenerateDataKey",
    )
    assert iam_actions("autoscaling", "SetDesiredCapacity") == ("autoscaling:SetDesiredCapacity",)


def test_presigned_urls_and_api_calls_are_recorded_under_the_running_lambda(aws: Any, unique: str) -> None:
    s3 = aws.client("s3")
    bucket = f"calls-{unique}"
    s3.create_bucket(Bucket=bucket)
    with also_recording(CallRecorder()) as recorder:
        s3.head_bucket(Bucket=bucket)  # no Lambda running: not recorded
        with running("api_handler"):
            upload = s3.create_multipart_upload(Bucket=bucket, Key="r/a.mp4")
            s3.generate_presigned_url(
                "upload_part",
                Params={"Bucket": bucket, "Key": "r/a.mp4", "UploadId": upload["UploadId"], "PartNumber": 1},
            )
            s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "r/a.mp4"})
    seen = recorder.seen["api_handler"]
    assert set(seen) == {"s3:PutObject", "s3:GetObject"}
    assert seen["s3:PutObject"][0] == "s3.CreateMultipartUpload" and seen["s3:GetObject"][0] == "s3.GetObject"
    assert recorder.calls == 3


def _run_evaluator(aws: Any, unique: str, monkeypatch: pytest.MonkeyPatch, moto_url: str) -> CallRecorder:
    table, group = f"calls-{unique}", f"calls-{unique}"
    ensure_table(aws.client("dynamodb"), table)
    create_group(aws, group, desired=1, maximum=3)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    settings = Settings(table_name=table, asg_name=group, agent_role_name="jibri-agent-dev", pool_name=group)
    monkeypatch.setattr(app_module, "runtime", Runtime(settings=settings))
    event = json.loads((EVENTS / "eventbridge_scheduled_event.json").read_text())
    context = LambdaContext(function_name="jibri-autoscaler-dev-evaluate_pool", memory_size=512, max_runtime_ms=30000)
    with also_recording(CallRecorder()) as recorder:
        app_module.evaluate_pool(event, context)
    return recorder


def test_the_evaluator_is_checked_against_its_policy_and_a_removed_action_fails(
    aws: Any, unique: str, monkeypatch: pytest.MonkeyPatch, moto_server: Any, tmp_path: Path
) -> None:
    recorder = _run_evaluator(aws, unique, monkeypatch, moto_server.url)
    seen = recorder.seen["evaluate_pool"]
    assert {"autoscaling:DescribeAutoScalingGroups", "dynamodb:Query", "dynamodb:PutItem"} <= set(seen)
    files = policy_files()
    assert policy_problems(recorder.seen, files) == []

    policy = json.loads(files["evaluate_pool"]["dev"].read_text())
    for statement in policy["Statement"]:
        if isinstance(statement.get("Action"), list) and "dynamodb:Query" in statement["Action"]:
            statement["Action"].remove("dynamodb:Query")
    trimmed = tmp_path / "policy-evaluator-dev.json"
    trimmed.write_text(json.dumps(policy))
    problems = policy_problems(recorder.seen, {"evaluate_pool": {"dev": trimmed}})
    assert len(problems) == 1
    assert problems[0].startswith(
        "evaluate_pool (dev): dynamodb.Query needs dynamodb:Query, not in policy-evaluator-dev.json"
    )


def test_a_lambda_without_a_policy_file_is_reported() -> None:
    seen = {"mystery": {"sns:Publish": ("sns.Publish", "t")}}
    assert policy_problems(seen, policy_files()) == [
        "mystery made AWS calls but has no iam_policy_file in .chalice/config.json"
    ]


def test_boto3_is_left_working_outside_handlers() -> None:
    # The plugin wraps botocore's call path; a client built here still works and signs.
    client = boto3.session.Session(region_name="us-east-1").client("s3")
    assert client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"}).startswith("https://")
