"""Create every AWS resource the control plane needs, idempotently.

    python -m chalicelib.bootstrap

Reads names from the same settings the Lambdas use and talks to whatever
boto3 is pointed at (AWS_ENDPOINT_URL for moto in server mode). The
deployable template declares the same resources for real accounts.
"""

from __future__ import annotations

import sys
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.config import ASG_NOTIFICATIONS_TOPIC, Settings, SettingsError
from chalicelib.dynamodb_registry import STATE_INDEX

TTL_ATTRIBUTE = "expires_at"

TABLE_DEFINITION: dict[str, Any] = {
    "AttributeDefinitions": [
        {"AttributeName": "PK", "AttributeType": "S"},
        {"AttributeName": "SK", "AttributeType": "S"},
        {"AttributeName": "GSI1PK", "AttributeType": "S"},
        {"AttributeName": "GSI1SK", "AttributeType": "S"},
    ],
    "KeySchema": [
        {"AttributeName": "PK", "KeyType": "HASH"},
        {"AttributeName": "SK", "KeyType": "RANGE"},
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": STATE_INDEX,
            "KeySchema": [
                {"AttributeName": "GSI1PK", "KeyType": "HASH"},
                {"AttributeName": "GSI1SK", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
    ],
    "BillingMode": "PAY_PER_REQUEST",
}


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


def ensure_topic(client: Any, name: str) -> str:
    """Create the topic (CreateTopic is idempotent for the same name) and return its ARN."""
    return str(client.create_topic(Name=name)["TopicArn"])


def bootstrap(settings: Settings, session: Any = None) -> list[str]:
    session = session or boto3.session.Session()
    created = ensure_table(session.client("dynamodb"), settings.table_name)
    topic = ensure_topic(session.client("sns"), ASG_NOTIFICATIONS_TOPIC)
    return [f"table {settings.table_name}: {'created' if created else 'exists'}", f"topic {topic}: ready"]


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
