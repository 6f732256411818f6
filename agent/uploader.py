"""Moves spooled recordings to S3 through the control plane's presigned multipart URLs, then deletes them.

For each spooled session: hash every file in one read pass (whole-file SHA-256, per-part MD5 and SHA-256),
declare the session (`POST /v1/recordings`), PUT the parts it lists, declare again until nothing is left,
then `POST /v1/recordings/{id}/complete`. Only a 200 from complete lets the local files go, and only those
it confirmed: the entry records each file's name, size and mtime as hashed, with its device, inode and ctime,
and a file that is no longer exactly that (or any other file) stays in place. The declaration is also the
resume call: after a crash or reboot the loop simply runs again and the control plane lists only the parts S3
does not hold yet.

The agent reads as root what Jibri's user owns, so it reads a session only through descriptors, never by path:
the session directory is opened relative to recordings_dir (resolved once through directories only root can
change, and refused if no longer that directory: agent.boundary), neither through a symbolic link; each file is
opened relative to the session directory, again not through a link (nor waiting on a FIFO), and must be a
regular file with no other name (no hard link), owned by the session directory's owner; metadata.json too, or
it is treated as absent (spool.skip_reason holds the rule). The hash pass keeps each file open for the attempt
and records its identity (device, inode, size, mtime); every part is read through that same descriptor, and
only while the file's name still names exactly that file. A file swapped (for a link, for another file) or
written to since it was hashed changes the session: the attempt ends without sending a byte more of it, the
next one hashes it again, and the control plane refuses a session whose files are no longer those it was
declared with.

Memory stays bounded whatever the file size: a part is read from disk by the thread that sends it, right
before its PUT, so at most `upload_concurrency` parts of `part_size` bytes are in memory at once.

Failures: connection errors, 5xx, 408 and 429 are retried with backoff (the entry stays pending); a 4xx
(session_reused, size_mismatch, empty_file, bad_name, ...) marks the entry failed, logs it with the session
id and retries only after a long backoff, with the files left in place. An entry leaves the spool only when
nothing of the session is left for it to protect: the directory is gone, or holds nothing but Jibri's
metadata and empty files. Anything else left behind (a file changed since it was confirmed, one no upload
covers, a link or a file of someone else) keeps the entry, failed, for an operator; so does a recordings_dir
that cannot be opened (retried with the short backoff). A confirmed entry stays confirmed whatever fails, as
only deleting is left, and counts as failed from its first failed attempt.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import re
import stat
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from agent.boundary import RecordingsDirUnusable, RecordingsRoot, default_trusted_owners, resolve_recordings_dir
from agent.config import AgentConfig
from agent.log import UTC, get_logger
from agent.reporter import error_fields, transient_status
from agent.spool import (
    CONFIRMED,
    EMPTY_SKIPPED,
    FAILED,
    METADATA_NAME,
    METADATA_SKIPPED,
    PENDING,
    ConfirmedFile,
    Spool,
    SpoolEntry,
    SpoolError,
    confirmed_match,
    format_time,
    parse_time,
    skip_reason,
)

log = get_logger("uploader")

# POST path and JSON body in; HTTP status and parsed JSON body (None if not JSON) out. Raises on no answer.
JsonCall = Callable[[str, Mapping[str, Any]], tuple[int, Any]]

# The control plane refuses metadata whose json.dumps (default separators, non-ASCII escaped) is longer than this.
MAX_METADATA_BYTES = 65536
_MAX_METADATA_FILE_BYTES = 1 << 20
HASH_CHUNK_BYTES = 1 << 20
MAX_PARTS = 10000
# Retries within one attempt when a round of PUTs makes no progress at all, before the entry backs off.
MAX_STALLED_ROUNDS = 3
# A complete refused with parts_rejected this many times in a row ends the attempt (backoff, then again).
MAX_REJECTED_ROUNDS = 5
ROUND_BACKOFF_SECONDS = (1.0, 2.0, 4.0)
TRANSIENT_BACKOFF_BASE_SECONDS = 5.0
TRANSIENT_BACKOFF_CAP_SECONDS = 300.0
# A 4xx is a problem retrying soon will not fix (a reused session id, a refused file): not a hot loop.
PERMANENT_BACKOFF_BASE_SECONDS = 3600.0
PERMANENT_BACKOFF_CAP_SECONDS = 6 * 3600.0
PART_TIMEOUT_FLOOR_SECONDS = 60.0
# Jibri's FileSink names the recording <call name>_<yyyy-MM-dd-HH-mm-ss>.mp4 with the start in local time.
_START_STAMP = re.compile(r"_(\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})\.[A-Za-z0-9]+$")
# Directories and files of a session are opened only like this: no symbolic link followed at the last
# component, no descriptor leaked to a child process, and no open of a FIFO left waiting for a writer.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

# A file's identity as hashed: device, inode, size and mtime_ns.
Identity = tuple[int, int, int, int]


class TransientUploadError(RuntimeError):
    """Retry later: the control plane or S3 could not be reached, was overloaded, or answered garbage."""


class PermanentUploadError(RuntimeError):
    """The control plane refused the session with a 4xx: retrying soon will not fix it."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class SessionChanged(OSError):
    """A session's file is no longer the one looked at or hashed: swapped (for a link, for another file) or
    written to. Nothing more of the session is read in this attempt; the next one looks at it afresh."""


class _Stopped(Exception):
    """The agent is stopping: leave the entry as it is, the next run resumes it."""


# -- hashing and part slicing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartDigest:
    number: int
    md5: str
    sha256: str


@dataclass(frozen=True)
class FileDigest:
    name: str
    path: str
    size: int
    mtime_ns: int
    sha256: str
    parts: tuple[PartDigest, ...]
    dev: int
    ino: int
    ctime_ns: int

    @property
    def identity(self) -> Identity:
        return (self.dev, self.ino, self.size, self.mtime_ns)

    def declaration(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "parts": [{"number": p.number, "md5": p.md5, "sha256": p.sha256} for p in self.parts],
        }


def part_count(size: int, part_size: int) -> int:
    return max(1, -(-size // part_size))


def part_range(number: int, part_size: int, size: int) -> tuple[int, int]:
    """(offset, length) of part `number` (1-based): every part but the last is exactly part_size bytes."""
    if not 1 <= number <= part_count(size, part_size):
        raise ValueError(f"part {number} is not in 1..{part_count(size, part_size)} for {size} bytes")
    offset = (number - 1) * part_size
    return offset, min(part_size, size - offset)


def hash_file(path: str, part_size: int, name: str | None = None, chunk_bytes: int = HASH_CHUNK_BYTES) -> FileDigest:
    """One read pass: the whole file's SHA-256 and each part's MD5 and SHA-256, reading chunk_bytes at a time."""
    descriptor, info = _open_file(path)
    try:
        return _hash_open_file(descriptor, info, name or os.path.basename(path), path, part_size, chunk_bytes)
    finally:
        os.close(descriptor)


def _identity(info: os.stat_result) -> Identity:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _open_file(
    name: str,
    dir_fd: int | None = None,
    shown: str | None = None,
    expected: Identity | None = None,
    since: str = "hashed",
) -> tuple[int, os.stat_result]:
    """A read-only descriptor on the regular file `name` (relative to the directory dir_fd), and its fstat.

    Never through a symbolic link, never left waiting on a FIFO. With `expected` (the identity the file had
    when listed or hashed, as `since` says), a file that is not exactly that one raises SessionChanged."""
    shown = shown or name
    try:
        descriptor = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        problem: str | None = "is a symbolic link"
    else:
        try:
            info = os.fstat(descriptor)
            problem = _difference(info, expected)
        except BaseException:
            os.close(descriptor)
            raise
        if problem is None:
            return descriptor, info
        os.close(descriptor)
    if expected is not None:
        raise SessionChanged(f"{shown} changed since it was {since}: it {problem}")
    raise OSError(f"{shown} {problem}")


def _difference(info: os.stat_result, expected: Identity | None) -> str | None:
    """How the file `info` describes is not a regular file with the expected identity; None when it is."""
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if expected is not None and _identity(info) != expected:
        return "is another file, or was written to"
    return None


def _hash_open_file(
    descriptor: int, info: os.stat_result, name: str, path: str, part_size: int, chunk_bytes: int
) -> FileDigest:
    buffer = bytearray(min(chunk_bytes, part_size))
    view = memoryview(buffer)
    whole = hashlib.sha256()
    parts: list[PartDigest] = []
    size = info.st_size
    for number in range(1, part_count(size, part_size) + 1):
        _, length = part_range(number, part_size, size)
        md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
        left = length
        while left > 0:
            read = os.readv(descriptor, [view[: min(left, len(buffer))]])
            if not read:
                raise SessionChanged(f"{path} shrank while being read ({size} bytes expected)")
            chunk = view[:read]
            whole.update(chunk)
            md5.update(chunk)
            sha256.update(chunk)
            left -= read
        parts.append(PartDigest(number, md5.hexdigest(), sha256.hexdigest()))
    if _identity(os.fstat(descriptor)) != _identity(info):
        raise SessionChanged(f"{path} was written to while being hashed")
    return FileDigest(
        name, path, size, info.st_mtime_ns, whole.hexdigest(), tuple(parts), info.st_dev, info.st_ino, info.st_ctime_ns
    )


# -- the session and its declaration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    session_id: str
    directory: str
    room: str
    metadata: dict[str, Any]
    started_at: str | None
    ended_at: str | None
    part_size: int
    files: tuple[FileDigest, ...]
    # The session directory and each file as hashed, open for this attempt: parts are read through these.
    dir_fd: int
    descriptors: Mapping[str, int]
    # metadata.json as read, when it was sent whole (not trimmed, nor unreadable): then S3 holds it too.
    metadata_file: ConfirmedFile | None = None

    def declaration(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "session_id": self.session_id,
            "room": self.room,
            "metadata": self.metadata,
            "part_size": self.part_size,
            "files": [f.declaration() for f in self.files],
        }
        if self.started_at is not None:
            body["started_at"] = self.started_at
        if self.ended_at is not None:
            body["ended_at"] = self.ended_at
        return body

    def file(self, name: str) -> FileDigest | None:
        return next((f for f in self.files if f.name == name), None)

    def confirmed_files(self) -> tuple[ConfirmedFile, ...]:
        """What a 200 from complete confirms: each file as it was hashed (name, size, mtime, then device, inode
        and ctime), and metadata.json if sent whole."""
        files: list[ConfirmedFile] = [(f.name, f.size, f.mtime_ns, f.dev, f.ino, f.ctime_ns) for f in self.files]
        return tuple(files + ([self.metadata_file] if self.metadata_file is not None else []))


class NothingToUpload(RuntimeError):
    """The session directory is gone or holds no recording: nothing is left for the entry to protect."""


# What a session directory may still hold once nothing is left for its entry to protect: Jibri's metadata
# (when sent trimmed, S3 holds only part of it) and empty files. Anything else (a recording, a file changed
# since it was confirmed, a link or a file of someone else) keeps the entry, failed, for an operator.
_HARMLESS_LEFTOVERS = (METADATA_SKIPPED, EMPTY_SKIPPED)


def room_of(meeting_url: object) -> str:
    """The room is the last path segment of the meeting URL (https://meet.example.com/tenant/room → room)."""
    if not isinstance(meeting_url, str):
        return ""
    try:
        path = urlsplit(meeting_url).path
    except ValueError:
        return ""
    return unquote(path.rstrip("/").rsplit("/", 1)[-1])


def read_metadata(directory: str) -> dict[str, Any]:
    """metadata.json as Jibri wrote it ({"meeting_url", "participants", ...}), trimmed to what may be sent."""
    try:
        descriptor = os.open(directory, _DIR_FLAGS)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("%s cannot be opened as a directory (%s); sending no metadata", directory, exc)
        return {}
    try:
        return _read_metadata(directory, descriptor, os.fstat(descriptor).st_uid)[0]
    finally:
        os.close(descriptor)


def _read_metadata(directory: str, dir_fd: int, owner: int) -> tuple[dict[str, Any], ConfirmedFile | None]:
    """The metadata to send and, when it is metadata.json whole (so that the manifest in S3 holds it), that
    file as read (name, size, mtime_ns, dev, ino, ctime_ns). Read relative to the session directory dir_fd,
    never through a link, and only while it is a file of the directory's owner (`owner`) with no other name."""
    path = os.path.join(directory, METADATA_NAME)
    try:
        descriptor, info = _open_file(METADATA_NAME, dir_fd, path)
        try:
            reason = skip_reason(METADATA_NAME, info, owner)
            if reason != METADATA_SKIPPED:
                log.warning("not reading %s: %s; sending no metadata", path, reason)
                return {}, None
            raw = _read_up_to(descriptor, _MAX_METADATA_FILE_BYTES + 1)
            unchanged = _identity(os.fstat(descriptor)) == _identity(info) and len(raw) == info.st_size
        finally:
            os.close(descriptor)
        body = json.loads(raw) if len(raw) <= _MAX_METADATA_FILE_BYTES else None
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError, RecursionError) as exc:
        log.warning("%s is unreadable (%s); sending no metadata", path, exc)
        return {}, None
    if not isinstance(body, dict):
        log.warning("%s is not a JSON object; sending no metadata", path)
        return {}, None
    if _serialized_size(body) <= MAX_METADATA_BYTES:
        # Written to while read: sent as read, but not confirmed (so not deleted) as the file now is.
        return body, _confirmed_as(METADATA_NAME, info) if unchanged else None
    # A long participant list is what grows: drop it first, then everything but the meeting URL.
    trimmed = {k: v for k, v in body.items() if k != "participants"}
    trimmed["participants_omitted"] = True
    if _serialized_size(trimmed) > MAX_METADATA_BYTES:
        meeting_url = body.get("meeting_url")
        trimmed = {"meeting_url": meeting_url if isinstance(meeting_url, str) else None, "metadata_omitted": True}
    log.warning("%s is over %d bytes; sending it trimmed (the file stays in place)", path, MAX_METADATA_BYTES)
    return trimmed, None


def _confirmed_as(name: str, info: os.stat_result) -> ConfirmedFile:
    return (name, info.st_size, info.st_mtime_ns, info.st_dev, info.st_ino, info.st_ctime_ns)


def _read_up_to(descriptor: int, limit: int) -> bytes:
    pieces, got = [], 0
    while got < limit:
        piece = os.read(descriptor, limit - got)
        if not piece:
            break
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)


def _serialized_size(body: object) -> int:
    """The size the control plane checks: the length of json.dumps with its defaults (", " and ": " between
    items, non-ASCII escaped as \\uXXXX), not of the compact form the request carries, which is never longer."""
    return len(json.dumps(body))


def started_at_of(names: Sequence[str]) -> str | None:
    """When the recording started, from the timestamp Jibri puts in the recording's name (host local time)."""
    stamps = sorted(m.group(1) for m in (_START_STAMP.search(n) for n in names) if m)
    if not stamps:
        return None
    try:
        local = datetime.strptime(stamps[0], "%Y-%m-%d-%H-%M-%S").astimezone()
    except ValueError:
        return None
    return format_time(local)


# -- sending parts ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionFile:
    """Where the uploader's part jobs read: `descriptor`, the file as opened and hashed in this attempt, while
    `name` in the session directory (open as dir_fd) still names it, with the identity it was hashed with."""

    dir_fd: int
    descriptor: int
    identity: Identity


@dataclass(frozen=True)
class PartJob:
    """One PUT: bytes [offset, offset + length) of the file at path, to a presigned URL with exactly these headers.

    With `source` (the uploader's jobs), the part is read from the descriptor the file was hashed through, and
    only while the file `name` in the session directory is still exactly that one; without it (a file of one's
    own, as the benchmark sends), from path, opened without following a symbolic link."""

    name: str
    number: int
    path: str
    offset: int
    length: int
    url: str
    headers: Mapping[str, str]
    source: SessionFile | None = None


@dataclass(frozen=True)
class PartResult:
    job: PartJob
    etag: str | None = None
    error: str | None = None
    changed: bool = False  # not sent: the file is no longer the one hashed (SessionChanged)

    @property
    def ok(self) -> bool:
        return self.error is None


class PartSender:
    """PUTs parts to presigned URLs, `concurrency` at a time; each part is read from disk by its own sender."""

    def __init__(self, concurrency: int, timeout: float) -> None:
        self.concurrency = concurrency
        self.timeout = timeout

    def send(self, jobs: Sequence[PartJob], stop: threading.Event | None = None) -> list[PartResult]:
        if not jobs:
            return []
        changed = threading.Event()  # once a file changed, the session's other parts wait for the next attempt
        # The pool's queue holds jobs, not bytes: only the `concurrency` running ones have a part in memory.
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs)), thread_name_prefix="part") as pool:
            return list(pool.map(lambda job: self._send_one(job, stop, changed), jobs))

    def _send_one(self, job: PartJob, stop: threading.Event | None, changed: threading.Event) -> PartResult:
        if stop is not None and stop.is_set():
            return PartResult(job, error="not sent: the agent is stopping")
        if changed.is_set():
            return PartResult(job, error="not sent: a file of the session changed since it was hashed")
        try:
            body = _read_part(job)
        except SessionChanged as exc:
            changed.set()
            return PartResult(job, error=f"cannot read part {job.number} of {job.name}: {exc}", changed=True)
        except OSError as exc:
            return PartResult(job, error=f"cannot read part {job.number} of {job.name}: {exc}")
        headers = {str(k): str(v) for k, v in job.headers.items()}
        # urllib would otherwise send form encoding, which presigned S3 PUTs (and moto) do not expect.
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/octet-stream"
        headers["Content-Length"] = str(len(body))
        request = urllib.request.Request(job.url, data=body, headers=headers, method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read(65536)
                etag = response.headers.get("ETag")
        except urllib.error.HTTPError as exc:
            detail = _short(exc.read(2048) if exc.fp is not None else b"")
            exc.close()
            return PartResult(job, error=f"PUT part {job.number} of {job.name} answered HTTP {exc.code} {detail}")
        except (OSError, ValueError) as exc:
            return PartResult(job, error=f"PUT part {job.number} of {job.name} failed: {exc}")
        finally:
            del body
        if not etag:
            return PartResult(job, error=f"PUT part {job.number} of {job.name} answered without an ETag")
        return PartResult(job, etag=etag)


def _read_part(job: PartJob) -> bytes:
    """The part's bytes; with a source, from the very file hashed, which must be unchanged (else SessionChanged)."""
    source = job.source
    if source is None:
        descriptor, _ = _open_file(job.path)
        try:
            return _pread_exactly(descriptor, job.length, job.offset, job.path)
        finally:
            os.close(descriptor)
    try:
        named = os.stat(job.name, dir_fd=source.dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise SessionChanged(f"{job.path} changed since it was hashed: it is gone") from None
    # The descriptor keeps the hashed inode alive, so no other file can have its device and inode meanwhile.
    problem = _difference(named, source.identity) or _difference(os.fstat(source.descriptor), source.identity)
    if problem is not None:
        raise SessionChanged(f"{job.path} changed since it was hashed: it {problem}")
    data = _pread_exactly(source.descriptor, job.length, job.offset, job.path)
    if _identity(os.fstat(source.descriptor)) != source.identity:
        raise SessionChanged(
            f"{job.path} changed since it was hashed: it was written to while part {job.number} was read"
        )
    return data


def _pread_exactly(descriptor: int, length: int, offset: int, path: str) -> bytes:
    data = os.pread(descriptor, length, offset)
    if len(data) < length:  # pread may return short on some file systems: read the rest
        pieces = [data]
        got = len(data)
        while got < length:
            more = os.pread(descriptor, length - got, offset + got)
            if not more:
                raise OSError(f"{path} is shorter than declared")
            pieces.append(more)
            got += len(more)
        data = b"".join(pieces)
    return data


def _short(payload: bytes) -> str:
    return payload[:300].decode("utf-8", "replace").strip()


# -- the uploader ----------------------------------------------------------------------------------------------


@dataclass
class _Progress:
    etags: dict[tuple[str, int], str] = field(default_factory=dict)
    parts_sent: int = 0
    bytes_sent: int = 0


class Uploader:
    """Build with the agent's config, the spool and a signed JSON call, then `run(stop)` in a thread.

    `call(path, body)` POSTs to the control plane (e.g. `SignedApi(...).call`) and returns (status, JSON).
    `now` is the wall clock (entries carry wall times), `sleep` the pause between rounds within an attempt,
    `rng` the jitter, `sender` what PUTs the parts, `on_change` is called when the pending count drops.
    `trusted_owners`: the users who alone may own recordings_dir's parent directories (agent.boundary); by
    default root and the user the agent runs as.
    """

    def __init__(
        self,
        config: AgentConfig,
        spool: Spool,
        call: JsonCall,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] | None = None,
        rng: Callable[[], float] = random.random,
        sender: PartSender | None = None,
        on_change: Callable[[], None] | None = None,
        trusted_owners: Collection[int] | None = None,
    ) -> None:
        self.config = config
        self.spool = spool
        self._call = call
        self._now = now
        self._sleep = sleep
        self._rng = rng
        timeout = max(PART_TIMEOUT_FLOOR_SECONDS, config.request_timeout_seconds)
        self.sender = sender or PartSender(config.upload_concurrency, timeout)
        self._on_change = on_change
        self._stop = threading.Event()
        self._wake = threading.Event()
        # path → (identity and ctime as hashed, digest): reused for the very same file, unchanged
        self._digests: dict[str, tuple[tuple[int, ...], FileDigest]] = {}
        self._trusted = frozenset(default_trusted_owners() if trusted_owners is None else trusted_owners)
        # recordings_dir as resolved, once: at start, else (not there yet, or not trusted) at the first use it is.
        self._root: RecordingsRoot | None = None
        if config.recordings_dir is not None:
            try:
                self._root = resolve_recordings_dir(config.recordings_dir, self._trusted)
            except RecordingsDirUnusable as exc:
                log.warning("%s; no session is uploaded until it is resolved", exc)

    def wake(self) -> None:
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Upload spooled sessions until `stop` is set; no single failure ends it."""
        self._stop = stop
        threading.Thread(target=self._wake_on, args=(stop,), name="uploader-stop", daemon=True).start()
        log.info("uploader started", extra={"spool_dir": self.spool.path, "part_size": self.config.part_size})
        while not stop.is_set():
            try:
                delay = self.run_once()
            except Exception:
                delay = self.config.poll_interval_seconds
                log.exception("upload round failed; trying again in %.0f s", delay)
            self._wake.wait(delay)
            self._wake.clear()
        log.info("uploader stopped")

    def run_once(self) -> float:
        """Attempt every due entry once, oldest first; returns the seconds until one may be due."""
        self.spool.sweep_temporary()
        delay = self.config.poll_interval_seconds
        for entry in self.spool.entries():
            if self._stop.is_set():
                break
            now = self._now()
            if not entry.due(now):
                assert entry.next_attempt_at is not None
                delay = min(delay, max(0.0, (parse_time(entry.next_attempt_at) - now).total_seconds()))
                continue
            self.process(entry)
        return delay

    def process(self, entry: SpoolEntry) -> str:
        """One attempt at one entry; returns the entry's state afterwards ("done" once it left the spool)."""
        context = {"session_id": entry.session_id, "session_dir": entry.session_dir}
        try:
            self._check_place(entry)
            if entry.state == CONFIRMED and entry.confirmed_files is not None:
                return self._finish(entry)
            if entry.state == CONFIRMED:
                # Confirmed by an agent that did not record which files: deleting what the directory holds now
                # could delete a file S3 does not hold. Declaring again is safe and cheap: the control plane
                # answers from what S3 holds (nothing is sent again), and complete confirms exactly the files
                # declared now, or refuses them (the entry then fails and the files stay for an operator).
                log.info(
                    "session %s was confirmed without a list of its files; verifying them with the control plane",
                    entry.session_id,
                    extra=context,
                )
            session_fd = self._open_session(entry)
            held: dict[str, int] = {}  # each file as hashed, read again for its parts: closed after the attempt
            try:
                session = self._scan(entry, session_fd, held)
                started = time.monotonic()
                log.info(
                    "uploading session %s: %d file(s), %d bytes",
                    entry.session_id,
                    len(session.files),
                    sum(f.size for f in session.files),
                    extra={**context, "attempt": entry.attempts + 1},
                )
                reply = self._upload(session)
            finally:
                for descriptor in held.values():
                    os.close(descriptor)
                os.close(session_fd)
        except _Stopped:
            return entry.state
        except NothingToUpload as exc:
            log.error("dropping spool entry of session %s: %s", entry.session_id, exc, extra=context)
            self._remove_entry(entry)
            return "done"
        except RecordingsDirUnusable as exc:
            return self._fail(entry, str(exc), permanent=False, counted=True)
        except PermanentUploadError as exc:
            return self._fail(entry, str(exc), permanent=True, status=exc.status, code=exc.code)
        except (TransientUploadError, SpoolError, OSError) as exc:
            return self._fail(entry, str(exc), permanent=False)
        log.info(
            "session %s is in S3 (manifest %s) after %.1f s; deleting the local files",
            entry.session_id,
            reply.get("manifest_key"),
            time.monotonic() - started,
            extra={**context, "recording_id": reply.get("recording_id")},
        )
        try:
            # Marked first, with what was confirmed: a crash while deleting resumes the deletion of exactly
            # those files instead of declaring files that are gone.
            entry = self.spool.update(
                entry,
                state=CONFIRMED,
                last_error=None,
                next_attempt_at=None,
                confirmed_files=session.confirmed_files(),
            )
            return self._finish(entry)
        except RecordingsDirUnusable as exc:
            return self._fail(entry, str(exc), permanent=False, counted=True)
        except (SpoolError, OSError) as exc:
            return self._fail(entry, str(exc), permanent=False)

    # -- one attempt ---------------------------------------------------------------------------------------------

    def _upload(self, session: Session) -> dict[str, Any]:
        progress = _Progress()
        stalled = rejected = 0
        while True:
            self._check_stop()
            reply = self._declare(session)
            jobs = self._jobs(session, reply)
            if not jobs and not reply["more"]:
                status, body = self._complete(session, reply["recording_id"], progress)
                if status == 200:
                    return body
                rejected += 1
                if rejected >= MAX_REJECTED_ROUNDS:
                    raise TransientUploadError(f"complete rejected parts {rejected} times in a row: {body}")
                log.warning(
                    "control plane rejected parts of session %s: %s; sending them again",
                    session.session_id,
                    body.get("rejected"),
                    extra={"session_id": session.session_id},
                )
                continue
            if not jobs:
                # More to come but no URL in this reply: a control plane out of step; do not spin on it.
                stalled += 1
                if stalled >= MAX_STALLED_ROUNDS:
                    raise TransientUploadError("POST /v1/recordings keeps answering more without any part URL")
                self._pause(ROUND_BACKOFF_SECONDS[min(stalled, len(ROUND_BACKOFF_SECONDS) - 1)])
                continue
            results = self.sender.send(jobs, self._stop)
            self._check_stop()
            changed = next((r for r in results if r.changed), None)
            if changed is not None:
                # Not a failure the next round fixes: the session is looked at and hashed again next attempt.
                raise TransientUploadError(f"{changed.error}; the session is hashed again at the next attempt")
            failures = [r for r in results if not r.ok]
            for result in results:
                if result.ok and result.etag is not None:
                    progress.etags[(result.job.name, result.job.number)] = result.etag
                    progress.parts_sent += 1
                    progress.bytes_sent += result.job.length
            log.debug(
                "session %s: sent %d part(s), %d failed",
                session.session_id,
                len(results) - len(failures),
                len(failures),
                extra={"session_id": session.session_id, "bytes_sent": progress.bytes_sent},
            )
            if not failures:
                stalled = 0
                continue
            stalled = 0 if len(failures) < len(results) else stalled + 1
            if stalled >= MAX_STALLED_ROUNDS:
                raise TransientUploadError(f"{len(failures)} part(s) could not be sent: {failures[0].error}")
            log.warning(
                "%d of %d part(s) of session %s failed (%s); asking for fresh URLs",
                len(failures),
                len(results),
                session.session_id,
                failures[0].error,
                extra={"session_id": session.session_id},
            )
            self._pause(ROUND_BACKOFF_SECONDS[min(stalled, len(ROUND_BACKOFF_SECONDS) - 1)])

    def _declare(self, session: Session) -> dict[str, Any]:
        _, body = self._post("/v1/recordings", session.declaration(), session)
        return _checked_declare_reply(body, session)

    def _jobs(self, session: Session, reply: Mapping[str, Any]) -> list[PartJob]:
        jobs = []
        for item in reply["files"]:
            digest = session.file(item["name"])
            assert digest is not None  # checked with the reply
            for upload in item["upload"]:
                offset, length = part_range(upload["number"], session.part_size, digest.size)
                jobs.append(
                    PartJob(
                        digest.name,
                        upload["number"],
                        digest.path,
                        offset,
                        length,
                        upload["url"],
                        upload["headers"],
                        SessionFile(session.dir_fd, session.descriptors[digest.name], digest.identity),
                    )
                )
        return jobs

    def _complete(self, session: Session, recording_id: str, progress: _Progress) -> tuple[int, dict[str, Any]]:
        files = []
        for digest in session.files:
            parts = []
            for part in digest.parts:
                # A part sent before a restart has no ETag at hand: S3's ETag of a part is its quoted MD5
                # (no KMS), which is also what the control plane checks against the ETags S3 lists.
                etag = progress.etags.get((digest.name, part.number), f'"{part.md5}"')
                parts.append({"number": part.number, "etag": etag, "md5": part.md5, "sha256": part.sha256})
            files.append({"name": digest.name, "parts": parts})
        path = f"/v1/recordings/{quote(recording_id, safe='')}/complete"
        status, body = self._post(path, {"files": files}, session, accept=(200, 409))
        if status == 409:
            error = body.get("error") if isinstance(body, dict) else None
            if not isinstance(error, dict) or error.get("code") != "parts_rejected":
                code = error.get("code") if isinstance(error, dict) else None
                message = error.get("message") if isinstance(error, dict) else None
                raise PermanentUploadError(f"complete answered HTTP 409 {code}: {message}", 409, str(code))
        elif not isinstance(body, dict) or body.get("status") != "complete":
            raise TransientUploadError("complete answered 200 without status complete")
        return status, body if isinstance(body, dict) else {}

    def _post(
        self, path: str, body: Mapping[str, Any], session: Session, accept: tuple[int, ...] = (200, 201)
    ) -> tuple[int, Any]:
        try:
            status, reply = self._call(path, body)
        except Exception as exc:
            raise TransientUploadError(f"POST {path}: {exc}") from None
        if status in accept and (isinstance(reply, dict) or status >= 300):
            return status, reply
        code, message = error_fields(reply)
        if 200 <= status < 300 or transient_status(status):
            raise TransientUploadError(f"POST {path} answered HTTP {status} {code}: {message}")
        raise PermanentUploadError(f"POST {path} answered HTTP {status} {code}: {message}", status, code)

    # -- files -------------------------------------------------------------------------------------------------

    def _scan(self, entry: SpoolEntry, dir_fd: int, held: dict[str, int]) -> Session:
        """Hash the session's files, each opened relative to its directory (dir_fd) and left open in `held`."""
        directory = entry.session_dir
        names = sorted(os.listdir(dir_fd))
        owner = os.fstat(dir_fd).st_uid  # Jibri's user: a file of anyone else is not Jibri's to send
        digests = []
        kept: list[str] = []  # skipped, but not to be left behind without an operator knowing
        metadata_seen = False
        for name in names:
            path = os.path.join(directory, name)
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            reason = skip_reason(name, info, owner)
            if reason not in (None, *_HARMLESS_LEFTOVERS):
                kept.append(f"{name} ({reason})")
            if name == METADATA_NAME:
                # Read as root: only a file of Jibri's own, never through a link Jibri's user may have put there.
                metadata_seen = reason == METADATA_SKIPPED
                if not metadata_seen:
                    log.warning(
                        "not reading %s: %s; sending no metadata", path, reason, extra={"session_id": entry.session_id}
                    )
                continue
            if reason is not None:
                log.warning("skipping %s: %s", path, reason, extra={"session_id": entry.session_id})
                continue
            if part_count(info.st_size, self.config.part_size) > MAX_PARTS:
                raise PermanentUploadError(
                    f"{path} needs more than {MAX_PARTS} parts of {self.config.part_size} bytes; raise part_size"
                )
            digests.append(self._digest(dir_fd, name, path, info, held))
        if not digests and kept:
            raise PermanentUploadError(
                f"{directory} holds no recording to upload, but {', '.join(kept)}: left for an operator"
            )
        if not digests:
            raise NothingToUpload(f"{directory} holds no recording")
        metadata, metadata_file = _read_metadata(directory, dir_fd, owner) if metadata_seen else ({}, None)
        return Session(
            session_id=entry.session_id,
            directory=directory,
            room=room_of(metadata.get("meeting_url")),
            metadata=metadata,
            started_at=started_at_of([d.name for d in digests]),
            ended_at=entry.spooled_at,
            part_size=self.config.part_size,
            files=tuple(digests),
            dir_fd=dir_fd,
            descriptors=held,
            metadata_file=metadata_file,
        )

    def _recordings_root(self) -> RecordingsRoot:
        """recordings_dir as resolved once (agent.boundary); RecordingsDirUnusable while it cannot be."""
        configured = self.config.recordings_dir
        if configured is None:
            # parse_config requires it while uploads are enabled; a config built otherwise gets nothing deleted.
            raise PermanentUploadError("recordings_dir is not set: no session is uploaded or deleted without it")
        if self._root is None:
            self._root = resolve_recordings_dir(configured, self._trusted)
            log.info("recordings_dir %s resolved to %s", configured, self._root.path)
        return self._root

    def _check_place(self, entry: SpoolEntry) -> None:
        # The spool is writable by Jibri's user and the agent deletes what it uploads: it never follows a
        # symbolic link to a session, and takes sessions only from directly inside where Jibri records.
        directory = entry.session_dir
        allowed = self._recordings_root().path
        if os.path.basename(directory) != entry.session_id:
            raise PermanentUploadError(f"{directory} is not named after session {entry.session_id}")
        if os.path.islink(directory):
            raise PermanentUploadError(f"{directory} is a symbolic link, not a session directory")
        if os.path.dirname(os.path.realpath(directory)) != allowed:
            raise PermanentUploadError(
                f"{directory} is not a session directory in recordings_dir {self.config.recordings_dir}"
            )

    def _open_recordings_dir(self) -> int:
        """recordings_dir, opened without following a symbolic link, and still the very directory resolved;
        RecordingsDirUnusable when it is not.

        Missing, unmounted or hidden (a unit with PrivateTmp or ProtectHome): the session's files may well be
        there, out of the agent's sight, so its entry stays, counted as failed, rather than being dropped."""
        return self._recordings_root().open()

    def _open_session(self, entry: SpoolEntry) -> int:
        """The session directory, opened as entry.session_id directly inside recordings_dir; neither is opened
        through a symbolic link, so a directory swapped for one after the checks is still not followed."""
        directory = entry.session_dir
        parent = self._open_recordings_dir()
        try:
            return os.open(entry.session_id, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            raise NothingToUpload(f"{directory} no longer exists") from None
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            if stat.S_ISLNK(os.stat(entry.session_id, dir_fd=parent, follow_symlinks=False).st_mode):
                raise PermanentUploadError(f"{directory} is a symbolic link, not a session directory") from None
            raise NothingToUpload(f"{directory} is not a directory") from None
        finally:
            os.close(parent)

    def _digest(self, dir_fd: int, name: str, path: str, info: os.stat_result, held: dict[str, int]) -> FileDigest:
        """The digest of the file `name` in dir_fd, which must still be the regular file listed (its lstat).

        The file stays open in `held` for its parts to be read from. A digest from an earlier attempt is reused
        only for the very same file: same identity, and same ctime (which no one can set back)."""
        descriptor, opened = _open_file(name, dir_fd, path, _identity(info), since="listed")
        held[name] = descriptor
        key = (*_identity(opened), opened.st_ctime_ns)
        known = self._digests.get(path)
        if known is not None and known[0] == key:
            return known[1]
        digest = _hash_open_file(descriptor, opened, name, path, self.config.part_size, HASH_CHUNK_BYTES)
        self._digests[path] = (key, digest)
        return digest

    def _finish(self, entry: SpoolEntry) -> str:
        """Delete the confirmed files still exactly as confirmed (same size, mtime, device, inode and ctime), then
        the entry; returns the entry's state afterwards ("done" once it left the spool).

        Anything else in the directory, or a confirmed file changed since, stays (with a warning); unless it is
        only Jibri's metadata or empty files, the entry stays too, failed, for an operator to look at. The
        session directory is opened without following a symbolic link and every file is deleted relative to it,
        so swapping the directory for a link after the checks does not move the deletion elsewhere."""
        assert entry.confirmed_files is not None
        context = {"session_id": entry.session_id, "session_dir": entry.session_dir}
        parent = self._open_recordings_dir()
        kept: list[str] = []
        try:
            try:
                session = os.open(entry.session_id, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                session = None  # deleted already (a crash after rmdir, before the entry went)
            if session is not None:
                try:
                    changed = self._delete_confirmed(entry, session)
                    others = sorted(set(os.listdir(session)) - set(changed))
                    kept = [f"{name} (changed since the control plane confirmed it)" for name in changed]
                    kept += self._not_harmless(session, others)
                finally:
                    os.close(session)
                if changed:
                    log.warning(
                        "left %s in %s: changed since the control plane confirmed it, so S3 may not hold it",
                        ", ".join(changed),
                        entry.session_dir,
                        extra=context,
                    )
                if others:
                    log.warning(
                        "left %s in %s: not among the files the control plane confirmed",
                        ", ".join(others),
                        entry.session_dir,
                        extra=context,
                    )
                if not changed and not others:
                    with contextlib.suppress(FileNotFoundError):
                        os.rmdir(entry.session_id, dir_fd=parent)
        finally:
            os.close(parent)
        if kept:
            # The confirmed files are gone; what is left, no upload of this session covers.
            error = f"confirmed in S3, but {entry.session_dir} still holds {', '.join(kept)}"
            return self._fail(entry, error, permanent=True, state=FAILED, outcome="kept for an operator")
        self._remove_entry(entry)
        return "done"

    @staticmethod
    def _not_harmless(session: int, names: Sequence[str]) -> list[str]:
        """Of `names` in the session directory, those an operator should look at, each with why."""
        owner = os.fstat(session).st_uid
        found = []
        for name in names:
            try:
                reason = skip_reason(name, os.stat(name, dir_fd=session, follow_symlinks=False), owner)
            except FileNotFoundError:
                continue
            if reason not in _HARMLESS_LEFTOVERS:
                found.append(f"{name} ({reason or 'not among the files the control plane confirmed'})")
        return found

    def _delete_confirmed(self, entry: SpoolEntry, session: int) -> list[str]:
        """Unlink each confirmed file that is unchanged; returns the names of those that changed."""
        assert entry.confirmed_files is not None
        changed = []
        for item in entry.confirmed_files:
            name = item[0]
            try:
                info = os.stat(name, dir_fd=session, follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted before a crash
            if not confirmed_match(item, info):
                changed.append(name)
                continue
            os.unlink(name, dir_fd=session)
            self._digests.pop(os.path.join(entry.session_dir, name), None)
        return changed

    def _remove_entry(self, entry: SpoolEntry) -> None:
        self.spool.remove(entry.session_id)
        for path in [p for p in self._digests if os.path.dirname(p) == entry.session_dir]:
            del self._digests[path]
        if self._on_change is not None:
            self._on_change()

    def _fail(
        self,
        entry: SpoolEntry,
        error: str,
        *,
        permanent: bool,
        counted: bool = False,
        state: str | None = None,
        outcome: str | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> str:
        """Record a failed attempt and when to try again; returns the entry's state.

        permanent: a long backoff, else a short one. The entry becomes FAILED (counted as a failed upload) when
        permanent or `counted`, else stays PENDING; a confirmed one stays CONFIRMED, as only deleting its files
        is left, and counts as failed from its first failed attempt (its last_error). `state` overrides, and
        `outcome` says what became of the upload in the log (refused when permanent, else failed)."""
        attempts = entry.attempts + 1
        if state is None:
            if entry.state == CONFIRMED and entry.confirmed_files is not None:
                state = CONFIRMED
            else:
                state = FAILED if permanent or counted else PENDING
        if permanent:
            base, cap = PERMANENT_BACKOFF_BASE_SECONDS, PERMANENT_BACKOFF_CAP_SECONDS
        else:
            base, cap = TRANSIENT_BACKOFF_BASE_SECONDS, TRANSIENT_BACKOFF_CAP_SECONDS
        ceiling = min(cap, base * 2 ** min(attempts - 1, 32))
        delay = ceiling / 2 + self._rng() * ceiling / 2  # never a hot loop, still spread over a fleet
        next_at = self._now() + timedelta(seconds=delay)
        context = {
            "session_id": entry.session_id,
            "session_dir": entry.session_dir,
            "attempts": attempts,
            "http_status": status,
            "error_code": code,
        }
        # An error when it counts as a failed upload (an operator's business), else a warning.
        (log.error if state != PENDING else log.warning)(
            "upload of session %s %s: %s; files left in place, next attempt in %.0f s",
            entry.session_id,
            outcome or ("refused" if permanent else "failed"),
            error,
            delay,
            extra=context,
        )
        try:
            self.spool.update(
                entry, attempts=attempts, last_error=error[:1000], state=state, next_attempt_at=format_time(next_at)
            )
        except SpoolError as exc:
            log.error("%s", exc, extra=context)
        return state

    def _wake_on(self, stop: threading.Event) -> None:
        stop.wait()
        self._wake.set()

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise _Stopped()

    def _pause(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        elif self._stop.wait(seconds):
            raise _Stopped()


def _checked_declare_reply(body: Any, session: Session) -> dict[str, Any]:
    """The parts of a POST /v1/recordings reply the loop relies on, or TransientUploadError naming what is off."""

    def bad(what: str) -> TransientUploadError:
        return TransientUploadError(f"POST /v1/recordings answered an unexpected reply: {what}")

    if not isinstance(body, dict):
        raise bad("not a JSON object")
    recording_id, files, more = body.get("recording_id"), body.get("files"), body.get("more", False)
    if not isinstance(recording_id, str) or not recording_id:
        raise bad("no recording_id")
    if not isinstance(files, list) or not isinstance(more, bool):
        raise bad("files is not a list or more is not a boolean")
    checked = []
    for item in files:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise bad("a file without a name")
        digest = session.file(item["name"])
        if digest is None:
            raise bad(f"file {item['name']!r} was not declared")
        uploads = item.get("upload", [])
        if not isinstance(uploads, list):
            raise bad(f"upload of {digest.name} is not a list")
        parts = []
        for upload in uploads:
            number = upload.get("number") if isinstance(upload, dict) else None
            if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= len(digest.parts):
                raise bad(f"a part number of {digest.name} is not in 1..{len(digest.parts)}")
            url, headers = upload.get("url"), upload.get("headers", {})
            if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
                raise bad(f"part {number} of {digest.name} has no http(s) URL")
            if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
                raise bad(f"headers of part {number} of {digest.name} are not strings")
            parts.append({"number": number, "url": url, "headers": headers})
        checked.append({"name": digest.name, "upload": parts})
    return {"recording_id": recording_id, "status": body.get("status"), "files": checked, "more": more}
