"""The recordings handshake on moto in server mode: DynamoDB for the bookkeeping, S3 reached
over real HTTP through the presigned part URLs, SNS (with an SQS subscriber) for the announcement.

moto stores whatever bytes arrive and checks no checksum, so every corruption here is caught
by the control plane's own comparison, never by S3 refusing a checksum header.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import threading
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.config import Config

from chalicelib.bootstrap import TABLE_DEFINITION
from chalicelib.errors import ApiError, Forbidden, NotFound, Unavailable
from chalicelib.recording_ready import Announcer
from chalicelib.recording_store import DynamoDBRecordingStore
from chalicelib.recordings import (
    MIB,
    BadName,
    EmptyFile,
    PartsRejected,
    RecordingService,
    RecordingSettings,
    SessionReused,
    SizeMismatch,
    StoredRecording,
)
from chalicelib.s3_storage import S3Storage
from sim.clock import ManualClock

PART = 5 * MIB
INSTANCE = "i-0123456789abcdef0"
OTHER = "i-0fedcba9876543210"
START = 1_795_482_123.0  # 2026-11-24T01:02:03Z


def recording_bytes(size: int, seed: int = 7) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB, not all one byte
    return (block * (size // len(block) + 1))[:size]


def declaration(session_id: str, files: dict[str, bytes], part_size: int = PART, **extra: Any) -> dict[str, Any]:
    declared = []
    for name, data in files.items():
        parts = []
        for index in range(math.ceil(len(data) / part_size)):
            chunk = data[index * part_size : (index + 1) * part_size]
            parts.append(
                {
                    "number": index + 1,
                    "md5": hashlib.md5(chunk).hexdigest(),
                    "sha256": hashlib.sha256(chunk).hexdigest(),
                }
            )
        declared.append({"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "parts": parts})
    body = {
        "session_id": session_id,
        "room": "Weekly Sync",
        "metadata": {"meeting_url": "https://meet.example.com/WeeklySync", "participants": [{"name": "Ana"}]},
        "started_at": "2026-11-24T01:00:00Z",
        "ended_at": "2026-11-24T01:40:00Z",
        "part_size": part_size,
        "files": declared,
    }
    body.update(extra)
    return body


def put_part(entry: dict[str, Any], data: bytes) -> str:
    request = urllib.request.Request(entry["url"], data=data, method="PUT", headers=entry["headers"])
    with urllib.request.urlopen(request, timeout=30) as reply:
        return str(reply.headers["ETag"])


def chunk(data: bytes, number: int, part_size: int = PART) -> bytes:
    return data[(number - 1) * part_size : number * part_size]


def completion(files: dict[str, bytes], etags: dict[tuple[str, int], str], part_size: int = PART) -> dict[str, Any]:
    listed = []
    for name, data in files.items():
        parts = []
        for number in range(1, math.ceil(len(data) / part_size) + 1):
            piece = chunk(data, number, part_size)
            parts.append(
                {
                    "number": number,
                    "etag": etags[(name, number)],
                    "md5": hashlib.md5(piece).hexdigest(),
                    "sha256": hashlib.sha256(piece).hexdigest(),
                }
            )
        listed.append({"name": name, "parts": parts})
    return {"files": listed}


@dataclass
class World:
    service: RecordingService
    s3: Any
    bucket: str
    queue_url: str
    sqs: Any
    store: DynamoDBRecordingStore
    clock: ManualClock
    completed: list[str] = field(default_factory=list)
    rejected: list[dict[str, list[int]]] = field(default_factory=list)

    def send(self, reply: dict[str, Any], files: dict[str, bytes], etags: dict[tuple[str, int], str]) -> None:
        for listed in reply["files"]:
            for entry in listed["upload"]:
                etags[(listed["name"], entry["number"])] = put_part(
                    entry, chunk(files[listed["name"]], entry["number"])
                )

    def messages(self) -> list[dict[str, Any]]:
        found = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        return [json.loads(json.loads(m["Body"])["Message"]) for m in found.get("Messages", [])]

    def open_uploads(self) -> list[str]:
        return [u["Key"] for u in self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])]


@pytest.fixture
def world(aws: boto3.session.Session, unique: str) -> World:
    ddb = aws.client("dynamodb")
    table_name = f"rec-{unique}"
    ddb.create_table(TableName=table_name, **TABLE_DEFINITION)
    s3 = aws.client("s3", config=Config(signature_version="s3v4"))
    bucket = f"recordings-{unique}"
    s3.create_bucket(Bucket=bucket)
    sns, sqs = aws.client("sns"), aws.client("sqs")
    topic = sns.create_topic(Name=f"ready-{unique}")["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"ready-{unique}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    settings = RecordingSettings(bucket=bucket, topic_arn=topic, tags=(("team", "media"),))
    store = DynamoDBRecordingStore(aws.resource("dynamodb").Table(table_name), "jibri-dev")
    clock = ManualClock(START)
    holder: dict[str, World] = {}
    service = RecordingService(
        store,
        S3Storage(s3, settings),
        clock,
        settings,
        "jibri-dev",
        announce=Announcer(lambda: sns, topic, None),
        on_complete=lambda recording: holder["world"].completed.append(recording.recording_id),
        on_rejected=lambda recording_id, parts: holder["world"].rejected.append(parts),
    )
    holder["world"] = World(service, s3, bucket, queue_url, sqs, store, clock)
    return holder["world"]


def three_parts() -> dict[str, bytes]:
    return {"weekly-sync.mp4": recording_bytes(2 * PART + 1234)}


def test_a_recording_of_three_parts_lands_with_its_manifest_and_announcement(world: World) -> None:
    files = three_parts()
    status, reply = world.service.declare(INSTANCE, declaration("sess-1", files))
    assert status == 201
    (listed,) = reply["files"]
    assert listed["key"] == "recordings/2026/11/24/Weekly_Sync/sess-1/weekly-sync.mp4"
    assert [e["number"] for e in listed["upload"]] == [1, 2, 3] and listed["held"] == []
    etags: dict[tuple[str, int], str] = {}
    world.send(reply, files, etags)

    done = world.service.complete(INSTANCE, "sess-1", completion(files, etags))

    assert done["status"] == "complete"
    assert done["manifest_key"] == "recordings/2026/11/24/Weekly_Sync/sess-1/manifest.json"
    stored = world.s3.get_object(Bucket=world.bucket, Key=listed["key"])
    assert hashlib.sha256(stored["Body"].read()).hexdigest() == hashlib.sha256(files["weekly-sync.mp4"]).hexdigest()
    assert stored["ServerSideEncryption"] == "AES256"
    assert stored["ContentType"] == "video/mp4"
    tags = world.s3.get_object_tagging(Bucket=world.bucket, Key=listed["key"])["TagSet"]
    assert tags == [{"Key": "team", "Value": "media"}]
    manifest = json.loads(world.s3.get_object(Bucket=world.bucket, Key=done["manifest_key"])["Body"].read())
    assert manifest["meeting_url"] == "https://meet.example.com/WeeklySync"
    assert manifest["participants"] == [{"name": "Ana"}]
    assert manifest["duration_seconds"] == 2400
    assert manifest["instance_id"] == INSTANCE
    assert manifest["files"][0]["sha256"] == hashlib.sha256(files["weekly-sync.mp4"]).hexdigest()
    assert manifest["files"][0]["size"] == 2 * PART + 1234
    (message,) = world.messages()
    assert message["type"] == "recording.ready" and message["manifest"] == manifest
    download = message["downloads"][0]["url"]
    with urllib.request.urlopen(download, timeout=30) as reply_body:
        assert hashlib.sha256(reply_body.read()).digest() == hashlib.sha256(files["weekly-sync.mp4"]).digest()
    assert world.completed == ["sess-1"]
    assert world.open_uploads() == []


def test_complete_is_idempotent_and_announces_once(world: World) -> None:
    files = three_parts()
    _, reply = world.service.declare(INSTANCE, declaration("sess-2", files))
    etags: dict[tuple[str, int], str] = {}
    world.send(reply, files, etags)
    first = world.service.complete(INSTANCE, "sess-2", completion(files, etags))
    again = world.service.complete(INSTANCE, "sess-2", completion(files, etags))
    assert again == first
    assert len(world.messages()) == 1
    assert world.completed == ["sess-2"]
    status, redeclared = world.service.declare(INSTANCE, declaration("sess-2", files))
    assert (status, redeclared["status"], redeclared["files"][0]["upload"]) == (200, "complete", [])


def test_resume_hands_out_only_the_parts_s3_does_not_hold(world: World) -> None:
    files = three_parts()
    _, reply = world.service.declare(INSTANCE, declaration("sess-3", files))
    etags = {("weekly-sync.mp4", 1): put_part(reply["files"][0]["upload"][0], chunk(files["weekly-sync.mp4"], 1))}
    world.clock.advance(600)  # the agent restarted

    status, resumed = world.service.declare(INSTANCE, declaration("sess-3", files))

    assert status == 200
    assert resumed["files"][0]["held"] == [1]
    assert [e["number"] for e in resumed["files"][0]["upload"]] == [2, 3]
    world.send(resumed, files, etags)
    assert world.service.complete(INSTANCE, "sess-3", completion(files, etags))["status"] == "complete"


def test_a_part_corrupted_in_flight_is_not_held_is_rejected_and_resent(world: World) -> None:
    files = three_parts()
    data = files["weekly-sync.mp4"]
    _, reply = world.service.declare(INSTANCE, declaration("sess-4", files))
    etags: dict[tuple[str, int], str] = {}
    for entry in reply["files"][0]["upload"]:
        piece = bytearray(chunk(data, entry["number"]))
        if entry["number"] == 2:
            piece[12345] ^= 0x01  # one bit flipped between the disk and S3
        etags[("weekly-sync.mp4", entry["number"])] = put_part(entry, bytes(piece))

    with pytest.raises(PartsRejected) as rejected:
        world.service.complete(INSTANCE, "sess-4", completion(files, etags))
    assert rejected.value.status_code == 409
    assert rejected.value.body()["rejected"] == [{"name": "weekly-sync.mp4", "parts": [2]}]
    assert world.rejected == [{"weekly-sync.mp4": [2]}]
    assert world.messages() == []

    _, again = world.service.declare(INSTANCE, declaration("sess-4", files))
    assert again["files"][0]["held"] == [1, 3]
    assert [e["number"] for e in again["files"][0]["upload"]] == [2]
    world.send(again, files, etags)
    assert world.service.complete(INSTANCE, "sess-4", completion(files, etags))["status"] == "complete"
    stored = world.s3.get_object(Bucket=world.bucket, Key=again["files"][0]["key"])["Body"].read()
    assert stored == data


def test_a_missing_part_is_rejected(world: World) -> None:
    files = three_parts()
    _, reply = world.service.declare(INSTANCE, declaration("sess-5", files))
    etags: dict[tuple[str, int], str] = {}
    world.send({"files": [{**reply["files"][0], "upload": reply["files"][0]["upload"][:2]}]}, files, etags)
    etags[("weekly-sync.mp4", 3)] = '"00000000000000000000000000000000"'
    with pytest.raises(PartsRejected) as rejected:
        world.service.complete(INSTANCE, "sess-5", completion(files, etags))
    assert rejected.value.rejected == {"weekly-sync.mp4": [3]}


def test_urls_per_reply_are_bounded_and_more_says_so(world: World) -> None:
    bounded = RecordingService(
        world.service.store,
        world.service.storage,
        world.clock,
        RecordingSettings(bucket=world.bucket, urls_per_reply=2),
        "jibri-dev",
    )
    files = three_parts()
    _, reply = bounded.declare(INSTANCE, declaration("sess-6", files))
    assert [e["number"] for e in reply["files"][0]["upload"]] == [1, 2] and reply["more"] is True
    etags: dict[tuple[str, int], str] = {}
    world.send(reply, files, etags)
    _, rest = bounded.declare(INSTANCE, declaration("sess-6", files))
    assert [e["number"] for e in rest["files"][0]["upload"]] == [3] and rest["more"] is False


def test_presigned_part_urls_name_one_key_expire_and_sign_the_checksum(world: World) -> None:
    files = three_parts()
    _, reply = world.service.declare(INSTANCE, declaration("sess-7", files))
    for entry in reply["files"][0]["upload"]:
        url = urlsplit(entry["url"])
        query = parse_qs(url.query)
        assert url.path == f"/{world.bucket}/{reply['files'][0]['key']}"
        assert query["partNumber"] == [str(entry["number"])]
        assert int(query["X-Amz-Expires"][0]) == 900
        assert "x-amz-checksum-sha256" in query["X-Amz-SignedHeaders"][0].split(";")
        piece = chunk(files["weekly-sync.mp4"], entry["number"])
        assert entry["headers"]["x-amz-checksum-sha256"] == base64.b64encode(hashlib.sha256(piece).digest()).decode()
    assert reply["expires_at"] == "2026-11-24T01:17:03.000Z"


def test_session_reused_with_other_files_or_by_another_instance_is_refused(world: World) -> None:
    files = three_parts()
    world.service.declare(INSTANCE, declaration("sess-8", files))
    other_files = {"weekly-sync.mp4": recording_bytes(2 * PART + 1234, seed=8)}
    with pytest.raises(SessionReused) as reused:
        world.service.declare(INSTANCE, declaration("sess-8", other_files))
    assert reused.value.status_code == 409 and "different files" in reused.value.message
    with pytest.raises(SessionReused, match="another instance"):
        world.service.declare(OTHER, declaration("sess-8", files))
    with pytest.raises(Forbidden):
        world.service.complete(OTHER, "sess-8", {"files": []})
    with pytest.raises(NotFound):
        world.service.complete(INSTANCE, "sess-unknown", {"files": []})
    assert world.open_uploads() == [world.service.store.get("sess-8").files[0].key]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("mutate", "error", "words"),
    [
        (lambda b: b["files"][0].update(size=0, parts=[]), EmptyFile, "empty"),
        (lambda b: b.update(files=[]), EmptyFile, "no file"),
        (lambda b: b["files"][0].update(name="../etc/passwd"), BadName, "plain name"),
        (lambda b: b["files"][0].update(name="manifest.json"), BadName, "manifest.json"),
        (lambda b: b["files"][0].update(size=b["files"][0]["size"] + PART), SizeMismatch, "parts declared"),
        (lambda b: b["files"][0]["parts"].pop(), SizeMismatch, "parts declared"),
        (lambda b: b["files"][0]["parts"][1].update(number=7), SizeMismatch, "numbered"),
        (lambda b: b.update(part_size=1024), ApiError, "part_size"),
        (lambda b: b.update(session_id="../x"), ApiError, "session_id"),
        (lambda b: b.update(metadata=["not", "an", "object"]), ApiError, "metadata"),
        (lambda b: b.update(started_at="yesterday"), ApiError, "ISO 8601"),
        (lambda b: b["files"][0].update(sha256="ABC"), ApiError, "sha256"),
        (lambda b: b.update(extra=1), ApiError, "unknown fields"),
        (lambda b: b["files"].append(dict(b["files"][0])), BadName, "unique"),
    ],
)
def test_bad_declarations_get_a_4xx_naming_the_session_and_change_nothing(
    world: World, mutate: Any, error: type[ApiError], words: str
) -> None:
    body = declaration("sess-bad", three_parts())
    mutate(body)
    with pytest.raises(error, match=words) as raised:
        world.service.declare(INSTANCE, body)
    assert 400 <= raised.value.status_code < 500
    assert world.service.store.get("sess-bad") is None
    assert world.open_uploads() == []


def test_an_upload_aborted_by_the_bucket_rule_is_opened_again(world: World) -> None:
    files = three_parts()
    _, reply = world.service.declare(INSTANCE, declaration("sess-9", files))
    put_part(reply["files"][0]["upload"][0], chunk(files["weekly-sync.mp4"], 1))
    stored = world.service.store.get("sess-9")
    assert stored is not None
    world.s3.abort_multipart_upload(Bucket=world.bucket, Key=stored.files[0].key, UploadId=stored.files[0].upload_id)

    _, resumed = world.service.declare(INSTANCE, declaration("sess-9", files))

    assert resumed["files"][0]["held"] == [] and len(resumed["files"][0]["upload"]) == 3
    etags: dict[tuple[str, int], str] = {}
    world.send(resumed, files, etags)
    assert world.service.complete(INSTANCE, "sess-9", completion(files, etags))["status"] == "complete"


class _CrashAfterComplete:
    """The storage port, failing once right after S3 completed the upload (the Lambda died there)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def complete_upload(self, *args: Any) -> str:
        etag = str(self.inner.complete_upload(*args))
        if not self.crashed:
            self.crashed = True
            raise TimeoutError("the function timed out")
        return etag


def test_a_completion_that_died_after_s3_completed_is_finished_by_the_next_call(world: World) -> None:
    world.service.storage = _CrashAfterComplete(world.service.storage)
    files = three_parts()
    _, reply = world.service.declare(INSTANCE, declaration("sess-10", files))
    etags: dict[tuple[str, int], str] = {}
    world.send(reply, files, etags)
    with pytest.raises(TimeoutError):
        world.service.complete(INSTANCE, "sess-10", completion(files, etags))
    assert world.messages() == []

    _, redeclared = world.service.declare(INSTANCE, declaration("sess-10", files))
    assert redeclared["files"][0]["upload"] == []  # the object is there; nothing to send again
    done = world.service.complete(INSTANCE, "sess-10", completion(files, etags))
    assert done["status"] == "complete"
    assert len(world.messages()) == 1


def test_a_failed_announcement_is_a_503_and_the_next_call_announces(world: World) -> None:
    calls: list[dict[str, Any]] = []

    def flaky(message: dict[str, Any]) -> None:
        calls.append(message)
        if len(calls) == 1:
            raise ConnectionError("sns unreachable")

    world.service.announce = flaky
    files = three_parts()
    _, reply = world.service.declare(INSTANCE, declaration("sess-11", files))
    etags: dict[tuple[str, int], str] = {}
    world.send(reply, files, etags)
    with pytest.raises(Unavailable, match="call complete again"):
        world.service.complete(INSTANCE, "sess-11", completion(files, etags))
    assert world.service.complete(INSTANCE, "sess-11", completion(files, etags))["status"] == "complete"
    assert len(calls) == 2
    world.service.complete(INSTANCE, "sess-11", completion(files, etags))
    assert len(calls) == 2


def test_parts_that_differ_from_the_declaration_are_refused_at_completion(world: World) -> None:
    files = three_parts()
    _, reply = world.service.declare(INSTANCE, declaration("sess-12", files))
    etags: dict[tuple[str, int], str] = {}
    world.send(reply, files, etags)
    changed = completion(files, etags)
    changed["files"][0]["parts"][0]["sha256"] = "0" * 64
    with pytest.raises(SizeMismatch, match="changed on disk"):
        world.service.complete(INSTANCE, "sess-12", changed)


def test_two_declarations_racing_share_one_upload_per_file(world: World) -> None:
    files = three_parts()
    body = declaration("sess-13", files)
    replies: list[tuple[int, dict[str, Any]]] = []
    barrier = threading.Barrier(4)

    def declare() -> None:
        barrier.wait()
        replies.append(world.service.declare(INSTANCE, body))

    threads = [threading.Thread(target=declare) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(status for status, _ in replies) == [200, 200, 200, 201]
    stored: StoredRecording | None = world.service.store.get("sess-13")
    assert stored is not None
    uploads = world.s3.list_multipart_uploads(Bucket=world.bucket).get("Uploads", [])
    assert [u["UploadId"] for u in uploads] == [stored.files[0].upload_id]


def test_several_files_in_one_session(world: World) -> None:
    files = {"a.mp4": recording_bytes(PART + 10, seed=1), "chat.txt": b"hello\n"}
    _, reply = world.service.declare(INSTANCE, declaration("sess-14", files))
    etags: dict[tuple[str, int], str] = {}
    world.send(reply, files, etags)
    done = world.service.complete(INSTANCE, "sess-14", completion(files, etags))
    assert [f["name"] for f in done["files"]] == ["a.mp4", "chat.txt"]
    text = world.s3.get_object(Bucket=world.bucket, Key=done["files"][1]["key"])
    assert text["Body"].read() == b"hello\n" and text["ContentType"] == "application/octet-stream"


def test_an_agent_that_lost_its_etags_in_a_restart_still_completes_with_the_ones_s3_holds(world: World) -> None:
    files = three_parts()
    _, reply = world.service.declare(INSTANCE, declaration("sess-15", files))
    etags: dict[tuple[str, int], str] = {}
    world.send(reply, files, etags)
    forgotten = {key: '"forgotten-in-a-restart"' for key in etags}
    done = world.service.complete(INSTANCE, "sess-15", completion(files, forgotten))
    assert done["status"] == "complete"
    stored = world.s3.get_object(Bucket=world.bucket, Key=done["files"][0]["key"])["Body"].read()
    assert stored == files["weekly-sync.mp4"]
