"""Recordings end to end: the real agent code (finalize script, spool, uploader) over real HTTP to the
app behind the local gateway, parts through presigned URLs to moto's S3 in server mode, with a proxy
in between that counts part uploads and can corrupt one in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials

from agent.config import parse_config
from agent.reporter import SignedApi
from agent.spool import Spool
from agent.uploader import Uploader
from sim.aws import MotoServer
from sim.gateway import Observed
from sim.s3proxy import PartPut, S3Proxy
from sim.stack import LocalStack
from tests.e2e.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
PART = 5 * MIB
METADATA = {
    "meeting_url": "https://meet.example.com/BoardReview",
    "participants": [{"id": "boardreview@muc.meet.example.com/ana", "name": "Ana"}],
    "app_data": {"file_recording_metadata": {"share": True}},
}


SLOW = 60.0  # multi-part uploads through moto on a shared machine


def recording(size: int, seed: int) -> bytes:
    block = hashlib.sha512(str(seed).encode()).digest() * 1024
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture
def proxied_stack() -> Iterator[tuple[LocalStack, S3Proxy]]:
    stack = LocalStack(group_name="jibri-rec", group_size=1, part_size=PART)
    # The proxy needs moto's address before the stack starts the app with the S3 endpoint.
    stack.moto = MotoServer()
    proxy = S3Proxy(stack.moto.url).start()
    stack.s3_endpoint_url = proxy.url
    try:
        with stack:
            yield stack, proxy
    finally:
        proxy.stop()


def subscribe_queue(stack: LocalStack) -> tuple[Any, str]:
    sqs = stack.session.client("sqs")
    url = sqs.create_queue(QueueName="recording-ready")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    stack.session.client("sns").subscribe(TopicArn=stack.ready_topic_arn, Protocol="sqs", Endpoint=arn)
    return sqs, url


def objects(stack: LocalStack, session_id: str) -> dict[str, bytes]:
    """The session's objects (moto's state is per process, so other tests' recordings may be there too)."""
    s3 = stack.session.client("s3")
    listed = s3.list_objects_v2(Bucket=stack.recordings_bucket).get("Contents", [])
    wanted = [o["Key"] for o in listed if f"/{session_id}/" in o["Key"]]
    return {key: s3.get_object(Bucket=stack.recordings_bucket, Key=key)["Body"].read() for key in wanted}


def manifest_of(stack: LocalStack, session_id: str) -> dict[str, Any] | None:
    found = [data for key, data in objects(stack, session_id).items() if key.endswith("/manifest.json")]
    return json.loads(found[0]) if found else None


def test_the_agent_uploads_a_multipart_recording_verified_announced_and_then_deleted(
    proxied_stack: tuple[LocalStack, S3Proxy],
) -> None:
    stack, proxy = proxied_stack
    sqs, queue = subscribe_queue(stack)
    instance = stack.instance_ids[0]
    recorder = stack.add_recorder(instance)
    pending_reported: list[int] = []

    def observe(request: Observed) -> None:
        if request.path.endswith("/status"):
            pending_reported.append(json.loads(request.body)["pending_uploads"])

    assert stack.gateway is not None
    stack.gateway.on_request = observe
    video = recording(3 * PART + 4321, seed=1)  # four parts
    session_dir = recorder.finish_recording("boardreview-1", {"boardreview_2026-11-24-09-00-00.mp4": video}, METADATA)

    manifest = wait_until(lambda: manifest_of(stack, "boardreview-1"), "the manifest in S3", SLOW)
    wait_until(lambda: not os.path.exists(session_dir), "the local session directory to be deleted", SLOW)

    stored = objects(stack, "boardreview-1")
    (key,) = [k for k in stored if k.endswith(".mp4")]
    assert key == "recordings/2026/11/24/BoardReview/boardreview-1/boardreview_2026-11-24-09-00-00.mp4"
    assert hashlib.sha256(stored[key]).hexdigest() == hashlib.sha256(video).hexdigest()
    assert manifest["files"] == [
        {
            "name": "boardreview_2026-11-24-09-00-00.mp4",
            "key": key,
            "size": len(video),
            "sha256": hashlib.sha256(video).hexdigest(),
            "parts": 4,
            "etag": manifest["files"][0]["etag"],
        }
    ]
    assert manifest["participants"] == METADATA["participants"]
    assert manifest["instance_id"] == instance
    assert sorted(proxy.sent()) == [1, 2, 3, 4]
    message = wait_until(
        lambda: sqs.receive_message(QueueUrl=queue).get("Messages"), "the recording-ready message", SLOW
    )
    announced = json.loads(json.loads(message[0]["Body"])["Message"])
    assert announced["manifest"] == manifest
    assert Spool(recorder.spool_dir).count() == 0
    wait_until(lambda: pending_reported and pending_reported[-1] == 0, "a report with no pending upload", SLOW)
    assert max(pending_reported) == 1  # protection held while it uploaded


def test_a_byte_corrupted_in_flight_is_detected_and_that_part_resent(
    proxied_stack: tuple[LocalStack, S3Proxy],
) -> None:
    stack, proxy = proxied_stack
    corrupted: list[int] = []

    def flip_once(path: str, number: int, body: bytes) -> bytes:
        if number == 2 and not corrupted:
            corrupted.append(number)
            damaged = bytearray(body)
            damaged[len(damaged) // 2] ^= 0x40
            return bytes(damaged)
        return body

    proxy.mutate = flip_once
    recorder = stack.add_recorder(stack.instance_ids[0])
    video = recording(2 * PART + 99, seed=2)  # three parts
    session_dir = recorder.finish_recording("boardreview-2", {"boardreview.mp4": video}, METADATA)

    wait_until(lambda: manifest_of(stack, "boardreview-2"), "the manifest in S3", SLOW)
    wait_until(lambda: not os.path.exists(session_dir), "the local session directory to be deleted", SLOW)
    stored = objects(stack, "boardreview-2")
    (key,) = [k for k in stored if k.endswith(".mp4")]
    assert stored[key] == video
    assert corrupted == [2]
    assert sorted(proxy.sent()) == [1, 2, 2, 3]  # only the damaged part went twice


_CHILD = """
import json, os, sys, threading
from botocore.credentials import Credentials
from agent.config import parse_config
from agent.config import parse_config
from agent.reporter import SignedApi
from agent.spool import Spool
from agent.uploader import Uploader
spec = json.loads(os.environ["UPLOADER_SPEC"])
keys = Credentials(*spec["keys"])
api = SignedApi(spec["api"], "us-east-1", lambda: keys, timeout=30)
config = parse_config(spec["config"])
Uploader(config, Spool(config.spool_dir), api.call).run(threading.Event())
"""


def test_an_uploader_killed_halfway_resumes_without_resending_held_parts(
    proxied_stack: tuple[LocalStack, S3Proxy],
) -> None:
    stack, proxy = proxied_stack
    instance = stack.instance_ids[0]
    recorder = stack.add_recorder(instance)
    # Only the uploader under test may touch this spool: stop the stack's agent for this instance.
    recorder.stop.set()
    assert recorder.thread is not None and stack.gateway is not None
    recorder.thread.join(timeout=10)
    video = recording(5 * PART + 1, seed=3)  # six parts
    session_dir = recorder.finish_recording("boardreview-3", {"boardreview.mp4": video}, METADATA)
    credentials = stack.issuer.role_session(stack.agent_role, instance)
    config = {
        "api_url": stack.gateway.url,
        "spool_dir": recorder.spool_dir,
        "recordings_dir": recorder.recordings_dir,
        "part_size": str(PART),
        "upload_concurrency": "1",
    }
    spec = {"api": stack.gateway.url, "keys": [credentials.access_key, credentials.secret_key, credentials.token]}
    env = {**os.environ, "UPLOADER_SPEC": json.dumps({**spec, "config": config})}
    child = subprocess.Popen([sys.executable, "-c", _CHILD], env=env, cwd=str(ROOT))

    def kill_after_two(put: PartPut) -> None:
        if len(proxy.parts) >= 2:
            child.send_signal(signal.SIGKILL)  # no chance to clean up: a crash or a power cut

    proxy.after_part = kill_after_two
    try:
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    proxy.after_part = None
    held_before = sorted(proxy.sent())
    assert 2 <= len(held_before) < 6, held_before
    assert os.path.exists(session_dir) and manifest_of(stack, "boardreview-3") is None  # nothing deleted yet
    assert sorted(os.listdir(session_dir)) == ["boardreview.mp4", "metadata.json"]

    restarted = Uploader(
        parse_config(config),
        Spool(recorder.spool_dir),
        SignedApi(stack.gateway.url, "us-east-1", lambda: Credentials(*spec["keys"]), timeout=30).call,
    )
    assert restarted.process(Spool(recorder.spool_dir).entries()[0]) == "done"

    resent = sorted(proxy.sent()[len(held_before) :])
    assert not set(resent) & set(held_before), (held_before, resent)
    assert sorted(held_before + resent) == [1, 2, 3, 4, 5, 6]
    stored = objects(stack, "boardreview-3")
    (key,) = [k for k in stored if k.endswith(".mp4")]
    assert stored[key] == video
    assert not os.path.exists(session_dir)
