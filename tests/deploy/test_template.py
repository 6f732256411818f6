"""The packaged template: built offline, lint-clean, and holding what the code expects."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chalicelib import bootstrap
from chalicelib.dynamodb_registry import STATE_INDEX
from tests.aws_calls import policy_actions
from tests.deploy.chalice_package import package
from tests.deploy.template_checks import documented_settings, env_problems

ROOT = Path(__file__).resolve().parents[2]
RECORDINGS_METRICS = ("RecordingsCompleted", "RecordingBytes", "RecordingPartsRejected", "RecordingErrors")


@pytest.fixture(scope="module", params=["dev", "prod"])
def packaged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package(request.param, tmp_path_factory.mktemp(f"package-{request.param}") / "out")


@pytest.fixture(scope="module")
def template(packaged: Path) -> dict[str, Any]:
    return bootstrap.load_template(packaged)


def resources_of(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def test_cfn_lint_finds_no_error_or_warning(packaged: Path) -> None:
    lint = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), str(packaged)], capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_one_template_holds_the_functions_and_the_resources_they_use(template: dict[str, Any]) -> None:
    functions = resources_of(template, "AWS::Serverless::Function")
    assert {f["Properties"]["Handler"] for f in functions.values()} == {
        "app.app",
        "app.evaluate_pool",
        "app.on_lifecycle_action",
        "app.on_instance_event",
        "app.on_asg_notification",
        "app.jitsi_jwt",
    }
    for kind in ("AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::IAM::InstanceProfile", "AWS::CloudWatch::Dashboard"):
        assert resources_of(template, kind), kind
    events = {name: f["Properties"].get("Events", {}) for name, f in functions.items()}
    assert events["EvaluatePool"]["EvaluatePoolEvent"] == {
        "Type": "Schedule",
        "Properties": {"Schedule": "rate(1 minute)"},
    }
    lifecycle = events["OnLifecycleAction"]["OnLifecycleActionEvent"]["Properties"]["Pattern"]
    assert lifecycle["source"] == ["aws.autoscaling"]
    sns = events["OnAsgNotification"]["OnAsgNotificationSnsSubscription"]
    assert sns["Properties"]["Topic"] == {"Fn::Sub": "${AsgNotificationsTopic}"}


def test_the_table_is_the_one_the_registry_and_the_bootstrap_use(template: dict[str, Any]) -> None:
    (table,) = resources_of(template, "AWS::DynamoDB::Table").values()
    props = table["Properties"]
    assert props["TimeToLiveSpecification"] == {"AttributeName": bootstrap.TTL_ATTRIBUTE, "Enabled": True}
    assert [index["IndexName"] for index in props["GlobalSecondaryIndexes"]] == [STATE_INDEX]
    for key in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode"):
        assert props[key] == bootstrap.TABLE_DEFINITION[key]
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


def test_the_bucket_is_private_encrypted_retained_and_cleans_up_after_failed_uploads(template: dict[str, Any]) -> None:
    bucket = template["Resources"]["RecordingsBucket"]
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
    props = bucket["Properties"]
    assert all(props["PublicAccessBlockConfiguration"].values()) and len(props["PublicAccessBlockConfiguration"]) == 4
    (encryption,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    use_kms, kms, s3 = encryption["Fn::If"]
    assert use_kms == "UseKms" and template["Parameters"]["RecordingsKmsKeyArn"]["Default"] == ""
    assert kms["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert s3["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    rules = props["LifecycleConfiguration"]["Rules"]
    assert rules[0]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": {"Ref": "RecordingsAbortIncompleteUploadDays"}
    }
    assert template["Parameters"]["RecordingsAbortIncompleteUploadDays"]["Default"] == 7
    archive = rules[1]["Fn::If"]
    assert archive[0] == "Archive" and archive[2] == {"Ref": "AWS::NoValue"}


def test_hooks_abandon_by_default_and_go_to_eventbridge(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    created = resources["RecorderGroup"]["Properties"]["LifecycleHookSpecificationList"]
    existing = [resources["LaunchHook"]["Properties"], resources["TerminateHook"]["Properties"]]
    for hook in [*created, *existing]:
        assert hook["DefaultResult"] == "ABANDON"
        assert hook["HeartbeatTimeout"] == {"Ref": "LifecycleHeartbeatTimeout"}
        assert "NotificationTargetARN" not in hook and "RoleARN" not in hook
    transitions = sorted(h["LifecycleTransition"] for h in created)
    assert transitions == ["autoscaling:EC2_INSTANCE_LAUNCHING", "autoscaling:EC2_INSTANCE_TERMINATING"]
    assert resources["RecorderGroup"]["Condition"] == "CreateGroup"
    assert resources["LaunchHook"]["Condition"] == resources["TerminateHook"]["Condition"] == "UseExistingGroup"
    topic = resources["AsgNotificationsTopic"]["Properties"]["TopicName"]
    from chalicelib.config import ASG_NOTIFICATIONS_TOPIC

    assert topic == ASG_NOTIFICATIONS_TOPIC


def test_api_gateway_errors_have_the_api_error_shape(template: dict[str, Any]) -> None:
    responses = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"][
        "x-amazon-apigateway-gateway-responses"
    ]
    for kind in (
        "DEFAULT_4XX",
        "DEFAULT_5XX",
        "MISSING_AUTHENTICATION_TOKEN",
        "UNAUTHORIZED",
        "ACCESS_DENIED",
        "THROTTLED",
    ):
        body = responses[kind]["responseTemplates"]["application/json"]
        # API Gateway puts the message in already quoted; fill it like it does, then parse.
        shaped = json.loads(body.replace("$context.error.messageString", '"Missing Authentication Token"'))
        assert set(shaped) == {"error"} and set(shaped["error"]) == {"code", "message"}
        assert re.fullmatch(r"[a-z_]+", shaped["error"]["code"])
    assert responses["THROTTLED"]["statusCode"] == 429


def test_the_agent_role_reaches_its_routes_and_its_group_only(template: dict[str, Any]) -> None:
    (policy,) = template["Resources"]["AgentRole"]["Properties"]["Policies"]
    statements = policy["PolicyDocument"]["Statement"]
    plain = [s for s in statements if "Effect" in s]
    actions = sorted(a for s in plain for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))
    assert actions == [
        "autoscaling:DescribeAutoScalingInstances",
        "autoscaling:SetInstanceProtection",
        "execute-api:Invoke",
    ]
    assert not any(a.startswith("s3:") for a in json.dumps(statements).split('"'))
    invoke = next(s for s in plain if s["Action"] == "execute-api:Invoke")
    routes = [r["Fn::Sub"].split("${RestAPI}/api/")[1] for r in invoke["Resource"]]
    assert routes == ["POST/v1/recorders/*/status", "POST/v1/recordings", "POST/v1/recordings/*/complete"]
    protect = next(s for s in plain if s["Action"] == "autoscaling:SetInstanceProtection")
    assert protect["Resource"]["Fn::Sub"].endswith(":autoScalingGroupName/${AutoScalingGroupName}")


def test_no_policy_grants_every_action(template: dict[str, Any]) -> None:
    roles = resources_of(template, "AWS::IAM::Role")
    assert {"ApiHandlerRole", "EvaluatePoolRole", "JitsiJwtRole", "AgentRole"} <= set(roles)
    for name, role in roles.items():
        for policy in role["Properties"]["Policies"]:
            for action in policy_actions(policy["PolicyDocument"]):
                assert "*" not in action, f"{name}: {action}"


def test_dashboard_and_alarms_use_the_metrics_the_code_publishes(template: dict[str, Any]) -> None:
    source = (ROOT / "chalicelib" / "observability.py").read_text()
    published = set(re.findall(r'add_metric\(name="(\w+)"', source))
    # Auto Scaling's failed activities are counted under the name the notification handler gives them.
    notifications = (ROOT / "chalicelib" / "notifications.py").read_text()
    published |= set(re.findall(r'_on_alert\("(\w+)"', notifications))
    assert {"DesiredCapacity", "BufferTarget", "RecordersIdle", "RecordersBusy", "RequestsQueued"} <= published
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    dashboard = json.loads(body)
    names = {m[1] for w in dashboard["widgets"] for m in w["properties"].get("metrics", [])}
    for metric in ("DesiredCapacity", "RecordersIdle", "RecordersBusy", "RequestsQueued", "BufferTarget"):
        assert metric in names
    assert {"WarmPoolWarmedCapacity", *RECORDINGS_METRICS} <= names
    alarms = resources_of(template, "AWS::CloudWatch::Alarm")
    alarmed = set(re.findall(r'"MetricName": "(\w+)"', json.dumps(alarms)))
    assert {
        "LaunchErrors",
        "LifecycleHookNearTimeout",
        "RecordersStale",
        "RecordingErrors",
        "MinDiskFreeBytes",
    } <= alarmed
    assert "RequestsQueued" in alarmed
    ours = {m[1] for w in dashboard["widgets"] for m in w["properties"].get("metrics", []) if m[0] == "JibriAutoscaler"}
    assert sorted((ours | alarmed) - published) == [], "charted or alarmed but never published"
    for name, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"], name
        dimensions = re.findall(r'"Dimensions": (\[[^\]]*\])', json.dumps(alarm))
        assert all(json.loads(d) == [{"Name": "service", "Value": "jibri-pool"}] for d in dimensions), name


def test_every_setting_the_code_reads_is_set_or_documented(template: dict[str, Any]) -> None:
    documented = documented_settings((ROOT / "template.md").read_text())
    assert env_problems(template, documented) == []


def test_a_variable_removed_from_the_template_is_caught(template: dict[str, Any]) -> None:
    documented = documented_settings((ROOT / "template.md").read_text())
    broken = copy.deepcopy(template)
    del broken["Resources"]["EvaluatePool"]["Properties"]["Environment"]["Variables"]["TABLE_NAME"]
    del broken["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]["RECORDINGS_BUCKET"]
    assert env_problems(broken, documented) == [
        "APIHandler: RECORDINGS_BUCKET is required but the template does not set it",
        "EvaluatePool: TABLE_NAME is required but the template does not set it",
    ]
    undocumented = documented - {"MIN_IDLE"}
    assert "OnLifecycleAction: MIN_IDLE is read, not set by the template and not in template.md" in env_problems(
        template, undocumented
    )


def test_template_md_names_every_parameter_output_and_resource_of_the_packaged_template(
    template: dict[str, Any],
) -> None:
    guide = (ROOT / "template.md").read_text()
    named = set(re.findall(r"`([A-Za-z][A-Za-z0-9]+)`", guide))
    suffixes = tuple(re.findall(r"`\*([A-Za-z0-9]+)`", guide))  # rows such as `*Alarm`, `*LogGroup`

    def described(resource: str) -> bool:
        # Named itself, by a wildcard row, or as a part of a named one ("`RecordingsBucket` (+ policy)").
        return resource in named or resource.endswith(suffixes) or any(resource.startswith(n) for n in named)

    merged = bootstrap.load_template()
    missing = {
        "parameters": sorted(set(template.get("Parameters", {})) - named),
        "outputs": sorted(set(template.get("Outputs", {})) - named),
        "resources": sorted(r for r in merged.get("Resources", {}) if not described(r)),
    }
    assert missing == {"parameters": [], "outputs": [], "resources": []}
    documented_outputs = re.findall(
        r"^\| `(\w+)`", guide[guide.index("## Outputs") : guide.index("## The group")], re.M
    )
    assert set(documented_outputs) <= set(template["Outputs"]), "template.md lists an output the stack lacks"
