"""Every setting of the control plane, read and validated in one place.

Lambdas, the bootstrap command, the local stack and the demo all build their
settings here, so a name means the same thing everywhere.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from chalicelib.assignment import AssignmentSettings
from chalicelib.direct_start import DirectStartSettings
from chalicelib.lifecycle import LifecycleSettings
from chalicelib.policy import PolicySettings
from chalicelib.reconciler import ReconcilerSettings
from chalicelib.recordings import DEFAULT_KEY_TEMPLATE, RecordingSettings, check_key_template
from chalicelib.schedule import ScheduleError, ScheduleOverride, parse_schedule

T = TypeVar("T")

# The group's notification configuration publishes here (see template.md). Chalice needs the
# topic when the app is packaged, so it is a fixed name in the deployment's account and region.
ASG_NOTIFICATIONS_TOPIC = "jibri-autoscaler-asg-notifications"

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{3,255}$")
_ASG_NAME = re.compile(r"^[^:\s][^:]{0,254}$")
_ROLE_NAME = re.compile(r"^[\w+=,.@\-]{1,64}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_SSM_PARAMETER = re.compile(r"^/?[A-Za-z0-9_.\-/]{1,1011}$")
_POOL_STATE = re.compile(r"^(Stopped|Hibernated)$")
_EXPIRED = re.compile(r"^(restart|replace)$")
_WARM_POOL = re.compile(r"^(off|auto|\d{1,4})$")
_SSE = re.compile(r"^(AES256|aws:kms)$")
_KMS_KEY = re.compile(r"^(arn:aws[\w-]*:kms:[\w-]+:\d{12}:(key|alias)/[\w/+=,.@-]+|alias/[\w/+=,.@-]+|[0-9a-f-]{36})$")
_STORAGE_CLASS = re.compile(r"^(STANDARD|STANDARD_IA|ONEZONE_IA|INTELLIGENT_TIERING|GLACIER_IR|REDUCED_REDUNDANCY)$")
_TAGS = re.compile(r"^[\w.:/=+@ -]{1,128}=[\w.:/=+@ -]{0,256}(&[\w.:/=+@ -]{1,128}=[\w.:/=+@ -]{0,256}){0,9}$")
_HTTPS_URL = re.compile(r"^https://[^\s/]+(/\S*)?$")
_TOPIC_ARN = re.compile(r"^arn:aws[\w-]*:sns:[\w-]+:\d{12}:[\w-]{1,256}$")


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names it and what it expects."""


@dataclass(frozen=True)
class Settings:
    table_name: str
    asg_name: str
    agent_role_name: str
    pool_name: str
    heartbeat_stale_seconds: int = 90
    recordings_bucket: str | None = None
    recording_ready_topic_arn: str | None = None
    alerts_topic_arn: str | None = None
    max_body_bytes: int = 65536
    tombstone_days: int = 7
    min_idle: int = 1
    service_level: float = 0.995
    min_spared_per_hour: float = 1.0
    warm_pool_service_level: float = 0.99
    scale_in_hold_seconds: int = 300
    max_scale_in_step: int = 2
    evaluate_on_busy: bool = True
    cold_launch_seconds: int = 240
    warm_start_seconds: int = 45
    warm_pool: str = "off"
    warm_pool_state: str = "Stopped"
    schedule: tuple[ScheduleOverride, ...] = ()
    dry_run: bool = False
    decisions_shown: int = 10
    lifecycle_heartbeat_timeout_seconds: int = 7200
    launch_timeout_seconds: int = 900
    lost_after_seconds: int = 900
    request_lease_seconds: int = 90
    offline_confirm_seconds: int = 45
    direct_start: bool = False
    jibri_http_port: int = 2222
    jibri_call_login_parameter: str | None = None
    request_wait_seconds: int = 600
    request_retry_after_seconds: int = 10
    protection_idle_seconds: int = 600
    max_recording_seconds: int = 21_600
    expired_action: str = "restart"
    recordings_key_template: str = DEFAULT_KEY_TEMPLATE
    recordings_sse: str = "AES256"
    recordings_kms_key_id: str | None = None
    recordings_storage_class: str = "STANDARD"
    recordings_tags: tuple[tuple[str, str], ...] = ()
    recordings_upload_url_seconds: int = 900
    recordings_download_url_seconds: int = 3600
    recordings_webhook_url: str | None = None

    def recordings(self) -> RecordingSettings:
        return RecordingSettings(
            bucket=self.recordings_bucket,
            key_template=self.recordings_key_template,
            sse=self.recordings_sse,
            kms_key_id=self.recordings_kms_key_id,
            storage_class=self.recordings_storage_class,
            tags=self.recordings_tags,
            upload_url_seconds=self.recordings_upload_url_seconds,
            download_url_seconds=self.recordings_download_url_seconds,
            topic_arn=self.recording_ready_topic_arn,
            webhook_url=self.recordings_webhook_url,
        )

    def direct(self) -> DirectStartSettings:
        return DirectStartSettings(
            enabled=self.direct_start,
            jibri_port=self.jibri_http_port,
            call_login_parameter=self.jibri_call_login_parameter,
        )

    def assignment(self) -> AssignmentSettings:
        return AssignmentSettings(
            lease_seconds=float(self.request_lease_seconds),
            wait_seconds=float(self.request_wait_seconds),
            retry_after_seconds=self.request_retry_after_seconds,
            stale_after_seconds=float(self.heartbeat_stale_seconds),
        )

    def reconciler(self) -> ReconcilerSettings:
        return ReconcilerSettings(
            launch_timeout_seconds=float(self.launch_timeout_seconds),
            stale_after_seconds=float(self.heartbeat_stale_seconds),
            lost_after_seconds=float(self.lost_after_seconds),
            protection_idle_seconds=float(self.protection_idle_seconds),
            max_recording_seconds=float(self.max_recording_seconds),
            replace_expired=self.expired_action == "replace",
        )

    def lifecycle(self) -> LifecycleSettings:
        return LifecycleSettings(
            heartbeat_timeout_seconds=self.lifecycle_heartbeat_timeout_seconds,
            launch_timeout_seconds=self.launch_timeout_seconds,
            offline_confirm_seconds=float(self.offline_confirm_seconds),
        )

    def policy(self) -> PolicySettings:
        return PolicySettings(
            min_idle=self.min_idle,
            service_level=self.service_level,
            min_spared_per_hour=self.min_spared_per_hour,
            warm_pool_service_level=self.warm_pool_service_level,
            scale_in_hold_seconds=float(self.scale_in_hold_seconds),
            max_scale_in_step=self.max_scale_in_step,
            evaluate_on_busy=self.evaluate_on_busy,
            default_cold_lead_seconds=float(self.cold_launch_seconds),
            default_warm_lead_seconds=float(self.warm_start_seconds),
            warm_pool=self.warm_pool,
            schedule=self.schedule,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        reader = _Reader(env)
        asg_name = reader.required("ASG_NAME", _ASG_NAME, "an Auto Scaling group name")
        settings = cls(
            table_name=reader.required("TABLE_NAME", _NAME, "a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)"),
            asg_name=asg_name,
            agent_role_name=reader.required(
                "AGENT_ROLE_NAME", _ROLE_NAME, "the IAM role name of the Jibri instances' profile"
            ),
            pool_name=reader.optional("POOL_NAME", _NAME, "a pool name (3-255 of A-Z a-z 0-9 _ . -)") or asg_name,
            heartbeat_stale_seconds=reader.integer("HEARTBEAT_STALE_SECONDS", 90, minimum=10, maximum=3600),
            recordings_bucket=reader.optional("RECORDINGS_BUCKET", _BUCKET, "an S3 bucket name"),
            recording_ready_topic_arn=reader.optional(
                "RECORDING_READY_TOPIC_ARN", _TOPIC_ARN, "an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
            ),
            alerts_topic_arn=reader.optional(
                "ALERTS_TOPIC_ARN", _TOPIC_ARN, "an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
            ),
            max_body_bytes=reader.integer("MAX_BODY_BYTES", 65536, minimum=1024, maximum=6 * 1024 * 1024),
            tombstone_days=reader.integer("TOMBSTONE_DAYS", 7, minimum=1, maximum=365),
            min_idle=reader.integer("MIN_IDLE", 1, minimum=0, maximum=1000),
            service_level=reader.number("SERVICE_LEVEL", 0.995, minimum=0.5, maximum=0.9999),
            min_spared_per_hour=reader.number("MIN_SPARED_PER_HOUR", 1.0, minimum=0.0, maximum=1000.0),
            warm_pool_service_level=reader.number("WARM_POOL_SERVICE_LEVEL", 0.99, minimum=0.5, maximum=0.9999),
            scale_in_hold_seconds=reader.integer("SCALE_IN_HOLD_SECONDS", 300, minimum=0, maximum=86_400),
            max_scale_in_step=reader.integer("MAX_SCALE_IN_STEP", 2, minimum=1, maximum=100),
            evaluate_on_busy=reader.boolean("EVALUATE_ON_BUSY", True),
            cold_launch_seconds=reader.integer("COLD_LAUNCH_SECONDS", 240, minimum=10, maximum=3600),
            warm_start_seconds=reader.integer("WARM_START_SECONDS", 45, minimum=5, maximum=3600),
            warm_pool=reader.optional("WARM_POOL", _WARM_POOL, "off, auto or a whole number of instances") or "off",
            warm_pool_state=reader.optional("WARM_POOL_STATE", _POOL_STATE, "Stopped or Hibernated") or "Stopped",
            schedule=reader.schedule("SCHEDULE", "SCHEDULE_TZ"),
            dry_run=reader.boolean("DRY_RUN", False),
            decisions_shown=reader.integer("DECISIONS_SHOWN", 10, minimum=1, maximum=100),
            lifecycle_heartbeat_timeout_seconds=reader.integer(
                "LIFECYCLE_HEARTBEAT_TIMEOUT_SECONDS", 7200, minimum=30, maximum=7200
            ),
            launch_timeout_seconds=reader.integer("LAUNCH_TIMEOUT_SECONDS", 900, minimum=60, maximum=7200),
            lost_after_seconds=reader.integer("LOST_AFTER_SECONDS", 900, minimum=120, maximum=86_400),
            request_lease_seconds=reader.integer("REQUEST_LEASE_SECONDS", 90, minimum=10, maximum=3600),
            offline_confirm_seconds=reader.integer("OFFLINE_CONFIRM_SECONDS", 45, minimum=0, maximum=600),
            direct_start=reader.boolean("DIRECT_START", False),
            jibri_http_port=reader.integer("JIBRI_HTTP_PORT", 2222, minimum=1, maximum=65535),
            jibri_call_login_parameter=reader.optional(
                "JIBRI_CALL_LOGIN_PARAMETER", _SSM_PARAMETER, "an SSM parameter name such as /jibri/xmpp-login"
            ),
            request_wait_seconds=reader.integer("REQUEST_WAIT_SECONDS", 600, minimum=10, maximum=86_400),
            request_retry_after_seconds=reader.integer("REQUEST_RETRY_AFTER_SECONDS", 10, minimum=1, maximum=600),
            protection_idle_seconds=reader.integer("PROTECTION_IDLE_SECONDS", 600, minimum=60, maximum=86_400),
            max_recording_seconds=reader.integer("MAX_RECORDING_SECONDS", 21_600, minimum=600, maximum=172_800),
            expired_action=reader.optional("EXPIRED_ACTION", _EXPIRED, "restart or replace") or "restart",
            recordings_key_template=reader.key_template("RECORDINGS_KEY_TEMPLATE"),
            recordings_sse=reader.optional("RECORDINGS_SSE", _SSE, "AES256 or aws:kms") or "AES256",
            recordings_kms_key_id=reader.optional(
                "RECORDINGS_KMS_KEY_ID", _KMS_KEY, "a KMS key id, key ARN, alias/NAME or alias ARN"
            ),
            recordings_storage_class=reader.optional(
                "RECORDINGS_STORAGE_CLASS",
                _STORAGE_CLASS,
                "STANDARD, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING, GLACIER_IR or REDUCED_REDUNDANCY",
            )
            or "STANDARD",
            recordings_tags=_tags(reader.optional("RECORDINGS_TAGS", _TAGS, "up to 10 tags as key=value&key=value")),
            recordings_upload_url_seconds=reader.integer(
                "RECORDINGS_UPLOAD_URL_SECONDS", 900, minimum=60, maximum=3600
            ),
            recordings_download_url_seconds=reader.integer(
                "RECORDINGS_DOWNLOAD_URL_SECONDS", 3600, minimum=60, maximum=43_200
            ),
            recordings_webhook_url=reader.optional(
                "RECORDINGS_WEBHOOK_URL", _HTTPS_URL, "an https:// URL that accepts a JSON POST"
            ),
        )
        if settings.recordings_kms_key_id and settings.recordings_sse != "aws:kms":
            reader.error("RECORDINGS_KMS_KEY_ID is set but RECORDINGS_SSE is not aws:kms; set RECORDINGS_SSE=aws:kms")
        reader.raise_if_errors()
        return settings


def _tags(text: str | None) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    return tuple((key, value) for key, _, value in (pair.partition("=") for pair in text.split("&")))


class _Reader:
    """Collects every problem, so one error names all the variables to fix."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._errors: list[str] = []

    def _check(self, name: str, value: str, pattern: re.Pattern[str], expects: str) -> str:
        if not pattern.match(value):
            self._errors.append(f"{name}={value!r} is invalid: expected {expects}")
        return value

    def required(self, name: str, pattern: re.Pattern[str], expects: str) -> str:
        value = self._env.get(name, "").strip()
        if not value:
            self._errors.append(f"{name} is not set: expected {expects}")
            return ""
        return self._check(name, value, pattern, expects)

    def optional(self, name: str, pattern: re.Pattern[str], expects: str) -> str | None:
        value = self._env.get(name, "").strip()
        return self._check(name, value, pattern, expects) if value else None

    def number(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        return self._parse(name, default, float, f"a number from {minimum} to {maximum}", minimum, maximum)

    def boolean(self, name: str, default: bool) -> bool:
        raw = self._env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("true", "1", "yes", "on"):
            return True
        if raw in ("false", "0", "no", "off"):
            return False
        self._errors.append(f"{name}={raw!r} is invalid: expected true or false")
        return default

    def schedule(self, name: str, zone_name: str) -> tuple[ScheduleOverride, ...]:
        text = self._env.get(name, "").strip()
        zone = self._env.get(zone_name, "").strip() or "UTC"
        try:
            return parse_schedule(text, zone)
        except ScheduleError as error:
            self._errors.append(f"{name if text else zone_name} is invalid: {error}")
            return ()

    def key_template(self, name: str) -> str:
        template = self._env.get(name, "").strip()
        if not template:
            return DEFAULT_KEY_TEMPLATE
        problem = check_key_template(template)
        if problem:
            self._errors.append(f"{name}={template!r} is invalid: {problem}")
            return DEFAULT_KEY_TEMPLATE
        return template

    def error(self, message: str) -> None:
        self._errors.append(message)

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        return self._parse(name, default, int, f"a whole number from {minimum} to {maximum}", minimum, maximum)

    def _parse(self, name: str, default: T, parse: Callable[[str], T], expects: str, minimum: T, maximum: T) -> T:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = parse(raw)
        except ValueError:
            self._errors.append(f"{name}={raw!r} is invalid: expected {expects}")
            return default
        if not (minimum <= value <= maximum):  # type: ignore[operator]
            self._errors.append(f"{name}={raw!r} is out of range: expected {expects}")
            return default
        return value

    def raise_if_errors(self) -> None:
        if self._errors:
            raise SettingsError("; ".join(self._errors))
