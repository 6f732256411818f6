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


@pytest.mark.parametrize("line", ["recordings_dir =", "recordings_dir=", "recordings_dir :  "])
def test_an_existing_empty_recordings_dir_is_filled_in_not_added_twice(install, line):
    install.config_dir.mkdir()
    install.ini.write_text(f"[agent]\napi_url = https://x.example/api\n{line}\npart_size = 16MiB\n")
    install.jibri_conf.write_text(JIBRI_CONF)
    result = install.run()
    assert result.returncode == 0, result.stderr
    config = load_config(str(install.ini), environ={})  # no DuplicateOptionError
    assert (config.recordings_dir, config.part_size) == ("/srv/recordings", 16 << 20)
    assert install.ini.read_text().count("recordings_dir") == 1


@pytest.mark.parametrize(
    "line",
    [
        'jibri.recording.recordings-directory = "/srv/rec" # was recordings-directory = "/var/old"',
        'jibri.recording.recordings-directory = "/srv/rec" // was recordings-directory = "/var/old"',
        "jibri.recording.recordings-directory = /srv/rec # was recordings-directory = /var/old",
        "jibri.recording.recordings-directory = /srv/rec // was recordings-directory = /var/old",
        'jibri { recording { recordings-directory: "/srv/rec" } } // recordings-directory: "/var/old"',
    ],
)
def test_a_comment_after_the_value_is_not_read_as_the_value(install, line):
    install.jibri_conf.write_text(JIBRI_CONF + line + "\n")
    result = install.run()
    assert result.returncode == 0, result.stderr
    assert load_config(str(install.ini), environ={}).recordings_dir == "/srv/rec"


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ('jibri.recording.recordings-directory = "/srv//rec" // note', None),  # read whole, then resolved
        ('jibri.recording.recordings-directory = "/srv/rec#1" # note', "characters"),  # read whole, not written
    ],
)
def test_a_quoted_value_may_hold_what_would_start_a_comment_elsewhere(install, line, said):
    install.jibri_conf.write_text(JIBRI_CONF + line + "\n")
    result = install.run()
    if said is None:
        assert result.returncode == 0, result.stderr
        assert load_config(str(install.ini), environ={}).recordings_dir == "/srv/rec"
    else:
        assert result.returncode == 1 and said in result.stderr and "/srv/rec#1" in result.stderr


@pytest.mark.parametrize("target", ["/srv/rec|x", "/srv/rec\napi_url = https://elsewhere.example/api"])
def test_the_characters_are_checked_in_the_resolved_path(install, tmp_path, target):
    """A link whose target holds what the script must not write into agent.ini (a sed delimiter, a new line)."""
    link = tmp_path / "recordings-link"
    link.symlink_to(target)
    result = install.run(RECORDINGS_DIR=str(link))
    assert result.returncode == 1
    assert "characters" in result.stderr and "recordings" in result.stderr
    assert not install.ini.exists() and not (install.prefix / "lib" / "agent").exists()


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("/tmp/recordings", "hidden from the agent"),
        ("/home/jibri/recordings", "hidden from the agent"),
        ("/var/tmp/r", "hidden from the agent"),
        ("/", "root directory"),
        ("recordings", "absolute path"),
    ],
)
def test_an_existing_recordings_dir_is_checked_like_one_the_script_writes(install, value, said):
    install.config_dir.mkdir()
    body = f"[agent]\napi_url = https://x.example/api\nrecordings_dir = {value}\n"
    install.ini.write_text(body)
    result = install.run()
    assert result.returncode == 1
    assert said in result.stderr and str(install.ini) in result.stderr
    assert install.ini.read_text() == body and not (install.prefix / "lib" / "agent").exists()


def test_an_existing_recordings_dir_linked_into_a_hidden_place_is_refused(install, tmp_path):
    link = tmp_path / "srv-link"
    link.symlink_to("/tmp/recordings")
    install.config_dir.mkdir()
    install.ini.write_text(f"[agent]\napi_url = https://x.example/api\nrecordings_dir = {link}\n")
    result = install.run()
    assert result.returncode == 1 and "hidden from the agent" in result.stderr and "/tmp/recordings" in result.stderr
