"""The spool: one entry per session, written atomically, readable after a crash at any point of a write."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

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
