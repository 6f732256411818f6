"""AWS event shapes the local stack's clock delivers to the app's event handlers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any


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
