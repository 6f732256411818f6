"""`python -m chalicelib.bootstrap` against moto in server mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chalicelib.bootstrap import (
    STATE_INDEX,
    TABLE_DEFINITION,
    TTL_ATTRIBUTE,
    bootstrap,
    bucket_settings,
    load_template,
    resolve,
)
from chalicelib.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_bootstrap_creates_the_table_once(aws, unique: str) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(table_name=f"boot-{unique}", asg_name="g", agent_role_name="r", pool_name="g")
    first, again = bootstrap(settings, aws), bootstrap(settings, aws)
    assert first[0] == f"table boot-{unique}: created" and again[0] == f"table boot-{unique}: exists"
    assert first[1] == again[1] and first[1].endswith(":jibri-autoscaler-asg-notifications: ready")
    client = aws.client("dynamodb")
    table = client.describe_table(TableName=f"boot-{unique}")["Table"]
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == [STATE_INDEX]
    ttl = client.describe_time_to_live(TableName=f"boot-{unique}")["TimeToLiveDescription"]
    assert ttl["AttributeName"] == TTL_ATTRIBUTE


def test_the_command_reads_the_lambda_settings_and_names_what_is_missing(moto_server, unique: str) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_server.url}
    env.pop("TABLE_NAME", None)
    missing = subprocess.run(
        [sys.executable, "-m", "chalicelib.bootstrap"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert missing.returncode == 2 and "TABLE_NAME is not set" in missing.stderr
    env.update(TABLE_NAME=f"cmd-{unique}", ASG_NAME="jibri-dev", AGENT_ROLE_NAME="jibri-agent-dev")
    done = subprocess.run(
        [sys.executable, "-m", "chalicelib.bootstrap"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"table cmd-{unique}: created"


def test_the_recordings_bucket_and_topic_are_made_as_the_template_declares_them(aws, unique: str) -> None:  # type: ignore[no-untyped-def]
    bucket = f"rec-{unique}"
    ready = f"arn:aws:sns:us-east-1:123456789012:ready-{unique}"
    settings = Settings(
        table_name=f"boot-{unique}",
        asg_name="g",
        agent_role_name="r",
        pool_name="g",
        recordings_bucket=bucket,
        recording_ready_topic_arn=ready,
    )
    first, again = bootstrap(settings, aws), bootstrap(settings, aws)
    assert first[2] == again[2] == f"topic {ready}: ready"
    assert (first[3], again[3]) == (f"bucket {bucket}: created", f"bucket {bucket}: exists")
    s3 = aws.client("s3")
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    (lifecycle,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert lifecycle["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    topics = {t["TopicArn"] for t in aws.client("sns").list_topics()["Topics"]}
    assert ready in topics


def test_the_definitions_come_from_the_template_at_its_defaults() -> None:
    template = load_template()
    table = template["Resources"]["RegistryTable"]["Properties"]
    assert TABLE_DEFINITION["GlobalSecondaryIndexes"] == table["GlobalSecondaryIndexes"]
    archived = {**template, "Parameters": {**template["Parameters"]}}
    archived["Parameters"]["RecordingsArchiveAfterDays"] = {"Type": "Number", "Default": 30}
    archived["Parameters"]["RecordingsKmsKeyArn"] = {"Type": "String", "Default": "arn:aws:kms:us-east-1:1:key/k"}
    settings = bucket_settings(resolve(template["Resources"]["RecordingsBucket"]["Properties"], archived))
    rules = {rule["ID"]: rule for rule in settings["LifecycleConfiguration"]["Rules"]}
    assert rules["archive-recordings"]["Transitions"] == [{"Days": 30, "StorageClass": "GLACIER_IR"}]
    assert "expire-recordings" not in rules
    (encryption,) = settings["ServerSideEncryptionConfiguration"]["Rules"]
    assert encryption["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
