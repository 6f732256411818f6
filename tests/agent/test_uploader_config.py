"""The uploader's settings: defaults, units, and errors that name the key."""

from __future__ import annotations

import pytest

from agent.config import AgentConfig, ConfigError, load_config, load_spool_dir, parse_config

BASE = {"api_url": "https://x/api", "recordings_dir": "/srv/recordings"}


def test_defaults():
    config = parse_config(BASE)
    assert config.upload_enabled is True
    assert (config.spool_dir, config.recordings_dir) == ("/var/spool/jibri-agent", "/srv/recordings")
    assert (config.part_size, config.upload_concurrency) == (8 * 1024 * 1024, 4)


def test_uploads_need_the_recordings_dir_and_the_error_says_what_to_set(tmp_path):
    ini = tmp_path / "agent.ini"
    ini.write_text("[agent]\napi_url = https://x/api\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(ini), environ={})
    assert caught.value.key == "recordings_dir"
    message = str(caught.value)
    assert message.startswith("recordings_dir is missing")
    assert "recordings-directory" in message and "jibri.conf" in message and "upload_enabled" in message
    # Set in the environment, or with uploads off, the agent starts.
    assert load_config(str(ini), environ={"JIBRI_AGENT_RECORDINGS_DIR": "/srv/rec/"}).recordings_dir == "/srv/rec"
    off = load_config(str(ini), environ={"JIBRI_AGENT_UPLOAD_ENABLED": "false"})
    assert off.upload_enabled is False and off.recordings_dir is None


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"recordings_dir": "/"}, "not the root directory"),
        ({"recordings_dir": "/var/spool"}, "does not hold spool_dir /var/spool/jibri-agent"),
        ({"recordings_dir": "/srv/rec", "spool_dir": "/srv/rec"}, "does not hold spool_dir"),
        ({"recordings_dir": "/srv/rec", "spool_dir": "/srv/rec/spool"}, "does not hold spool_dir"),
    ],
)
def test_a_recordings_dir_that_would_reach_beyond_jibris_sessions_is_refused(settings, expected):
    with pytest.raises(ConfigError, match=expected) as caught:
        parse_config({**BASE, **settings})
    assert caught.value.key == "recordings_dir"
    assert parse_config({**BASE, "recordings_dir": "/srv/rec", "spool_dir": "/srv/recordings-spool"})


@pytest.mark.parametrize(
    ("raw", "size"), [("5242880", 5 << 20), ("16MiB", 16 << 20), ("16 mib", 16 << 20), ("5120KiB", 5 << 20)]
)
def test_part_size_takes_bytes_or_a_binary_unit(raw, size):
    assert parse_config({**BASE, "part_size": raw}).part_size == size


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("part_size", "4MiB", "5 MiB to 512 MiB"),
        ("part_size", "513MiB", "5 MiB to 512 MiB"),
        ("part_size", "8MB", "5 MiB to 512 MiB"),
        ("upload_concurrency", "0", "from 1 to 32"),
        ("upload_concurrency", "2.5", "from 1 to 32"),
        ("upload_enabled", "maybe", "true or false"),
        ("spool_dir", "var/spool", "absolute"),
        ("recordings_dir", "srv/recordings", "absolute"),
    ],
)
def test_bad_values_name_the_key(key, raw, expected):
    with pytest.raises(ConfigError, match=expected) as caught:
        parse_config({**BASE, key: raw})
    assert caught.value.key == key


def test_the_finalize_script_reads_only_the_spool_dir(tmp_path):
    ini = tmp_path / "agent.ini"
    ini.write_text("[agent]\nspool_dir = /srv/spool/\n")  # no api_url: only spool_dir matters here
    assert load_spool_dir(str(ini), environ={}) == "/srv/spool"
    assert load_spool_dir(str(ini), environ={"JIBRI_AGENT_SPOOL_DIR": "/other"}) == "/other"
    with pytest.raises(ConfigError, match=r"absent\.ini"):
        load_spool_dir(str(tmp_path / "absent.ini"), environ={})
    with pytest.raises(ConfigError, match="spool_dir"):
        load_spool_dir(str(ini), environ={"JIBRI_AGENT_SPOOL_DIR": "relative"})
    (tmp_path / "bare.ini").write_text("[agent]\napi_url = https://x/api\n")
    assert load_spool_dir(str(tmp_path / "bare.ini"), environ={}) == AgentConfig(api_url="https://x").spool_dir


@pytest.mark.parametrize(
    "hidden",
    ["/tmp/recordings", "/tmp", "/var/tmp/recordings", "/home/jibri/recordings", "/root/rec", "/run/user/999/rec"],
)
def test_the_service_refuses_a_recordings_dir_its_unit_cannot_see(tmp_path, hidden):
    """The unit has PrivateTmp and ProtectHome: there the agent would find nothing, or an empty directory."""
    ini = tmp_path / "agent.ini"
    ini.write_text(f"[agent]\napi_url = https://x/api\nrecordings_dir = {hidden}\n")
    with pytest.raises(ConfigError, match="PrivateTmp") as caught:
        load_config(str(ini), environ={})
    assert caught.value.key == "recordings_dir"
    with pytest.raises(ConfigError, match="PrivateTmp"):
        load_config(str(ini), environ={"JIBRI_AGENT_RECORDINGS_DIR": "/home/jibri"})
    allowed = {"JIBRI_AGENT_RECORDINGS_DIR": "/srv/tmp/recordings"}
    assert load_config(str(ini), environ=allowed).recordings_dir == "/srv/tmp/recordings"
    assert load_config(str(ini), environ={"JIBRI_AGENT_RECORDINGS_DIR": "/tmpfs/rec"}).recordings_dir == "/tmpfs/rec"


def test_a_recordings_dir_linked_into_a_hidden_place_is_refused_too(tmp_path):
    link = tmp_path / "link-to-tmp"
    link.symlink_to("/tmp/recordings")
    ini = tmp_path / "agent.ini"
    ini.write_text(f"[agent]\napi_url = https://x/api\nrecordings_dir = {link}\n")
    with pytest.raises(ConfigError, match="/tmp/recordings"):
        load_config(str(ini), environ={})
