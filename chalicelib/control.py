"""The evaluator's control items: one run at a time per pool, the pause switch, the decision log."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any, Protocol

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError


@dataclass(frozen=True)
class DecisionRecord:
    at: float
    trigger: str
    desired: int
    previous_desired: int
    drained: tuple[str, ...]
    terminated: tuple[str, ...]
    warm_pool_size: int
    buffer_target: int
    idle: int
    busy: int
    queued: int
    reason: str
    acted: bool  # False when paused (scale-in only) or in dry run

    def view(self) -> dict[str, Any]:
        return {**asdict(self), "drained": list(self.drained), "terminated": list(self.terminated)}


class ControlStore(Protocol):
    def acquire_lease(self, owner: str, now: float, seconds: float) -> bool:
        """Take the pool's evaluation lease; False when another run holds it (a rerun is then requested)."""
        ...

    def release_lease(self, owner: str) -> bool:
        """Give the lease back; False (lease kept, request cleared) when a rerun was requested meanwhile."""
        ...

    def paused(self) -> bool: ...

    def set_paused(self, paused: bool, reason: str, now: float) -> None: ...

    def append_decision(self, record: DecisionRecord, keep_seconds: int) -> None: ...

    def latest_decisions(self, limit: int) -> list[DecisionRecord]: ...

    def record_launch_error(self, activity_id: str, at: float) -> bool:
        """Count a failed launch once per activity; True when it was new."""
        ...

    def record_launch_success(self, at: float) -> None: ...

    def launch_errors(self) -> list[float]:
        """Times of the launch errors since the last successful launch."""
        ...


class MemoryControlStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lease: tuple[str, float] | None = None
        self._rerun = False
        self._paused = False
        self._decisions: list[DecisionRecord] = []
        self._launch_errors: dict[str, float] = {}
        self._launch_ok_at = 0.0

    def acquire_lease(self, owner: str, now: float, seconds: float) -> bool:
        with self._lock:
            if self._lease is not None and self._lease[1] > now:
                self._rerun = True
                return False
            self._lease, self._rerun = (owner, now + seconds), False
            return True

    def release_lease(self, owner: str) -> bool:
        with self._lock:
            if self._lease is None or self._lease[0] != owner:
                return True
            if self._rerun:
                self._rerun = False
                return False
            self._lease = None
            return True

    def paused(self) -> bool:
        with self._lock:
            return self._paused

    def set_paused(self, paused: bool, reason: str, now: float) -> None:
        with self._lock:
            self._paused = paused

    def append_decision(self, record: DecisionRecord, keep_seconds: int) -> None:
        with self._lock:
            self._decisions.append(record)
            del self._decisions[:-200]

    def latest_decisions(self, limit: int) -> list[DecisionRecord]:
        with self._lock:
            return list(reversed(self._decisions[-limit:]))

    def record_launch_error(self, activity_id: str, at: float) -> bool:
        with self._lock:
            if activity_id in self._launch_errors:
                return False
            self._launch_errors[activity_id] = at
            return True

    def record_launch_success(self, at: float) -> None:
        with self._lock:
            self._launch_ok_at = max(self._launch_ok_at, at)

    def launch_errors(self) -> list[float]:
        with self._lock:
            return sorted(t for t in self._launch_errors.values() if t > self._launch_ok_at)


class DynamoDBControlStore:
    """Items beside the registry: CONTROL#lease, CONTROL#pause and DECISION#<ms> (expiring by TTL)."""

    def __init__(self, table: Any, pool: str) -> None:
        self._table = table
        self._pk = f"POOL#{pool}"

    def _key(self, sk: str) -> dict[str, str]:
        return {"PK": self._pk, "SK": sk}

    def acquire_lease(self, owner: str, now: float, seconds: float) -> bool:
        try:
            self._table.put_item(
                Item={**self._key("CONTROL#lease"), "owner": owner, "lease_until": _dec(now + seconds), "rerun": False},
                ConditionExpression=Attr("PK").not_exists() | Attr("lease_until").lt(_dec(now)),
            )
            return True
        except ClientError as error:
            if not _conditional(error):
                raise
        try:  # fold this trigger into the run under way
            self._table.update_item(
                Key=self._key("CONTROL#lease"),
                UpdateExpression="SET rerun = :t",
                ConditionExpression=Attr("PK").exists(),
                ExpressionAttributeValues={":t": True},
            )
        except ClientError as error:
            if not _conditional(error):
                raise
        return False

    def release_lease(self, owner: str) -> bool:
        try:
            self._table.delete_item(
                Key=self._key("CONTROL#lease"),
                ConditionExpression=Attr("owner").eq(owner) & Attr("rerun").eq(False),
            )
            return True
        except ClientError as error:
            if not _conditional(error):
                raise
        try:
            self._table.update_item(
                Key=self._key("CONTROL#lease"),
                UpdateExpression="SET rerun = :f",
                ConditionExpression=Attr("owner").eq(owner) & Attr("rerun").eq(True),
                ExpressionAttributeValues={":f": False},
            )
            return False
        except ClientError as error:
            if not _conditional(error):
                raise
            return True  # the lease was no longer ours (it expired and another run took it)

    def paused(self) -> bool:
        item = self._table.get_item(Key=self._key("CONTROL#pause"), ConsistentRead=True).get("Item")
        return bool(item and item.get("paused"))

    def set_paused(self, paused: bool, reason: str, now: float) -> None:
        self._table.put_item(
            Item={**self._key("CONTROL#pause"), "paused": paused, "reason": reason, "changed_at": _dec(now)}
        )

    def append_decision(self, record: DecisionRecord, keep_seconds: int) -> None:
        item = {
            **self._key(f"DECISION#{int(record.at * 1000):015d}"),
            **{k: v for k, v in record.view().items() if k != "at"},
            "at": _dec(record.at),
            "expires_at": int(record.at) + keep_seconds,
        }
        self._table.put_item(Item=item)

    def record_launch_error(self, activity_id: str, at: float) -> bool:
        try:
            self._table.put_item(
                Item={
                    **self._key(f"LAUNCHERROR#{activity_id}"),
                    "at": _dec(at),
                    "expires_at": int(at) + _LAUNCH_ERROR_KEEP_SECONDS,
                },
                ConditionExpression=Attr("PK").not_exists(),
            )
            return True
        except ClientError as error:
            if not _conditional(error):
                raise
            return False

    def record_launch_success(self, at: float) -> None:
        try:
            self._table.put_item(
                Item={**self._key("CONTROL#launch-ok"), "at": _dec(at)},
                ConditionExpression=Attr("PK").not_exists() | Attr("at").lt(_dec(at)),
            )
        except ClientError as error:
            if not _conditional(error):
                raise  # a later success is stored already otherwise

    def launch_errors(self) -> list[float]:
        ok = self._table.get_item(Key=self._key("CONTROL#launch-ok"), ConsistentRead=True).get("Item")
        since = float(ok["at"]) if ok else 0.0
        page = self._table.query(
            KeyConditionExpression=Key("PK").eq(self._pk) & Key("SK").begins_with("LAUNCHERROR#"),
            ConsistentRead=True,
        )
        return sorted(t for t in (float(i["at"]) for i in page.get("Items", [])) if t > since)

    def latest_decisions(self, limit: int) -> list[DecisionRecord]:
        page = self._table.query(
            KeyConditionExpression=Key("PK").eq(self._pk) & Key("SK").begins_with("DECISION#"),
            ScanIndexForward=False,
            Limit=limit,
        )
        return [
            DecisionRecord(
                at=float(i["at"]),
                trigger=i["trigger"],
                desired=int(i["desired"]),
                previous_desired=int(i["previous_desired"]),
                drained=tuple(i.get("drained", [])),
                terminated=tuple(i.get("terminated", [])),
                warm_pool_size=int(i["warm_pool_size"]),
                buffer_target=int(i["buffer_target"]),
                idle=int(i["idle"]),
                busy=int(i["busy"]),
                queued=int(i["queued"]),
                reason=i["reason"],
                acted=bool(i["acted"]),
            )
            for i in page.get("Items", [])
        ]


_LAUNCH_ERROR_KEEP_SECONDS = 86_400


def _dec(value: float) -> Decimal:
    return Decimal(repr(float(value)))


def _conditional(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
