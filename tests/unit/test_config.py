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
        ("MIN_SPARED_PER_HOUR", "-1"),
        ("MIN_SPARED_PER_HOUR", "often"),
        ("WARM_POOL_SERVICE_LEVEL", "1"),
        ("WARM_POOL_SERVICE_LEVEL", "0.2"),
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


def test_recordings_settings_and_their_defaults() -> None:
    defaults = Settings.from_env({**VALID, "RECORDINGS_BUCKET": "jibri-recordings"}).recordings()
    assert defaults.bucket == "jibri-recordings"
    assert defaults.key_template == "recordings/{yyyy}/{mm}/{dd}/{room}/{session_id}/{file}"
    assert (defaults.sse, defaults.storage_class, defaults.tags) == ("AES256", "STANDARD", ())
    assert (defaults.upload_url_seconds, defaults.download_url_seconds) == (900, 3600)
    assert defaults.etag_is_md5
    chosen = Settings.from_env(
        {
            **VALID,
            "RECORDINGS_BUCKET": "jibri-recordings",
            "RECORDINGS_KEY_TEMPLATE": "{pool}/{yyyy}-{mm}-{dd}/{session_id}/{file}",
            "RECORDINGS_SSE": "aws:kms",
            "RECORDINGS_KMS_KEY_ID": "alias/recordings",
            "RECORDINGS_STORAGE_CLASS": "STANDARD_IA",
            "RECORDINGS_TAGS": "team=media&retention=90d",
            "RECORDINGS_UPLOAD_URL_SECONDS": "600",
            "RECORDINGS_WEBHOOK_URL": "https://hooks.example.com/recordings",
        }
    ).recordings()
    assert chosen.tags == (("team", "media"), ("retention", "90d"))
    assert (chosen.sse, chosen.kms_key_id, chosen.etag_is_md5) == ("aws:kms", "alias/recordings", False)
    assert chosen.webhook_url == "https://hooks.example.com/recordings"


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("RECORDINGS_KEY_TEMPLATE", "recordings/{room}/{file}", "must contain {session_id} and {file}"),
        ("RECORDINGS_KEY_TEMPLATE", "{year}/{session_id}/{file}", "unknown fields"),
        ("RECORDINGS_KEY_TEMPLATE", "{session_id/{file}", "does not parse"),
        ("RECORDINGS_SSE", "aws:kms:dsse", "AES256 or aws:kms"),
        ("RECORDINGS_KMS_KEY_ID", "alias/recordings", "RECORDINGS_SSE is not aws:kms"),
        ("RECORDINGS_STORAGE_CLASS", "DEEP_ARCHIVE", "STANDARD"),
        ("RECORDINGS_TAGS", "no-equals-sign", "key=value"),
        ("RECORDINGS_UPLOAD_URL_SECONDS", "86400", "60 to 3600"),
        ("RECORDINGS_WEBHOOK_URL", "http://hooks.example.com/x", "https://"),
    ],
)
def test_bad_recordings_settings_are_named(name: str, value: str, words: str) -> None:
    with pytest.raises(SettingsError, match=name) as caught:
        Settings.from_env({**VALID, name: value})
    assert words in str(caught.value)


def test_buffer_and_warm_pool_limits_reach_the_policy() -> None:
    default = Settings.from_env(VALID).policy()
    assert (default.min_spared_per_hour, default.warm_pool_service_level) == (1.0, 0.99)
    tuned = Settings.from_env({**VALID, "MIN_SPARED_PER_HOUR": "0", "WARM_POOL_SERVICE_LEVEL": "0.995"}).policy()
    assert (tuned.min_spared_per_hour, tuned.warm_pool_service_level) == (0.0, 0.995)
