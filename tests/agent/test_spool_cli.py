"""`python -m agent spool`: list, show, retry and set aside spooled sessions, with the service's own config."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import agent.config
from agent import __main__ as entry_point
from agent import spool_cli
from agent.config import AgentConfig
from agent.log import UTC
from agent.spool import CONFIRMED, FAILED, PENDING, Spool, SpoolEntry, format_time
from agent.uploader import Uploader
from tests.agent.test_install import JIBRI_CONF, Install

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 24, 10, 40, 0, tzinfo=UTC)
LATER = format_time(T0 + timedelta(hours=1))
REFUSED = "POST /v1/recordings answered HTTP 409 session_reused: sess-1 was declared with other files"


class World:
    """An instance's spool and recordings directory, and the agent's config file naming them."""

    def __init__(self, tmp_path: Path) -> None:
        self.base = tmp_path / "var"
        self.spool_dir = self.base / "spool"
        self.recordings = self.base / "recordings"
        self.spool_dir.mkdir(parents=True)
        self.recordings.mkdir()
        self.set_aside = self.base / "jibri-agent-set-aside"  # the default: next to spool_dir
        self.ini = tmp_path / "agent.ini"
        self.ini.write_text(
            "[agent]\napi_url = https://abc.execute-api.us-east-1.amazonaws.com/api\n"
            f"spool_dir = {self.spool_dir}\nrecordings_dir = {self.recordings}\npoll_interval_seconds = 5\n"
        )
        self.spool = Spool(str(self.spool_dir), now=lambda: T0)
        self.now = T0

    def session(self, name: str, files: dict[str, bytes] | None = None, **changes: Any) -> tuple[Path, SpoolEntry]:
        directory = self.recordings / name
        directory.mkdir()
        for file_name, data in (files or {"rec.mp4": b"v" * 1000, "metadata.json": b"{}"}).items():
            (directory / file_name).write_bytes(data)
        entry, _ = self.spool.add(str(directory))
        if changes:
            entry = self.spool.update(entry, **changes)
        return directory, entry

    def entry_json(self, session_id: str) -> dict[str, Any]:
        return json.loads((self.spool_dir / f"{session_id}.json").read_text())

    def cli(self, *args: str, euid: int = 0) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = spool_cli.main(
            ["--config", str(self.ini), *args], environ={}, geteuid=lambda: euid, now=lambda: self.now, out=out, err=err
        )
        return code, out.getvalue(), err.getvalue()

    def config(self) -> AgentConfig:
        return agent.config.load_config(str(self.ini), environ={})


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    # pytest's temporary directories are under /tmp, which the service refuses for recordings_dir (its unit
    # cannot see /tmp): that one check is lifted here; the rest of the service's config loading is what runs.
    monkeypatch.setattr(agent.config, "HIDDEN_FROM_THE_SERVICE", ())
    return World(tmp_path)


def failed_world(world: World) -> tuple[Path, SpoolEntry]:
    return world.session("sess-1", state=FAILED, attempts=3, last_error=REFUSED, next_attempt_at=LATER)


# -- list ------------------------------------------------------------------------------------------------------


def test_list_shows_each_entry_and_each_unreadable_file_and_counts_as_the_agent_does(world):
    failed_world(world)
    world.session("sess-2")  # pending, due now
    world.session(
        "sess-3",
        state=CONFIRMED,
        attempts=1,
        last_error="cannot delete",
        next_attempt_at=LATER,
        confirmed_files=(("rec.mp4", 1000, 1),),
    )
    (world.spool_dir / "sess-4.json").write_text("{not json")
    (world.spool_dir / "sess-5.json").symlink_to("/etc/passwd")

    code, out, _ = world.cli("list")

    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["SESSION", "STATE", "ATTEMPTS", "NEXT", "ATTEMPT", "FAILED", "LAST", "ERROR"]
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert rows["sess-1"].split()[1:5] == ["failed", "3", LATER, "yes"]
    assert "session_reused" in rows["sess-1"] and rows["sess-1"].endswith("...")  # truncated
    assert rows["sess-2"].split()[1:] == ["pending", "0", "due", "no"]
    assert rows["sess-3"].split()[1:5] == ["confirmed", "1", LATER, "yes"]
    assert rows["sess-4"].split()[1:5] == ["unreadable", "-", "-", "yes"]
    assert rows["sess-5"].split()[1] == "unreadable"
    scan = world.spool.scan()
    assert lines[-1].startswith(f"{scan.pending} pending upload(s), {scan.failed} failed") and scan.failed == 4

    code, out, _ = world.cli("list", "--json")
    body = json.loads(out)
    assert code == 0 and (body["pending_uploads"], body["failed_uploads"]) == (5, 4)
    by_id = {item["session_id"]: item for item in body["entries"]}
    assert by_id["sess-1"]["last_error"] == REFUSED and by_id["sess-1"]["next_attempt_at"] == LATER
    assert by_id["sess-4"] == {
        "session_id": "sess-4",
        "state": "unreadable",
        "attempts": None,
        "next_attempt": None,
        "next_attempt_at": None,
        "last_error": by_id["sess-4"]["last_error"],
        "failed": True,
        "readable": False,
    }
    assert "unreadable" in by_id["sess-4"]["last_error"] and "symbolic link" in by_id["sess-5"]["last_error"]


def test_list_of_an_empty_or_absent_spool(world):
    shutil.rmtree(world.spool_dir)
    code, out, _ = world.cli("list")
    assert code == 0 and out.splitlines()[-1].startswith("0 pending upload(s), 0 failed")
    assert json.loads(world.cli("list", "--json")[1])["entries"] == []


def test_the_agents_entry_point_runs_it_with_the_config_before_or_after_spool(world, capsys):
    failed_world(world)
    assert entry_point.main(["--config", str(world.ini), "spool", "list"]) == 0
    assert "sess-1" in capsys.readouterr().out
    assert entry_point.main(["spool", "--config", str(world.ini), "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["failed_uploads"] == 1


def test_a_bad_config_is_refused_as_the_service_refuses_it(tmp_path):
    # No test hook here: the real command, whose recordings_dir under /tmp the service would refuse too.
    ini = tmp_path / "agent.ini"
    ini.write_text("[agent]\napi_url = https://x/api\nrecordings_dir = /tmp/recordings\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIBRI_AGENT_")}
    for config in (str(ini), str(tmp_path / "missing.ini")):
        result = subprocess.run(
            [sys.executable, "-m", "agent", "spool", "--config", config, "list"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2 and "configuration error" in result.stderr and result.stdout == ""
    assert "recordings_dir" in result.stderr or "config is" in result.stderr


# -- show ------------------------------------------------------------------------------------------------------


def test_show_prints_the_entry_and_the_files_without_reading_them(world, monkeypatch, tmp_path):
    directory, _ = failed_world(world)
    (directory / "empty.flac").write_bytes(b"")
    os.mkfifo(directory / "pipe")  # opening it for reading would wait for a writer
    outside = tmp_path / "secret"
    outside.write_bytes(b"s" * 77)
    (directory / "link").symlink_to(outside)
    opened: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        opened.append((str(path), flags))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)

    code, out, _ = world.cli("show", "sess-1")

    assert code == 0
    assert f"spool entry {world.spool_dir}/sess-1.json (counted as a failed upload):" in out
    shown = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert shown == world.entry_json("sess-1")
    assert f"session directory {directory}: 5 name(s)" in out
    assert "1000  rec.mp4  (to upload)" in out
    assert "empty.flac  (skipped: empty)" in out and "metadata.json  (skipped: Jibri's metadata)" in out
    assert "pipe  (skipped: not a regular file)" in out and "link  (skipped: not a regular file)" in out
    # Only directories were opened, and the entry itself: no file of the session.
    assert all(flags & os.O_DIRECTORY or path.endswith("sess-1.json") for path, flags in opened)


def test_show_json_and_a_confirmed_entrys_files(world):
    directory, entry = world.session("sess-2", {"rec.mp4": b"v" * 10, "other.mp4": b"o" * 5})
    info = os.stat(directory / "rec.mp4")
    confirmed = (("rec.mp4", 10, info.st_mtime_ns, info.st_dev, info.st_ino, info.st_ctime_ns),)
    world.spool.update(entry, state=CONFIRMED, last_error="left other.mp4", confirmed_files=confirmed)

    code, out, _ = world.cli("show", "sess-2", "--json")

    body = json.loads(out)
    assert code == 0 and body["failed"] is True and body["entry"]["state"] == CONFIRMED
    files = {f["name"]: f for f in body["session_dir"]["files"]}
    assert files["rec.mp4"] == {"name": "rec.mp4", "size": 10, "kind": "file", "note": "confirmed in S3, to be deleted"}
    assert files["other.mp4"]["note"] == "to upload"


def test_show_does_not_follow_a_session_directory_that_is_a_link(world, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "important.db").write_bytes(b"keep")
    (world.recordings / "sess-1").symlink_to(target)
    world.spool.add(str(world.recordings / "sess-1"))
    code, out, _ = world.cli("show", "sess-1")
    assert code == 0 and "not listed" in out and "symbolic link" in out and "important.db" not in out


def test_show_of_an_unreadable_entry_and_of_an_unknown_session(world):
    (world.spool_dir / "sess-9.json").write_text("[]")
    code, out, _ = world.cli("show", "sess-9")
    assert code == 0 and "cannot be read" in out and "not a JSON object" in out and "file, 2 bytes" in out
    code, out, err = world.cli("show", "sess-404")
    assert code == 2 and out == "" and "no spool entry for session sess-404" in err
    code, _, err = world.cli("show", "../etc")
    assert code == 2 and "not a session id" in err


# -- retry -----------------------------------------------------------------------------------------------------


class RefusingApi:
    """The control plane refusing every declaration (session_reused); counts the calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.during: Callable[[], None] | None = None

    def __call__(self, path: str, body: Any) -> tuple[int, Any]:
        self.calls.append(path)
        if self.during is not None:
            self.during()
        return 409, {"error": {"code": "session_reused", "message": "declared with other files"}}


def test_retry_clears_the_backoff_and_the_uploader_tries_at_its_next_pass(world):
    failed_world(world)
    api = RefusingApi()
    uploader = Uploader(world.config(), world.spool, api, now=lambda: world.now, sleep=lambda s: None)
    uploader.run_once()
    assert api.calls == []  # waiting out its backoff

    code, out, _ = world.cli("retry", "sess-1")

    assert code == 0 and f"next attempt moved from {LATER} to now" in out and "within poll_interval_seconds" in out
    after = world.entry_json("sess-1")
    assert after["next_attempt_at"] is None
    assert (after["state"], after["attempts"], after["last_error"]) == (FAILED, 3, REFUSED)  # only the backoff
    uploader.run_once()  # the uploader reads the spool afresh at each pass
    assert api.calls == ["/v1/recordings"]
    assert world.entry_json("sess-1")["attempts"] == 4


def test_retry_keeps_a_confirmed_entrys_file_list(world):
    confirmed = (("rec.mp4", 1000, 123, 1, 2, 456), ("metadata.json", 2, 99, 1, 3, 457))
    world.session("sess-3", state=CONFIRMED, last_error="EACCES", next_attempt_at=LATER, confirmed_files=confirmed)
    before = world.entry_json("sess-3")

    assert world.cli("retry", "sess-3")[0] == 0

    after = world.entry_json("sess-3")
    assert after == {**before, "next_attempt_at": None}
    assert after["confirmed_files"] == [list(item) for item in confirmed]


def test_retry_all_failed_leaves_other_entries_alone_and_names_the_unreadable_ones(world):
    failed_world(world)
    world.session("sess-2", state=PENDING, attempts=1, last_error="timeout", next_attempt_at=LATER)
    (world.spool_dir / "sess-4.json").write_text("{}")

    code, out, err = world.cli("retry", "--all-failed")

    assert code == 2 and "sess-4" in err and "set-aside sess-4 --yes" in err
    assert world.entry_json("sess-1")["next_attempt_at"] is None
    assert world.entry_json("sess-2")["next_attempt_at"] == LATER  # pending, not failed: its backoff stays
    assert (world.spool_dir / "sess-4.json").read_text() == "{}"
    (world.spool_dir / "sess-4.json").unlink()
    code, out, _ = world.cli("retry", "--all-failed")
    assert code == 0 and "already due" in out


def test_retry_needs_root_and_a_known_readable_session(world):
    failed_world(world)
    before = world.entry_json("sess-1")
    code, _, err = world.cli("retry", "sess-1", euid=1000)
    assert code == 2 and "run it as root" in err and world.entry_json("sess-1") == before
    assert world.cli("retry", "sess-404")[0] == 2
    (world.spool_dir / "sess-4.json").write_text("{}")
    code, _, err = world.cli("retry", "sess-4")
    assert code == 2 and "cannot be retried" in err


def test_retry_writes_nothing_over_an_entry_the_uploader_rewrote_meanwhile(world, monkeypatch):
    failed_world(world)
    real_get = Spool.get
    reads: list[str] = []

    def get_then_uploader_writes(self: Spool, session_id: str) -> SpoolEntry | None:
        found = real_get(self, session_id)
        reads.append(session_id)
        if len(reads) == 2:  # the read retry writes over: the uploader's attempt ends right after it
            assert found is not None
            world.spool.update(found, attempts=4, next_attempt_at=format_time(T0 + timedelta(hours=2)))
        return found

    monkeypatch.setattr(Spool, "get", get_then_uploader_writes)
    code, _, err = world.cli("retry", "sess-1")
    assert code == 2 and "changed while it was being retried" in err
    monkeypatch.undo()
    assert world.entry_json("sess-1")["attempts"] == 4  # the uploader's write stands


# -- set-aside -------------------------------------------------------------------------------------------------


def test_set_aside_without_yes_only_says_what_it_would_do(world):
    directory, _ = failed_world(world)
    before = world.entry_json("sess-1")

    code, out, _ = world.cli("set-aside", "sess-1")

    assert code == 1
    assert "would set aside session sess-1 (failed, 3 attempt(s)" in out
    assert f"create {world.set_aside} (root only)" in out
    destination = world.set_aside / "sess-1-20261124T104000Z"
    assert f"move {directory} (2 name(s), 1002 bytes in files) to {destination}/sess-1" in out
    assert "run it again with --yes" in out
    assert sorted(os.listdir(directory)) == ["metadata.json", "rec.mp4"] and world.entry_json("sess-1") == before
    assert not world.set_aside.exists()


def test_set_aside_moves_the_directory_by_rename_and_drops_the_entry(world):
    directory, _ = failed_world(world)
    inode = os.stat(directory).st_ino
    before = world.entry_json("sess-1")
    assert (world.spool.scan().pending, world.spool.scan().failed) == (1, 1)

    code, out, _ = world.cli("set-aside", "sess-1", "--yes")

    assert code == 0, out
    destination = world.set_aside / "sess-1-20261124T104000Z"
    moved = destination / "sess-1"
    assert not directory.exists() and os.stat(moved).st_ino == inode  # renamed, not copied
    assert (moved / "rec.mp4").read_bytes() == b"v" * 1000 and (moved / "metadata.json").exists()
    assert json.loads((destination / "sess-1.json").read_text()) == before
    assert world.spool.count() == 0 and (world.spool.scan().pending, world.spool.scan().failed) == (0, 0)
    for path in (world.set_aside, destination):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert "next round" in out

    # A second session the same second gets a directory of its own; nothing is replaced.
    world.session("sess-2", state=FAILED)
    os.mkdir(world.set_aside / "sess-2-20261124T104000Z")
    assert world.cli("set-aside", "sess-2", "--yes")[0] == 0
    assert (world.set_aside / "sess-2-20261124T104000Z-2" / "sess-2" / "rec.mp4").exists()


def test_set_aside_refuses_a_session_directory_that_is_a_link(world, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "important.db").write_bytes(b"keep")
    link = world.recordings / "sess-1"
    link.symlink_to(target)
    world.spool.add(str(link))

    code, out, err = world.cli("set-aside", "sess-1", "--yes")

    assert code == 2 and "symbolic link" in err and "--entry-only" in err and out == ""
    assert link.is_symlink() and (target / "important.db").exists() and world.spool.count() == 1
    # The operator's explicit choice: only the entry goes, the link and what it points to stay.
    code, out, _ = world.cli("set-aside", "sess-1", "--yes", "--entry-only")
    assert code == 0 and f"leave {link} as it is" in out
    assert link.is_symlink() and (target / "important.db").exists() and world.spool.count() == 0
    assert (world.set_aside / "sess-1-20261124T104000Z" / "sess-1.json").exists()


def test_set_aside_refuses_a_session_directory_outside_recordings_dir(world, tmp_path):
    elsewhere = tmp_path / "etc" / "sess-8"
    elsewhere.mkdir(parents=True)
    (elsewhere / "passwd").write_bytes(b"root:x:0:0")
    world.spool.add(str(elsewhere))

    code, _, err = world.cli("set-aside", "sess-8", "--yes")

    assert code == 2 and "not directly inside recordings_dir" in err
    assert (elsewhere / "passwd").exists() and world.spool.count() == 1 and not world.set_aside.exists()


def test_set_aside_of_an_unreadable_entry_moves_the_file_as_it_is(world):
    (world.spool_dir / "sess-4.json").symlink_to("/etc/passwd")
    assert world.spool.scan().failed == 1

    code, out, _ = world.cli("set-aside", "sess-4", "--yes")

    assert code == 0, out
    moved = world.set_aside / "sess-4-20261124T104000Z" / "sess-4.json"
    assert moved.is_symlink() and os.readlink(moved) == "/etc/passwd"
    assert world.spool.count() == 0 and os.path.exists("/etc/passwd")


def test_set_aside_of_a_session_whose_directory_is_gone_needs_entry_only(world):
    # recordings_dir may be an unmounted volume or replaced since the agent started: the command cannot tell a
    # recording that is gone from one it cannot see, so letting the entry (and the protection) go is the
    # operator's explicit call.
    directory, _ = failed_world(world)
    shutil.rmtree(directory)
    code, _, err = world.cli("set-aside", "sess-1", "--yes")
    assert code == 2 and "--entry-only" in err and world.spool.count() == 1
    code, _, _ = world.cli("set-aside", "sess-1", "--yes", "--entry-only")
    assert code == 0 and world.spool.count() == 0


def test_set_aside_needs_root_a_known_session_and_a_safe_place(world):
    directory, _ = failed_world(world)
    code, _, err = world.cli("set-aside", "sess-1", "--yes", euid=1000)
    assert code == 2 and "run it as root" in err
    assert world.cli("set-aside", "sess-404", "--yes")[0] == 2
    code, _, err = world.cli("set-aside", "sess-1", "--yes", "--set-aside-dir", str(world.recordings / "aside"))
    assert code == 2 and "must be outside recordings_dir" in err
    code, _, err = world.cli("set-aside", "sess-1", "--yes", "--set-aside-dir", str(world.spool_dir / "aside"))
    assert code == 2 and "must be outside spool_dir" in err
    open_to_all = world.base / "shared"
    open_to_all.mkdir(mode=0o755)
    os.chmod(open_to_all, 0o755)
    code, _, err = world.cli("set-aside", "sess-1", "--yes", "--set-aside-dir", str(open_to_all))
    assert code == 2 and "reachable by no one else" in err
    writable = world.base / "writable"
    writable.mkdir()
    os.chmod(writable, 0o777)
    code, _, err = world.cli("set-aside", "sess-1", "--yes", "--set-aside-dir", str(writable / "aside"))
    assert code == 2 and "writable by its group or by others" in err
    assert sorted(os.listdir(directory)) == ["metadata.json", "rec.mp4"] and world.spool.count() == 1


def test_set_aside_refuses_a_place_on_another_file_system(world):
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(world.recordings).st_dev:
        pytest.skip("no second file system at hand")
    directory, _ = failed_world(world)
    aside = tempfile.mkdtemp(dir="/dev/shm")  # root-only (0700), yet a move there would be a copy
    try:
        code, _, err = world.cli("set-aside", "sess-1", "--yes", "--set-aside-dir", aside)
        assert code == 2 and "another file system" in err and os.listdir(aside) == []
    finally:
        shutil.rmtree(aside)
    assert directory.exists() and world.spool.count() == 1


# -- set-aside while the uploader runs ---------------------------------------------------------------------------


def test_set_aside_of_an_entry_the_running_uploader_waits_on(world, wait):
    directory, _ = world.session("sess-1")
    api = RefusingApi()
    uploader = Uploader(world.config(), world.spool, api, sleep=lambda s: None, rng=lambda: 0.5)
    passes: list[float] = []
    one_pass = uploader.run_once
    uploader.run_once = lambda: passes.append(one_pass()) or passes[-1]  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=uploader.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait(lambda: world.entry_json("sess-1")["state"] == FAILED, what="the refusal")  # now in a long backoff
        world.now = datetime.now(UTC)
        assert world.cli("set-aside", "sess-1", "--yes")[0] == 0
        for _ in range(3):  # a few more passes: the entry does not come back, nothing is touched
            done = len(passes)
            uploader.wake()
            wait(lambda done=done: len(passes) > done, what="a pass")
            assert world.spool.count() == 0 and len(api.calls) == 1
    finally:
        stop.set()
        thread.join(timeout=10)
    assert world.spool.count() == 0 and not directory.exists()
    (moved,) = world.set_aside.glob("sess-1-*/sess-1")
    assert sorted(os.listdir(moved)) == ["metadata.json", "rec.mp4"]


def test_set_aside_during_the_uploaders_attempt_at_that_session_loses_nothing(world):
    # The race no lock excludes: the uploader is declaring the very session when it is set aside.
    world.session("sess-1")
    api = RefusingApi()
    results: list[tuple[int, str, str]] = []
    api.during = lambda: results.append(world.cli("set-aside", "sess-1", "--yes"))
    uploader = Uploader(world.config(), world.spool, api, now=lambda: world.now, sleep=lambda s: None)

    assert uploader.run_once() >= 0
    assert results[0][0] == 0
    # Its failed attempt wrote the entry back...
    assert world.spool.count() == 1 and world.entry_json("sess-1")["state"] == FAILED
    world.now = T0 + timedelta(hours=2)
    uploader.run_once()
    # ...and its next attempt, finding no directory, dropped it. The files are where they were set aside.
    assert world.spool.count() == 0 and len(api.calls) == 1
    moved = world.set_aside / "sess-1-20261124T104000Z" / "sess-1"
    assert (moved / "rec.mp4").read_bytes() == b"v" * 1000


# -- installed command -------------------------------------------------------------------------------------------


def test_install_puts_a_spool_command_next_to_the_finalize_script(tmp_path):
    install = Install(tmp_path)
    install.jibri_conf.write_text(JIBRI_CONF)
    result = install.run()
    assert result.returncode == 0, result.stderr
    command = install.prefix / "bin" / "jibri-agent-spool"
    assert os.access(command, os.X_OK)
    assert f'-m agent spool --config "{install.config_dir}/agent.ini" "$@"' in command.read_text()
    python = install.prefix / "venv" / "bin" / "python"
    python.unlink()
    python.symlink_to(sys.executable)  # the test's virtualenv has what the installed one would
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "JIBRI_AGENT_SPOOL_DIR": str(tmp_path / "spool")}
    listed = subprocess.run(
        [str(command), "list", "--json"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["pending_uploads"] == 0
