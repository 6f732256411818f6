"""`python -m chalicelib.bootstrap` against moto in server mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chalicelib.bootstrap import STATE_INDEX, TTL_ATTRIBUTE, bootstrap
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
