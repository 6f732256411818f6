"""Bearer JWTs as Jitsi deployments issue them, checked by a Chalice custom authorizer.

HS256 with a shared secret (read from SSM Parameter Store or Secrets Manager), or
RS256 with public keys fetched by `kid` from an ASAP key server, as Prosody's token
plugin does. Issuer, audience and expiry are always checked, and only the one
configured algorithm is accepted. A token may carry a tenant; a pool that lists
its tenants serves only those.

API Gateway turns the authorizer's answer into the caller's status: the error
"Unauthorized" becomes 401, a policy that allows nothing becomes 403, and any
other failure 500. Why a token was refused is logged (never the token itself),
because API Gateway shows the caller only its own fixed message.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import jwt
from chalice.app import AuthRequest, AuthResponse
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuedAtError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidSubjectError,
    MissingRequiredClaimError,
    PyJWTError,
)

from chalicelib.config import SettingsError, _Reader
from chalicelib.errors import Forbidden, Unauthorized
from chalicelib.observability import logger
from chalicelib.secrets import (
    KID_PATTERN,
    KeyNotFound,
    KeyServerUnavailable,
    PublicKeyFetcher,
    SecretReader,
    SecretUnavailable,
    is_loopback_url,
)

# RFC 7518 3.2: an HS256 key must be at least as long as the hash output.
MIN_SECRET_BYTES = 32
MAX_TOKEN_CHARS = 8192
_ALGORITHM = re.compile(r"^(HS256|RS256)$")
_CLAIM_VALUE = re.compile(r"^[\x21-\x7e]{1,256}$")  # printable, no spaces: app ids, URLs, URNs
_SSM_NAME = re.compile(r"^(arn:aws[\w-]*:ssm:[\w-]+:\d{12}:parameter)?/?[A-Za-z0-9_.\-/]{1,1011}$")
_SECRET_ARN = re.compile(r"^arn:aws[\w-]*:secretsmanager:[\w-]+:\d{12}:secret:[\w/+=.@\-]{1,512}$")
_CLAIM_NAME = re.compile(r"^[A-Za-z0-9_.:/\-]{1,128}$")
_TENANT = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_COMPACT_JWS = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class AuthSettings:
    issuer: str
    audience: str
    algorithm: str = "HS256"
    secret_parameter: str | None = None
    secret_arn: str | None = None
    public_key_url: str | None = None
    tenant_claim: str = "tenant"
    leeway_seconds: int = 30
    pool_tenants: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuthSettings:
        env = os.environ if env is None else env
        reader = _AuthReader(env)
        algorithm = reader.optional("JWT_ALGORITHM", _ALGORITHM, "HS256 or RS256") or "HS256"
        settings = cls(
            issuer=reader.required("JWT_ISSUER", _CLAIM_VALUE, "the tokens' 'iss' (1-256 printable, no spaces)"),
            audience=reader.required("JWT_AUDIENCE", _CLAIM_VALUE, "the tokens' 'aud' (1-256 printable, no spaces)"),
            algorithm=algorithm,
            secret_parameter=reader.optional(
                "JWT_SECRET_PARAMETER", _SSM_NAME, "an SSM parameter name or ARN (a SecureString)"
            ),
            secret_arn=reader.optional(
                "JWT_SECRET_ARN",
                _SECRET_ARN,
                "a Secrets Manager ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:...)",
            ),
            public_key_url=reader.key_url("JWT_PUBLIC_KEY_URL"),
            tenant_claim=reader.optional("JWT_TENANT_CLAIM", _CLAIM_NAME, "a claim name such as tenant or sub")
            or "tenant",
            leeway_seconds=reader.integer("JWT_LEEWAY_SECONDS", 30, minimum=0, maximum=300),
            pool_tenants=reader.tenants("POOL_TENANTS"),
        )
        reader.key_source(settings)
        reader.raise_if_errors()
        return settings

    def secret_source(self) -> str:
        """The variable that names the HS256 secret, for messages about it."""
        return "JWT_SECRET_PARAMETER" if self.secret_parameter else "JWT_SECRET_ARN"


class _AuthReader(_Reader):
    """The settings reader of config.py, plus the checks that span several JWT variables."""

    def problem(self, message: str) -> None:
        self._errors.append(message)

    def key_url(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        if not value:
            return None
        split = urlsplit(value)
        loopback_http = split.scheme == "http" and is_loopback_url(value)
        if not (split.scheme == "https" or loopback_http) or not split.hostname:
            self.problem(f"{name}={value!r} is invalid: expected an https URL (plain http only on loopback)")
        elif split.query or split.fragment or split.username or split.password:
            self.problem(f"{name}={value!r} is invalid: expected a URL without query, fragment or credentials")
        return value

    def tenants(self, name: str) -> frozenset[str]:
        raw = self._env.get(name, "").strip()
        names = [part.strip() for part in raw.split(",") if part.strip()]
        bad = [n for n in names if not _TENANT.fullmatch(n)]
        if bad:
            self.problem(
                f"{name}={raw!r} is invalid: expected comma-separated tenant names of A-Z a-z 0-9 _ . - "
                f"(not {', '.join(repr(b) for b in bad)})"
            )
        return frozenset(names)

    def key_source(self, settings: AuthSettings) -> None:
        if not _ALGORITHM.fullmatch(settings.algorithm):
            return  # already named; which key source it needs is unknown
        if settings.algorithm == "HS256":
            if settings.public_key_url:
                self.problem("JWT_PUBLIC_KEY_URL is set but JWT_ALGORITHM is HS256: unset it or choose RS256")
            if settings.secret_parameter and settings.secret_arn:
                self.problem("JWT_SECRET_PARAMETER and JWT_SECRET_ARN are both set: HS256 takes exactly one secret")
            elif not (settings.secret_parameter or settings.secret_arn):
                self.problem("JWT_SECRET_PARAMETER or JWT_SECRET_ARN is not set: HS256 needs where its secret lives")
        else:
            if settings.secret_parameter or settings.secret_arn:
                self.problem("JWT_SECRET_PARAMETER/JWT_SECRET_ARN is set but JWT_ALGORITHM is RS256: unset it")
            if not settings.public_key_url:
                self.problem("JWT_PUBLIC_KEY_URL is not set: RS256 needs the ASAP key server's URL")


@dataclass(frozen=True)
class Principal:
    subject: str
    tenant: str | None
    claims: Mapping[str, Any] = field(default_factory=dict)


class TokenKeys(Protocol):
    """Where verify_token gets the key for the configured algorithm."""

    def hmac_secret(self) -> bytes: ...

    def public_key(self, kid: str) -> Any: ...


class ConfiguredKeys:
    """The keys the settings point at: the HS256 secret, or the RS256 key server."""

    def __init__(self, settings: AuthSettings, secrets: SecretReader, fetcher: PublicKeyFetcher | None = None) -> None:
        self._settings = settings
        self._secrets = secrets
        self._fetcher = fetcher

    def hmac_secret(self) -> bytes:
        settings = self._settings
        if settings.secret_parameter:
            value = self._secrets.parameter(settings.secret_parameter)
        elif settings.secret_arn:
            value = self._secrets.secret(settings.secret_arn)
        else:
            raise SettingsError("JWT_SECRET_PARAMETER or JWT_SECRET_ARN is not set: HS256 needs its secret")
        if len(value) < MIN_SECRET_BYTES:
            raise SettingsError(
                f"{settings.secret_source()}: the secret it names is shorter than {MIN_SECRET_BYTES} bytes, "
                "too short for HS256"
            )
        return value.reveal()

    def public_key(self, kid: str) -> Any:
        if self._fetcher is None:
            if not self._settings.public_key_url:
                raise SettingsError("JWT_PUBLIC_KEY_URL is not set: RS256 needs the ASAP key server's URL")
            self._fetcher = PublicKeyFetcher(self._settings.public_key_url)
        return self._fetcher.get(kid)


_REFUSALS: tuple[tuple[type[PyJWTError], str], ...] = (
    (ExpiredSignatureError, "the token has expired"),
    (ImmatureSignatureError, "the token is not valid yet"),
    (InvalidIssuerError, "the token's issuer is not accepted here"),
    (InvalidAudienceError, "the token's audience is not this API"),
    (InvalidSignatureError, "the token's signature does not verify"),
    (InvalidAlgorithmError, "the token's algorithm is not accepted here"),
    (InvalidSubjectError, "the token's 'sub' claim must be a string"),
    (InvalidIssuedAtError, "the token's 'iat' claim must be a number"),
)


def bearer_token(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header."""
    if not header or not header.strip():
        raise Unauthorized("the Authorization header is missing: send 'Bearer <token>'")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized("the Authorization header must use the Bearer scheme")
    token = token.strip()
    if not token:
        raise Unauthorized("the Authorization header has no token after 'Bearer'")
    return token


def verify_token(token: str, settings: AuthSettings, keys: TokenKeys) -> Principal:
    """The token's principal, or Unauthorized (401) or Forbidden (403) with a message safe to show."""
    if len(token) > MAX_TOKEN_CHARS or not _COMPACT_JWS.fullmatch(token):
        raise Unauthorized("the token is not a JWT")
    try:
        header = jwt.get_unverified_header(token)
    except PyJWTError:
        raise Unauthorized("the token is not a JWT") from None
    # Refused before any key is looked up: `none`, and an algorithm other than the
    # configured one (an HS256 token "signed" with the RS256 public key, for one),
    # never reach the signature check. jwt.decode below enforces the same list.
    if header.get("alg") != settings.algorithm:
        raise Unauthorized(f"the token must be signed with {settings.algorithm}")
    key = _verification_key(header, settings, keys)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[settings.algorithm],
            audience=settings.audience,
            issuer=settings.issuer,
            leeway=settings.leeway_seconds,
            options={"require": ["exp", "iss", "aud"]},
        )
    except MissingRequiredClaimError as error:
        raise Unauthorized(f"the token has no '{error.claim}' claim") from None
    except PyJWTError as error:
        raise Unauthorized(_refusal(error)) from None
    return _principal(claims, settings)


def _verification_key(header: Mapping[str, Any], settings: AuthSettings, keys: TokenKeys) -> Any:
    if settings.algorithm == "HS256":
        return keys.hmac_secret()
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Unauthorized("the token has no key id (kid)")
    if not KID_PATTERN.fullmatch(kid):
        raise Unauthorized("the token's key id (kid) is not valid")
    try:
        return keys.public_key(kid)
    except KeyNotFound as error:
        logger.info("no public key for the token's kid", extra={"kid": kid, "detail": str(error)})
        raise Unauthorized("no public key is published for the token's key id") from None
    except KeyServerUnavailable as error:
        # The caller cannot be verified; that is a 401 for it and an alarm for us.
        logger.error("public key server unavailable", extra={"kid": kid, "detail": str(error)})
        raise Unauthorized("the token's public key could not be fetched; try again later") from None


def _refusal(error: PyJWTError) -> str:
    for kind, message in _REFUSALS:
        if isinstance(error, kind):
            return message
    return "the token is not valid"


def _principal(claims: Mapping[str, Any], settings: AuthSettings) -> Principal:
    tenant = claims.get(settings.tenant_claim)
    if tenant is not None and not isinstance(tenant, str):
        raise Unauthorized(f"the token's '{settings.tenant_claim}' claim must be a string")
    tenant = tenant or None
    subject = claims.get("sub") or claims["iss"]
    if settings.pool_tenants and tenant not in settings.pool_tenants:
        if tenant is None:
            raise Forbidden(f"the token names no tenant ('{settings.tenant_claim}'); this pool serves named tenants")
        raise Forbidden(f"tenant {tenant[:128]!r} may not use this pool")
    return Principal(subject=str(subject), tenant=tenant, claims=dict(claims))


class GatewayUnauthorized(Exception):
    """The one error API Gateway turns into a 401: its message must be exactly 'Unauthorized'."""

    def __init__(self) -> None:
        super().__init__("Unauthorized")


def authorize(auth_request: AuthRequest, settings: AuthSettings, keys: TokenKeys) -> AuthResponse:
    """Chalice custom authorizer body: allow every route, deny (403), or raise for a 401."""
    try:
        principal = verify_token(bearer_token(auth_request.token), settings, keys)
    except Unauthorized as error:
        logger.info("token refused", extra={"status": 401, "reason": error.message})
        raise GatewayUnauthorized() from None
    except Forbidden as error:
        logger.info("token denied", extra={"status": 403, "reason": error.message})
        # No route is allowed: API Gateway answers 403. The reason travels in the
        # context, where a gateway response template can show it.
        return AuthResponse(routes=[], principal_id="denied", context={"reason": error.message})
    except (SettingsError, SecretUnavailable) as error:
        # Not the caller's fault: let API Gateway answer 500 and tell the operator.
        logger.error("token authorizer misconfigured", extra={"error": str(error)})
        raise
    # Every route: API Gateway may cache this answer per token across routes.
    return AuthResponse(
        routes=["*"],
        principal_id=principal.subject,
        context={"tenant": principal.tenant or ""},
    )


def principal_from_context(request_context: Mapping[str, Any] | None) -> Principal:
    """The caller of a JWT route as the authorizer left it in the request context (claims are not passed on)."""
    authorizer = (request_context or {}).get("authorizer") or {}
    subject = authorizer.get("principalId")
    if not subject:
        raise Unauthorized("this route needs a bearer token checked by the JWT authorizer")
    return Principal(subject=str(subject), tenant=authorizer.get("tenant") or None)


class JwtAuthorizer:
    """What app.py's authorizer calls: settings and key sources built on first use, kept per container."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        client_factory: Callable[[str], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._env = env
        self._client_factory = client_factory
        self._clock = clock
        self._settings: AuthSettings | None = None
        self._keys: ConfiguredKeys | None = None

    @property
    def settings(self) -> AuthSettings:
        if self._settings is None:
            self._settings = AuthSettings.from_env(self._env)
        return self._settings

    @property
    def keys(self) -> ConfiguredKeys:
        if self._keys is None:
            settings = self.settings
            reader = (
                SecretReader(self._client_factory, clock=self._clock)
                if self._client_factory is not None
                else SecretReader(clock=self._clock)
            )
            fetcher = PublicKeyFetcher(settings.public_key_url, clock=self._clock) if settings.public_key_url else None
            self._keys = ConfiguredKeys(settings, reader, fetcher)
        return self._keys

    def __call__(self, auth_request: AuthRequest) -> AuthResponse:
        try:
            settings, keys = self.settings, self.keys
        except SettingsError as error:
            logger.error("token authorizer misconfigured", extra={"error": str(error)})
            raise
        return authorize(auth_request, settings, keys)
