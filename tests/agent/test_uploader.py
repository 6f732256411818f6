"""The uploader's loop against a stand-in for the control plane's recordings routes over real HTTP.

The stand-in answers as the contract says (declare, resume, complete, parts_rejected, session_reused) and
stores the parts PUT to its presigned-looking URLs, checking each part's x-amz-checksum-sha256 header as S3
does. End-to-end runs against the real Chalice app and moto S3 live with the control plane's tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections import Counter, deque
from collections.abc import Callable
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from botocore.credentials import Credentials

from agent.config import AgentConfig
from agent.log import UTC
from agent.reporter import SignedApi
from agent.spool import CONFIRMED, FAILED, PENDING, Spool, parse_time
from agent.uploader import PartJob, PartResult, PartSender, Uploader
from sim.net import LoopbackServer
from tests.agent.ownership import OwnedBySomeoneElse

PART = 64 * 1024
T0 = datetime(2026, 11, 24, 10, 40, 0, tzinfo=UTC)
Key = tuple[str, str, int]  # session id, file name, part number


class FakeRecordingsApi:
    def __init__(self) -> None:
        self.max_urls = 100
        self.recordings: dict[str, dict[str, Any]] = {}
        self.parts: dict[Key, bytes] = {}
        self.puts: Counter[Key] = Counter()
        self.bodies: list[bytes] = []  # every PUT body received, accepted or not
        self.calls: list[str] = []
        self.fail_put_once: set[Key] = set()
        self.reject_once: set[Key] = set()  # complete finds these parts missing (and drops them)
        self.forced: dict[str, deque[tuple[int, Any]]] = {"declare": deque(), "complete": deque()}
        self.on_complete: Callable[[], None] | None = None
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.server = LoopbackServer(type("Handler", (_Handler,), {"api": self}))

    @property
    def url(self) -> str:
        return self.server.url

    def objects(self, session_id: str) -> dict[str, bytes]:
        return dict(self.recordings[session_id]["objects"])

    # -- control plane ------------------------------------------------------------------------------------------

    def post(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        if not headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 "):
            return 403, _error("forbidden", "not signed")
        if path == "/v1/recordings":
            self.calls.append("declare")
            return self.forced["declare"].popleft() if self.forced["declare"] else self.declare(body)
        if path.startswith("/v1/recordings/") and path.endswith("/complete"):
            self.calls.append("complete")
            if self.forced["complete"]:
                return self.forced["complete"].popleft()
            return self.complete(path.split("/")[3], body)
        return 404, _error("not_found", path)

    def declare(self, body: dict[str, Any]) -> tuple[int, Any]:
        session_id, part_size, files = body["session_id"], body["part_size"], body["files"]
        for file in files:
            if file["size"] <= 0:
                return 400, _error("empty_file", file["name"])
            if len(file["parts"]) != -(-file["size"] // part_size):
                return 400, _error("size_mismatch", file["name"])
        recording = self.recordings.get(session_id)
        status = 200
        if recording is None:
            recording = self.recordings[session_id] = {"declaration": body, "complete": False, "objects": {}}
            status = 201
        elif [f["sha256"] for f in recording["declaration"]["files"]] != [f["sha256"] for f in files]:
            return 409, _error("session_reused", f"{session_id} was declared with other files")
        budget, more, listed = self.max_urls, False, []
        for file in files:
            held, upload = [], []
            for part in file["parts"]:
                data = self.parts.get((session_id, file["name"], part["number"]))
                if recording["complete"] or (data is not None and hashlib.md5(data).hexdigest() == part["md5"]):
                    held.append(part["number"])
                elif budget > 0:
                    budget -= 1
                    checksum = base64.b64encode(bytes.fromhex(part["sha256"])).decode()
                    upload.append(
                        {
                            "number": part["number"],
                            "url": f"{self.url}/s3/{session_id}/{file['name']}/{part['number']}?X-Amz-Signature=x",
                            "headers": {"Content-Type": "application/octet-stream", "x-amz-checksum-sha256": checksum},
                        }
                    )
                else:
                    more = True
            listed.append({"name": file["name"], "key": f"recordings/{file['name']}", "held": held, "upload": upload})
        state = "complete" if recording["complete"] else "uploading"
        return status, {"recording_id": session_id, "status": state, "files": listed, "more": more}

    def complete(self, recording_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        recording = self.recordings.get(recording_id)
        if recording is None:
            return 404, _error("not_found", recording_id)
        declared = recording["declaration"]["files"]
        if recording["complete"]:
            return 200, self._completed(recording_id)
        sent = {f["name"]: [(p["number"], p["md5"], p["sha256"]) for p in f["parts"]] for f in body["files"]}
        if sent != {f["name"]: [(p["number"], p["md5"], p["sha256"]) for p in f["parts"]] for f in declared}:
            return 400, _error("bad_request", "complete does not match the declaration")
        rejected: dict[str, list[int]] = {}
        for file in declared:
            for part in file["parts"]:
                key = (recording_id, file["name"], part["number"])
                if key in self.reject_once:
                    self.reject_once.discard(key)
                    self.parts.pop(key, None)
                data = self.parts.get(key)
                if data is None or hashlib.md5(data).hexdigest() != part["md5"]:
                    rejected.setdefault(file["name"], []).append(part["number"])
        if rejected:
            listed = [{"name": n, "parts": p} for n, p in rejected.items()]
            return 409, {**_error("parts_rejected", "parts missing or corrupted"), "rejected": listed}
        if self.on_complete is not None:
            self.on_complete()
        for file in declared:
            data = b"".join(self.parts[(recording_id, file["name"], p["number"])] for p in file["parts"])
            assert hashlib.sha256(data).hexdigest() == file["sha256"]
            recording["objects"][file["name"]] = data
        recording["complete"] = True
        return 200, self._completed(recording_id)

    def _completed(self, recording_id: str) -> dict[str, Any]:
        files = self.recordings[recording_id]["declaration"]["files"]
        return {
            "recording_id": recording_id,
            "status": "complete",
            "manifest_key": f"recordings/{recording_id}/manifest.json",
            "files": [
                {"name": f["name"], "status": "complete", "size": f["size"], "sha256": f["sha256"]} for f in files
            ],
        }

    # -- S3 -------------------------------------------------------------------------------------------------------

    def put(self, path: str, headers: dict[str, str], data: bytes) -> tuple[int, dict[str, str]]:
        _, _, session_id, name, number = path.split("?")[0].split("/")
        key = (session_id, name, int(number))
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.puts[key] += 1
            self.bodies.append(data)
        try:
            if key in self.fail_put_once:
                self.fail_put_once.discard(key)
                return 500, {}
            checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
            lower = {k.lower(): v for k, v in headers.items()}
            if (
                lower.get("x-amz-checksum-sha256") != checksum
                or lower.get("content-type") != "application/octet-stream"
            ):
                return 400, {}
            self.parts[key] = data
            return 200, {"ETag": f'"{hashlib.md5(data).hexdigest()}"'}
        finally:
            with self.lock:
                self.in_flight -= 1


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class _Handler(BaseHTTPRequestHandler):
    api: FakeRecordingsApi

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body = self.api.post(self.path, dict(self.headers.items()), json.loads(raw))
        self._send(status, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def do_PUT(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers = self.api.put(self.path, dict(self.headers.items()), raw)
        self._send(status, b"", headers)

    def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class WallClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Crash(BaseException):
    """The agent process dying mid-upload (nothing in the uploader catches it)."""


class CrashingSender(PartSender):
    def __init__(self, after: int, concurrency: int) -> None:
        super().__init__(concurrency, timeout=10)
        self.after = after

    def send(self, jobs: Any, stop: threading.Event | None = None) -> list[PartResult]:
        super().send(jobs[: self.after], stop)
        raise Crash()


@pytest.fixture
def api():
    fake = FakeRecordingsApi()
    fake.server.start()
    yield fake
    fake.server.stop()


@pytest.fixture
def world(tmp_path, api):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    clock = WallClock()
    sleeps: list[float] = []
    config = AgentConfig(
        api_url=api.url,
        spool_dir=str(spool_dir),
        recordings_dir=str(recordings),
        part_size=PART,
        upload_concurrency=3,
    )
    signed = SignedApi(api.url, "us-east-1", lambda: Credentials("AKIDTEST", "secret", "token"), timeout=10)

    class World:
        def __init__(self) -> None:
            self.spool = Spool(str(spool_dir), now=clock)
            self.clock, self.sleeps, self.config, self.recordings = clock, sleeps, config, recordings

        def uploader(self, **options: Any) -> Uploader:
            options.setdefault("sender", None)
            return Uploader(config, self.spool, signed.call, now=clock, sleep=sleeps.append, rng=lambda: 0.5, **options)

        def session(self, name: str, files: dict[str, bytes], meeting_url: str = "https://meet.example.com/myroom"):
            directory = recordings / name
            directory.mkdir()
            for file_name, data in files.items():
                (directory / file_name).write_bytes(data)
            (directory / "metadata.json").write_text(json.dumps({"meeting_url": meeting_url, "participants": []}))
            entry, _ = self.spool.add(str(directory))
            return directory, entry

    return World()


def test_a_session_goes_to_s3_and_only_then_leaves_the_disk(world, api):
    video, audio = os.urandom(3 * PART + 100), os.urandom(PART)
    directory, entry = world.session("sess-1", {"myroom_2026-11-24-10-00-00.mp4": video, "extra.flac": audio})
    on_disk_at_complete: list[list[str]] = []
    api.on_complete = lambda: on_disk_at_complete.append(sorted(os.listdir(directory)))
    changes: list[int] = []
    uploader = world.uploader(on_change=lambda: changes.append(world.spool.count()))
    assert world.spool.scan().pending == 1

    assert uploader.process(entry) == "done"

    assert api.objects("sess-1") == {"myroom_2026-11-24-10-00-00.mp4": video, "extra.flac": audio}
    assert on_disk_at_complete == [["extra.flac", "metadata.json", "myroom_2026-11-24-10-00-00.mp4"]]
    assert not directory.exists() and world.spool.scan().pending == 0 and changes == [0]
    assert set(api.puts.values()) == {1} and len(api.puts) == 5
    declaration = api.recordings["sess-1"]["declaration"]
    assert declaration["room"] == "myroom" and declaration["ended_at"] == "2026-11-24T10:40:00Z"
    assert declaration["metadata"] == {"meeting_url": "https://meet.example.com/myroom", "participants": []}
    assert api.max_in_flight <= 3


def test_no_file_is_deleted_until_complete_answers_200(world, api):
    data = os.urandom(2 * PART)
    directory, entry = world.session("sess-2", {"rec.mp4": data})
    api.forced["complete"].append((503, _error("unavailable", "try later")))
    uploader = world.uploader()

    assert uploader.process(entry) == PENDING
    assert sorted(os.listdir(directory)) == ["metadata.json", "rec.mp4"]
    (retry,) = world.spool.entries()
    assert retry.attempts == 1 and "503" in (retry.last_error or "") and retry.state == PENDING
    assert retry.next_attempt_at is not None and not retry.due(world.clock.now)
    assert uploader.run_once() > 0 and api.calls.count("complete") == 1  # not due yet: nothing sent

    world.clock.now = T0 + timedelta(minutes=10)
    uploader.run_once()
    assert api.objects("sess-2") == {"rec.mp4": data} and not directory.exists() and world.spool.count() == 0
    assert api.puts[("sess-2", "rec.mp4", 1)] == 1  # the parts S3 held were not sent again


def test_a_restart_mid_upload_resends_only_what_s3_does_not_hold(world, api):
    api.max_urls = 2  # several declare rounds ("more"), like a long recording
    data = os.urandom(7 * PART + 1)
    directory, entry = world.session("sess-3", {"rec.mp4": data})
    with pytest.raises(Crash):
        world.uploader(sender=CrashingSender(after=2, concurrency=3)).process(entry)
    assert sum(api.puts.values()) == 2 and world.spool.get("sess-3") == entry

    fresh = Uploader(world.config, Spool(world.config.spool_dir), world.uploader()._call, sleep=world.sleeps.append)
    fresh.run_once()

    assert api.objects("sess-3") == {"rec.mp4": data}
    assert [api.puts[("sess-3", "rec.mp4", n)] for n in range(1, 9)] == [1] * 8
    assert not directory.exists() and world.spool.count() == 0


def test_parts_rejected_at_complete_are_sent_again(world, api):
    data = os.urandom(4 * PART)
    directory, entry = world.session("sess-4", {"rec.mp4": data})
    api.reject_once = {("sess-4", "rec.mp4", 2), ("sess-4", "rec.mp4", 4)}

    assert world.uploader().process(entry) == "done"

    assert api.calls.count("complete") == 2
    assert [api.puts[("sess-4", "rec.mp4", n)] for n in range(1, 5)] == [1, 2, 1, 2]
    assert api.objects("sess-4") == {"rec.mp4": data} and not directory.exists()


def test_a_failed_put_is_retried_with_a_fresh_url_in_the_same_attempt(world, api):
    data = os.urandom(3 * PART)
    _, entry = world.session("sess-5", {"rec.mp4": data})
    api.fail_put_once = {("sess-5", "rec.mp4", 2)}

    assert world.uploader().process(entry) == "done"

    assert api.puts[("sess-5", "rec.mp4", 2)] == 2 and api.calls.count("declare") == 3
    assert api.objects("sess-5") == {"rec.mp4": data}
    assert world.sleeps == [1.0]


@pytest.mark.parametrize(
    ("status", "code"), [(409, "session_reused"), (400, "size_mismatch"), (400, "empty_file"), (403, "forbidden")]
)
def test_a_refused_session_is_left_in_place_and_retried_only_after_a_long_backoff(world, api, caplog, status, code):
    directory, entry = world.session("sess-6", {"rec.mp4": os.urandom(PART)})
    api.forced["declare"].append((status, _error(code, "refused")))
    uploader = world.uploader()

    assert uploader.process(entry) == FAILED

    (failed,) = world.spool.entries()
    assert failed.state == FAILED and code in (failed.last_error or "") and failed.attempts == 1
    assert sorted(os.listdir(directory)) == ["metadata.json", "rec.mp4"]
    assert (world.spool.scan().pending, world.spool.scan().failed) == (1, 1)
    assert any(r.levelname == "ERROR" and getattr(r, "session_id", None) == "sess-6" for r in caplog.records)
    world.clock.now = T0 + timedelta(minutes=29)
    uploader.run_once()
    assert api.calls == ["declare"]  # no hot loop
    world.clock.now = T0 + timedelta(hours=2)
    uploader.run_once()
    assert world.spool.count() == 0 and not directory.exists()


def test_a_session_that_has_nothing_left_to_upload_leaves_the_spool(world, api, caplog):
    directory, entry = world.session("sess-7", {"empty.mp4": b""})
    assert world.uploader().process(entry) == "done"
    assert world.spool.count() == 0 and api.calls == []
    assert (directory / "empty.mp4").exists()  # nothing was confirmed, so nothing is deleted
    assert "holds no recording" in caplog.text


def test_a_session_outside_the_recordings_directory_is_refused(world, api, tmp_path):
    elsewhere = tmp_path / "etc" / "sess-8"
    elsewhere.mkdir(parents=True)
    (elsewhere / "passwd").write_bytes(b"root:x:0:0")
    entry, _ = world.spool.add(str(elsewhere))
    assert world.uploader().process(entry) == FAILED
    assert api.calls == [] and (elsewhere / "passwd").exists()
    # Not even an entry claiming the control plane already confirmed it gets anything deleted there.
    forged = world.spool.update(entry, state=CONFIRMED, next_attempt_at=None)
    assert world.uploader().process(forged) == FAILED and (elsewhere / "passwd").exists()


def test_a_symbolic_link_in_the_recordings_directory_is_not_followed(world, api, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "important.db").write_bytes(b"keep me")
    link = world.recordings / "sess-12"
    link.symlink_to(target)
    entry, _ = world.spool.add(str(link))
    assert world.uploader().process(entry) == FAILED
    assert api.calls == [] and (target / "important.db").exists()
    assert "symbolic link" in (world.spool.entries()[0].last_error or "")


class CrashingUnlink:
    """The agent process dying at its first deletion (nothing in the uploader catches it)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        monkeypatch.setattr(os, "unlink", self)

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.monkeypatch.undo()
        raise Crash()


def test_a_crash_between_confirmation_and_deletion_finishes_the_deletion(world, api, monkeypatch):
    data = os.urandom(PART + 1)
    directory, entry = world.session("sess-9", {"rec.mp4": data})
    CrashingUnlink(monkeypatch)
    with pytest.raises(Crash):
        world.uploader().process(entry)
    (confirmed,) = world.spool.entries()
    info = os.stat(directory / "rec.mp4")
    meta = os.stat(directory / "metadata.json")
    assert confirmed.state == CONFIRMED and confirmed.confirmed_files == (
        ("rec.mp4", len(data), info.st_mtime_ns, info.st_dev, info.st_ino, info.st_ctime_ns),
        ("metadata.json", meta.st_size, meta.st_mtime_ns, meta.st_dev, meta.st_ino, meta.st_ctime_ns),
    )
    calls = list(api.calls)

    world.uploader().run_once()

    assert not directory.exists() and world.spool.count() == 0 and api.calls == calls


def test_only_the_files_the_control_plane_confirmed_are_deleted(world, api, monkeypatch, caplog):
    """A file that appears after the upload, or one that changed since it was hashed, stays on the instance."""
    video, late = os.urandom(2 * PART), os.urandom(PART)
    directory, entry = world.session("sess-13", {"rec.mp4": video, "notes.txt": b"first"})
    CrashingUnlink(monkeypatch)
    with pytest.raises(Crash):
        world.uploader().process(entry)
    # While the agent was down: Jibri (or anyone) added a file and rewrote another.
    (directory / "late.mp4").write_bytes(late)
    (directory / "notes.txt").write_bytes(b"second")

    world.uploader().run_once()

    assert api.objects("sess-13") == {"rec.mp4": video, "notes.txt": b"first"}
    assert sorted(os.listdir(directory)) == ["late.mp4", "notes.txt"]
    assert (directory / "late.mp4").read_bytes() == late and (directory / "notes.txt").read_bytes() == b"second"
    # No upload covers what is left: the entry stays, failed, for an operator (and the instance protected).
    (kept,) = world.spool.entries()
    assert kept.state == FAILED and "late.mp4" in (kept.last_error or "") and "notes.txt" in (kept.last_error or "")
    assert (world.spool.scan().pending, world.spool.scan().failed) == (1, 1)
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "notes.txt" in warnings and "late.mp4" in warnings


@pytest.mark.parametrize("change", ["another file", "rewritten in place"])
def test_a_confirmed_file_with_the_same_size_and_mtime_but_not_the_same_file_is_kept(world, api, monkeypatch, change):
    """Size and mtime can be set by whoever writes the file: its device, inode and ctime tell it apart."""
    data = os.urandom(PART)
    directory, entry = world.session("sess-32", {"rec.mp4": data})
    CrashingUnlink(monkeypatch)
    with pytest.raises(Crash):
        world.uploader().process(entry)
    (confirmed,) = world.spool.entries()
    path = directory / "rec.mp4"
    mtime_ns = path.stat().st_mtime_ns
    other = b"o" * len(data)
    if change == "another file":
        path.unlink()
        (directory / "made-first").write_bytes(other)  # keeps the old inode number from being reused at once
        path.write_bytes(other)
        (directory / "made-first").unlink()
    else:
        with open(path, "r+b") as handle:
            handle.write(other)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (len(data), mtime_ns)

    assert world.uploader().process(confirmed) == FAILED

    assert path.read_bytes() == other  # not what S3 holds: kept, and the entry with it
    assert "rec.mp4 (changed since" in (world.spool.entries()[0].last_error or "")


def test_a_confirmation_recorded_without_identities_is_matched_by_size_and_mtime(world, api, monkeypatch):
    directory, entry = world.session("sess-33", {"rec.mp4": os.urandom(PART)})
    CrashingUnlink(monkeypatch)
    with pytest.raises(Crash):
        world.uploader().process(entry)
    (confirmed,) = world.spool.entries()
    assert confirmed.confirmed_files is not None
    older = world.spool.update(confirmed, confirmed_files=tuple(item[:3] for item in confirmed.confirmed_files))

    assert world.uploader().process(older) == "done"

    assert not directory.exists() and world.spool.count() == 0


def test_a_file_changed_during_the_upload_is_kept(world, api):
    directory, entry = world.session("sess-14", {"rec.mp4": os.urandom(PART), "extra.flac": os.urandom(PART)})
    # Jibri is done with a session it handed off; still, a file written after hashing is not what S3 holds.
    api.on_complete = lambda: (directory / "extra.flac").write_bytes(b"rewritten")

    assert world.uploader().process(entry) == FAILED

    assert sorted(os.listdir(directory)) == ["extra.flac"] and world.spool.scan().failed == 1


def test_a_trimmed_metadata_file_stays_as_s3_holds_only_part_of_it(world, api):
    data = os.urandom(PART)
    directory, entry = world.session("sess-15", {"rec.mp4": data})
    huge = {"meeting_url": "https://meet.example.com/r", "participants": [{"name": "x" * 100}] * 1000}
    (directory / "metadata.json").write_text(json.dumps(huge))

    assert world.uploader().process(entry) == "done"

    assert api.recordings["sess-15"]["declaration"]["metadata"]["participants_omitted"] is True
    assert sorted(os.listdir(directory)) == ["metadata.json"] and world.spool.count() == 0


def test_a_confirmation_without_a_file_list_is_verified_again_before_anything_is_deleted(world, api, monkeypatch):
    """An entry confirmed by an earlier agent names no files: the control plane is asked again, files unchanged."""
    data = os.urandom(2 * PART)
    directory, entry = world.session("sess-16", {"rec.mp4": data})
    CrashingUnlink(monkeypatch)
    with pytest.raises(Crash):
        world.uploader().process(entry)
    legacy = world.spool.update(world.spool.entries()[0], confirmed_files=None)
    on_disk = json.loads((world.recordings.parent / "spool" / "sess-16.json").read_text())
    assert on_disk["state"] == CONFIRMED and "confirmed_files" not in on_disk
    puts = sum(api.puts.values())

    assert world.uploader().process(legacy) == "done"

    assert api.calls[-2:] == ["declare", "complete"] and sum(api.puts.values()) == puts  # nothing sent again
    assert not directory.exists() and world.spool.count() == 0


def test_without_a_file_list_nothing_unconfirmed_is_deleted(world, api, monkeypatch):
    directory, entry = world.session("sess-17", {"rec.mp4": os.urandom(PART)})
    CrashingUnlink(monkeypatch)
    with pytest.raises(Crash):
        world.uploader().process(entry)
    legacy = world.spool.update(world.spool.entries()[0], confirmed_files=None)
    (directory / "late.mp4").write_bytes(b"recorded after")

    # Declared again with a file S3 does not hold: the control plane refuses, and everything stays.
    assert world.uploader().process(legacy) == FAILED
    assert sorted(os.listdir(directory)) == ["late.mp4", "metadata.json", "rec.mp4"]
    assert world.spool.scan().failed == 1


def test_a_session_directory_swapped_for_a_link_after_the_checks_is_not_followed(world, api, monkeypatch, tmp_path):
    data = os.urandom(PART)
    directory, entry = world.session("sess-18", {"rec.mp4": data})
    CrashingUnlink(monkeypatch)
    with pytest.raises(Crash):
        world.uploader().process(entry)
    (confirmed,) = world.spool.entries()
    # Elsewhere, a file with the very name, size and mtime the entry lists.
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "rec.mp4").write_bytes(b"k" * len(data))
    os.utime(target / "rec.mp4", ns=(0, confirmed.confirmed_files[0][2]))
    uploader = world.uploader()
    swap_directory_after_check(monkeypatch, uploader, directory, target)  # then the deletion runs
    assert uploader.process(confirmed) == CONFIRMED
    assert (target / "rec.mp4").read_bytes() == b"k" * len(data)


def test_without_recordings_dir_nothing_is_uploaded_or_deleted(world, api, tmp_path):
    elsewhere = tmp_path / "srv" / "sess-19"
    elsewhere.mkdir(parents=True)
    (elsewhere / "db.sqlite").write_bytes(b"precious")
    entry, _ = world.spool.add(str(elsewhere))
    config = AgentConfig(api_url=api.url, spool_dir=world.config.spool_dir, part_size=PART)
    signed = SignedApi(api.url, "us-east-1", lambda: Credentials("AKIDTEST", "secret", "token"), timeout=10)
    uploader = Uploader(config, world.spool, signed.call, now=world.clock, sleep=world.sleeps.append)

    assert uploader.process(entry) == FAILED
    assert uploader.process(world.spool.update(entry, state=CONFIRMED)) == FAILED  # nor on a forged confirmation
    # A confirmation with its files stays one (only deleting is left), counted as failed.
    assert uploader.process(world.spool.update(entry, state=CONFIRMED, confirmed_files=(("db.sqlite", 8, 0),))) == (
        CONFIRMED
    )
    assert world.spool.scan().failed == 1
    assert api.calls == [] and (elsewhere / "db.sqlite").read_bytes() == b"precious"
    assert "recordings_dir" in (world.spool.entries()[0].last_error or "")


def test_an_entry_naming_another_directory_is_never_acted_on_and_counts_as_failed(world, api, caplog):
    victim = world.recordings / "other-session"
    victim.mkdir()
    (victim / "rec.mp4").write_bytes(b"someone else's recording")
    forged = {"session_id": "sess-20", "session_dir": str(victim), "spooled_at": "2026-11-24T10:40:00Z"}
    (world.recordings.parent / "spool" / "sess-20.json").write_text(json.dumps(forged))
    uploader = world.uploader()

    for _ in range(3):
        uploader.run_once()

    assert api.calls == [] and (victim / "rec.mp4").exists()
    scan = world.spool.scan()
    assert (scan.pending, scan.failed, scan.unreadable) == (1, 1, ["sess-20"])
    assert len([r for r in caplog.records if r.levelname == "ERROR" and "sess-20" in r.getMessage()]) == 1


def test_part_urls_are_sent_the_declared_bytes(tmp_path, api):
    """The sender on its own, as the benchmark drives it: exactly the slice, exactly the given headers."""
    path = tmp_path / "f.bin"
    data = os.urandom(2 * PART + 5)
    path.write_bytes(data)
    api.recordings["s"] = {"declaration": {"files": []}, "complete": False, "objects": {}}
    jobs = []
    for number, (offset, length) in enumerate([(0, PART), (PART, PART), (2 * PART, 5)], start=1):
        checksum = base64.b64encode(hashlib.sha256(data[offset : offset + length]).digest()).decode()
        headers = {"Content-Type": "application/octet-stream", "x-amz-checksum-sha256": checksum}
        jobs.append(PartJob("f.bin", number, str(path), offset, length, f"{api.url}/s3/s/f.bin/{number}", headers))
    results = PartSender(concurrency=2, timeout=10).send(jobs)
    assert [r.ok for r in results] == [True, True, True]
    assert [r.etag for r in results] == [
        f'"{hashlib.md5(api.parts[("s", "f.bin", n)]).hexdigest()}"' for n in (1, 2, 3)
    ]
    assert b"".join(api.parts[("s", "f.bin", n)] for n in (1, 2, 3)) == data


def test_the_agent_reports_spooled_sessions_as_pending_uploads_and_stays_protected(
    make_agent, status_api, group, jibri, tmp_path
):
    spool_dir = tmp_path / "agent-spool"
    spool_dir.mkdir()
    session = tmp_path / "rec" / "sess-10"
    session.mkdir(parents=True)
    (session / "rec.mp4").write_bytes(b"x" * 10)
    agent = make_agent(spool_dir=str(spool_dir))
    agent.tick()
    assert status_api.reports()[-1].body["pending_uploads"] == 0 and not group.protected()

    Spool(str(spool_dir)).add(str(session))  # what the finalize script does when Jibri stops recording
    agent.tick()
    assert status_api.reports()[-1].body["pending_uploads"] == 1 and group.protected()

    Spool(str(spool_dir)).remove("sess-10")  # what the uploader does once the control plane confirmed
    agent.tick()
    assert status_api.reports()[-1].body["pending_uploads"] == 0


def test_with_uploads_disabled_the_spool_is_not_counted(make_agent, status_api, tmp_path):
    spool_dir = tmp_path / "agent-spool"
    spool_dir.mkdir()
    (spool_dir / "sess-11.json").write_text("{}")
    make_agent(spool_dir=str(spool_dir), upload_enabled=False).tick()
    assert status_api.reports()[-1].body["pending_uploads"] == 0


# -- a session's files are read as hashed, never through a link Jibri's user swapped in --------------------------

SECRET = b"root:$6$not-for-the-recordings-bucket:19000:0:99999:7:::\n"


def outside_file(tmp_path, size: int, mtime_ns: int | None = None):
    """A root-only file elsewhere on the instance (think /etc/shadow), of the given size and mtime."""
    secret = tmp_path / "etc" / "shadow"
    secret.parent.mkdir(exist_ok=True)
    secret.write_bytes((SECRET * (size // len(SECRET) + 1))[:size])
    if mtime_ns is not None:
        os.utime(secret, ns=(mtime_ns, mtime_ns))
    return secret


def leaked(api) -> bool:
    """Whether any byte of the outside file reached S3 or the control plane, in a part or a declaration."""
    declarations = json.dumps([r["declaration"] for r in api.recordings.values()]).encode()
    return any(SECRET[:24] in body for body in api.bodies) or SECRET[:24] in declarations


def swap_directory_after_check(monkeypatch: pytest.MonkeyPatch, uploader: Uploader, directory, target) -> None:
    """The uploader's place check passes; right after it, Jibri's user swaps the session directory for a link."""
    checked = uploader._check_place

    def check_then_swap(entry):
        checked(entry)
        directory.rename(directory.parent.parent / f"moved-{directory.name}")
        directory.symlink_to(target)

    monkeypatch.setattr(uploader, "_check_place", check_then_swap)


def swap_for_link(path, target) -> None:
    path.unlink()
    path.symlink_to(target)


class SwapAfterLook:
    """Jibri's user swapping a session's file right after the uploader looked at it, before it is opened."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str, swap: Callable[[], None]) -> None:
        self.name, self.swap, self.swapped = name, swap, False
        for attr in ("stat", "lstat"):
            monkeypatch.setattr(os, attr, self._wrap(getattr(os, attr)))

    def _wrap(self, real: Callable[..., os.stat_result]) -> Callable[..., os.stat_result]:
        def look(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
            info = real(path, *args, **kwargs)
            if not self.swapped and isinstance(path, str | os.PathLike) and os.path.basename(path) == self.name:
                self.swapped = True
                self.swap()
            return info

        return look


class SwappingSender(PartSender):
    """Sends parts as PartSender does, after `swap` ran once: between the hash pass and the first part read."""

    def __init__(self, swap: Callable[[], None]) -> None:
        super().__init__(concurrency=3, timeout=10)
        self.swap, self.swapped = swap, False

    def send(self, jobs: Any, stop: threading.Event | None = None) -> list[PartResult]:
        if not self.swapped:
            self.swapped = True
            self.swap()
        return super().send(jobs, stop)


def test_a_file_swapped_for_a_link_between_the_look_and_the_hash_is_not_read(world, api, monkeypatch, tmp_path):
    data = os.urandom(2 * PART)
    directory, entry = world.session("sess-21", {"rec.mp4": data})
    secret = outside_file(tmp_path, len(data))
    look = SwapAfterLook(monkeypatch, "rec.mp4", lambda: swap_for_link(directory / "rec.mp4", secret))
    uploader = world.uploader()

    assert uploader.process(entry) == PENDING  # the session changed while it was read: hashed again later

    assert look.swapped and api.calls == [] and not leaked(api)
    assert "changed" in (world.spool.entries()[0].last_error or "")
    world.clock.now = T0 + timedelta(minutes=10)
    uploader.run_once()  # the link is now seen as one: no recording is left to send, only the link
    assert api.calls == [] and not leaked(api)
    (kept,) = world.spool.entries()
    assert kept.state == FAILED and "rec.mp4 (not a regular file)" in (kept.last_error or "")
    assert (directory / "rec.mp4").is_symlink() and secret.read_bytes()[: len(SECRET)] == SECRET


@pytest.mark.parametrize("replacement", ["link", "another file"])
def test_a_file_swapped_between_hashing_and_the_part_upload_is_not_read(world, api, tmp_path, replacement):
    data = os.urandom(2 * PART + 10)
    directory, entry = world.session("sess-22", {"rec.mp4": data})
    info = os.stat(directory / "rec.mp4")
    # Same name, size and mtime as the file hashed: only its identity (device and inode) tells them apart.
    secret = outside_file(tmp_path, len(data), info.st_mtime_ns)

    def swap() -> None:
        if replacement == "link":
            swap_for_link(directory / "rec.mp4", secret)
        else:
            (directory / "rec.mp4").unlink()
            (directory / "rec.mp4").write_bytes(secret.read_bytes())
            os.utime(directory / "rec.mp4", ns=(info.st_mtime_ns, info.st_mtime_ns))

    sender = SwappingSender(swap)
    assert world.uploader(sender=sender).process(entry) == PENDING

    assert sender.swapped and not leaked(api) and not api.puts
    assert api.calls == ["declare"] and "rec.mp4" in api.recordings["sess-22"]["declaration"]["files"][0]["name"]
    (retry,) = world.spool.entries()
    assert "changed since it was hashed" in (retry.last_error or "") and retry.state == PENDING
    assert secret.read_bytes()[: len(SECRET)] == SECRET


def test_a_file_rewritten_between_hashing_and_the_part_upload_is_not_sent(world, api):
    data = os.urandom(2 * PART)
    directory, entry = world.session("sess-23", {"rec.mp4": data})

    def append() -> None:
        with open(directory / "rec.mp4", "ab") as handle:
            handle.write(b"more")

    assert world.uploader(sender=SwappingSender(append)).process(entry) == PENDING

    assert not api.puts and "changed since it was hashed" in (world.spool.entries()[0].last_error or "")
    assert (directory / "rec.mp4").read_bytes() == data + b"more"


def test_a_session_directory_swapped_for_a_link_before_the_scan_is_not_followed(world, api, monkeypatch, tmp_path):
    directory, entry = world.session("sess-24", {"rec.mp4": os.urandom(PART)})
    # Elsewhere, a directory holding a "recording" that is in fact a root-only file.
    target = tmp_path / "elsewhere"
    target.mkdir()
    secret = outside_file(tmp_path, PART)
    (target / "rec.mp4").symlink_to(secret)
    (target / "copy.mp4").write_bytes(secret.read_bytes())
    uploader = world.uploader()
    swap_directory_after_check(monkeypatch, uploader, directory, target)  # then the scan runs

    assert uploader.process(entry) == FAILED

    assert api.calls == [] and not leaked(api)
    assert "symbolic link" in (world.spool.entries()[0].last_error or "")
    assert sorted(os.listdir(target)) == ["copy.mp4", "rec.mp4"] and secret.exists()


def test_a_session_directory_swapped_for_a_link_during_the_upload_sends_only_what_was_hashed(world, api, tmp_path):
    data = os.urandom(3 * PART)
    directory, entry = world.session("sess-25", {"rec.mp4": data})
    target = tmp_path / "elsewhere"
    target.mkdir()
    secret = outside_file(tmp_path, len(data), os.stat(directory / "rec.mp4").st_mtime_ns)
    (target / "rec.mp4").symlink_to(secret)
    moved = tmp_path / "moved"

    def swap() -> None:
        directory.rename(moved)
        directory.symlink_to(target)

    # The parts are read from the directory that was hashed, wherever it went: the recording, nothing else.
    assert world.uploader(sender=SwappingSender(swap)).process(entry) == CONFIRMED

    assert api.objects("sess-25") == {"rec.mp4": data} and not leaked(api)
    # Nothing is deleted through the link either: the confirmed session waits for its directory.
    assert (moved / "rec.mp4").read_bytes() == data and directory.is_symlink() and secret.exists()
    assert world.spool.entries()[0].state == CONFIRMED


def test_metadata_swapped_for_a_link_before_it_is_read_is_not_sent(world, api, monkeypatch, tmp_path):
    data = os.urandom(PART)
    directory, entry = world.session("sess-26", {"rec.mp4": data})
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({"meeting_url": "https://x/" + SECRET.decode(), "key": "AKIA-NOT-TO-SEND"}))
    SwapAfterLook(monkeypatch, "metadata.json", lambda: swap_for_link(directory / "metadata.json", credentials))

    # Uploaded; the link that stays is no file of Jibri's: the entry stays too, for an operator.
    assert world.uploader().process(entry) == FAILED

    declaration = api.recordings["sess-26"]["declaration"]
    assert declaration["metadata"] == {} and declaration["room"] == "" and "AKIA" not in json.dumps(declaration)
    assert api.objects("sess-26") == {"rec.mp4": data} and not leaked(api)
    # metadata.json was not sent whole, so it is not confirmed: the link stays, and what it points at.
    assert os.listdir(directory) == ["metadata.json"] and credentials.exists()


def test_a_file_swapped_for_a_fifo_does_not_hang_the_uploader(world, api, monkeypatch):
    directory, entry = world.session("sess-27", {"rec.mp4": os.urandom(PART)})

    def swap() -> None:
        (directory / "rec.mp4").unlink()
        os.mkfifo(directory / "rec.mp4")

    SwapAfterLook(monkeypatch, "rec.mp4", swap)
    states: list[str] = []
    worker = threading.Thread(target=lambda: states.append(world.uploader().process(entry)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    try:
        assert not worker.is_alive(), "opening a FIFO blocked the uploader"
    finally:
        if worker.is_alive():  # release the blocked open, so the thread ends
            os.close(os.open(directory / "rec.mp4", os.O_WRONLY | os.O_NONBLOCK))
    assert states == [PENDING] and api.calls == []


def test_a_hard_link_to_a_file_elsewhere_is_never_read(world, api, tmp_path):
    data = os.urandom(PART)
    directory, entry = world.session("sess-31", {"rec.mp4": data})
    secret = outside_file(tmp_path, 3 * PART)
    os.link(secret, directory / "notes.mp4")  # another name for the outside file, inside the session

    assert world.uploader().process(entry) == FAILED  # uploaded, but the link stays for an operator

    assert not leaked(api)
    assert set(api.objects("sess-31")) == {"rec.mp4"}
    assert (directory / "notes.mp4").exists() and secret.read_bytes()  # skipped, so neither name is deleted


def test_a_metadata_file_that_is_a_hard_link_is_not_sent(world, api, tmp_path):
    data = os.urandom(PART)
    directory, entry = world.session("sess-34", {"rec.mp4": data})
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({"meeting_url": "https://x/" + SECRET.decode(), "key": "AKIA-NOT-TO-SEND"}))
    (directory / "metadata.json").unlink()
    os.link(credentials, directory / "metadata.json")

    assert world.uploader().process(entry) == FAILED  # uploaded; the link stays, for an operator

    declaration = api.recordings["sess-34"]["declaration"]
    assert declaration["metadata"] == {} and "AKIA" not in json.dumps(declaration) and not leaked(api)
    assert (directory / "metadata.json").exists() and credentials.exists()  # neither name is deleted


def test_files_not_owned_by_the_session_directorys_owner_are_never_read(world, api, monkeypatch, tmp_path):
    data = os.urandom(PART)
    directory, entry = world.session("sess-35", {"rec.mp4": data})
    secret = outside_file(tmp_path, 2 * PART)
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({"meeting_url": "https://x/" + SECRET.decode(), "key": "AKIA-NOT-TO-SEND"}))
    (directory / "metadata.json").unlink()
    # Linked in, then the first names removed: one link each again, but still the files of someone else.
    os.link(secret, directory / "notes.mp4")
    os.link(credentials, directory / "metadata.json")
    OwnedBySomeoneElse(monkeypatch, secret, credentials)
    secret.unlink()
    credentials.unlink()
    assert os.stat(directory / "notes.mp4").st_nlink == 1

    assert world.uploader().process(entry) == FAILED  # uploaded; what is not Jibri's stays, for an operator

    assert set(api.objects("sess-35")) == {"rec.mp4"} and not leaked(api)
    declaration = api.recordings["sess-35"]["declaration"]
    assert declaration["metadata"] == {} and "AKIA" not in json.dumps(declaration)
    assert (directory / "notes.mp4").exists() and (directory / "metadata.json").exists()


# -- what is left on the instance is always counted: protected (pending) and, for an operator, failed -------------


def test_a_session_holding_only_files_it_may_not_send_stays_for_an_operator(world, api, tmp_path):
    directory, entry = world.session("sess-40", {})
    secret = outside_file(tmp_path, PART)
    os.link(secret, directory / "rec.mp4")  # planted by Jibri's user where a recording was expected

    assert world.uploader().process(entry) == FAILED

    assert api.calls == [] and not leaked(api)
    (kept,) = world.spool.entries()
    assert "rec.mp4 (a hard link" in (kept.last_error or "") and world.spool.scan().failed == 1
    assert (directory / "rec.mp4").exists()


def test_a_session_holding_only_metadata_and_empty_files_leaves_the_spool(world, api):
    directory, entry = world.session("sess-41", {"empty.mp4": b""})
    assert world.uploader().process(entry) == "done"
    assert api.calls == [] and sorted(os.listdir(directory)) == ["empty.mp4", "metadata.json"]


def crash_before_deleting(world, monkeypatch, name: str, files: dict[str, bytes]):
    """A session the control plane confirmed, the agent having died before deleting anything."""
    directory, entry = world.session(name, files)
    CrashingUnlink(monkeypatch)
    with pytest.raises(Crash):
        world.uploader().process(entry)
    (confirmed,) = world.spool.entries()
    assert confirmed.state == CONFIRMED and confirmed.confirmed_files is not None
    return directory, confirmed


def test_a_confirmed_session_out_of_place_stays_confirmed_and_counted(world, api, monkeypatch, tmp_path):
    directory, confirmed = crash_before_deleting(world, monkeypatch, "sess-42", {"rec.mp4": os.urandom(PART)})
    calls = list(api.calls)
    moved = tmp_path / "moved"
    directory.rename(moved)
    directory.symlink_to(moved)  # the place check refuses a session directory that is a link
    uploader = world.uploader()

    assert uploader.process(confirmed) == CONFIRMED

    (kept,) = world.spool.entries()
    assert kept.state == CONFIRMED and "symbolic link" in (kept.last_error or "")
    assert world.spool.scan().failed == 1 and (moved / "rec.mp4").exists()
    directory.unlink()
    moved.rename(directory)
    world.clock.now = T0 + timedelta(hours=7)
    uploader.run_once()  # only the deletion was left: no new declaration
    assert api.calls == calls and not directory.exists() and world.spool.count() == 0


def test_a_confirmed_session_whose_deletion_fails_counts_as_failed_at_once(world, api, monkeypatch):
    directory, confirmed = crash_before_deleting(world, monkeypatch, "sess-43", {"rec.mp4": os.urandom(PART)})

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "unlink", refuse)
    assert world.uploader().process(confirmed) == CONFIRMED
    monkeypatch.undo()

    (kept,) = world.spool.entries()
    assert kept.state == CONFIRMED and "Permission denied" in (kept.last_error or "")
    assert (world.spool.scan().pending, world.spool.scan().failed) == (1, 1)
    assert (directory / "rec.mp4").exists()


@pytest.mark.parametrize("confirmed_first", [False, True])
def test_an_unreachable_recordings_dir_keeps_the_entry_counted_and_retried(world, api, monkeypatch, confirmed_first):
    """Missing, unmounted or hidden from the agent: the session's files may all be there, out of sight."""
    data = os.urandom(PART)
    if confirmed_first:
        directory, entry = crash_before_deleting(world, monkeypatch, "sess-44", {"rec.mp4": data})
    else:
        directory, entry = world.session("sess-44", {"rec.mp4": data})
    hidden = world.recordings.parent / "unmounted"
    world.recordings.rename(hidden)
    uploader = world.uploader()

    assert uploader.process(entry) == (CONFIRMED if confirmed_first else FAILED)

    (kept,) = world.spool.entries()
    assert "recordings_dir" in (kept.last_error or "") and world.spool.scan().failed == 1
    assert kept.next_attempt_at is not None and parse_time(kept.next_attempt_at) < T0 + timedelta(minutes=1)
    hidden.rename(world.recordings)
    world.clock.now = T0 + timedelta(minutes=1)
    uploader.run_once()
    assert api.objects("sess-44") == {"rec.mp4": data} and not directory.exists() and world.spool.count() == 0


# -- recordings_dir: resolved once through directories only root can change, then pinned --------------------------


def test_recordings_dir_swapped_for_a_link_by_whoever_can_write_its_parent_is_never_used(world, api, tmp_path):
    """Jibri's user can write the directory holding recordings_dir: it puts a link to / there and spools "etc"."""
    system = tmp_path / "system-root"
    (system / "etc").mkdir(parents=True)
    (system / "etc" / "shadow").write_bytes(SECRET)
    tmp_path.chmod(0o777)  # recordings_dir's parent, writable by Jibri's user (and everyone)
    uploader = world.uploader()  # as the agent starts
    world.recordings.rename(tmp_path / "moved-recordings")
    world.recordings.symlink_to(system)
    entry, _ = world.spool.add(str(world.recordings / "etc"))

    assert uploader.process(entry) == FAILED

    assert api.calls == [] and not leaked(api) and (system / "etc" / "shadow").read_bytes() == SECRET
    (kept,) = world.spool.entries()
    assert f"{tmp_path} is writable" in (kept.last_error or "") and world.spool.scan().failed == 1


@pytest.mark.parametrize("confirmed_first", [False, True])
def test_a_recordings_dir_replaced_since_the_start_is_refused(world, api, monkeypatch, tmp_path, confirmed_first):
    """Only root can replace it here (an unmount, a new mount): still, what is there now is not what was resolved."""
    data = os.urandom(PART)
    if confirmed_first:
        directory, entry = crash_before_deleting(world, monkeypatch, "sess-51", {"rec.mp4": data})
    else:
        directory, entry = world.session("sess-51", {"rec.mp4": data})
    uploader = world.uploader()
    calls = list(api.calls)
    world.recordings.rename(tmp_path / "unmounted")
    (directory / "rec.mp4").parent.mkdir(parents=True)  # another directory, with a session of that name
    (directory / "rec.mp4").write_bytes(b"k" * len(data))
    os.utime(directory / "rec.mp4", ns=(0, os.stat(tmp_path / "unmounted" / "sess-51" / "rec.mp4").st_mtime_ns))

    assert uploader.process(entry) == (CONFIRMED if confirmed_first else FAILED)

    assert api.calls == calls and (directory / "rec.mp4").read_bytes() == b"k" * len(data)
    (kept,) = world.spool.entries()
    assert "no longer the directory" in (kept.last_error or "") and world.spool.scan().failed == 1
