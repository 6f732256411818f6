"""The durable spool of finished recordings: one JSON file per Jibri session, each written atomically.

The finalize script (Jibri's user) adds entries; the uploader (the agent) updates and removes them. An entry
is written to a temporary file in the spool directory, flushed to disk, renamed over its final name and the
directory flushed too, so a crash or power loss leaves either the old entry or the new one, never half of one.
A temporary file left by a crash between write and rename is ignored and later swept away.

The spool is writable by Jibri's user while the agent runs as root and deletes what it uploaded: an entry
names its session directory only in a plain form (absolute, normalized, named after the session), and one
that does not read as such is never acted on. It stays in place, counted as a pending and a failed upload,
for an operator to look at.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from agent.log import UTC, get_logger

log = get_logger("spool")

PENDING = "pending"  # to upload, or being uploaded
# Waiting for an operator: refused by the control plane (or by the agent's checks) for a reason retrying soon
# will not fix, recordings_dir out of reach, or files left that no upload covers. Retried after a backoff.
FAILED = "failed"
# The control plane confirmed the recording in S3: only the local files are left to delete. One whose
# deletion failed carries last_error and counts as failed until it is done.
CONFIRMED = "confirmed"
STATES = (PENDING, FAILED, CONFIRMED)
SESSION_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_SUFFIX = ".json"
_TEMP_PREFIX = ".tmp-"
# A writer renames its temporary file within milliseconds; one this old belongs to a writer that died.
STALE_TEMP_SECONDS = 3600.0
_MAX_ENTRY_BYTES = 65536
# Jibri's description of the meeting, next to the recording: sent as the declaration's metadata, not as a file.
METADATA_NAME = "metadata.json"


class SpoolError(RuntimeError):
    """The spool directory cannot be read or written."""


def valid_session_id(session_id: str) -> bool:
    return bool(SESSION_ID.match(session_id)) and session_id not in (".", "..")


METADATA_SKIPPED = "Jibri's metadata"
EMPTY_SKIPPED = "empty"


def skip_reason(name: str, info: os.stat_result, owner: int | None = None) -> str | None:
    """Why a session directory's entry (its lstat) is no recording to upload; None when it is one.

    `owner` is the session directory's owner (Jibri's user): a file of anyone else is not Jibri's recording.
    metadata.json is never a recording: METADATA_SKIPPED when it may be read as Jibri's metadata, another
    reason when it may not (then it is treated as absent). EMPTY_SKIPPED is an empty file of Jibri's own."""
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_nlink > 1:
        # Jibri writes each file once; a second name for a file may be a hard link Jibri's user made to a
        # file it cannot read (where fs.protected_hardlinks is off), which root would otherwise read and send.
        return "a hard link (the file has other names)"
    if owner is not None and info.st_uid != owner:
        # Such a link whose first name was then removed has one name again, but still its owner.
        return f"owned by uid {info.st_uid}, not by the session directory's owner (uid {owner})"
    if name == METADATA_NAME:
        return METADATA_SKIPPED
    if info.st_size == 0:
        return EMPTY_SKIPPED
    return None


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# A confirmed file: its name in the session directory, its size and mtime_ns as uploaded and verified, then its
# device, inode and ctime_ns (a file's writer can set its size and mtime, not its ctime). Entries written before
# the identity was recorded hold the first three only; theirs are matched by size and mtime alone.
ConfirmedFile = tuple[str, int, int] | tuple[str, int, int, int, int, int]


@dataclass(frozen=True)
class SpoolEntry:
    session_id: str
    session_dir: str
    spooled_at: str  # ISO 8601 UTC: when the finalize script ran, i.e. when the recording ended
    attempts: int = 0
    last_error: str | None = None
    state: str = PENDING
    next_attempt_at: str | None = None  # ISO 8601 UTC; None: at once
    # Set with CONFIRMED: exactly what the control plane confirmed, the only files the uploader may delete.
    confirmed_files: tuple[ConfirmedFile, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "session_id": self.session_id,
            "session_dir": self.session_dir,
            "spooled_at": self.spooled_at,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "state": self.state,
            "next_attempt_at": self.next_attempt_at,
        }
        if self.confirmed_files is not None:
            body["confirmed_files"] = [list(item) for item in self.confirmed_files]
        return body

    @classmethod
    def from_json(cls, body: Any) -> SpoolEntry:
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        session_id, session_dir, spooled_at = body.get("session_id"), body.get("session_dir"), body.get("spooled_at")
        if not isinstance(session_id, str) or not valid_session_id(session_id):
            raise ValueError("session_id missing or invalid")
        if not isinstance(session_dir, str) or not os.path.isabs(session_dir) or "\0" in session_dir:
            raise ValueError("session_dir missing or not absolute")
        # What Spool.add writes: no "..", "." or doubled slash to walk elsewhere, and named after the session.
        if os.path.normpath(session_dir) != session_dir:
            raise ValueError(f"session_dir {session_dir!r} is not a normalized path")
        if os.path.basename(session_dir) != session_id:
            raise ValueError(f"session_dir {session_dir!r} is not named after session {session_id}")
        if not isinstance(spooled_at, str):
            raise ValueError("spooled_at missing")
        parse_time(spooled_at)
        attempts, last_error = body.get("attempts", 0), body.get("last_error")
        state, next_attempt_at = body.get("state", PENDING), body.get("next_attempt_at")
        if not isinstance(attempts, int) or attempts < 0:
            raise ValueError("attempts is not a count")
        if state not in STATES:
            raise ValueError(f"state is not one of {', '.join(STATES)}")
        if last_error is not None and not isinstance(last_error, str):
            raise ValueError("last_error is not a string")
        if next_attempt_at is not None:
            if not isinstance(next_attempt_at, str):
                raise ValueError("next_attempt_at is not a time")
            parse_time(next_attempt_at)
        confirmed = _confirmed_files(body.get("confirmed_files"))
        return cls(session_id, session_dir, spooled_at, attempts, last_error, state, next_attempt_at, confirmed)

    def due(self, now: datetime) -> bool:
        return self.next_attempt_at is None or parse_time(self.next_attempt_at) <= now

    @property
    def failing(self) -> bool:
        """Counted as a failed upload: refused or kept for an operator, or confirmed but not yet deleted after
        a failed attempt (a pending entry with an error is only waiting for a retry)."""
        return self.state == FAILED or (self.state == CONFIRMED and self.last_error is not None)


def _confirmed_files(raw: Any) -> tuple[ConfirmedFile, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ValueError("confirmed_files is not a list")
    found: list[ConfirmedFile] = []
    for item in raw:
        if not isinstance(item, list) or len(item) not in (3, 6):
            raise ValueError(
                "confirmed_files holds something other than [name, size, mtime_ns, dev, ino, ctime_ns] "
                "(or [name, size, mtime_ns])"
            )
        name, numbers = item[0], item[1:]
        if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\0" in name:
            raise ValueError(f"confirmed file name {name!r} is not a plain file name")
        if any(isinstance(v, bool) or not isinstance(v, int) for v in numbers) or numbers[0] < 0:
            raise ValueError(f"size, mtime_ns, dev, ino or ctime_ns of confirmed file {name!r} is not a whole number")
        if len(numbers) == 2:
            found.append((name, numbers[0], numbers[1]))
        else:
            found.append((name, numbers[0], numbers[1], numbers[2], numbers[3], numbers[4]))
    return tuple(found)


def confirmed_match(item: ConfirmedFile, info: os.stat_result) -> bool:
    """Whether the file `info` describes (its lstat) is still exactly the confirmed file `item`."""
    if not stat.S_ISREG(info.st_mode) or (info.st_size, info.st_mtime_ns) != (item[1], item[2]):
        return False
    if len(item) == 3:
        return True  # recorded before identities were: size and mtime are all there is to go by
    return (info.st_dev, info.st_ino, info.st_ctime_ns) == (item[3], item[4], item[5])


@dataclass(frozen=True)
class SpoolScan:
    """One look at the spool: its readable entries, oldest first, and the names of those that are not."""

    entries: list[SpoolEntry] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def pending(self) -> int:
        """Sessions not yet gone from the spool: what the status report calls pending uploads."""
        return len(self.entries) + len(self.unreadable)

    @property
    def failed(self) -> int:
        """Of pending, the sessions waiting for an operator: failing ones (SpoolEntry.failing), and entries
        that cannot be read."""
        return sum(1 for entry in self.entries if entry.failing) + len(self.unreadable)


class Spool:
    def __init__(self, path: str, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.path = path
        self._now = now
        # Unreadable entries already logged, by session id and the entry file's mtime_ns: logged once each, not
        # on every scan (the agent and its uploader share this spool and both scan it every few seconds).
        self._logged: set[tuple[str, int]] = set()
        self._logged_lock = threading.Lock()

    def add(self, session_dir: str) -> tuple[SpoolEntry, bool]:
        """Spool a session directory; returns its entry and whether it is new (an existing entry is kept)."""
        session_dir = os.path.abspath(session_dir)
        session_id = os.path.basename(session_dir)
        if not valid_session_id(session_id):
            raise ValueError(f"session directory name {session_id!r} is not a Jibri session id ([A-Za-z0-9._-])")
        existing = self.get(session_id)
        if existing is not None:
            return existing, False
        entry = SpoolEntry(session_id, session_dir, format_time(self._now()))
        self.write(entry)
        return entry, True

    def get(self, session_id: str) -> SpoolEntry | None:
        try:
            raw = _read_entry_file(self._entry_path(session_id))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SpoolError(f"cannot read spool entry {session_id}: {exc}") from None
        try:
            if len(raw) > _MAX_ENTRY_BYTES:
                raise ValueError(f"over {_MAX_ENTRY_BYTES} bytes")
            entry = SpoolEntry.from_json(json.loads(raw))
            if entry.session_id != session_id:
                raise ValueError(f"it names session {entry.session_id}")
            return entry
        except (ValueError, RecursionError) as exc:
            raise SpoolError(f"spool entry {session_id} is unreadable: {exc}") from None

    def write(self, entry: SpoolEntry) -> None:
        data = json.dumps(entry.to_json(), indent=2, sort_keys=True).encode("utf-8") + b"\n"
        try:
            descriptor, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=_SUFFIX, dir=self.path)
        except OSError as exc:
            raise SpoolError(f"cannot write to the spool {self.path}: {exc}") from None
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                # Through the descriptor: Jibri's user may have renamed the file and put a link in its place.
                os.fchmod(handle.fileno(), 0o660)
                os.fsync(handle.fileno())
            # By name, but only the spool's own names change: a link put there becomes an unreadable entry.
            os.replace(temp, self._entry_path(entry.session_id))
        except OSError as exc:
            _remove_quietly(temp)
            raise SpoolError(f"cannot write spool entry {entry.session_id}: {exc}") from None
        self._sync_directory()

    def update(self, entry: SpoolEntry, **changes: Any) -> SpoolEntry:
        changed = replace(entry, **changes)
        self.write(changed)
        return changed

    def remove(self, session_id: str) -> None:
        try:
            os.unlink(self._entry_path(session_id))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise SpoolError(f"cannot remove spool entry {session_id}: {exc}") from None
        self._sync_directory()

    def session_ids(self) -> list[str]:
        """Every spooled session (readable or not), in name order; none when the spool does not exist yet."""
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise SpoolError(f"cannot list the spool {self.path}: {exc}") from None
        ids = [name[: -len(_SUFFIX)] for name in names if name.endswith(_SUFFIX) and not name.startswith(".")]
        return sorted(i for i in ids if valid_session_id(i))

    def count(self) -> int:
        """Sessions not yet gone from the spool, readable or not (one directory listing, no entry read)."""
        return len(self.session_ids())

    def entries(self) -> list[SpoolEntry]:
        """Readable entries, oldest first; an unreadable one is logged once and left in place (it still counts)."""
        return self.scan().entries

    def scan(self) -> SpoolScan:
        """Read every entry once: the readable ones oldest first, and those that cannot be read.

        An entry that cannot be read or does not pass SpoolEntry.from_json is never acted on; it stays for an
        operator, counted as pending (the instance stays protected) and failed (the operator is alarmed)."""
        found: list[SpoolEntry] = []
        unreadable: list[str] = []
        seen: set[tuple[str, int]] = set()
        for session_id in self.session_ids():
            try:
                entry = self.get(session_id)
            except SpoolError as exc:
                unreadable.append(session_id)
                key = (session_id, self._mtime_ns(session_id))
                seen.add(key)
                with self._logged_lock:
                    first = key not in self._logged
                    self._logged.add(key)
                if first:
                    log.error(
                        "%s; leaving it for an operator (counted as a failed upload)",
                        exc,
                        extra={"session_id": session_id},
                    )
                continue
            if entry is not None:
                found.append(entry)
        with self._logged_lock:
            self._logged &= seen  # forget entries since fixed or removed: a new problem is logged again
        found.sort(key=lambda e: (parse_time(e.spooled_at), e.session_id))
        return SpoolScan(found, unreadable)

    def sweep_temporary(self, now: float | None = None) -> int:
        """Remove temporary files that crashed writers left behind; returns how many."""
        moment = time.time() if now is None else now
        removed = 0
        try:
            names = os.listdir(self.path)
        except OSError:
            return 0
        for name in names:
            if not name.startswith(_TEMP_PREFIX):
                continue
            temp = os.path.join(self.path, name)
            try:
                if moment - os.lstat(temp).st_mtime > STALE_TEMP_SECONDS:
                    os.unlink(temp)
                    removed += 1
            except OSError:
                continue
        return removed

    def _mtime_ns(self, session_id: str) -> int:
        try:
            return os.lstat(self._entry_path(session_id)).st_mtime_ns
        except OSError:
            return 0

    def _entry_path(self, session_id: str) -> str:
        if not valid_session_id(session_id):
            raise ValueError(f"invalid session id {session_id!r}")
        return os.path.join(self.path, session_id + _SUFFIX)

    def _sync_directory(self) -> None:
        # The rename (or unlink) itself is durable only once the directory is.
        try:
            descriptor = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(descriptor)
        except OSError:
            pass
        finally:
            os.close(descriptor)


# An entry is opened like this: never through a symbolic link, never left waiting on a FIFO for a writer.
_ENTRY_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _read_entry_file(path: str) -> bytes:
    """Up to _MAX_ENTRY_BYTES + 1 bytes of the entry at path, which must be a regular file (else OSError)."""
    try:
        descriptor = os.open(path, _ENTRY_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "it is a symbolic link") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "it is not a regular file")
        pieces: list[bytes] = []
        left = _MAX_ENTRY_BYTES + 1
        while left > 0:
            piece = os.read(descriptor, left)
            if not piece:
                break
            pieces.append(piece)
            left -= len(piece)
        return b"".join(pieces)
    finally:
        os.close(descriptor)


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
