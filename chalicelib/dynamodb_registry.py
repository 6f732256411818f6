"""DynamoDB registry: one item per recorder in a single table.

Keys: PK = POOL#<pool>, SK = RECORDER#<instance_id>. The `by_state` index
(GSI1PK = <pool>#<state>, GSI1SK = <instance_id>) lists recorders by state
without a scan. Tombstones carry `expires_at` for the table's TTL.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from chalicelib.registry import (
    LifecycleHook,
    LostRace,
    Recorder,
    WriteResult,
    Written,
    checked_save_target,
    decode_page_token,
    encode_page_token,
)
from chalicelib.states import RecorderState

STATE_INDEX = "by_state"
_PREFIX = "RECORDER#"


class DynamoDBRegistry:
    def __init__(self, table: Any, pool: str) -> None:
        self._table = table
        self.pool = pool
        self._pk = f"POOL#{pool}"

    def get(self, instance_id: str) -> Recorder | None:
        item = self._table.get_item(Key=self._key(instance_id), ConsistentRead=True).get("Item")
        return _from_item(item) if item else None

    def create(self, recorder: Recorder) -> WriteResult:
        if recorder.pool != self.pool:
            raise ValueError(f"recorder belongs to pool {recorder.pool}, not {self.pool}")
        stored = dataclasses.replace(recorder, version=1)
        return self._put(stored, Attr("PK").not_exists())

    def save(self, expected: Recorder, updated: Recorder) -> WriteResult:
        target = checked_save_target(expected, updated)
        condition = Attr("state").eq(expected.state.value) & Attr("version").eq(expected.version)
        return self._put(target, condition)

    def list_by_state(self, state: RecorderState) -> list[Recorder]:
        # The index is eventually consistent: callers confirm with a conditional write.
        kwargs: dict[str, Any] = {
            "IndexName": STATE_INDEX,
            "KeyConditionExpression": Key("GSI1PK").eq(f"{self.pool}#{state.value}"),
        }
        found: list[Recorder] = []
        while True:
            page = self._table.query(**kwargs)
            found.extend(r for r in map(_from_item, page.get("Items", [])) if r.state is state)
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def list_all(self) -> Iterator[Recorder]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("PK").eq(self._pk) & Key("SK").begins_with(_PREFIX),
        }
        while True:
            page = self._table.query(**kwargs)
            yield from map(_from_item, page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def list_page(self, limit: int, token: str | None) -> tuple[list[Recorder], str | None]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("PK").eq(self._pk) & Key("SK").begins_with(_PREFIX),
            "FilterExpression": Attr("state").ne(RecorderState.TERMINATED.value),
        }
        if token:
            kwargs["ExclusiveStartKey"] = self._key(decode_page_token(token))
        found: list[Recorder] = []
        # Filtered pages can come back short; keep reading until the page is full.
        while len(found) < limit:
            kwargs["Limit"] = limit - len(found)
            page = self._table.query(**kwargs)
            found.extend(map(_from_item, page.get("Items", [])))
            last = page.get("LastEvaluatedKey")
            if last is None:
                return found, None
            kwargs["ExclusiveStartKey"] = last
        return found, encode_page_token(found[-1].instance_id)

    def _key(self, instance_id: str) -> dict[str, str]:
        return {"PK": self._pk, "SK": _PREFIX + instance_id}

    def _put(self, recorder: Recorder, condition: Any) -> WriteResult:
        try:
            self._table.put_item(Item=self._to_item(recorder), ConditionExpression=condition)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            return LostRace(self.get(recorder.instance_id))
        return Written(recorder)

    def _to_item(self, recorder: Recorder) -> dict[str, Any]:
        item: dict[str, Any] = {
            **self._key(recorder.instance_id),
            "GSI1PK": f"{self.pool}#{recorder.state.value}",
            "GSI1SK": recorder.instance_id,
            "pool": recorder.pool,
            "instance_id": recorder.instance_id,
            "state": recorder.state.value,
            "version": recorder.version,
            "created_at": _dec(recorder.created_at),
            "updated_at": _dec(recorder.updated_at),
            "state_changed_at": _dec(recorder.state_changed_at),
            "pending_uploads": recorder.pending_uploads,
        }
        optional = {
            "last_heartbeat_at": _dec(recorder.last_heartbeat_at),
            "last_report_sent_at": _dec(recorder.last_report_sent_at),
            "busy_status": recorder.busy_status,
            "health": recorder.health,
            # Stored as text: Jibri's JSON is opaque here, and a DynamoDB map would refuse
            # some valid JSON (empty keys, nesting past 32 levels).
            "jibri_json": None if recorder.jibri is None else json.dumps(recorder.jibri, separators=(",", ":")),
            "expires_at": recorder.expires_at,
            "launch_kind": recorder.launch_kind,
            "hook_json": None if recorder.hook is None else json.dumps(recorder.hook.to_json()),
            "last_event_at": _dec(recorder.last_event_at),
            "stop_recording": recorder.stop_recording or None,
            "target_lifecycle_state": recorder.target_lifecycle_state,
            "replace_requested_at": _dec(recorder.replace_requested_at),
            "drain_reason": recorder.drain_reason,
            "disk_free_bytes": recorder.disk_free_bytes,
            "failed_uploads": recorder.failed_uploads or None,
            "reserved_for": recorder.reserved_for,
            "reserved_until": _dec(recorder.reserved_until),
            "private_ip": recorder.private_ip,
            "offline_since": _dec(recorder.offline_since),
        }
        item.update({k: v for k, v in optional.items() if v is not None})
        return item


def _dec(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(repr(float(value)))


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _from_item(item: dict[str, Any]) -> Recorder:
    return Recorder(
        pool=item["pool"],
        instance_id=item["instance_id"],
        state=RecorderState(item["state"]),
        version=int(item["version"]),
        created_at=float(item["created_at"]),
        updated_at=float(item["updated_at"]),
        state_changed_at=float(item["state_changed_at"]),
        last_heartbeat_at=_opt_float(item.get("last_heartbeat_at")),
        last_report_sent_at=_opt_float(item.get("last_report_sent_at")),
        busy_status=item.get("busy_status"),
        health=item.get("health"),
        pending_uploads=int(item.get("pending_uploads", 0)),
        jibri=json.loads(item["jibri_json"]) if item.get("jibri_json") else None,
        expires_at=None if item.get("expires_at") is None else int(item["expires_at"]),
        launch_kind=item.get("launch_kind"),
        hook=LifecycleHook.from_json(json.loads(item["hook_json"])) if item.get("hook_json") else None,
        last_event_at=_opt_float(item.get("last_event_at")),
        stop_recording=bool(item.get("stop_recording", False)),
        target_lifecycle_state=item.get("target_lifecycle_state"),
        replace_requested_at=_opt_float(item.get("replace_requested_at")),
        drain_reason=item.get("drain_reason"),
        disk_free_bytes=None if item.get("disk_free_bytes") is None else int(item["disk_free_bytes"]),
        failed_uploads=int(item.get("failed_uploads", 0)),
        reserved_for=item.get("reserved_for"),
        reserved_until=_opt_float(item.get("reserved_until")),
        private_ip=item.get("private_ip"),
        offline_since=_opt_float(item.get("offline_since")),
    )
