"""The uploader's settings: defaults, units, and errors that name the key."""

from __future__ import annotations

import pytest

from agent.config import AgentConfig, ConfigError, load_spool_dir, parse_config


def test_defaults():
    config = parse_config({"api_url": "https://x/api"})
    assert config.upload_enabled is True
    assert (config.spool_dir, config.recordings_dir) == ("/var/spool/jibri-agent", None)
    assert (config.part_size, config.upload_concurrency) == (8 * 1024 * 1024, 4)


@pytest.mark.parametrize(
    ("raw", "size"), [("5242880", 5 << 20), ("16MiB", 16 << 20), ("16 mib", 16 << 20), ("5120KiB", 5 << 20)]
)
def test_part_size_takes_bytes_or_a_binary_unit(raw, size):
    assert parse_config({"api_url": "https://x/api", "part_size": raw}).part_size == size


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
        parse_config({"api_url": "https://x/api", key: raw})
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
