"""The finalize script Jibri runs inside stop: it spools the session directory and returns at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.spool import Spool

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "agent" / "jibri-finalize.sh"


def _finalize(session_dir: Path, spool_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed script the way Jibri does: one argument, the session directory."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "JIBRI_AGENT_PYTHON": sys.executable,
        "JIBRI_AGENT_LIB": str(ROOT),
        "JIBRI_AGENT_SPOOL_DIR": str(spool_dir),
    }
    return subprocess.run(
        [str(SCRIPT), str(session_dir)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    path = tmp_path / "spool"
    path.mkdir()
    return path


def _session(tmp_path: Path, files: dict[str, bytes], name: str = "qwertyuiop-42") -> Path:
    directory = tmp_path / "recordings" / name
    directory.mkdir(parents=True)
    for file_name, data in files.items():
        (directory / file_name).write_bytes(data)
    return directory


def test_a_finished_session_is_spooled_and_left_untouched(tmp_path, spool_dir):
    directory = _session(
        tmp_path,
        {"myroom_2026-11-24-10-00-00.mp4": b"\x00" * 1000, "metadata.json": b'{"meeting_url": "https://m/myroom"}'},
    )
    result = _finalize(directory, spool_dir)
    assert result.returncode == 0, result.stderr
    (entry,) = Spool(str(spool_dir)).entries()
    assert (entry.session_id, entry.session_dir, entry.state, entry.attempts) == (
        "qwertyuiop-42",
        str(directory),
        "pending",
        0,
    )
    assert sorted(p.name for p in directory.iterdir()) == ["metadata.json", "myroom_2026-11-24-10-00-00.mp4"]
    logged = [json.loads(line) for line in result.stderr.splitlines()]
    assert logged[-1]["session_id"] == "qwertyuiop-42" and "spooled" in logged[-1]["message"]
    # Jibri may run it again (a retried stop): the entry stays as it was.
    assert _finalize(directory, spool_dir).returncode == 0
    assert Spool(str(spool_dir)).entries() == [entry]


@pytest.mark.parametrize(
    ("files", "why"),
    [
        (None, "does not exist"),
        ({}, "holds no recording"),
        ({"metadata.json": b"{}"}, "holds no recording"),
        ({"empty.mp4": b""}, "holds no recording"),
    ],
)
def test_nothing_to_hand_off_is_logged_with_the_session_id_and_exits_1(tmp_path, spool_dir, files, why):
    directory = tmp_path / "recordings" / "gone-session" if files is None else _session(tmp_path, files, "gone-session")
    result = _finalize(directory, spool_dir)
    assert result.returncode == 1
    logged = json.loads(result.stderr.splitlines()[-1])
    assert logged["level"] == "ERROR" and logged["session_id"] == "gone-session" and why in logged["message"]
    assert Spool(str(spool_dir)).count() == 0


def test_an_unwritable_spool_exits_1_and_keeps_the_recording(tmp_path):
    directory = _session(tmp_path, {"a.mp4": b"data"})
    result = _finalize(directory, tmp_path / "no-such-spool")
    assert result.returncode == 1
    assert "could not spool session qwertyuiop-42" in result.stderr
    assert (directory / "a.mp4").read_bytes() == b"data"


def test_without_arguments_it_is_a_usage_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "agent.finalize"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2 and "session_dir" in result.stderr


def test_the_spool_directory_comes_from_the_agent_config_when_not_given(tmp_path):
    spool_dir = tmp_path / "configured-spool"
    spool_dir.mkdir()
    config = tmp_path / "agent.ini"
    config.write_text(f"[agent]\napi_url = https://x/api\nspool_dir = {spool_dir}\n")
    directory = _session(tmp_path, {"a.mp4": b"data"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIBRI_AGENT_")}
    result = subprocess.run(
        [sys.executable, "-m", "agent.finalize", "--config", str(config), str(directory)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [e.session_id for e in Spool(str(spool_dir)).entries()] == ["qwertyuiop-42"]
