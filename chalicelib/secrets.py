"""Secrets and public keys the token check needs, read from where they live and cached.

HS256 secrets live in SSM Parameter Store (SecureString) or Secrets Manager, never
in code or in the Lambda's environment; RS256 public keys are published by the
token issuer under Jitsi's ASAP convention. Both are cached per Lambda container,
so a burst of requests costs one read, and a rotated secret or a withdrawn key is
noticed within the cache's lifetime.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

SECRET_TTL_SECONDS = 300.0
KEY_TTL_SECONDS = 600.0
KEY_FETCH_TIMEOUT_SECONDS = 3.0
MAX_KEY_BYTES = 16 * 1024  # an RSA 4096 public key in PEM is under 1 KiB
MAX_CACHED_KEYS = 128
MIN_RSA_BITS = 2048

# Jitsi key ids look like "jitsi/key-1" or "vpaas-magic-cookie-.../4f4910". The id is
# hashed into the URL, so it cannot reach the path; the pattern still bounds what an
# unauthenticated caller can make us fetch and what reaches the logs. Use it with
# fullmatch: with match, "$" lets a trailing newline through.
KID_PATTERN = re.compile(r"^[A-Za-z0-9._~:/+=@\-]{1,256}$")


class SecretUnavailable(Exception):
    """A secret could not be read; the message names where it lives, never its value."""


class PublicKeyError(Exception):
    """The public key for a token could not be had."""


class KeyNotFound(PublicKeyError):
    """The key server publishes no usable key under this key id."""


class KeyServerUnavailable(PublicKeyError):
    """The key server did not answer, or answered with something that is not a key."""


class SecretValue:
    """Secret bytes that do not show themselves in a repr, a log line or a traceback's locals."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return "SecretValue(***)"

    __str__ = __repr__


@dataclass
class _Cached:
    value: Any
    expires_at: float


class SecretReader:
    """Reads SSM parameters and Secrets Manager secrets, each at most once per TTL.

    Clients are created on first use: a container that serves only other routes
    never pays for them.
    """

    def __init__(
        self,
        client_factory: Callable[[str], Any] = boto3.client,
        *,
        ttl_seconds: float = SECRET_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client_factory = client_factory
        self._ttl = ttl_seconds
        self._clock = clock
        self._clients: dict[str, Any] = {}
        self._cache: dict[tuple[str, str], _Cached] = {}
        self._lock = threading.Lock()

    def parameter(self, name: str) -> SecretValue:
        return self._cached("ssm", name, lambda: self._read_parameter(name))

    def secret(self, secret_id: str) -> SecretValue:
        return self._cached("secretsmanager", secret_id, lambda: self._read_secret(secret_id))

    def _cached(self, service: str, name: str, read: Callable[[], SecretValue]) -> SecretValue:
        key = (service, name)
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and self._clock() < entry.expires_at:
                return entry.value
        value = read()
        with self._lock:
            self._cache[key] = _Cached(value, self._clock() + self._ttl)
        return value

    def _client(self, service: str) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                client = self._clients[service] = self._client_factory(service)
            return client

    def _read_parameter(self, name: str) -> SecretValue:
        try:
            reply = self._client("ssm").get_parameter(Name=name, WithDecryption=True)
            return SecretValue(str(reply["Parameter"]["Value"]).encode())
        except (BotoCoreError, ClientError, KeyError) as error:
            raise SecretUnavailable(f"SSM parameter {name} could not be read ({_error_code(error)})") from None

    def _read_secret(self, secret_id: str) -> SecretValue:
        try:
            reply = self._client("secretsmanager").get_secret_value(SecretId=secret_id)
        except (BotoCoreError, ClientError) as error:
            raise SecretUnavailable(f"secret {secret_id} could not be read ({_error_code(error)})") from None
        if reply.get("SecretString") is not None:
            return SecretValue(str(reply["SecretString"]).encode())
        if reply.get("SecretBinary") is not None:
            return SecretValue(bytes(reply["SecretBinary"]))
        raise SecretUnavailable(f"secret {secret_id} has no value")


def _error_code(error: Exception) -> str:
    # The code says what to fix (AccessDenied, ParameterNotFound); the rest of a
    # botocore message adds nothing and is kept out of logs on principle.
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "ClientError"))
    return type(error).__name__


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def key_url(base_url: str, kid: str) -> str:
    """Where Jitsi's ASAP convention publishes the key: `<base>/<sha256 hex of kid>.pem`.

    Prosody's token plugin (jitsi-meet `resources/prosody-plugins/token/util.lib.lua`)
    fetches `path.join(asap_key_server, hex(sha256(kid)) .. ".pem")`; the same key
    server therefore serves both.
    """
    return f"{base_url.rstrip('/')}/{hashlib.sha256(kid.encode()).hexdigest()}.pem"


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could lead from https to plain http, or off the configured server.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class PublicKeyFetcher:
    """RSA public keys by key id from an ASAP key server, cached with a TTL and a size bound."""

    def __init__(
        self,
        base_url: str,
        *,
        ttl_seconds: float = KEY_TTL_SECONDS,
        timeout_seconds: float = KEY_FETCH_TIMEOUT_SECONDS,
        max_bytes: int = MAX_KEY_BYTES,
        max_entries: int = MAX_CACHED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        scheme = urlsplit(base_url).scheme
        if not (scheme == "https" or (scheme == "http" and is_loopback_url(base_url))):
            raise ValueError("the public key URL must use https (plain http only on loopback, for tests)")
        self.base_url = base_url
        self._ttl = ttl_seconds
        self._timeout = timeout_seconds
        self._max_bytes = max_bytes
        self._max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._lock = threading.Lock()
        handlers: list[urllib.request.BaseHandler] = [_RefuseRedirects()]
        if is_loopback_url(base_url):
            handlers.append(urllib.request.ProxyHandler({}))  # a proxy cannot reach our loopback
        self._opener = urllib.request.build_opener(*handlers)

    def get(self, kid: str) -> RSAPublicKey:
        if not KID_PATTERN.fullmatch(kid):
            raise KeyNotFound("the key id has characters or a length no key server uses")
        with self._lock:
            entry = self._cache.get(kid)
            if entry is not None and self._clock() < entry.expires_at:
                self._cache.move_to_end(kid)
                return entry.value
        key = self._fetch(kid)
        with self._lock:
            self._cache[kid] = _Cached(key, self._clock() + self._ttl)
            self._cache.move_to_end(kid)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return key

    def _fetch(self, kid: str) -> RSAPublicKey:
        request = urllib.request.Request(key_url(self.base_url, kid), headers={"Accept": "application/x-pem-file"})
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                body = response.read(self._max_bytes + 1)
        except urllib.error.HTTPError as error:
            error.close()
            # S3 and CloudFront answer 403 for an object that does not exist.
            if error.code in (403, 404, 410):
                raise KeyNotFound(f"the key server has no key for this key id (HTTP {error.code})") from None
            raise KeyServerUnavailable(f"the key server answered HTTP {error.code}") from None
        except (OSError, ValueError) as error:  # URLError, timeouts and resets are OSErrors
            raise KeyServerUnavailable(f"the key server could not be reached ({type(error).__name__})") from None
        if len(body) > self._max_bytes:
            raise KeyServerUnavailable(f"the key server sent more than {self._max_bytes} bytes")
        try:
            key = serialization.load_pem_public_key(body)
        except (ValueError, TypeError):
            raise KeyServerUnavailable("the key server sent something that is not a PEM public key") from None
        if not isinstance(key, RSAPublicKey) or key.key_size < MIN_RSA_BITS:
            raise KeyNotFound(f"the published key is not an RSA key of at least {MIN_RSA_BITS} bits")
        return key
