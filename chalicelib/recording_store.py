"""Recordings' bookkeeping in the registry table: RECORDING#<session id> beside the recorders."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.recordings import KEEP_SECONDS, StoredFile, StoredRecording


class DynamoDBRecordingStore:
    def __init__(self, table: Any, pool: str) -> None:
        self._table = table
        self._pool = pool

    def get(self, recording_id: str) -> StoredRecording | None:
        item = self._table.get_item(Key=self._key(recording_id), ConsistentRead=True).get("Item")
        return _from_item(item) if item else None

    def create(self, recording: StoredRecording) -> bool:
        return self._put(recording, "attribute_not_exists(PK)", {})

    def save(self, expected_version: int, recording: StoredRecording) -> bool:
        saved = replace(recording, version=expected_version + 1)
        return self._put(saved, "version = :expected", {":expected": expected_version})

    def _put(self, recording: StoredRecording, condition: str, values: dict[str, Any]) -> bool:
        item = {**self._key(recording.recording_id), **_to_item(recording)}
        extra = {"ExpressionAttributeValues": values} if values else {}
        try:
            self._table.put_item(Item=item, ConditionExpression=condition, **extra)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _key(self, recording_id: str) -> dict[str, str]:
        return {"PK": f"POOL#{self._pool}", "SK": f"RECORDING#{recording_id}"}


def _to_item(recording: StoredRecording) -> dict[str, Any]:
    last = recording.completed_at or recording.declared_at
    return {
        "kind": "recording",
        "recording_id": recording.recording_id,
        "instance_id": recording.instance_id,
        "room": recording.room,
        # As a string: metadata.json is the agent's to shape, and DynamoDB refuses floats and empty keys.
        "metadata": json.dumps(recording.metadata),
        "started_at": _dec(recording.started_at),
        "ended_at": _dec(recording.ended_at),
        "declared_at": _dec(recording.declared_at),
        "part_size": recording.part_size,
        "files": [
            {
                "name": f.name,
                "size": f.size,
                "sha256": f.sha256,
                "parts_digest": f.parts_digest,
                "part_count": f.part_count,
                "key": f.key,
                "upload_id": f.upload_id,
                "complete": f.complete,
                "etag": f.etag,
            }
            for f in recording.files
        ],
        "status": recording.status,
        "completed_at": _dec(recording.completed_at),
        "manifest_key": recording.manifest_key,
        "notified": recording.notified,
        "version": recording.version,
        "expires_at": int(last) + KEEP_SECONDS,
    }


def _dec(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(round(value, 3)))


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _from_item(item: dict[str, Any]) -> StoredRecording:
    return StoredRecording(
        recording_id=str(item["recording_id"]),
        instance_id=str(item["instance_id"]),
        room=str(item.get("room", "")),
        metadata=json.loads(item.get("metadata") or "{}"),
        started_at=_float(item.get("started_at")),
        ended_at=_float(item.get("ended_at")),
        declared_at=float(item["declared_at"]),
        part_size=int(item["part_size"]),
        files=tuple(
            StoredFile(
                name=str(f["name"]),
                size=int(f["size"]),
                sha256=str(f["sha256"]),
                parts_digest=str(f["parts_digest"]),
                part_count=int(f["part_count"]),
                key=str(f["key"]),
                upload_id=str(f["upload_id"]),
                complete=bool(f.get("complete")),
                etag=f.get("etag"),
            )
            for f in item["files"]
        ),
        status=str(item.get("status", "uploading")),
        completed_at=_float(item.get("completed_at")),
        manifest_key=item.get("manifest_key"),
        notified=bool(item.get("notified")),
        version=int(item.get("version", 0)),
    )
