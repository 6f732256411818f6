"""Recordings to S3: the agent declares a finished session, the control plane decides where
it goes and hands out presigned multipart part URLs, then verifies what S3 received before
the agent may delete anything.

The handshake (both routes IAM-authorized, only the recording's own instance may call):

1. `POST /v1/recordings` declares the session: files with size and SHA-256, and every part's
   MD5 and SHA-256 at the declared part size. The first call opens one multipart upload per
   file; every later call with the same declaration is the resume call. Each reply lists the
   parts S3 already holds *with the declared size and checksum* and presigned URLs for the
   rest (a bounded number per reply), so a part that arrived corrupted is simply not held
   and is sent again.
2. `POST /v1/recordings/{id}/complete` reports each part's ETag and local checksums. The
   control plane lists the parts S3 holds and checks each against the agent's MD5 (S3's ETag
   of a part is the MD5 of the bytes it received, unless the bucket encrypts with KMS) and
   against S3's own SHA-256 where S3 reports one; a mismatch rejects those parts (409). It then
   completes the multipart uploads, checks the object's size (and, for MD5 ETags, the
   multipart ETag computed from the declared part MD5s), writes `manifest.json` beside the
   files and announces the recording (SNS, optional webhook). Only a 200 lets the agent
   delete its local files.

Detection never rests on S3 validating the client's checksum header: the ETag comparison
uses what S3 computed from the bytes it stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeGuard

from chalicelib.clock import Clock, iso
from chalicelib.errors import BadRequest, Conflict, Forbidden, NotFound, Unavailable

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # S3's minimum for every part but the last
MAX_PART_SIZE = 512 * MIB
MAX_PARTS = 10_000  # S3's limit per multipart upload
MAX_FILES = 20
MAX_METADATA_BYTES = 65_536
MANIFEST_NAME = "manifest.json"
DEFAULT_KEY_TEMPLATE = "recordings/{yyyy}/{mm}/{dd}/{room}/{session_id}/{file}"
KEY_FIELDS = ("yyyy", "mm", "dd", "hh", "room", "session_id", "file", "instance_id", "pool")
KEEP_SECONDS = 30 * 86_400  # a recording's bookkeeping outlives its upload by this much

_SESSION_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_FILE_NAME = re.compile(r"^[^/\\\x00-\x1f]{1,255}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_ROOM_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DECLARATION_FIELDS = {"session_id", "room", "metadata", "started_at", "ended_at", "part_size", "files"}
_FILE_FIELDS = {"name", "size", "sha256", "parts"}
_PART_FIELDS = {"number", "md5", "sha256"}
_REPORTED_PART_FIELDS = {"number", "etag", "md5", "sha256"}


class EmptyFile(BadRequest):
    code = "empty_file"


class BadName(BadRequest):
    code = "bad_name"


class SizeMismatch(BadRequest):
    code = "size_mismatch"


class SessionReused(Conflict):
    code = "session_reused"


class NotConfigured(Unavailable):
    code = "not_configured"


class PartsRejected(Conflict):
    """Some parts are missing from S3 or arrived different from what the agent read from disk."""

    code = "parts_rejected"

    def __init__(self, message: str, rejected: dict[str, list[int]]) -> None:
        super().__init__(message)
        self.rejected = rejected

    def body(self) -> dict[str, Any]:
        shaped: dict[str, Any] = dict(super().body())
        shaped["rejected"] = [{"name": name, "parts": parts} for name, parts in sorted(self.rejected.items())]
        return shaped


@dataclass(frozen=True)
class RecordingSettings:
    bucket: str | None = None
    key_template: str = DEFAULT_KEY_TEMPLATE
    sse: str = "AES256"  # or aws:kms
    kms_key_id: str | None = None
    storage_class: str = "STANDARD"
    tags: tuple[tuple[str, str], ...] = ()
    upload_url_seconds: int = 900
    download_url_seconds: int = 3600
    urls_per_reply: int = 100
    topic_arn: str | None = None
    webhook_url: str | None = None

    @property
    def etag_is_md5(self) -> bool:
        """S3's ETag of a part is the MD5 of its bytes with SSE-S3 or no encryption, not with SSE-KMS."""
        return self.sse != "aws:kms"


def check_key_template(template: str) -> str | None:
    """None when the template is usable, else what is wrong with it."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        return f"it does not parse: {error}"
    unknown = names - set(KEY_FIELDS)
    if unknown:
        return f"unknown fields {sorted(unknown)}; use {', '.join('{' + f + '}' for f in KEY_FIELDS)}"
    if not {"session_id", "file"} <= names:
        return "it must contain {session_id} and {file}, so that every file has its own key"
    if template.startswith("/"):
        return "it must not start with /"
    return None


# --- what the agent declares -------------------------------------------------------------


@dataclass(frozen=True)
class DeclaredPart:
    number: int
    md5: str
    sha256: str


@dataclass(frozen=True)
class DeclaredFile:
    name: str
    size: int
    sha256: str
    parts: tuple[DeclaredPart, ...]

    def part_size_of(self, number: int, part_size: int) -> int:
        return part_length(self.size, number, part_size)

    def parts_digest(self) -> str:
        """One hash over the declared part checksums: completion must report these same parts."""
        joined = "\n".join(f"{p.number}:{p.md5}:{p.sha256}" for p in self.parts)
        return hashlib.sha256(joined.encode()).hexdigest()

    def multipart_etag(self) -> str:
        """The ETag S3 gives the completed object when part ETags are MD5s: MD5 of the part MD5s, dash, count."""
        digest = hashlib.md5(b"".join(bytes.fromhex(p.md5) for p in self.parts), usedforsecurity=False)
        return f'"{digest.hexdigest()}-{len(self.parts)}"'


@dataclass(frozen=True)
class Declaration:
    session_id: str
    room: str
    metadata: dict[str, Any]
    started_at: float | None
    ended_at: float | None
    part_size: int
    files: tuple[DeclaredFile, ...]

    def same_files(self, other: StoredRecording) -> bool:
        mine = sorted((f.name, f.size, f.sha256, f.parts_digest()) for f in self.files)
        theirs = sorted((f.name, f.size, f.sha256, f.parts_digest) for f in other.files)
        return mine == theirs and self.part_size == other.part_size


def parse_declaration(body: Any) -> Declaration:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with session_id, room, metadata, part_size and files")
    unknown = set(body) - _DECLARATION_FIELDS
    if unknown:
        raise BadRequest(f"unknown fields {sorted(unknown)}; expected {sorted(_DECLARATION_FIELDS)}")
    session_id = body.get("session_id")
    if not isinstance(session_id, str) or not _SESSION_ID.match(session_id):
        raise BadRequest("session_id must be Jibri's session directory name: 1-128 of A-Z a-z 0-9 . _ -")
    room = body.get("room", "")
    if not isinstance(room, str) or len(room) > 256:
        raise BadRequest(f"{session_id}: room must be a string of at most 256 characters")
    metadata = body.get("metadata", {})
    if not isinstance(metadata, dict):
        raise BadRequest(f"{session_id}: metadata must be the JSON object read from metadata.json ({{}} if absent)")
    if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        raise BadRequest(f"{session_id}: metadata is larger than {MAX_METADATA_BYTES} bytes")
    part_size = body.get("part_size")
    if not _is_int(part_size) or not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
        raise BadRequest(
            f"{session_id}: part_size must be a whole number of bytes from {MIN_PART_SIZE} to {MAX_PART_SIZE}"
        )
    files = body.get("files")
    if not isinstance(files, list) or not files:
        raise EmptyFile(f"{session_id}: the session declares no file; a recording needs at least one")
    if len(files) > MAX_FILES:
        raise BadRequest(f"{session_id}: {len(files)} files declared; at most {MAX_FILES} per session")
    parsed = tuple(_parse_file(session_id, item, part_size) for item in files)
    names = [f.name for f in parsed]
    if len(set(names)) != len(names):
        raise BadName(f"{session_id}: file names must be unique within a session")
    return Declaration(
        session_id=session_id,
        room=room,
        metadata=metadata,
        started_at=_optional_time(session_id, body, "started_at"),
        ended_at=_optional_time(session_id, body, "ended_at"),
        part_size=part_size,
        files=parsed,
    )


def _parse_file(session_id: str, item: Any, part_size: int) -> DeclaredFile:
    if not isinstance(item, dict) or set(item) - _FILE_FIELDS:
        raise BadRequest(f"{session_id}: each file must be an object with {sorted(_FILE_FIELDS)}")
    name = item.get("name")
    if not isinstance(name, str) or not _FILE_NAME.match(name) or name in (".", "..") or name == MANIFEST_NAME:
        raise BadName(
            f"{session_id}: file name {name!r} is not usable: a plain name of 1-255 characters, "
            f"no '/', not '.', '..' or {MANIFEST_NAME!r}"
        )
    size = item.get("size")
    if not _is_int(size) or size < 0:
        raise BadRequest(f"{session_id}: {name}: size must be a whole number of bytes")
    if size == 0:
        raise EmptyFile(f"{session_id}: {name} is empty; an empty file is not a recording")
    sha256 = item.get("sha256")
    if not isinstance(sha256, str) or not _HEX64.match(sha256):
        raise BadRequest(f"{session_id}: {name}: sha256 must be 64 lowercase hex digits")
    expected_parts = math.ceil(size / part_size)
    if expected_parts > MAX_PARTS:
        raise SizeMismatch(
            f"{session_id}: {name}: {size} bytes at part_size {part_size} makes {expected_parts} parts; "
            f"S3 allows {MAX_PARTS}: use a larger part_size"
        )
    parts = item.get("parts")
    if not isinstance(parts, list):
        raise BadRequest(f"{session_id}: {name}: parts must list every part's number, md5 and sha256")
    if len(parts) != expected_parts:
        raise SizeMismatch(
            f"{session_id}: {name}: {len(parts)} parts declared but {size} bytes at part_size {part_size} "
            f"make {expected_parts}"
        )
    declared = []
    for index, part in enumerate(parts, start=1):
        if not isinstance(part, dict) or set(part) != _PART_FIELDS:
            raise BadRequest(f"{session_id}: {name}: each part must be an object with {sorted(_PART_FIELDS)}")
        if part["number"] != index or not _is_int(part["number"]):
            raise SizeMismatch(f"{session_id}: {name}: parts must be numbered 1..{expected_parts} in order")
        md5, digest = part["md5"], part["sha256"]
        if not isinstance(md5, str) or not _HEX32.match(md5) or not isinstance(digest, str) or not _HEX64.match(digest):
            raise BadRequest(f"{session_id}: {name}: part {index}: md5 is 32 and sha256 64 lowercase hex digits")
        declared.append(DeclaredPart(index, md5, digest))
    return DeclaredFile(name, size, sha256, tuple(declared))


def _optional_time(session_id: str, body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.timestamp()
    raise BadRequest(f"{session_id}: {name} must be an ISO 8601 time with a zone, like 2026-11-24T10:00:00Z")


def part_length(size: int, number: int, part_size: int) -> int:
    """Bytes in part `number` (from 1) of a file of `size` bytes cut at `part_size`."""
    return min(part_size, size - (number - 1) * part_size)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ReportedPart:
    number: int
    etag: str
    md5: str
    sha256: str


def parse_completion(recording_id: str, body: Any) -> dict[str, dict[int, ReportedPart]]:
    if not isinstance(body, dict) or set(body) != {"files"} or not isinstance(body["files"], list):
        raise BadRequest(f'{recording_id}: the body must be {{"files": [{{"name", "parts": [...]}}]}}')
    reported: dict[str, dict[int, ReportedPart]] = {}
    for item in body["files"]:
        if not isinstance(item, dict) or set(item) != {"name", "parts"} or not isinstance(item["parts"], list):
            raise BadRequest(f"{recording_id}: each file must be an object with name and parts")
        name = item["name"]
        if not isinstance(name, str) or name in reported:
            raise BadRequest(f"{recording_id}: file names must be strings, each listed once")
        parts: dict[int, ReportedPart] = {}
        for part in item["parts"]:
            if not isinstance(part, dict) or set(part) != _REPORTED_PART_FIELDS:
                raise BadRequest(f"{recording_id}: {name}: each part needs {sorted(_REPORTED_PART_FIELDS)}")
            number, etag, md5, digest = part["number"], part["etag"], part["md5"], part["sha256"]
            if not _is_int(number) or not 1 <= number <= MAX_PARTS or number in parts:
                raise BadRequest(f"{recording_id}: {name}: part numbers are distinct whole numbers from 1")
            if not isinstance(etag, str) or len(etag) > 128:
                raise BadRequest(f"{recording_id}: {name}: part {number}: etag must be the ETag S3 returned")
            if not isinstance(md5, str) or not _HEX32.match(md5) or not isinstance(digest, str):
                raise BadRequest(f"{recording_id}: {name}: part {number}: md5 must be 32 lowercase hex digits")
            if not _HEX64.match(digest):
                raise BadRequest(f"{recording_id}: {name}: part {number}: sha256 must be 64 lowercase hex digits")
            parts[number] = ReportedPart(number, etag, md5, digest)
        reported[name] = parts
    return reported


# --- what the control plane keeps --------------------------------------------------------


@dataclass(frozen=True)
class StoredFile:
    name: str
    size: int
    sha256: str
    parts_digest: str
    part_count: int
    key: str
    upload_id: str
    complete: bool = False
    etag: str | None = None  # the completed object's ETag


@dataclass(frozen=True)
class StoredRecording:
    recording_id: str
    instance_id: str
    room: str
    metadata: dict[str, Any]
    started_at: float | None
    ended_at: float | None
    declared_at: float
    part_size: int
    files: tuple[StoredFile, ...]
    status: str = "uploading"  # uploading -> complete
    completed_at: float | None = None
    manifest_key: str | None = None
    notified: bool = False
    version: int = 0

    def file(self, name: str) -> StoredFile:
        for stored in self.files:
            if stored.name == name:
                return stored
        raise KeyError(name)

    def with_file(self, updated: StoredFile) -> StoredRecording:
        return replace(self, files=tuple(updated if f.name == updated.name else f for f in self.files))


class RecordingStore(Protocol):
    def get(self, recording_id: str) -> StoredRecording | None: ...

    def create(self, recording: StoredRecording) -> bool:
        """Write a new recording; False when one with this id exists already."""
        ...

    def save(self, expected_version: int, recording: StoredRecording) -> bool:
        """Write if the stored version is still `expected_version`; the saved item has version + 1."""
        ...


# --- S3 ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldPart:
    number: int
    size: int
    etag: str
    sha256: str | None  # base64, when S3 reports the part's SHA-256


class UploadGone(Exception):
    """The multipart upload no longer exists (completed, or aborted by the bucket's lifecycle rule)."""


class Storage(Protocol):
    def create_upload(self, key: str, content_type: str) -> str: ...

    def held_parts(self, key: str, upload_id: str) -> list[HeldPart]: ...

    def presign_part(self, key: str, upload_id: str, number: int, sha256_b64: str, expires: int) -> str: ...

    def complete_upload(self, key: str, upload_id: str, parts: list[tuple[int, str, str]]) -> str: ...

    def abort_upload(self, key: str, upload_id: str) -> None: ...

    def object_size_and_etag(self, key: str) -> tuple[int, str] | None: ...

    def put_json(self, key: str, document: Mapping[str, Any]) -> None: ...

    def presign_download(self, key: str, expires: int) -> str: ...


Announce = Callable[[dict[str, Any]], None]


# --- the service -------------------------------------------------------------------------


def b64_of_hex(digest: str) -> str:
    return base64.b64encode(binascii.unhexlify(digest)).decode()


def room_segment(room: str) -> str:
    cleaned = _ROOM_UNSAFE.sub("_", room).strip("._")[:100]
    return cleaned or "unknown-room"


def content_type_of(name: str) -> str:
    lowered = name.lower()
    for suffix, kind in ((".mp4", "video/mp4"), (".webm", "video/webm"), (".json", "application/json")):
        if lowered.endswith(suffix):
            return kind
    return "application/octet-stream"


@dataclass
class RecordingService:
    store: RecordingStore
    storage: Storage
    clock: Clock
    settings: RecordingSettings
    pool: str
    announce: Announce = field(default=lambda message: None)
    on_complete: Callable[[StoredRecording], None] = field(default=lambda recording: None)
    on_rejected: Callable[[str, dict[str, list[int]]], None] = field(default=lambda recording_id, parts: None)

    # POST /v1/recordings
    def declare(self, instance_id: str, body: Any) -> tuple[int, dict[str, Any]]:
        declaration = parse_declaration(body)
        existing = self.store.get(declaration.session_id)
        status = 200
        if existing is None:
            existing, created = self._open(instance_id, declaration)
            status = 201 if created else 200
        elif existing.instance_id != instance_id or not declaration.same_files(existing):
            raise SessionReused(
                f"{declaration.session_id}: this session id was declared before "
                + ("by another instance" if existing.instance_id != instance_id else "with different files")
                + "; the local files stay in place"
            )
        return status, self._plan(existing, {f.name: f for f in declaration.files})

    def _open(self, instance_id: str, declaration: Declaration) -> tuple[StoredRecording, bool]:
        now = self.clock.now()
        keys = {f.name: self._key(declaration, instance_id, f.name, now) for f in declaration.files}
        opened = [(f, self.storage.create_upload(keys[f.name], content_type_of(f.name))) for f in declaration.files]
        recording = StoredRecording(
            recording_id=declaration.session_id,
            instance_id=instance_id,
            room=declaration.room,
            metadata=declaration.metadata,
            started_at=declaration.started_at,
            ended_at=declaration.ended_at,
            declared_at=now,
            part_size=declaration.part_size,
            files=tuple(
                StoredFile(f.name, f.size, f.sha256, f.parts_digest(), len(f.parts), keys[f.name], upload_id)
                for f, upload_id in opened
            ),
        )
        if self.store.create(recording):
            return recording, True
        # Another call declared it first: keep its uploads, drop ours (the bucket rule would too, later).
        for f, upload_id in opened:
            self.storage.abort_upload(keys[f.name], upload_id)
        winner = self.store.get(declaration.session_id)
        if winner is None or winner.instance_id != instance_id or not declaration.same_files(winner):
            raise SessionReused(f"{declaration.session_id}: declared at the same time with different files")
        return winner, False

    def _key(self, declaration: Declaration, instance_id: str, name: str, now: float) -> str:
        when = datetime.fromtimestamp(declaration.started_at or now, UTC)
        return self.settings.key_template.format(
            yyyy=f"{when.year:04d}",
            mm=f"{when.month:02d}",
            dd=f"{when.day:02d}",
            hh=f"{when.hour:02d}",
            room=room_segment(declaration.room),
            session_id=declaration.session_id,
            file=name,
            instance_id=instance_id,
            pool=self.pool,
        )

    def _plan(self, recording: StoredRecording, declared: dict[str, DeclaredFile]) -> dict[str, Any]:
        expires = self.settings.upload_url_seconds
        budget = self.settings.urls_per_reply
        more = False
        files = []
        for stored in recording.files:
            if stored.complete:
                files.append(self._file_view(stored, held=list(range(1, stored.part_count + 1)), upload=[]))
                continue
            try:
                held = self._verified(stored, declared[stored.name], recording.part_size)
            except UploadGone:
                if self._object_matches(stored):
                    files.append(self._file_view(stored, held=list(range(1, stored.part_count + 1)), upload=[]))
                    continue
                recording, stored = self._reopen(recording, stored)
                held = set()
            upload = []
            for part in declared[stored.name].parts:
                if part.number in held:
                    continue
                if budget == 0:
                    more = True
                    break
                checksum = b64_of_hex(part.sha256)
                url = self.storage.presign_part(stored.key, stored.upload_id, part.number, checksum, expires)
                headers = {"Content-Type": "application/octet-stream", "x-amz-checksum-sha256": checksum}
                upload.append({"number": part.number, "url": url, "headers": headers})
                budget -= 1
            files.append(self._file_view(stored, held=sorted(held), upload=upload))
        return {
            "recording_id": recording.recording_id,
            "status": "complete" if recording.status == "complete" else "uploading",
            "expires_at": iso(self.clock.now() + expires),
            "part_size": recording.part_size,
            "files": files,
            "more": more,
        }

    def _file_view(self, stored: StoredFile, held: list[int], upload: list[dict[str, Any]]) -> dict[str, Any]:
        status = "complete" if stored.complete else "uploading"
        return {"name": stored.name, "key": stored.key, "status": status, "held": held, "upload": upload}

    def _reopen(self, recording: StoredRecording, stored: StoredFile) -> tuple[StoredRecording, StoredFile]:
        """The bucket's lifecycle rule aborted the upload (it outlived its days): open a new one."""
        fresh = replace(stored, upload_id=self.storage.create_upload(stored.key, content_type_of(stored.name)))
        updated = recording.with_file(fresh)
        if not self.store.save(recording.version, updated):
            raise Unavailable(f"{recording.recording_id}: changed while being resumed; call again")
        return replace(updated, version=recording.version + 1), fresh

    def _object_matches(self, stored: StoredFile) -> bool:
        """An earlier completion got the object into S3 but stopped before recording it."""
        found = self.storage.object_size_and_etag(stored.key)
        return found is not None and found[0] == stored.size

    def _verified(self, stored: StoredFile, declared: DeclaredFile, part_size: int) -> set[int]:
        """Parts S3 holds with the declared size and checksum."""
        held = set()
        by_number = {p.number: p for p in declared.parts}
        for part in self.storage.held_parts(stored.key, stored.upload_id):
            expected = by_number.get(part.number)
            if expected is None or part.size != declared.part_size_of(part.number, part_size):
                continue
            if self.settings.etag_is_md5 and part.etag.strip('"') != expected.md5:
                continue
            if part.sha256 is not None and part.sha256 != b64_of_hex(expected.sha256):
                continue
            held.add(part.number)
        return held

    # POST /v1/recordings/{id}/complete
    def complete(self, instance_id: str, recording_id: str, body: Any) -> dict[str, Any]:
        recording = self._owned(instance_id, recording_id)
        if recording.status == "complete":
            if not recording.notified:
                self._announce(recording)
            return self._completed_view(recording)
        reported = parse_completion(recording_id, body)
        unknown = set(reported) - {f.name for f in recording.files}
        if unknown:
            raise BadRequest(f"{recording_id}: files {sorted(unknown)} were not declared")
        rejected: dict[str, list[int]] = {}
        checked: dict[str, list[ReportedPart]] = {}
        for stored in recording.files:
            if stored.complete:
                continue
            parts = reported.get(stored.name)
            if parts is None:
                raise BadRequest(f"{recording_id}: {stored.name} is not complete; report its parts")
            bad, etags = self._check_parts(recording, stored, parts)
            if bad:
                rejected[stored.name] = bad
            else:
                # S3's ETags complete the upload: an agent that restarted may not know the ones it was given.
                checked[stored.name] = [
                    replace(parts[n], etag=etags.get(n, parts[n].etag)) for n in range(1, stored.part_count + 1)
                ]
        if rejected:
            self.on_rejected(recording_id, rejected)
            described = "; ".join(f"{name}: parts {parts}" for name, parts in sorted(rejected.items()))
            raise PartsRejected(
                f"{recording_id}: S3 does not hold these parts as declared ({described}); "
                "ask POST /v1/recordings for their URLs and send them again",
                rejected,
            )
        for name, in_order in checked.items():
            recording = self._finish_file(recording, recording.file(name), in_order)
        return self._finish(recording)

    def _owned(self, instance_id: str, recording_id: str) -> StoredRecording:
        if not _SESSION_ID.match(recording_id):
            raise NotFound(f"no recording {recording_id!r}")
        recording = self.store.get(recording_id)
        if recording is None:
            raise NotFound(f"no recording {recording_id!r}; declare it with POST /v1/recordings first")
        if recording.instance_id != instance_id:
            raise Forbidden(f"recording {recording_id} belongs to another instance")
        return recording

    def _check_parts(
        self, recording: StoredRecording, stored: StoredFile, parts: dict[int, ReportedPart]
    ) -> tuple[list[int], dict[int, str]]:
        """The parts S3 does not hold as the agent read them from disk, and the ETags of those it does."""
        numbers = set(range(1, stored.part_count + 1))
        if set(parts) != numbers:
            raise SizeMismatch(
                f"{recording.recording_id}: {stored.name} has {stored.part_count} parts; the completion lists "
                f"{len(parts)}"
            )
        digest = "\n".join(f"{n}:{parts[n].md5}:{parts[n].sha256}" for n in sorted(parts))
        if hashlib.sha256(digest.encode()).hexdigest() != stored.parts_digest:
            raise SizeMismatch(
                f"{recording.recording_id}: {stored.name}: the parts' checksums differ from the declaration; "
                "the file changed on disk after it was declared"
            )
        try:
            held = {p.number: p for p in self.storage.held_parts(stored.key, stored.upload_id)}
        except UploadGone:
            return ([] if self._object_matches(stored) else sorted(numbers)), {}
        bad = []
        for number in sorted(numbers):
            part, mine = held.get(number), parts[number]
            ok = part is not None and part.size == part_length(stored.size, number, recording.part_size)
            if ok and part is not None and self.settings.etag_is_md5:
                ok = part.etag.strip('"') == mine.md5
            if ok and part is not None and part.sha256 is not None:
                ok = part.sha256 == b64_of_hex(mine.sha256)
            if not ok:
                bad.append(number)
        return bad, {n: p.etag for n, p in held.items()}

    def _finish_file(
        self, recording: StoredRecording, stored: StoredFile, parts: list[ReportedPart]
    ) -> StoredRecording:
        try:
            etag = self.storage.complete_upload(
                stored.key, stored.upload_id, [(p.number, p.etag, b64_of_hex(p.sha256)) for p in parts]
            )
        except UploadGone:
            etag = ""  # completed by an earlier call that did not get to record it: the object tells
        found = self.storage.object_size_and_etag(stored.key)
        if found is None:
            raise PartsRejected(
                f"{recording.recording_id}: {stored.name}: the upload is gone and no object exists; send it again",
                {stored.name: list(range(1, stored.part_count + 1))},
            )
        size, etag = found[0], found[1] or etag
        if size != stored.size:
            raise SizeMismatch(
                f"{recording.recording_id}: {stored.name}: S3 holds {size} bytes, {stored.size} declared"
            )
        if self.settings.etag_is_md5:
            expected = DeclaredFile(
                stored.name, stored.size, stored.sha256, tuple(DeclaredPart(p.number, p.md5, p.sha256) for p in parts)
            ).multipart_etag()
            if etag != expected:
                raise SizeMismatch(
                    f"{recording.recording_id}: {stored.name}: the object's ETag {etag} is not the one its parts "
                    f"make ({expected})"
                )
        updated = recording.with_file(replace(stored, complete=True, etag=etag))
        if not self.store.save(recording.version, updated):
            raise Unavailable(f"{recording.recording_id}: changed while being completed; call complete again")
        return replace(updated, version=recording.version + 1)

    def _finish(self, recording: StoredRecording) -> dict[str, Any]:
        now = self.clock.now()
        manifest_key = self._manifest_key(recording)
        done = replace(recording, status="complete", completed_at=now, manifest_key=manifest_key)
        self.storage.put_json(manifest_key, self.manifest(done))
        if not self.store.save(recording.version, done):
            latest = self.store.get(recording.recording_id)
            if latest is not None and latest.status == "complete":
                return self._completed_view(latest)  # a concurrent call finished it
            raise Unavailable(f"{recording.recording_id}: changed while being completed; call complete again")
        done = replace(done, version=recording.version + 1)
        self.on_complete(done)
        self._announce(done)
        return self._completed_view(done)

    def _manifest_key(self, recording: StoredRecording) -> str:
        first = recording.files[0].key
        return first[: len(first) - len(recording.files[0].name)] + MANIFEST_NAME

    def _announce(self, recording: StoredRecording) -> None:
        expires = self.settings.download_url_seconds
        assert recording.manifest_key is not None
        message = {
            "type": "recording.ready",
            "recording_id": recording.recording_id,
            "bucket": self.settings.bucket,
            "manifest_key": recording.manifest_key,
            "manifest": self.manifest(recording),
            "downloads": [
                {"name": f.name, "url": self.storage.presign_download(f.key, expires)} for f in recording.files
            ],
            "downloads_expire_at": iso(self.clock.now() + expires),
        }
        try:
            self.announce(message)
        except Exception as error:
            raise Unavailable(
                f"{recording.recording_id}: the recording is in S3 but announcing it failed "
                f"({type(error).__name__}); call complete again to retry"
            ) from error
        # A lost race means a concurrent completion announced too: consumers key on recording_id.
        self.store.save(recording.version, replace(recording, notified=True))

    def manifest(self, recording: StoredRecording) -> dict[str, Any]:
        metadata = recording.metadata
        started, ended = recording.started_at, recording.ended_at
        return {
            "recording_id": recording.recording_id,
            "session_id": recording.recording_id,
            "pool": self.pool,
            "instance_id": recording.instance_id,
            "room": recording.room,
            "meeting_url": metadata.get("meeting_url"),
            "participants": metadata.get("participants", []),
            "started_at": iso(started) if started is not None else None,
            "ended_at": iso(ended) if ended is not None else None,
            "duration_seconds": round(ended - started, 3) if started is not None and ended is not None else None,
            "uploaded_at": iso(recording.completed_at) if recording.completed_at is not None else None,
            "bucket": self.settings.bucket,
            "files": [
                {
                    "name": f.name,
                    "key": f.key,
                    "size": f.size,
                    "sha256": f.sha256,
                    "parts": f.part_count,
                    "etag": f.etag,
                }
                for f in recording.files
            ],
            "metadata": metadata,
        }

    def _completed_view(self, recording: StoredRecording) -> dict[str, Any]:
        return {
            "recording_id": recording.recording_id,
            "status": "complete",
            "manifest_key": recording.manifest_key,
            "files": [
                {"name": f.name, "key": f.key, "status": "complete", "size": f.size, "sha256": f.sha256}
                for f in recording.files
            ],
        }


def require_configured(settings: RecordingSettings) -> None:
    if not settings.bucket:
        raise NotConfigured("recordings are not configured: the control plane has no RECORDINGS_BUCKET")
