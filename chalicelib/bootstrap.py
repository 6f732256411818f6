"""Create every AWS resource the control plane needs, idempotently.

    python -m chalicelib.bootstrap

Reads names from the same settings the Lambdas use and talks to whatever
boto3 is pointed at (AWS_ENDPOINT_URL for moto in server mode). The table,
the bucket and the topics are read from the deployable template's own
definitions (`.chalice/resources.yaml`, with its parameters at their
defaults), so the bootstrap and the stack create the same things.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import boto3
import yaml
from botocore.exceptions import ClientError

from chalicelib.config import ASG_NOTIFICATIONS_TOPIC, Settings, SettingsError
from chalicelib.dynamodb_registry import STATE_INDEX

TEMPLATE = Path(__file__).resolve().parent.parent / ".chalice" / "resources.yaml"
RECORDING_READY_TOPIC = "jibri-autoscaler-recording-ready"
_NO_VALUE = object()

__all__ = ["STATE_INDEX", "TABLE_DEFINITION", "TTL_ATTRIBUTE", "bootstrap", "ensure_bucket", "ensure_table"]


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        template = yaml.safe_load(handle)
    assert isinstance(template, dict), f"{path} is not a template"
    return template


def resolve(value: Any, template: dict[str, Any]) -> Any:
    """The value with Ref to parameters, Fn::If and AWS::NoValue resolved at the parameters' defaults."""
    if isinstance(value, list):
        items = [resolve(item, template) for item in value]
        return [item for item in items if item is not _NO_VALUE]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        if value["Ref"] == "AWS::NoValue":
            return _NO_VALUE
        return template["Parameters"][value["Ref"]].get("Default")
    if set(value) == {"Fn::If"}:
        condition, when_true, when_false = value["Fn::If"]
        return resolve(when_true if _condition(condition, template) else when_false, template)
    resolved = {key: resolve(item, template) for key, item in value.items()}
    return {key: item for key, item in resolved.items() if item is not _NO_VALUE}


def _condition(name_or_expr: Any, template: dict[str, Any]) -> bool:
    expr = template["Conditions"][name_or_expr] if isinstance(name_or_expr, str) else name_or_expr
    (function, args), *_ = expr.items()
    if function == "Condition":
        return _condition(args, template)
    if function == "Fn::Equals":
        left, right = (resolve(arg, template) for arg in args)
        return str(left) == str(right)
    if function == "Fn::Not":
        return not _condition(args[0], template)
    if function == "Fn::And":
        return all(_condition(arg, template) for arg in args)
    if function == "Fn::Or":
        return any(_condition(arg, template) for arg in args)
    raise ValueError(f"unsupported condition function {function}")


def _properties(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    resolved = resolve(template["Resources"][logical_id]["Properties"], template)
    assert isinstance(resolved, dict)
    return resolved


_TEMPLATE = load_template()
_TABLE = _properties(_TEMPLATE, "RegistryTable")
_BUCKET = _properties(_TEMPLATE, "RecordingsBucket")

TTL_ATTRIBUTE: str = _TABLE["TimeToLiveSpecification"]["AttributeName"]
TABLE_DEFINITION: dict[str, Any] = {
    key: _TABLE[key] for key in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode")
}
assert [index["IndexName"] for index in TABLE_DEFINITION["GlobalSecondaryIndexes"]] == [STATE_INDEX]


def ensure_table(client: Any, name: str) -> bool:
    """Create the table if it is missing; True when it was created now."""
    created = False
    try:
        client.describe_table(TableName=name)
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        try:
            client.create_table(TableName=name, **TABLE_DEFINITION)
            created = True
        except ClientError as race:
            if race.response["Error"]["Code"] != "ResourceInUseException":
                raise
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        client.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
        )
    return created


def bucket_settings(properties: dict[str, Any] = _BUCKET) -> dict[str, Any]:
    """The template's bucket properties as the S3 API's Put* requests take them."""
    encryption = [
        {
            "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
            **({"BucketKeyEnabled": rule["BucketKeyEnabled"]} if "BucketKeyEnabled" in rule else {}),
        }
        for rule in properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    ]
    rules = []
    for rule in properties["LifecycleConfiguration"]["Rules"]:
        api: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
        if "AbortIncompleteMultipartUpload" in rule:
            days = int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
            api["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
        if "Transitions" in rule:
            api["Transitions"] = [
                {"Days": int(t["TransitionInDays"]), "StorageClass": t["StorageClass"]} for t in rule["Transitions"]
            ]
        if "ExpirationInDays" in rule:
            api["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
        rules.append(api)
    return {
        "PublicAccessBlockConfiguration": properties["PublicAccessBlockConfiguration"],
        "OwnershipControls": properties["OwnershipControls"],
        "ServerSideEncryptionConfiguration": {"Rules": encryption},
        "LifecycleConfiguration": {"Rules": rules},
    }


def ensure_bucket(client: Any, name: str, region: str) -> bool:
    """Create the recordings bucket if missing and apply the template's settings; True when created now."""
    created = False
    try:
        client.head_bucket(Bucket=name)
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
            raise
        location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        client.create_bucket(Bucket=name, **location)
        created = True
    settings = bucket_settings()
    client.put_public_access_block(
        Bucket=name, PublicAccessBlockConfiguration=settings["PublicAccessBlockConfiguration"]
    )
    client.put_bucket_ownership_controls(Bucket=name, OwnershipControls=settings["OwnershipControls"])
    client.put_bucket_encryption(
        Bucket=name, ServerSideEncryptionConfiguration=settings["ServerSideEncryptionConfiguration"]
    )
    client.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration=settings["LifecycleConfiguration"])
    return created


def ensure_topic(client: Any, name: str) -> str:
    """Create the topic (CreateTopic is idempotent for the same name) and return its ARN."""
    return str(client.create_topic(Name=name)["TopicArn"])


def bootstrap(settings: Settings, session: Any = None) -> list[str]:
    session = session or boto3.session.Session()
    created = ensure_table(session.client("dynamodb"), settings.table_name)
    lines = [f"table {settings.table_name}: {'created' if created else 'exists'}"]
    sns = session.client("sns")
    lines.append(f"topic {ensure_topic(sns, ASG_NOTIFICATIONS_TOPIC)}: ready")
    ready = settings.recording_ready_topic_arn
    lines.append(f"topic {ensure_topic(sns, ready.rsplit(':', 1)[1] if ready else RECORDING_READY_TOPIC)}: ready")
    if settings.recordings_bucket:
        s3 = session.client("s3")
        bucket_created = ensure_bucket(s3, settings.recordings_bucket, s3.meta.region_name)
        lines.append(f"bucket {settings.recordings_bucket}: {'created' if bucket_created else 'exists'}")
    else:
        lines.append("bucket: skipped (RECORDINGS_BUCKET is not set)")
    return lines


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"bootstrap: {error}", file=sys.stderr)
        return 2
    for line in bootstrap(settings):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
