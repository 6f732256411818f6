"""POST /v1/recordings and POST /v1/recordings/{id}/complete, invoked with API Gateway proxy events.

AWS is moto in process here; the parts themselves travel over real HTTP in tests/adapters and tests/e2e.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from conftest import AGENT_ROLE, Api
from moto import mock_aws

import app as app_module
from chalicelib.bootstrap import TABLE_DEFINITION
from chalicelib.config import Settings
from chalicelib.runtime import Runtime
from sim.clock import ManualClock

BUCKET = "jibri-recordings-test"
TABLE = "jibri-registry-test"
START = 1_795_482_123.0


class RecordingsApi(Api):
    def declare(self, body: Any = None, *, raw: str | None = None, caller_arn: str | None = None) -> tuple[int, Any]:
        event = self.event("apigateway_declare_recording.json")
        return self._send(event, body, raw, caller_arn)

    def complete(
        self, recording_id: str, body: Any = None, *, raw: str | None = None, caller_arn: str | None = None
    ) -> tuple[int, Any]:
        event = self.event("apigateway_complete_recording.json")
        event["path"] = f"/v1/recordings/{recording_id}/complete"
        event["pathParameters"] = {"recording_id": recording_id}
        return self._send(event, body, raw, caller_arn)

    def _send(self, event: dict[str, Any], body: Any, raw: str | None, caller_arn: str | None) -> tuple[int, Any]:
        if caller_arn is not None:
            event["requestContext"]["identity"]["userArn"] = caller_arn
        if body is not None or raw is not None:
            event["body"] = raw if raw is not None else json.dumps(body)
        return self.invoke(event)


def small_declaration(session_id: str = "qlbtwvkrmxuyhzfa", data: bytes = b"a tiny recording") -> dict[str, Any]:
    return {
        "session_id": session_id,
        "room": "weeklysync",
        "metadata": {"meeting_url": "https://meet.example.com/weeklysync"},
        "part_size": 8 * 1024 * 1024,
        "files": [
            {
                "name": "weeklysync.mp4",
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "parts": [
                    {"number": 1, "md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()}
                ],
            }
        ],
    }


def make_api(bucket: str | None) -> RecordingsApi:
    settings = Settings(
        table_name=TABLE,
        asg_name="jibri-dev",
        agent_role_name=AGENT_ROLE,
        pool_name="jibri-dev",
        recordings_bucket=bucket,
    )
    return RecordingsApi(Runtime(settings=settings, clock=ManualClock(START)))


@pytest.fixture
def recordings_api() -> Iterator[RecordingsApi]:
    with mock_aws():
        boto3.client("dynamodb").create_table(TableName=TABLE, **TABLE_DEFINITION)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        api = make_api(BUCKET)
        previous, app_module.runtime = app_module.runtime, api.runtime
        try:
            yield api
        finally:
            app_module.runtime = previous


def open_uploads() -> list[Any]:
    return list(boto3.client("s3").list_multipart_uploads(Bucket=BUCKET).get("Uploads", []))


def test_the_fixture_declaration_is_accepted_with_one_part_url(recordings_api: RecordingsApi) -> None:
    status, body = recordings_api.declare()
    assert status == 201
    assert body["recording_id"] == "qlbtwvkrmxuyhzfa"
    (listed,) = body["files"]
    assert listed["key"] == "recordings/2026/11/24/weeklysync/qlbtwvkrmxuyhzfa/weeklysync_2026-11-24-00-20-00.mp4"
    assert [p["number"] for p in listed["upload"]] == [1]
    status, again = recordings_api.declare()
    assert status == 200 and again["files"][0]["key"] == listed["key"]


def test_a_small_recording_completes_through_the_routes(recordings_api: RecordingsApi) -> None:
    data = b"a tiny recording"
    status, body = recordings_api.declare(small_declaration(data=data))
    assert status == 201
    entry = body["files"][0]["upload"][0]
    s3 = boto3.client("s3")
    key = body["files"][0]["key"]
    upload_id = s3.list_multipart_uploads(Bucket=BUCKET)["Uploads"][0]["UploadId"]
    put = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=entry["number"], Body=data)
    digest = {"md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()}
    done_body = {"files": [{"name": "weeklysync.mp4", "parts": [{"number": 1, "etag": put["ETag"], **digest}]}]}
    status, done = recordings_api.complete("qlbtwvkrmxuyhzfa", done_body)
    assert status == 200 and done["status"] == "complete"
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
    assert open_uploads() == []


def test_without_a_bucket_the_routes_answer_503_not_configured() -> None:
    with mock_aws():
        api = make_api(None)
        previous, app_module.runtime = app_module.runtime, api.runtime
        try:
            status, body = api.declare()
        finally:
            app_module.runtime = previous
    assert status == 503
    assert body["error"]["code"] == "not_configured"
    assert "RECORDINGS_BUCKET" in body["error"]["message"]


@pytest.mark.parametrize(
    "caller",
    [
        "arn:aws:sts::123456789012:assumed-role/some-other-role/i-0123456789abcdef0",
        "arn:aws:iam::123456789012:user/alice",
    ],
)
def test_only_the_agent_role_may_declare(recordings_api: RecordingsApi, caller: str) -> None:
    status, body = recordings_api.declare(caller_arn=caller)
    assert status == 403 and body["error"]["code"] == "forbidden"
    assert open_uploads() == []


def test_another_instance_cannot_complete_or_take_over_a_recording(recordings_api: RecordingsApi) -> None:
    assert recordings_api.declare()[0] == 201
    stranger = f"arn:aws:sts::123456789012:assumed-role/{AGENT_ROLE}/i-0fffffffffffffff9"
    status, body = recordings_api.complete("qlbtwvkrmxuyhzfa", {"files": []}, caller_arn=stranger)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = recordings_api.declare(caller_arn=stranger)
    assert (status, body["error"]["code"]) == (409, "session_reused")


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        ("", 400, "bad_request"),
        ("{not json", 400, "bad_request"),
        ("[]", 400, "bad_request"),
        (json.dumps({**small_declaration(), "files": []}), 400, "empty_file"),
        ("x" * 70_000, 413, "payload_too_large"),
    ],
)
def test_bad_bodies_get_a_4xx_json_error_and_open_nothing(
    recordings_api: RecordingsApi, raw: str, status: int, code: str
) -> None:
    got, body = recordings_api.declare(raw=raw)
    assert (got, body["error"]["code"]) == (status, code)
    assert body["error"]["message"]
    assert open_uploads() == []


def test_completing_an_unknown_recording_is_404_and_a_bad_body_400(recordings_api: RecordingsApi) -> None:
    status, body = recordings_api.complete("nosuchsession", {"files": []})
    assert (status, body["error"]["code"]) == (404, "not_found")
    recordings_api.declare()
    status, body = recordings_api.complete("qlbtwvkrmxuyhzfa", {"files": "all of them"})
    assert (status, body["error"]["code"]) == (400, "bad_request")
    broken = copy.deepcopy(json.loads(recordings_api.event("apigateway_complete_recording.json")["body"]))
    broken["files"][0]["parts"][0]["md5"] = "not-hex"
    status, body = recordings_api.complete("qlbtwvkrmxuyhzfa", broken)
    assert (status, body["error"]["code"]) == (400, "bad_request")


def test_the_fixture_completion_of_parts_never_sent_is_409_parts_rejected(recordings_api: RecordingsApi) -> None:
    recordings_api.declare()
    status, body = recordings_api.complete("qlbtwvkrmxuyhzfa")
    assert status == 409
    assert body["error"]["code"] == "parts_rejected"
    assert body["rejected"] == [{"name": "weeklysync_2026-11-24-00-20-00.mp4", "parts": [1]}]
