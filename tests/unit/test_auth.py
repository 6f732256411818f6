"""Bearer JWTs: settings, every way a token is refused, the key sources and their caches, and the logs."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from chalice.app import AuthRequest, AuthResponse

from chalicelib.auth import (
    AuthSettings,
    ConfiguredKeys,
    GatewayUnauthorized,
    JwtAuthorizer,
    Principal,
    authorize,
    bearer_token,
    principal_from_context,
    verify_token,
)
from chalicelib.config import SettingsError
from chalicelib.errors import Forbidden, Unauthorized
from chalicelib.observability import logger
from chalicelib.secrets import (
    KeyNotFound,
    KeyServerUnavailable,
    PublicKeyFetcher,
    SecretReader,
    SecretUnavailable,
    SecretValue,
    key_url,
)
from sim import tokens
from sim.tokens import KeyServer, RsaKeyPair

SECRET = "jitsi-app-secret-0123456789abcdefghijklmnop"
ISSUER = "jitsi"
AUDIENCE = "jibri-autoscaler"
METHOD_ARN = "arn:aws:execute-api:us-east-1:123456789012:abc123/api/POST/v1/requests"
HS_ENV = {"JWT_ISSUER": ISSUER, "JWT_AUDIENCE": AUDIENCE, "JWT_SECRET_PARAMETER": "/jibri/jwt-secret"}


def hs_settings(**env: str) -> AuthSettings:
    return AuthSettings.from_env({**HS_ENV, **env})


def rs_settings(url: str, **env: str) -> AuthSettings:
    return AuthSettings.from_env(
        {"JWT_ALGORITHM": "RS256", "JWT_ISSUER": ISSUER, "JWT_AUDIENCE": AUDIENCE, "JWT_PUBLIC_KEY_URL": url, **env}
    )


class FakeKeys:
    """The key port with fixed keys, for checks that are not about where keys come from."""

    def __init__(self, secret: str = SECRET, public: dict[str, RsaKeyPair] | None = None) -> None:
        self.secret = secret.encode()
        self.public = public or {}
        self.lookups: list[str] = []

    def hmac_secret(self) -> bytes:
        self.lookups.append("secret")
        return self.secret

    def public_key(self, kid: str) -> Any:
        self.lookups.append(kid)
        if kid not in self.public:
            raise KeyNotFound("no such key")
        return self.public[kid].private_key.public_key()


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def pair() -> RsaKeyPair:
    return RsaKeyPair.generate()


@pytest.fixture(scope="module")
def other_pair() -> RsaKeyPair:
    return RsaKeyPair.generate()


@pytest.fixture
def key_server() -> Iterator[KeyServer]:
    server = KeyServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def log_text() -> Iterator[Callable[[], str]]:
    """Everything the structured logger writes during the test."""
    handler = logger.registered_handler
    previous = handler.stream  # type: ignore[attr-defined]
    buffer = io.StringIO()
    handler.stream = buffer  # type: ignore[attr-defined]
    yield buffer.getvalue
    handler.stream = previous  # type: ignore[attr-defined]


def refusal(token: str, settings: AuthSettings, keys: Any) -> str:
    with pytest.raises(Unauthorized) as caught:
        verify_token(token, settings, keys)
    return caught.value.message


# --- settings -------------------------------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = hs_settings()
    assert settings == AuthSettings(
        issuer=ISSUER,
        audience=AUDIENCE,
        algorithm="HS256",
        secret_parameter="/jibri/jwt-secret",
        tenant_claim="tenant",
        leeway_seconds=30,
        pool_tenants=frozenset(),
    )


def test_settings_overrides() -> None:
    settings = hs_settings(
        JWT_SECRET_PARAMETER="",
        JWT_SECRET_ARN="arn:aws:secretsmanager:us-east-1:123456789012:secret:jibri/jwt-AbCdEf",
        JWT_TENANT_CLAIM="sub",
        JWT_LEEWAY_SECONDS="5",
        POOL_TENANTS=" acme, globex ,",
    )
    assert settings.secret_arn and settings.secret_parameter is None
    assert (settings.tenant_claim, settings.leeway_seconds, settings.pool_tenants) == (
        "sub",
        5,
        frozenset({"acme", "globex"}),
    )
    rs = rs_settings("https://keys.example.com/asap/")
    assert (rs.algorithm, rs.public_key_url) == ("RS256", "https://keys.example.com/asap/")


def test_every_problem_is_named_in_one_error() -> None:
    with pytest.raises(SettingsError) as caught:
        AuthSettings.from_env({"JWT_ALGORITHM": "none", "JWT_LEEWAY_SECONDS": "forever"})
    message = str(caught.value)
    assert "JWT_ISSUER is not set" in message
    assert "JWT_AUDIENCE is not set" in message
    assert "JWT_ALGORITHM='none' is invalid: expected HS256 or RS256" in message
    assert "JWT_LEEWAY_SECONDS='forever' is invalid" in message


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"JWT_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:x"}, "JWT_SECRET_ARN are both set"),
        ({"JWT_PUBLIC_KEY_URL": "https://keys.example.com"}, "JWT_PUBLIC_KEY_URL is set but JWT_ALGORITHM is HS256"),
        ({"JWT_ALGORITHM": "RS256"}, "JWT_SECRET_PARAMETER/JWT_SECRET_ARN is set but JWT_ALGORITHM is RS256"),
        ({"JWT_ALGORITHM": "RS256", "JWT_SECRET_PARAMETER": ""}, "JWT_PUBLIC_KEY_URL is not set"),
        ({"JWT_SECRET_PARAMETER": ""}, "JWT_SECRET_PARAMETER or JWT_SECRET_ARN is not set"),
        ({"JWT_ALGORITHM": "HS512"}, "JWT_ALGORITHM='HS512'"),
        ({"JWT_ISSUER": "has space"}, "JWT_ISSUER="),
        ({"JWT_SECRET_PARAMETER": "no spaces allowed"}, "JWT_SECRET_PARAMETER="),
        ({"JWT_SECRET_PARAMETER": "", "JWT_SECRET_ARN": "arn:aws:ssm:x"}, "JWT_SECRET_ARN="),
        ({"JWT_LEEWAY_SECONDS": "3600"}, "JWT_LEEWAY_SECONDS='3600' is out of range"),
        ({"JWT_TENANT_CLAIM": "a claim"}, "JWT_TENANT_CLAIM="),
        ({"POOL_TENANTS": "acme,*"}, "POOL_TENANTS="),
        ({"POOL_TENANTS": "acme,has space"}, "POOL_TENANTS="),
    ],
)
def test_invalid_settings_are_refused_with_their_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named.replace("*", r"\*")):
        hs_settings(**env)


@pytest.mark.parametrize(
    "url",
    [
        "http://keys.example.com/asap",
        "ftp://keys.example.com/asap",
        "https://",
        "https://keys.example.com/asap?kid=1",
        "https://user:pw@keys.example.com/asap",
        "keys.example.com/asap",
    ],
)
def test_a_key_url_must_be_https_and_plain(url: str) -> None:
    with pytest.raises(SettingsError, match="JWT_PUBLIC_KEY_URL="):
        rs_settings(url)


def test_plain_http_is_accepted_on_loopback_only() -> None:
    assert rs_settings("http://127.0.0.1:8080/asap").public_key_url == "http://127.0.0.1:8080/asap"
    assert rs_settings("http://localhost:8080").public_key_url == "http://localhost:8080"
    with pytest.raises(ValueError, match="https"):
        PublicKeyFetcher("http://keys.example.com/asap")


# --- the Authorization header ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "the Authorization header is missing"),
        ("", "the Authorization header is missing"),
        ("   ", "the Authorization header is missing"),
        ("Basic dXNlcjpwYXNz", "must use the Bearer scheme"),
        ("eyJhbGciOi.eyJpc3Mi.c2ln", "must use the Bearer scheme"),
        ("Bearer", "has no token after 'Bearer'"),
        ("Bearer    ", "has no token after 'Bearer'"),
    ],
)
def test_a_header_without_a_bearer_token_is_refused(header: str | None, message: str) -> None:
    with pytest.raises(Unauthorized, match=message):
        bearer_token(header)


def test_the_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token("bearer a.b.c") == "a.b.c"
    assert bearer_token("  BEARER   a.b.c  ") == "a.b.c"


# --- HS256 -----------------------------------------------------------------------------------------------------------


def test_a_valid_hs256_token_gives_its_principal() -> None:
    token = tokens.hs256(tokens.claims(tenant="acme", subject="meet.example.com"), SECRET)
    principal = verify_token(token, hs_settings(), FakeKeys())
    assert (principal.subject, principal.tenant) == ("meet.example.com", "acme")
    assert principal.claims["room"] == "*" and principal.claims["iss"] == ISSUER


def test_the_subject_falls_back_to_the_issuer_and_a_list_audience_is_accepted() -> None:
    token = tokens.hs256(tokens.claims(subject=None, audience=["other-api", AUDIENCE]), SECRET)
    principal = verify_token(token, hs_settings(), FakeKeys())
    assert (principal.subject, principal.tenant) == (ISSUER, None)


def _now() -> float:
    return time.time()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: "not-a-jwt", "the token is not a JWT"),
        (lambda: "a.b.c", "the token is not a JWT"),
        (lambda: "x" * 9000, "the token is not a JWT"),
        (lambda: tokens.hs256(tokens.claims(lifetime=-3600), SECRET), "the token has expired"),
        (lambda: tokens.hs256(tokens.claims(lifetime=-60), SECRET), "the token has expired"),
        (lambda: tokens.hs256(tokens.claims(nbf=int(_now()) + 600), SECRET), "the token is not valid yet"),
        (lambda: tokens.hs256(tokens.claims(now=_now() + 600), SECRET), "the token is not valid yet"),
        (lambda: tokens.hs256(tokens.claims(issuer="someone-else"), SECRET), "issuer is not accepted"),
        (lambda: tokens.hs256(tokens.claims(audience="another-api"), SECRET), "audience is not this API"),
        (lambda: tokens.hs256(tokens.claims(audience=["a", "b"]), SECRET), "audience is not this API"),
        (lambda: tokens.hs256(tokens.claims(exp=None), SECRET), "the token has no 'exp' claim"),
        (lambda: tokens.hs256(tokens.claims(iss=None), SECRET), "the token has no 'iss' claim"),
        (lambda: tokens.hs256(tokens.claims(aud=None), SECRET), "the token has no 'aud' claim"),
        (lambda: tokens.hs256(tokens.claims(), SECRET + "-but-not-this"), "signature does not verify"),
        (lambda: tokens.hs256(tokens.claims(), SECRET)[:-4] + "AAAA", "signature does not verify"),
        (lambda: _swap_payload(tokens.hs256(tokens.claims(), SECRET)), "signature does not verify"),
        (lambda: tokens.unsigned(tokens.claims()), "must be signed with HS256"),
        (lambda: tokens.unsigned(tokens.claims(), alg="None"), "must be signed with HS256"),
        (lambda: tokens.unsigned(tokens.claims(), alg="HS256"), "signature does not verify"),
        (lambda: tokens.hs256_with_any_key(tokens.claims(), SECRET.encode(), alg="HS512"), "signed with HS256"),
        (lambda: tokens.hs256(tokens.claims(sub=123), SECRET), "'sub' claim must be a string"),
        (lambda: tokens.hs256({**tokens.claims(), "tenant": ["acme"]}, SECRET), "'tenant' claim must be a string"),
    ],
)
def test_bad_hs256_tokens_are_refused(make: Callable[[], str], message: str) -> None:
    assert message in refusal(make(), hs_settings(), FakeKeys())


def _swap_payload(token: str) -> str:
    header, _, signature = token.split(".")
    forged = tokens.unsigned(tokens.claims(tenant="someone-richer")).split(".")[1]
    return f"{header}.{forged}.{signature}"


def test_an_rs256_token_is_refused_when_hs256_is_configured(pair: RsaKeyPair) -> None:
    keys = FakeKeys()
    token = tokens.rs256(tokens.claims(), pair, kid="jitsi/key-1")
    assert refusal(token, hs_settings(), keys) == "the token must be signed with HS256"
    assert keys.lookups == [], "no key is looked up for a token of the wrong algorithm"


def test_expiry_and_not_before_allow_the_configured_leeway() -> None:
    now = time.time()
    just_expired = tokens.hs256(tokens.claims(now=now - 3600, lifetime=3600 - 120), SECRET)  # 2 minutes ago
    assert verify_token(just_expired, hs_settings(JWT_LEEWAY_SECONDS="300"), FakeKeys()).subject
    assert refusal(just_expired, hs_settings(JWT_LEEWAY_SECONDS="10"), FakeKeys()) == "the token has expired"
    early = tokens.hs256(tokens.claims(nbf=int(now) + 120), SECRET)
    assert verify_token(early, hs_settings(JWT_LEEWAY_SECONDS="300"), FakeKeys()).subject
    assert refusal(early, hs_settings(JWT_LEEWAY_SECONDS="0"), FakeKeys()) == "the token is not valid yet"


# --- tenants ---------------------------------------------------------------------------------------------------------


def test_a_pool_without_tenants_serves_any_tenant_or_none() -> None:
    for tenant in ("acme", None):
        token = tokens.hs256(tokens.claims(tenant=tenant), SECRET)
        assert verify_token(token, hs_settings(), FakeKeys()).tenant == tenant


def test_a_pool_with_tenants_serves_only_those() -> None:
    settings = hs_settings(POOL_TENANTS="acme,globex")
    assert verify_token(tokens.hs256(tokens.claims(tenant="globex"), SECRET), settings, FakeKeys()).tenant == "globex"
    with pytest.raises(Forbidden, match="tenant 'initech' may not use this pool"):
        verify_token(tokens.hs256(tokens.claims(tenant="initech"), SECRET), settings, FakeKeys())
    with pytest.raises(Forbidden, match="names no tenant"):
        verify_token(tokens.hs256(tokens.claims(), SECRET), settings, FakeKeys())
    with pytest.raises(Forbidden, match="may not use this pool"):
        verify_token(tokens.hs256(tokens.claims(tenant="ACME"), SECRET), settings, FakeKeys())
    with pytest.raises(Forbidden, match="may not use this pool"):
        verify_token(tokens.hs256(tokens.claims(tenant="*"), SECRET), settings, FakeKeys())


def test_the_tenant_claim_is_configurable_as_jitsis_sub() -> None:
    settings = hs_settings(JWT_TENANT_CLAIM="sub", POOL_TENANTS="acme")
    principal = verify_token(tokens.hs256(tokens.claims(subject="acme"), SECRET), settings, FakeKeys())
    assert (principal.subject, principal.tenant) == ("acme", "acme")


def test_an_invalid_token_is_401_even_for_a_tenant_this_pool_does_not_serve() -> None:
    token = tokens.hs256(tokens.claims(tenant="initech", lifetime=-3600), SECRET)
    assert refusal(token, hs_settings(POOL_TENANTS="acme"), FakeKeys()) == "the token has expired"


# --- RS256 from an ASAP key server -----------------------------------------------------------------------------------


def test_the_key_url_follows_jitsis_asap_convention() -> None:
    # The lowercase hex SHA-256 of the kid, as Prosody's token plugin computes it.
    digest = "992733d24be2e1e7e28e9a425af55d08ddee855393d0f4070e1a3ecf69f8b6e0"
    assert key_url("https://keys.example.com/asap", "jitsi/key-1") == f"https://keys.example.com/asap/{digest}.pem"
    assert key_url("https://keys.example.com/asap/", "jitsi/key-1") == f"https://keys.example.com/asap/{digest}.pem"


def test_a_valid_rs256_token_is_verified_with_the_key_published_for_its_kid(
    pair: RsaKeyPair, key_server: KeyServer
) -> None:
    key_server.publish("jitsi/key-1", pair)
    keys = ConfiguredKeys(rs_settings(key_server.url), SecretReader(), PublicKeyFetcher(key_server.url))
    token = tokens.rs256(tokens.claims(tenant="acme"), pair, kid="jitsi/key-1")
    principal = verify_token(token, rs_settings(key_server.url), keys)
    assert (principal.subject, principal.tenant) == ("meet.example.com", "acme")
    assert key_server.requests == [f"/asap/{tokens.pem_name('jitsi/key-1')}"]


@pytest.fixture
def rs_keys(pair: RsaKeyPair, key_server: KeyServer) -> ConfiguredKeys:
    key_server.publish("jitsi/key-1", pair)
    return ConfiguredKeys(rs_settings(key_server.url), SecretReader(), PublicKeyFetcher(key_server.url))


def test_bad_rs256_tokens_are_refused(
    pair: RsaKeyPair, other_pair: RsaKeyPair, key_server: KeyServer, rs_keys: ConfiguredKeys
) -> None:
    settings = rs_settings(key_server.url)
    claims = tokens.claims()
    cases = {
        "signed by another key under a published kid": (
            tokens.rs256(claims, other_pair, kid="jitsi/key-1"),
            "the token's signature does not verify",
        ),
        "unknown kid": (tokens.rs256(claims, pair, kid="jitsi/key-2"), "no public key is published"),
        "no kid": (tokens.rs256(claims, pair, kid=None), "the token has no key id (kid)"),
        "kid not a string": (_kid(pair, 17), "the token is not a JWT"),
        "kid with odd characters": (_kid(pair, "../../etc/passwd\n"), "key id (kid) is not valid"),
        "HS256 with the secret": (tokens.hs256(claims, SECRET, kid="jitsi/key-1"), "must be signed with RS256"),
        "HS256 with the public key as secret": (
            tokens.hs256_with_any_key(claims, pair.public_pem, kid="jitsi/key-1"),
            "must be signed with RS256",
        ),
        "alg none": (tokens.unsigned(claims), "must be signed with RS256"),
        "expired": (tokens.rs256(tokens.claims(lifetime=-3600), pair, kid="jitsi/key-1"), "has expired"),
        "wrong issuer": (tokens.rs256(tokens.claims(issuer="x"), pair, kid="jitsi/key-1"), "issuer is not accepted"),
        "wrong audience": (tokens.rs256(tokens.claims(audience="x"), pair, kid="jitsi/key-1"), "audience is not this"),
    }
    for name, (token, message) in cases.items():
        assert message in refusal(token, settings, rs_keys), name
    fetched = {path.rsplit("/", 1)[1] for path in key_server.requests}
    assert fetched == {tokens.pem_name("jitsi/key-1"), tokens.pem_name("jitsi/key-2")}, "odd kids are never fetched"


def _kid(pair: RsaKeyPair, kid: Any) -> str:
    return tokens.rs256_with_header(tokens.claims(), pair, {"kid": kid})


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"<html>not a key</html>", None),
        (b"-----BEGIN PUBLIC KEY-----\n" + b"A" * 40_000 + b"\n-----END PUBLIC KEY-----\n", None),
        (None, 500),
        (None, 302),
    ],
)
def test_a_failing_key_server_gives_401_not_an_error(
    pair: RsaKeyPair, key_server: KeyServer, body: bytes | None, status: int | None, log_text: Callable[[], str]
) -> None:
    key_server.publish("jitsi/key-1", body if body is not None else pair)
    key_server.status = status
    keys = ConfiguredKeys(rs_settings(key_server.url), SecretReader(), PublicKeyFetcher(key_server.url))
    token = tokens.rs256(tokens.claims(), pair, kid="jitsi/key-1")
    assert refusal(token, rs_settings(key_server.url), keys) == (
        "the token's public key could not be fetched; try again later"
    )
    assert "public key server unavailable" in log_text()


def test_a_key_server_that_is_down_gives_401(pair: RsaKeyPair, key_server: KeyServer) -> None:
    key_server.publish("jitsi/key-1", pair)
    key_server.stop()
    keys = ConfiguredKeys(
        rs_settings(key_server.url), SecretReader(), PublicKeyFetcher(key_server.url, timeout_seconds=2)
    )
    token = tokens.rs256(tokens.claims(), pair, kid="jitsi/key-1")
    assert "could not be fetched" in refusal(token, rs_settings(key_server.url), keys)


def test_a_small_or_non_rsa_key_is_not_used(key_server: KeyServer) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    curve = ec.generate_private_key(ec.SECP256R1()).public_key()
    fetcher = PublicKeyFetcher(key_server.url)
    for kid, key in (("small", small), ("curve", curve)):
        pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        key_server.publish(kid, pem)
        with pytest.raises(KeyNotFound, match="RSA key of at least 2048 bits"):
            fetcher.get(kid)


def test_public_keys_are_cached_per_kid_until_their_ttl(pair: RsaKeyPair, key_server: KeyServer) -> None:
    key_server.publish("jitsi/key-1", pair)
    clock = ManualClock()
    fetcher = PublicKeyFetcher(key_server.url, ttl_seconds=600, clock=clock)
    keys = ConfiguredKeys(rs_settings(key_server.url), SecretReader(), fetcher)
    token = tokens.rs256(tokens.claims(), pair, kid="jitsi/key-1")
    for _ in range(20):
        verify_token(token, rs_settings(key_server.url), keys)
    assert len(key_server.requests) == 1
    key_server.withdraw("jitsi/key-1")
    clock.now += 601
    assert "no public key is published" in refusal(token, rs_settings(key_server.url), keys)
    assert len(key_server.requests) == 2


def test_the_key_cache_is_bounded(pair: RsaKeyPair, key_server: KeyServer) -> None:
    fetcher = PublicKeyFetcher(key_server.url, max_entries=2)
    for kid in ("a", "b", "c"):
        key_server.publish(kid, pair)
        fetcher.get(kid)
    fetcher.get("c")
    fetcher.get("a")  # evicted by "c", so fetched again
    assert [p.rsplit("/", 1)[1] for p in key_server.requests] == [tokens.pem_name(k) for k in ("a", "b", "c", "a")]


def test_a_missing_key_is_not_confused_with_a_server_failure(key_server: KeyServer) -> None:
    fetcher = PublicKeyFetcher(key_server.url)
    with pytest.raises(KeyNotFound):
        fetcher.get("jitsi/nobody")
    key_server.status = 503
    with pytest.raises(KeyServerUnavailable):
        fetcher.get("jitsi/nobody")


# --- HS256 secrets from SSM and Secrets Manager (moto) ---------------------------------------------------------------


def counting_factory(aws: boto3.session.Session, calls: list[str]) -> Callable[[str], Any]:
    def make(service: str) -> Any:
        client = aws.client(service)
        client.meta.events.register("before-call", lambda model, **_: calls.append(model.name))
        return client

    return make


def test_the_secret_comes_from_an_ssm_securestring_read_once_per_ttl(aws: boto3.session.Session, unique: str) -> None:
    name = f"/jibri/{unique}/jwt-secret"
    aws.client("ssm").put_parameter(Name=name, Value=SECRET, Type="SecureString")
    calls: list[str] = []
    clock = ManualClock()
    settings = hs_settings(JWT_SECRET_PARAMETER=name)
    keys = ConfiguredKeys(settings, SecretReader(counting_factory(aws, calls), ttl_seconds=300, clock=clock))
    token = tokens.hs256(tokens.claims(tenant="acme"), SECRET)
    for _ in range(25):
        assert verify_token(token, settings, keys).tenant == "acme"
    assert calls == ["GetParameter"]
    clock.now += 301
    verify_token(token, settings, keys)
    assert calls == ["GetParameter", "GetParameter"]


def test_the_ssm_read_asks_for_decryption() -> None:
    from botocore.stub import Stubber

    client = boto3.client("ssm", region_name="us-east-1")
    reader = SecretReader(lambda service: client)
    with Stubber(client) as stub:
        stub.add_response(
            "get_parameter",
            {"Parameter": {"Name": "/jibri/jwt-secret", "Value": SECRET, "Type": "SecureString"}},
            {"Name": "/jibri/jwt-secret", "WithDecryption": True},
        )
        assert reader.parameter("/jibri/jwt-secret").reveal() == SECRET.encode()
        stub.assert_no_pending_responses()


def test_the_secret_can_come_from_secrets_manager(aws: boto3.session.Session, unique: str) -> None:
    arn = aws.client("secretsmanager").create_secret(Name=f"jibri/{unique}/jwt", SecretString=SECRET)["ARN"]
    settings = hs_settings(JWT_SECRET_PARAMETER="", JWT_SECRET_ARN=arn)
    keys = ConfiguredKeys(settings, SecretReader(aws.client))
    token = tokens.hs256(tokens.claims(), SECRET)
    assert verify_token(token, settings, keys).subject == "meet.example.com"
    assert "signature does not verify" in refusal(tokens.hs256(tokens.claims(), "x" * 40), settings, keys)


def test_an_unreadable_secret_is_an_operator_problem_named_without_its_value(
    aws: boto3.session.Session, unique: str
) -> None:
    reader = SecretReader(aws.client)
    with pytest.raises(SecretUnavailable, match=rf"SSM parameter /jibri/{unique}/absent could not be read"):
        reader.parameter(f"/jibri/{unique}/absent")


def test_a_short_secret_is_refused_as_a_misconfiguration(aws: boto3.session.Session, unique: str) -> None:
    name = f"/jibri/{unique}/short"
    aws.client("ssm").put_parameter(Name=name, Value="short-secret", Type="SecureString")
    settings = hs_settings(JWT_SECRET_PARAMETER=name)
    keys = ConfiguredKeys(settings, SecretReader(aws.client))
    with pytest.raises(SettingsError, match="JWT_SECRET_PARAMETER: the secret it names is shorter than 32 bytes"):
        verify_token(tokens.hs256(tokens.claims(), "short-secret" * 3), settings, keys)


def test_a_secret_value_hides_itself() -> None:
    value = SecretValue(SECRET.encode())
    assert SECRET not in repr(value) and SECRET not in str(value) and SECRET not in f"{value}"


# --- the Chalice authorizer ------------------------------------------------------------------------------------------


def request(header: str) -> AuthRequest:
    return AuthRequest("TOKEN", header, METHOD_ARN)


def test_an_allowed_token_allows_every_route_with_the_tenant_in_the_context() -> None:
    token = tokens.hs256(tokens.claims(tenant="acme"), SECRET)
    response = authorize(request(f"Bearer {token}"), hs_settings(POOL_TENANTS="acme"), FakeKeys())
    assert isinstance(response, AuthResponse)
    policy = response.to_dict(request(f"Bearer {token}"))
    assert policy["principalId"] == "meet.example.com" and policy["context"] == {"tenant": "acme"}
    assert policy["policyDocument"]["Statement"] == [
        {
            "Action": "execute-api:Invoke",
            "Effect": "Allow",
            "Resource": ["arn:aws:execute-api:us-east-1:123456789012:abc123/api/*/*"],
        }
    ]


def test_a_refused_token_raises_the_error_api_gateway_turns_into_401() -> None:
    for header in ("", "Basic abc", "Bearer garbage", f"Bearer {tokens.hs256(tokens.claims(lifetime=-60), SECRET)}"):
        with pytest.raises(GatewayUnauthorized) as caught:
            authorize(request(header), hs_settings(), FakeKeys())
        assert str(caught.value) == "Unauthorized"


def test_a_tenant_this_pool_does_not_serve_is_denied_with_a_policy_that_allows_nothing() -> None:
    token = tokens.hs256(tokens.claims(tenant="initech"), SECRET)
    response = authorize(request(f"Bearer {token}"), hs_settings(POOL_TENANTS="acme"), FakeKeys())
    policy = response.to_dict(request(f"Bearer {token}"))
    assert policy["policyDocument"]["Statement"][0]["Resource"] == []
    assert policy["context"] == {"reason": "tenant 'initech' may not use this pool"}


def test_a_misconfiguration_is_not_passed_off_as_the_callers_fault(aws: boto3.session.Session, unique: str) -> None:
    token = tokens.hs256(tokens.claims(), SECRET)
    absent = JwtAuthorizer({**HS_ENV, "JWT_SECRET_PARAMETER": f"/jibri/{unique}/absent"}, client_factory=aws.client)
    with pytest.raises(SecretUnavailable):
        absent(request(f"Bearer {token}"))
    with pytest.raises(SettingsError, match="JWT_AUDIENCE is not set"):
        JwtAuthorizer({"JWT_ISSUER": ISSUER})(request(f"Bearer {token}"))


def test_the_authorizer_reads_its_settings_and_secret_once(aws: boto3.session.Session, unique: str) -> None:
    name = f"/jibri/{unique}/jwt-secret"
    aws.client("ssm").put_parameter(Name=name, Value=SECRET, Type="SecureString")
    calls: list[str] = []
    authorizer = JwtAuthorizer(
        {**HS_ENV, "JWT_SECRET_PARAMETER": name, "POOL_TENANTS": "acme"}, client_factory=counting_factory(aws, calls)
    )
    token = tokens.hs256(tokens.claims(tenant="acme"), SECRET)
    for _ in range(10):
        assert authorizer(request(f"Bearer {token}")).principal_id == "meet.example.com"
    assert calls == ["GetParameter"]


def test_the_principal_is_read_back_from_the_request_context() -> None:
    context = {"authorizer": {"principalId": "meet.example.com", "tenant": "acme", "integrationLatency": 3}}
    assert principal_from_context(context) == Principal("meet.example.com", "acme")
    assert principal_from_context({"authorizer": {"principalId": "x", "tenant": ""}}).tenant is None
    with pytest.raises(Unauthorized, match="needs a bearer token"):
        principal_from_context({"identity": {}})


def test_no_token_or_secret_reaches_the_logs(
    aws: boto3.session.Session, unique: str, pair: RsaKeyPair, key_server: KeyServer, log_text: Callable[[], str]
) -> None:
    name = f"/jibri/{unique}/jwt-secret"
    aws.client("ssm").put_parameter(Name=name, Value=SECRET, Type="SecureString")
    hs = JwtAuthorizer({**HS_ENV, "JWT_SECRET_PARAMETER": name, "POOL_TENANTS": "acme"}, client_factory=aws.client)
    sent = [
        tokens.hs256(tokens.claims(tenant="acme"), SECRET),
        tokens.hs256(tokens.claims(tenant="initech"), SECRET),
        tokens.hs256(tokens.claims(tenant="acme", lifetime=-60), SECRET),
        tokens.hs256(tokens.claims(tenant="acme"), "another-secret-that-is-long-enough-to-use"),
        tokens.unsigned(tokens.claims(tenant="acme")),
    ]
    for token in sent:
        with contextlib.suppress(GatewayUnauthorized):
            hs(request(f"Bearer {token}"))
    key_server.publish("jitsi/key-1", pair)
    rs = JwtAuthorizer(
        {
            "JWT_ALGORITHM": "RS256",
            "JWT_ISSUER": ISSUER,
            "JWT_AUDIENCE": AUDIENCE,
            "JWT_PUBLIC_KEY_URL": key_server.url,
        }
    )
    rs_tokens = [tokens.rs256(tokens.claims(), pair, kid="jitsi/key-1"), tokens.rs256(tokens.claims(), pair, "x")]
    key_server.status = 500
    for token in rs_tokens:
        with contextlib.suppress(GatewayUnauthorized):
            rs(request(f"Bearer {token}"))
    text = log_text()
    assert "token refused" in text and "token denied" in text and "the token has expired" in text
    assert "public key server unavailable" in text
    for token in sent + rs_tokens:
        for part in token.split("."):
            if len(part) > 8:
                assert part not in text
    assert SECRET not in text
