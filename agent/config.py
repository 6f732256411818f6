"""Every setting of the agent, read and validated in one place: the INI file, then JIBRI_AGENT_* overrides."""

from __future__ import annotations

import configparser
import math
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from agent.jibri import http_base_of
from agent.log import LEVELS

T = TypeVar("T")

DEFAULT_CONFIG_PATH = "/etc/jibri-agent/agent.ini"
SECTION = "agent"
ENV_PREFIX = "JIBRI_AGENT_"
# The control plane calls a recorder stale after 90 s without a report; one lost report must not make it stale.
MAX_REPORT_INTERVAL_SECONDS = 40.0

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_ASG_NAME = re.compile(r"^[^:\s][^:]{0,254}$")
EXPIRED_ACTIONS = ("restart", "replace")
MIB = 1 << 20
# S3's bounds for a multipart part (the last one may be smaller), which the control plane enforces too.
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 512 * MIB
MAX_UPLOAD_CONCURRENCY = 32
_SIZE = re.compile(r"^(?P<number>\d+)\s*(?P<unit>|B|KiB|MiB|GiB)$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it and what it expects."""

    def __init__(self, key: str, expected: str, value: str | None = None) -> None:
        shown = "missing" if value is None else f"{value!r}"
        super().__init__(f"{key} is {shown}; expected {expected}")
        self.key = key


@dataclass(frozen=True)
class AgentConfig:
    api_url: str
    imds_url: str = "http://169.254.169.254"
    region: str | None = None
    asg_name: str | None = None
    aws_endpoint_url: str | None = None
    jibri_health_url: str = "http://127.0.0.1:2222/jibri/api/v1.0/health"
    jibri_internal_url: str = "http://127.0.0.1:3333/jibri/api/internal/v1.0"
    # Jibri's HTTP API base (stopService); None: the health URL without its last segment, the same server.
    jibri_http_url: str | None = None
    webhook_listen: str = "127.0.0.1:8787"
    poll_interval_seconds: float = 5.0
    report_interval_seconds: float = 30.0
    request_timeout_seconds: float = 5.0
    jibri_start_command: tuple[str, ...] = ("systemctl", "start", "jibri")
    jibri_restart_command: tuple[str, ...] = ("systemctl", "restart", "jibri")
    # restart: the agent restarts an EXPIRED (single-use) Jibri; replace: it leaves it to the control plane.
    expired_action: str = "restart"
    log_level: str = "INFO"
    # Recordings: the finalize script spools each session directory; the uploader sends it to S3.
    upload_enabled: bool = True
    spool_dir: str = "/var/spool/jibri-agent"
    # Jibri's recordings-directory: only session directories directly inside it are uploaded (and deleted
    # afterwards). parse_config requires it while uploads are enabled; the uploader refuses every session without.
    recordings_dir: str | None = None
    part_size: int = 8 * MIB
    upload_concurrency: int = 4

    @property
    def webhook_address(self) -> tuple[str, int]:
        host, _, port = self.webhook_listen.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def jibri_http_base(self) -> str:
        return self.jibri_http_url or http_base_of(self.jibri_health_url)


KEYS = tuple(AgentConfig.__dataclass_fields__)


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read the INI file (an explicit path must exist; the default may be absent) and apply env overrides.

    This is how the service reads its settings, so it also refuses a recordings_dir its systemd unit cannot
    see (parse_config alone, for a program that builds its settings itself, does not)."""
    env = os.environ if environ is None else environ
    values = _read_ini(path)
    for key in KEYS:
        override = env.get(ENV_PREFIX + key.upper())
        if override is not None:
            values[key] = override
    config = parse_config(values)
    _check_visible_to_the_service(config)
    return config


def load_spool_dir(path: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """spool_dir alone, for the finalize script: it runs as Jibri's user, who may not read the whole file."""
    env = os.environ if environ is None else environ
    raw = env.get(ENV_PREFIX + "SPOOL_DIR")
    if raw is None:
        try:
            raw = _read_ini(path).get("spool_dir")
        except ConfigError:
            if path is not None:
                raise
            raw = None  # the agent's file is root's: the default, as it is for the agent without the key
    return (
        _Reader({"spool_dir": raw or ""}).optional("spool_dir", _absolute_path, "an absolute directory path")
        or AgentConfig.spool_dir
    )


RECORDINGS_DIR_EXPECTED = (
    "Jibri's recordings directory, the absolute path of recordings-directory in jibri.conf "
    "(jibri { recording { recordings-directory = ... } })"
)


def parse_config(values: Mapping[str, str]) -> AgentConfig:
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise ConfigError(unknown[0], f"no such setting; known settings: {', '.join(KEYS)}", values[unknown[0]])
    config = _parse(_Reader(values))
    _check_recordings_dir(config)
    return config


def _check_recordings_dir(config: AgentConfig) -> None:
    """The uploader runs as root and deletes what it uploads: it takes sessions only from Jibri's directory."""
    recordings = config.recordings_dir
    if recordings is None:
        if config.upload_enabled:
            raise ConfigError(
                "recordings_dir",
                f"{RECORDINGS_DIR_EXPECTED}; it is required while upload_enabled is true, as only session "
                "directories directly inside it are uploaded and then deleted",
            )
        return
    if os.path.dirname(recordings) == recordings:
        raise ConfigError("recordings_dir", f"{RECORDINGS_DIR_EXPECTED}, not the root directory", recordings)
    spool = config.spool_dir
    if spool == recordings or spool.startswith(recordings.rstrip(os.path.sep) + os.path.sep):
        raise ConfigError(
            "recordings_dir", f"{RECORDINGS_DIR_EXPECTED}, one that does not hold spool_dir {spool}", recordings
        )


# What jibri-agent.service hides from the agent: PrivateTmp=yes gives it a /tmp and /var/tmp of its own,
# ProtectHome=yes makes /home, /root and /run/user empty and inaccessible. Jibri's recordings there are out of sight.
HIDDEN_FROM_THE_SERVICE = ("/tmp", "/var/tmp", "/home", "/root", "/run/user")


def _check_visible_to_the_service(config: AgentConfig) -> None:
    recordings = config.recordings_dir
    if recordings is None:
        return
    real = os.path.realpath(recordings)
    for path in (recordings, real):
        if any(path == hidden or path.startswith(hidden + "/") for hidden in HIDDEN_FROM_THE_SERVICE):
            raise ConfigError(
                "recordings_dir",
                f"{RECORDINGS_DIR_EXPECTED} outside {', '.join(HIDDEN_FROM_THE_SERVICE)}, which the agent's "
                "systemd unit cannot see (PrivateTmp=yes, ProtectHome=yes); point Jibri's recordings-directory "
                "elsewhere, e.g. /srv/recordings",
                recordings if real == recordings else f"{recordings} (that is {real})",
            )


def _parse(reader: _Reader) -> AgentConfig:
    defaults = AgentConfig(api_url="http://unused")
    return AgentConfig(
        api_url=reader.required("api_url", _http_url, "an http(s) URL of the control plane API, e.g. https://x/api"),
        imds_url=reader.optional("imds_url", _http_url, "an http(s) URL of the instance metadata service")
        or defaults.imds_url,
        region=reader.optional("region", _matching(_REGION), "an AWS region name such as us-east-1"),
        asg_name=reader.optional("asg_name", _matching(_ASG_NAME), "an Auto Scaling group name"),
        aws_endpoint_url=reader.optional("aws_endpoint_url", _http_url, "an http(s) URL of an AWS endpoint"),
        jibri_health_url=reader.optional("jibri_health_url", _http_url, "the http(s) URL of Jibri's health API")
        or defaults.jibri_health_url,
        jibri_internal_url=(
            reader.optional("jibri_internal_url", _http_url, "the http(s) base URL of Jibri's internal API")
            or defaults.jibri_internal_url
        ).rstrip("/"),
        jibri_http_url=reader.optional(
            "jibri_http_url",
            _http_url,
            "the http(s) base URL of Jibri's HTTP API, e.g. http://127.0.0.1:2222/jibri/api/v1.0",
        ),
        webhook_listen=reader.optional("webhook_listen", _listen, "HOST:PORT to listen on, e.g. 127.0.0.1:8787")
        or defaults.webhook_listen,
        poll_interval_seconds=reader.number("poll_interval_seconds", defaults.poll_interval_seconds, 0.05, 300),
        report_interval_seconds=reader.number(
            "report_interval_seconds", defaults.report_interval_seconds, 0.05, MAX_REPORT_INTERVAL_SECONDS
        ),
        request_timeout_seconds=reader.number("request_timeout_seconds", defaults.request_timeout_seconds, 0.1, 60),
        jibri_start_command=reader.optional(
            "jibri_start_command", _command, "a command line, e.g. systemctl start jibri"
        )
        or defaults.jibri_start_command,
        jibri_restart_command=reader.optional(
            "jibri_restart_command", _command, "a command line, e.g. systemctl restart jibri"
        )
        or defaults.jibri_restart_command,
        expired_action=reader.optional("expired_action", _choice(EXPIRED_ACTIONS), " or ".join(EXPIRED_ACTIONS))
        or defaults.expired_action,
        log_level=reader.optional("log_level", _level, f"one of {', '.join(LEVELS)}") or defaults.log_level,
        upload_enabled=reader.flag("upload_enabled", defaults.upload_enabled),
        spool_dir=reader.optional("spool_dir", _absolute_path, "an absolute directory path") or defaults.spool_dir,
        recordings_dir=reader.optional("recordings_dir", _absolute_path, RECORDINGS_DIR_EXPECTED),
        part_size=reader.size("part_size", defaults.part_size, MIN_PART_SIZE, MAX_PART_SIZE),
        upload_concurrency=reader.integer("upload_concurrency", defaults.upload_concurrency, 1, MAX_UPLOAD_CONCURRENCY),
    )


def _read_ini(path: str | None) -> dict[str, str]:
    chosen = path or DEFAULT_CONFIG_PATH
    if not os.path.exists(chosen):
        if path is not None:
            raise ConfigError("config", "the path of a readable INI file with an [agent] section", chosen)
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(chosen, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, configparser.Error) as exc:
        raise ConfigError("config", f"a readable INI file with an [agent] section ({exc})", chosen) from None
    if not parser.has_section(SECTION):
        raise ConfigError("config", f"an INI file with an [{SECTION}] section", chosen)
    return dict(parser.items(SECTION))


class _Reader:
    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def _raw(self, key: str) -> str | None:
        value = self._values.get(key)
        if value is None or not value.strip():
            return None
        return value.strip()

    def required(self, key: str, convert: Callable[[str], T | None], expected: str) -> T:
        found = self.optional(key, convert, expected)
        if found is None:
            raise ConfigError(key, expected)
        return found

    def optional(self, key: str, convert: Callable[[str], T | None], expected: str) -> T | None:
        raw = self._raw(key)
        if raw is None:
            return None
        converted = convert(raw)
        if converted is None:
            raise ConfigError(key, expected, raw)
        return converted

    def number(self, key: str, default: float, low: float, high: float) -> float:
        expected = f"a number of seconds from {low:g} to {high:g}"
        raw = self._raw(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(key, expected, raw) from None
        if not math.isfinite(value) or not low <= value <= high:
            raise ConfigError(key, expected, raw)
        return value

    def flag(self, key: str, default: bool) -> bool:
        raw = self._raw(key)
        if raw is None:
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(key, "true or false", raw)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        raw = self._raw(key)
        if raw is None:
            return default
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise ConfigError(key, f"a whole number from {low} to {high}", raw)
        return int(raw)

    def size(self, key: str, default: int, low: int, high: int) -> int:
        expected = f"a size from {low // MIB} MiB to {high // MIB} MiB, in bytes or with a unit (e.g. 8MiB)"
        raw = self._raw(key)
        if raw is None:
            return default
        match = _SIZE.match(raw)
        if match is None:
            raise ConfigError(key, expected, raw)
        value = int(match["number"]) * _SIZE_UNITS[match["unit"].lower()]
        if not low <= value <= high:
            raise ConfigError(key, expected, raw)
        return value


def _http_url(raw: str) -> str | None:
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        return None
    netloc = parts.netloc
    # SigV4 signs the host without a default port while urllib sends the netloc as written: keep them equal.
    if (parts.scheme, port) in (("http", 80), ("https", 443)):
        netloc = netloc.rsplit(":", 1)[0]
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _matching(pattern: re.Pattern[str]) -> Callable[[str], str | None]:
    return lambda raw: raw if pattern.match(raw) else None


def _absolute_path(raw: str) -> str | None:
    if not os.path.isabs(raw) or "\0" in raw:
        return None
    return os.path.normpath(raw)


def _listen(raw: str) -> str | None:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return None
    return raw


def _command(raw: str) -> tuple[str, ...] | None:
    try:
        words = tuple(shlex.split(raw))
    except ValueError:
        return None
    return words or None


def _choice(allowed: tuple[str, ...]) -> Callable[[str], str | None]:
    return lambda raw: raw.lower() if raw.lower() in allowed else None


def _level(raw: str) -> str | None:
    return raw.upper() if raw.upper() in LEVELS else None
