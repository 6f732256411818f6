"""Part slicing and the one-pass hashing of a recording: sizes at part boundaries and the short last part."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from agent.uploader import (
    PartJob,
    PartSender,
    hash_file,
    part_count,
    part_range,
    read_metadata,
    room_of,
    started_at_of,
)

PART = 64 * 1024


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (1, [(0, 1)]),
        (PART - 1, [(0, PART - 1)]),
        (PART, [(0, PART)]),
        (PART + 1, [(0, PART), (PART, 1)]),
        (2 * PART, [(0, PART), (PART, PART)]),
        (2 * PART + 7, [(0, PART), (PART, PART), (2 * PART, 7)]),
    ],
)
def test_parts_are_all_part_size_but_the_last(size, expected):
    assert part_count(size, PART) == len(expected)
    assert [part_range(n, PART, size) for n in range(1, len(expected) + 1)] == expected
    with pytest.raises(ValueError):
        part_range(len(expected) + 1, PART, size)
    with pytest.raises(ValueError):
        part_range(0, PART, size)


@pytest.mark.parametrize("size", [1, PART - 1, PART, PART + 1, 3 * PART, 3 * PART + 12345])
@pytest.mark.parametrize("chunk", [4096, 10000, PART])
def test_one_pass_gives_the_whole_and_every_part_digest(tmp_path, size, chunk):
    data = os.urandom(size)
    path = tmp_path / "rec_2026-11-24-10-00-00.mp4"
    path.write_bytes(data)
    digest = hash_file(str(path), PART, chunk_bytes=chunk)
    assert (digest.name, digest.size) == (path.name, size)
    assert digest.sha256 == hashlib.sha256(data).hexdigest()
    slices = [data[i : i + PART] for i in range(0, size, PART)]
    assert [(p.number, p.md5, p.sha256) for p in digest.parts] == [
        (n, hashlib.md5(s).hexdigest(), hashlib.sha256(s).hexdigest()) for n, s in enumerate(slices, start=1)
    ]


@pytest.mark.parametrize(
    ("url", "room"),
    [
        ("https://meet.example.com/myroom", "myroom"),
        ("https://meet.example.com/tenant/weekly-sync/", "weekly-sync"),
        ("https://meet.example.com/caf%C3%A9?jwt=abc#config.x=1", "café"),
        ("https://meet.example.com", ""),
        (None, ""),
        (42, ""),
    ],
)
def test_the_room_is_the_last_path_segment_of_the_meeting_url(url, room):
    assert room_of(url) == room


def test_metadata_is_sent_as_jibri_wrote_it_and_trimmed_when_too_large(tmp_path):
    body = {"meeting_url": "https://m/r", "participants": [{"name": "a"}], "tenant": "t"}
    (tmp_path / "metadata.json").write_text(json.dumps(body))
    assert read_metadata(str(tmp_path)) == body
    huge = {**body, "participants": [{"name": "x" * 100}] * 1000}
    (tmp_path / "metadata.json").write_text(json.dumps(huge))
    assert read_metadata(str(tmp_path)) == {"meeting_url": "https://m/r", "tenant": "t", "participants_omitted": True}
    (tmp_path / "metadata.json").write_text("[1, 2]")
    assert read_metadata(str(tmp_path)) == {}
    (tmp_path / "metadata.json").unlink()
    assert read_metadata(str(tmp_path)) == {}


def test_the_start_comes_from_jibris_file_name(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        # Jibri stamps the host's local time; the declaration carries UTC.
        assert started_at_of(["myroom_2026-11-24-10-00-00.mp4", "notes.txt"]) == "2026-11-24T09:00:00Z"
        assert started_at_of(["notes.txt"]) is None
    finally:
        monkeypatch.undo()
        time.tzset()


def test_hashing_and_part_reads_by_path_never_follow_a_symbolic_link(tmp_path):
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:$6$not-to-be-read:19000::::::\n")
    link = tmp_path / "rec.mp4"
    link.symlink_to(secret)
    with pytest.raises(OSError, match="symbolic link"):
        hash_file(str(link), PART)
    job = PartJob("rec.mp4", 1, str(link), 0, secret.stat().st_size, "http://127.0.0.1:9/never", {})
    (result,) = PartSender(concurrency=1, timeout=1).send([job])
    assert result.error is not None and "symbolic link" in result.error and not result.changed


def test_metadata_is_never_read_through_a_symbolic_link(tmp_path):
    elsewhere = tmp_path / "credentials.json"
    elsewhere.write_text(json.dumps({"meeting_url": "https://m/r", "secret": "not to be sent"}))
    session = tmp_path / "sess"
    session.mkdir()
    (session / "metadata.json").symlink_to(elsewhere)
    assert read_metadata(str(session)) == {}
    linked = tmp_path / "linked-session"
    linked.symlink_to(session)
    (session / "metadata.json").unlink()
    (session / "metadata.json").write_text(json.dumps({"meeting_url": "https://m/r"}))
    assert read_metadata(str(linked)) == {}  # nor the session directory through one
    assert read_metadata(str(session)) == {"meeting_url": "https://m/r"}


def test_metadata_is_measured_as_the_control_plane_measures_it(tmp_path):
    """The control plane counts the characters of json.dumps(metadata) with its default separators and ASCII
    escapes; metadata that is small compactly encoded but over the limit that way is trimmed, not refused."""
    from chalicelib.recordings import MAX_METADATA_BYTES as CONTROL_PLANE_LIMIT

    participants = [{"id": f"p{n}@muc.meet.example.com/x", "name": "Zoë Ünal"} for n in range(1000)]
    body = {"meeting_url": "https://m/r", "participants": participants}
    compact = len(json.dumps(body, separators=(",", ":")).encode("utf-8"))
    assert compact <= CONTROL_PLANE_LIMIT < len(json.dumps(body))  # the two measures disagree on this body
    (tmp_path / "metadata.json").write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")

    sent = read_metadata(str(tmp_path))

    assert sent == {"meeting_url": "https://m/r", "participants_omitted": True}
    assert len(json.dumps(sent)) <= CONTROL_PLANE_LIMIT


def test_metadata_with_another_name_is_not_read(tmp_path):
    elsewhere = tmp_path / "credentials.json"
    elsewhere.write_text(json.dumps({"meeting_url": "https://m/r", "secret": "not to be sent"}))
    session = tmp_path / "sess"
    session.mkdir()
    os.link(elsewhere, session / "metadata.json")
    assert read_metadata(str(session)) == {}
    elsewhere.unlink()  # one name again: Jibri's own file as far as this test's single user can tell
    assert read_metadata(str(session)) == {"meeting_url": "https://m/r", "secret": "not to be sent"}
