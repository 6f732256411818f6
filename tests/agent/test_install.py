"""install.sh writes Jibri's recordings directory into the agent's config, or stops before installing anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "agent" / "install.sh"
JIBRI_CONF = """jibri {
  // recordings-directory = "/not/this"
  recording {
    recordings-directory = "/srv/recordings"   # where Jibri writes each session
    finalize-script = "/opt/jibri-agent/bin/jibri-finalize.sh"
  }
  webhook { subscribers = ["http://127.0.0.1:8787"] }
}
"""


class Install:
    """install.sh into a temporary tree, without systemd, root, a network or Jibri's user."""

    def __init__(self, tmp_path: Path) -> None:
        self.prefix = tmp_path / "opt"
        self.config_dir = tmp_path / "etc"
        self.jibri_conf = tmp_path / "jibri.conf"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PREFIX": str(self.prefix),
            "CONFIG_DIR": str(self.config_dir),
            "UNIT_DIR": str(tmp_path / "units"),
            "SPOOL_DIR": str(tmp_path / "spool"),
            "JIBRI_CONF": str(self.jibri_conf),
            "JIBRI_USER": "no-such-user-for-this-test",
            "PYTHON": sys.executable,
            "NO_SYSTEMD": "1",
            "API_URL": "https://abc123.execute-api.us-east-1.amazonaws.com/api",
        }
        # An existing virtualenv whose pip installs nothing: the script's own steps are what is tested.
        python = self.prefix / "venv" / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.write_text("#!/bin/sh\nexit 0\n")
        python.chmod(0o755)

    @property
    def ini(self) -> Path:
        return self.config_dir / "agent.ini"

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT)], env={**self.env, **env}, capture_output=True, text=True, timeout=120, check=False
        )


@pytest.fixture
def install(tmp_path: Path) -> Install:
    return Install(tmp_path)


def test_a_new_config_gets_recordings_dir_from_jibri_conf(install):
    install.jibri_conf.write_text(JIBRI_CONF)
    result = install.run()
    assert result.returncode == 0, result.stderr
    config = load_config(str(install.ini), environ={})
    assert config.recordings_dir == "/srv/recordings" and config.upload_enabled
    assert install.ini.read_text().count("recordings_dir = ") == 1
    assert (install.prefix / "lib" / "agent" / "uploader.py").exists()


@pytest.mark.parametrize(
    "line",
    [
        "jibri.recording.recordings-directory = /data/recordings",
        'jibri { recording { } }\njibri.recording.recordings-directory: "/data/recordings"',
        'jibri { recording { recordings-directory = "/data/recordings", finalize-script = "/x" } }',
    ],
)
def test_other_hocon_spellings_are_read(install, line):
    install.jibri_conf.write_text(JIBRI_CONF + line + "\n")  # the last one wins, as in HOCON
    assert install.run().returncode == 0
    assert load_config(str(install.ini), environ={}).recordings_dir == "/data/recordings"


def test_recordings_dir_can_be_given_when_jibri_conf_cannot_be_read(install):
    result = install.run(RECORDINGS_DIR="/srv/other-recordings/")
    assert result.returncode == 0, result.stderr
    assert load_config(str(install.ini), environ={}).recordings_dir == "/srv/other-recordings"


@pytest.mark.parametrize(
    ("jibri_conf", "env", "said"),
    [
        (None, {}, "RECORDINGS_DIR="),
        ('jibri { recording { finalize-script = "/x" } }\n', {}, "sets no recordings-directory"),
        ('jibri.recording.recordings-directory = "/tmp/recordings"\n', {}, "hidden from the agent"),
        (None, {"RECORDINGS_DIR": "/home/jibri/recordings"}, "hidden from the agent"),
        (None, {"RECORDINGS_DIR": "/"}, "root directory"),
        (None, {"RECORDINGS_DIR": "recordings"}, "absolute path"),
        ('jibri.recording.recordings-directory = "/srv/${?DIR}"\n', {}, "characters"),
    ],
)
def test_without_a_usable_recordings_directory_nothing_is_installed(install, jibri_conf, env, said):
    if jibri_conf is not None:
        install.jibri_conf.write_text(jibri_conf)
    result = install.run(**env)
    assert result.returncode == 1
    assert said in result.stderr and "recordings" in result.stderr
    assert not install.ini.exists() and not (install.prefix / "lib" / "agent").exists()


def test_an_existing_config_without_recordings_dir_gets_it_and_keeps_the_rest(install):
    install.config_dir.mkdir()
    install.ini.write_text("[agent]\napi_url = https://x.example/api\npoll_interval_seconds = 2\n")
    install.jibri_conf.write_text(JIBRI_CONF)
    result = install.run()
    assert result.returncode == 0, result.stderr
    config = load_config(str(install.ini), environ={})
    assert (config.api_url, config.poll_interval_seconds, config.recordings_dir) == (
        "https://x.example/api",
        2,
        "/srv/recordings",
    )


@pytest.mark.parametrize(
    "body",
    [
        "[agent]\napi_url = https://x.example/api\nrecordings_dir = /var/lib/jibri/recordings\n",
        "[agent]\napi_url = https://x.example/api\nupload_enabled = false\n",
    ],
)
def test_an_existing_config_that_needs_nothing_is_left_as_it_is(install, body):
    install.config_dir.mkdir()
    install.ini.write_text(body)
    result = install.run()  # no jibri.conf: it is not needed
    assert result.returncode == 0, result.stderr
    assert install.ini.read_text() == body
