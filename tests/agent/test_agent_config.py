"""Settings: INI then JIBRI_AGENT_* overrides; every error names the key and what it expects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import AgentConfig, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def _ini(tmp_path: Path, body: str) -> str:
    path = tmp_path / "agent.ini"
    path.write_text(f"[agent]\n{body}\n", encoding="utf-8")
    return str(path)


def test_defaults_with_only_the_api_url_and_the_recordings_dir(tmp_path):
    body = "api_url = https://abc.execute-api.us-east-1.amazonaws.com/api/\nrecordings_dir = /srv/recordings"
    config = load_config(_ini(tmp_path, body), environ={})
    assert config == AgentConfig(
        api_url="https://abc.execute-api.us-east-1.amazonaws.com/api", recordings_dir="/srv/recordings"
    )
    assert config.imds_url == "http://169.254.169.254"
    assert config.jibri_health_url == "http://127.0.0.1:2222/jibri/api/v1.0/health"
    assert config.jibri_internal_url == "http://127.0.0.1:3333/jibri/api/internal/v1.0"
    assert config.webhook_address == ("127.0.0.1", 8787)
    assert (config.poll_interval_seconds, config.report_interval_seconds, config.request_timeout_seconds) == (5, 30, 5)
    assert config.jibri_start_command == ("systemctl", "start", "jibri")
    assert config.jibri_restart_command == ("systemctl", "restart", "jibri")
    assert config.expired_action == "restart"
    # stopService lives beside health on Jibri's HTTP API.
    assert config.jibri_http_url is None and config.jibri_http_base == "http://127.0.0.1:2222/jibri/api/v1.0"
    assert config.region is None and config.asg_name is None and config.aws_endpoint_url is None


def test_environment_overrides_the_file(tmp_path):
    path = _ini(
        tmp_path,
        "api_url = https://a.example/api\npoll_interval_seconds = 2\nlog_level = debug\nrecordings_dir = /srv/rec",
    )
    env = {
        "JIBRI_AGENT_API_URL": "https://b.example:443/prod",
        "JIBRI_AGENT_REGION": "eu-west-1",
        "JIBRI_AGENT_JIBRI_START_COMMAND": "sudo -n systemctl start 'jibri.service'",
        "JIBRI_AGENT_JIBRI_RESTART_COMMAND": "/usr/local/bin/jibri-restart --now",
        "JIBRI_AGENT_EXPIRED_ACTION": "Replace",
        "JIBRI_AGENT_JIBRI_HTTP_URL": "http://127.0.0.1:2223/jibri/api/v1.0/",
    }
    config = load_config(path, environ=env)
    # The default port is dropped so the host urllib sends is the host SigV4 signed.
    assert config.api_url == "https://b.example/prod"
    assert config.region == "eu-west-1" and config.poll_interval_seconds == 2 and config.log_level == "DEBUG"
    assert config.jibri_start_command == ("sudo", "-n", "systemctl", "start", "jibri.service")
    assert config.jibri_restart_command == ("/usr/local/bin/jibri-restart", "--now")
    assert config.expired_action == "replace"
    assert config.jibri_http_base == "http://127.0.0.1:2223/jibri/api/v1.0"


def test_the_http_api_base_follows_a_moved_health_url():
    config = AgentConfig(api_url="https://x/api", jibri_health_url="http://10.0.0.5:8222/jibri/api/v1.0/health")
    assert config.jibri_http_base == "http://10.0.0.5:8222/jibri/api/v1.0"


@pytest.mark.parametrize(
    ("body", "env", "key"),
    [
        ("", {}, "api_url"),
        ("api_url = ftp://x/api", {}, "api_url"),
        ("api_url = not a url", {}, "api_url"),
        ("api_url = https://x/api", {"JIBRI_AGENT_POLL_INTERVAL_SECONDS": "soon"}, "poll_interval_seconds"),
        ("api_url = https://x/api\nreport_interval_seconds = 90", {}, "report_interval_seconds"),
        ("api_url = https://x/api\nrequest_timeout_seconds = -1", {}, "request_timeout_seconds"),
        ("api_url = https://x/api\nwebhook_listen = 8787", {}, "webhook_listen"),
        ("api_url = https://x/api\nregion = Mars", {}, "region"),
        ("api_url = https://x/api\nlog_level = loud", {}, "log_level"),
        ("api_url = https://x/api\njibri_start_command = 'unclosed", {}, "jibri_start_command"),
        ("api_url = https://x/api\njibri_restart_command = 'unclosed", {}, "jibri_restart_command"),
        ("api_url = https://x/api", {"JIBRI_AGENT_EXPIRED_ACTION": "recycle"}, "expired_action"),
        ("api_url = https://x/api\njibri_http_url = 127.0.0.1:2222/jibri/api/v1.0", {}, "jibri_http_url"),
        ("api_url = https://x/api\nimds_url = 169.254.169.254", {}, "imds_url"),
        ("api_url = https://x/api\npoll_interval = 5", {}, "poll_interval"),
    ],
)
def test_errors_name_the_key(tmp_path, body, env, key):
    with pytest.raises(ConfigError) as caught:
        load_config(_ini(tmp_path, body), environ=env)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key} is ")
    assert "expected" in str(caught.value)


def test_an_explicit_config_file_must_exist(tmp_path):
    with pytest.raises(ConfigError, match=r"config is .*missing\.ini"):
        load_config(str(tmp_path / "missing.ini"), environ={"JIBRI_AGENT_API_URL": "https://x/api"})


def test_a_file_without_the_agent_section_is_refused(tmp_path):
    path = tmp_path / "agent.ini"
    path.write_text("[other]\napi_url = https://x/api\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[agent\] section"):
        load_config(str(path), environ={})


def test_the_command_exits_2_with_the_message(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIBRI_AGENT_")}
    env["JIBRI_AGENT_REPORT_INTERVAL_SECONDS"] = "120"
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--config", _ini(tmp_path, "api_url = https://x/api")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "report_interval_seconds is '120'; expected a number of seconds" in result.stderr
