"""Operator switches, run where boto3 reaches the deployment's table:

    python -m chalicelib.admin pause "incident 42: hold every recorder"
    python -m chalicelib.admin resume
    python -m chalicelib.admin status

Pausing stops all scale-in (no drain, no termination) from the next evaluation
on; scale-out goes on. `GET /v1/pool` shows the switch.
"""

from __future__ import annotations

import json
import sys
import time

import boto3

from chalicelib.config import Settings, SettingsError
from chalicelib.control import DynamoDBControlStore


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in ("pause", "resume", "status"):
        print("usage: python -m chalicelib.admin pause [REASON] | resume | status", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"admin: {error}", file=sys.stderr)
        return 2
    control = DynamoDBControlStore(boto3.resource("dynamodb").Table(settings.table_name), settings.pool_name)
    if args[0] != "status":
        reason = " ".join(args[1:]) or "set by an operator"
        control.set_paused(args[0] == "pause", reason, time.time())
    print(json.dumps({"pool": settings.pool_name, "scale_in_paused": control.paused()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
