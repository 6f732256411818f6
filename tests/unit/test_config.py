from __future__ import annotations

import pytest

from chalicelib.config import Settings, SettingsError

VALID = {"TABLE_NAME": "jibri-autoscaler-dev", "ASG_NAME": "jibri-dev", "AGENT_ROLE_NAME": "jibri-agent-dev"}


def test_defaults() -> None:
    settings = Settings.from_env(VALID)
    assert settings.pool_name == "jibri-dev"
    assert settings.heartbeat_stale_seconds == 90
    assert settings.recordings_bucket is None


def test_every_problem_is_named_in_one_error() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"ASG_NAME": "jibri-dev", "HEARTBEAT_STALE_SECONDS": "soon", "ALERTS_TOPIC_ARN": "alerts"})
    message = str(caught.value)
    assert "TABLE_NAME is not set" in message
    assert "AGENT_ROLE_NAME is not set" in message
    assert "HEARTBEAT_STALE_SECONDS='soon' is invalid: expected a whole number from 10 to 3600" in message
    assert "ALERTS_TOPIC_ARN='alerts' is invalid: expected an SNS topic ARN" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HEARTBEAT_STALE_SECONDS", "5"),
        ("HEARTBEAT_STALE_SECONDS", "99999"),
        ("TABLE_NAME", "a b"),
        ("AGENT_ROLE_NAME", "role/with/path"),
        ("RECORDINGS_BUCKET", "Upper_Case"),
        ("POOL_NAME", "x"),
    ],
)
def test_invalid_values_are_refused_with_their_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**VALID, name: value})


def test_overrides() -> None:
    settings = Settings.from_env(
        {
            **VALID,
            "POOL_NAME": "recorders",
            "HEARTBEAT_STALE_SECONDS": "120",
            "RECORDING_READY_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:ready",
        }
    )
    assert (settings.pool_name, settings.heartbeat_stale_seconds) == ("recorders", 120)
    assert settings.recording_ready_topic_arn == "arn:aws:sns:eu-west-1:123456789012:ready"
