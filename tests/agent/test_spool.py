"""The spool: one entry per session, written atomically, readable after a crash at any point of a write."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest

from agent.log import UTC
from agent.spool import CONFIRMED, FAILED, PENDING, STALE_TEMP_SECONDS, Spool, SpoolEntry, SpoolError

T0 = datetime(2026, 11, 24, 10, 40, 0, tzinfo=UTC)


@pytest.fixture
def spool(tmp_path):
    path = tmp_path / "spool"
    path.mkdir()
    return Spool(str(path), now=lambda: T0)


def _session(tmp_path, name="abcdefgh-1234"):
    directory = tmp_path / "recordings" / name
    directory.mkdir(parents=True)
    return directory


def test_add_writes_one_entry_per_session_and_keeps_an_existing_one(spool, tmp_path):
    directory = _session(tmp_path)
    entry, new = spool.add(str(directory))
    assert new and entry == SpoolEntry("abcdefgh-1234", str(directory), "2026-11-24T10:40:00Z")
    on_disk = json.loads((tmp_path / "spool" / "abcdefgh-1234.json").read_text())
    assert on_disk == {
        "session_id": "abcdefgh-1234",
        "session_dir": str(directory),
        "spooled_at": "2026-11-24T10:40:00Z",
        "attempts": 0,
        "last_error": None,
        "state": PENDING,
        "next_attempt_at": None,
    }
    spool.update(entry, attempts=3, last_error="boom")
    again, new = spool.add(str(directory) + "/")
    assert not new and again.attempts == 3 and again.last_error == "boom"
    assert spool.count() == 1


def test_a_directory_name_that_is_no_session_id_is_refused(spool, tmp_path):
    with pytest.raises(ValueError, match="session id"):
        spool.add(str(tmp_path / "bad name"))
    assert spool.count() == 0


def test_entries_are_oldest_first_and_removal_is_final(spool, tmp_path):
    times = iter([T0, T0 - timedelta(minutes=5)])
    spool._now = lambda: next(times)
    first, _ = spool.add(str(_session(tmp_path, "b-session")))
    second, _ = spool.add(str(_session(tmp_path, "a-later-name-but-older")))
    assert [e.session_id for e in spool.entries()] == [second.session_id, first.session_id]
    spool.remove(second.session_id)
    spool.remove(second.session_id)  # twice is harmless
    assert [e.session_id for e in spool.entries()] == [first.session_id]
    assert spool.get(second.session_id) is None


def test_a_crash_between_write_and_rename_leaves_the_previous_entry(spool, tmp_path, monkeypatch):
    entry, _ = spool.add(str(_session(tmp_path)))

    def crash(src, dst):
        raise OSError("power lost")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(SpoolError, match="power lost"):
        spool.update(entry, attempts=1, state=FAILED, last_error="refused")
    monkeypatch.undo()
    assert spool.get(entry.session_id) == entry
    assert spool.count() == 1


def test_a_temporary_file_left_by_a_dead_writer_is_ignored_then_swept(spool, tmp_path):
    entry, _ = spool.add(str(_session(tmp_path)))
    # What a writer killed after writing its temporary file but before the rename leaves behind.
    leftover = tmp_path / "spool" / ".tmp-abc123.json"
    leftover.write_text('{"session_id": "half')
    assert spool.count() == 1 and [e.session_id for e in spool.entries()] == [entry.session_id]
    now = os.path.getmtime(leftover)
    assert spool.sweep_temporary(now + 10) == 0 and leftover.exists()  # may be a live writer's
    assert spool.sweep_temporary(now + STALE_TEMP_SECONDS + 1) == 1 and not leftover.exists()
    assert spool.get(entry.session_id) == entry


def test_an_unreadable_entry_still_counts_as_pending(spool, tmp_path, caplog):
    (tmp_path / "spool" / "broken-1.json").write_text("{not json")
    (tmp_path / "spool" / "notes.txt").write_text("not an entry")
    ok, _ = spool.add(str(_session(tmp_path)))
    assert spool.count() == 2  # protection holds for what cannot be read: it may be a recording
    assert [e.session_id for e in spool.entries()] == [ok.session_id]
    assert "broken-1" in caplog.text
    with pytest.raises(SpoolError, match="unreadable"):
        spool.get("broken-1")


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"session_id": "../x", "session_dir": "/r/x", "spooled_at": "2026-11-24T10:40:00Z"},
        {"session_id": "x", "session_dir": "relative", "spooled_at": "2026-11-24T10:40:00Z"},
        {"session_id": "x", "session_dir": "/r/x", "spooled_at": "yesterday"},
        {"session_id": "x", "session_dir": "/r/x", "spooled_at": "2026-11-24T10:40:00Z", "state": "lost"},
        {"session_id": "x", "session_dir": "/r/x", "spooled_at": "2026-11-24T10:40:00Z", "attempts": -1},
    ],
)
def test_malformed_entries_are_refused(body):
    with pytest.raises(ValueError):
        SpoolEntry.from_json(body)


@pytest.mark.parametrize(
    ("session_dir", "why"),
    [
        ("/etc", "not named after session"),
        ("/srv/recordings/other-session", "not named after session"),
        ("/srv/recordings/../../etc/sess-1", "not a normalized path"),
        ("/srv/recordings/./sess-1", "not a normalized path"),
        ("/srv/recordings//sess-1", "not a normalized path"),
        ("/srv/recordings/sess-1/", "not a normalized path"),
        ("/srv/recordings/sess-1/..", "not a normalized path"),
        ("/srv/recordings/\0/sess-1", "not absolute"),
    ],
)
def test_an_entry_must_name_its_own_session_directory_plainly(session_dir, why):
    body = {"session_id": "sess-1", "session_dir": session_dir, "spooled_at": "2026-11-24T10:40:00Z"}
    with pytest.raises(ValueError, match=why):
        SpoolEntry.from_json(body)
    assert SpoolEntry.from_json({**body, "session_dir": "/srv/recordings/sess-1"}).session_id == "sess-1"


@pytest.mark.parametrize(
    "confirmed",
    [
        "rec.mp4",
        [["rec.mp4", 10]],
        [["../rec.mp4", 10, 1]],
        [["sub/rec.mp4", 10, 1]],
        [["..", 10, 1]],
        [["", 10, 1]],
        [["rec.mp4", -1, 1]],
        [["rec.mp4", "10", 1]],
        [["rec.mp4", 10, True]],
        [["rec.mp4", 10, 1, 2]],
        [["rec.mp4", 10, 1, 2, 3]],
        [["rec.mp4", 10, 1, 2, 3, "4"]],
        [["rec.mp4", 10, 1, 2, False, 4]],
        [["rec.mp4", 10, 1, 2, 3, 4, 5]],
    ],
)
def test_malformed_confirmed_files_are_refused(confirmed):
    body = {
        "session_id": "s",
        "session_dir": "/r/s",
        "spooled_at": "2026-11-24T10:40:00Z",
        "state": CONFIRMED,
        "confirmed_files": confirmed,
    }
    with pytest.raises(ValueError, match="confirmed"):
        SpoolEntry.from_json(body)


def test_the_confirmed_files_are_kept_with_the_entry(spool, tmp_path):
    entry, _ = spool.add(str(_session(tmp_path)))
    # Name, size, mtime_ns, then device, inode and ctime_ns; an entry written before those were kept has three.
    confirmed = (
        ("rec.mp4", 1234, 1764000000123456789, 2049, 131, 1764000000223456789),
        ("metadata.json", 40, 1764000000000000001),
    )
    spool.update(entry, state=CONFIRMED, confirmed_files=confirmed)
    on_disk = json.loads((tmp_path / "spool" / "abcdefgh-1234.json").read_text())
    assert on_disk["confirmed_files"] == [list(item) for item in confirmed]
    again = spool.get(entry.session_id)
    assert again is not None and again.state == CONFIRMED and again.confirmed_files == confirmed


def test_an_entry_filed_under_another_session_is_unreadable(spool, tmp_path):
    entry, _ = spool.add(str(_session(tmp_path)))
    # Removing "other-1" later would remove another session's entry, and leave this file forever.
    (tmp_path / "spool" / "other-1.json").write_text(json.dumps(entry.to_json()))
    with pytest.raises(SpoolError, match="names session abcdefgh-1234"):
        spool.get("other-1")
    scan = spool.scan()
    assert [e.session_id for e in scan.entries] == [entry.session_id] and scan.unreadable == ["other-1"]


def test_an_unreadable_entry_counts_as_failed_and_is_logged_once(spool, tmp_path, caplog):
    ok, _ = spool.add(str(_session(tmp_path)))
    refused, _ = spool.add(str(_session(tmp_path, "refused-1")))
    spool.update(refused, state=FAILED, last_error="409 session_reused")
    broken = tmp_path / "spool" / "broken-1.json"
    broken.write_text("{not json")
    # Jibri's user can write the spool: an entry naming some other directory is never acted on.
    elsewhere = {"session_id": "forged-1", "session_dir": "/etc", "spooled_at": "2026-11-24T10:40:00Z"}
    (tmp_path / "spool" / "forged-1.json").write_text(json.dumps(elsewhere))

    scan = spool.scan()
    assert sorted(e.session_id for e in scan.entries) == [ok.session_id, refused.session_id]
    assert scan.unreadable == ["broken-1", "forged-1"]
    assert (scan.pending, scan.failed) == (4, 3)

    for _ in range(3):
        spool.scan()
        spool.entries()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert sorted(getattr(r, "session_id", None) for r in errors) == ["broken-1", "forged-1"]

    # Written again (a new mtime), it is a new problem and logged again; once fixed, forgotten.
    os.utime(broken, ns=(1, 1))
    spool.scan()
    assert [getattr(r, "session_id", None) for r in caplog.records if r.levelname == "ERROR"][-1] == "broken-1"
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 3
    broken.unlink()
    assert spool.scan().unreadable == ["forged-1"]


def test_a_missing_spool_directory_means_nothing_pending(tmp_path):
    spool = Spool(str(tmp_path / "absent"))
    assert spool.count() == 0 and spool.entries() == []
    with pytest.raises(SpoolError):
        spool.add(str(_session(tmp_path)))


def test_due_follows_next_attempt_at():
    entry = SpoolEntry("s", "/r/s", "2026-11-24T10:40:00Z", state=CONFIRMED)
    assert entry.due(T0)
    later = SpoolEntry("s", "/r/s", "2026-11-24T10:40:00Z", next_attempt_at="2026-11-24T11:40:00Z")
    assert not later.due(T0) and later.due(T0 + timedelta(hours=1))


def test_an_entry_that_is_a_fifo_or_a_link_is_unreadable_and_does_not_block(spool, tmp_path):
    ok, _ = spool.add(str(_session(tmp_path)))
    # Jibri's user can write the spool: a FIFO would block an open for reading until someone writes to it.
    fifo = tmp_path / "spool" / "stuck-1.json"
    os.mkfifo(fifo)
    target = tmp_path / "entry-elsewhere.json"
    target.write_text(json.dumps({**ok.to_json(), "session_id": "linked-1", "session_dir": "/r/linked-1"}))
    (tmp_path / "spool" / "linked-1.json").symlink_to(target)
    scans: list[Any] = []
    worker = threading.Thread(target=lambda: scans.append(spool.scan()), daemon=True)
    worker.start()
    worker.join(timeout=10)
    try:
        assert not worker.is_alive(), "reading a FIFO in the spool blocked the scan"
    finally:
        if worker.is_alive():  # release the blocked open, so the thread ends
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            worker.join(timeout=10)
    (scan,) = scans
    assert [e.session_id for e in scan.entries] == [ok.session_id]
    assert scan.unreadable == ["linked-1", "stuck-1"] and (scan.pending, scan.failed) == (3, 2)


def test_an_entry_is_made_group_writable_through_its_descriptor_not_its_name(spool, tmp_path, monkeypatch):
    """Jibri's user can rename the temporary file and put a link in its place before the agent (root) sets the
    mode: the mode is set on the file written, never on what the name points at by then."""
    victim = tmp_path / "shadow"
    victim.write_text("root only")
    victim.chmod(0o600)
    entry, _ = spool.add(str(_session(tmp_path)))
    real_fsync = os.fsync
    swapped: list[str] = []

    def fsync_then_swap(descriptor: int) -> None:
        real_fsync(descriptor)
        temps = [p for p in (tmp_path / "spool").iterdir() if p.name.startswith(".tmp-")]
        if temps and not swapped:
            temp = temps[0]
            swapped.append(temp.name)
            temp.rename(tmp_path / "spool" / "moved-away")
            temp.symlink_to(victim)

    monkeypatch.setattr(os, "fsync", fsync_then_swap)
    with contextlib.suppress(SpoolError):
        spool.update(entry, attempts=1)
    monkeypatch.undo()

    assert swapped and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "spool" / "moved-away").stat().st_mode) == 0o660


def test_a_confirmed_entry_whose_deletion_failed_counts_as_failed_and_a_retried_one_does_not(spool, tmp_path):
    waiting, _ = spool.add(str(_session(tmp_path, "retry-1")))
    spool.update(waiting, attempts=1, last_error="HTTP 503")  # only waiting for its retry
    confirmed, _ = spool.add(str(_session(tmp_path, "confirmed-1")))
    confirmed = spool.update(confirmed, state=CONFIRMED, confirmed_files=(("rec.mp4", 1, 1),))
    assert (spool.scan().pending, spool.scan().failed) == (2, 0)
    spool.update(confirmed, attempts=1, last_error="cannot delete rec.mp4: Permission denied")
    assert (spool.scan().pending, spool.scan().failed) == (2, 1)
