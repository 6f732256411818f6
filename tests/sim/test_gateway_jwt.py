"""The local gateway runs Chalice custom authorizers as API Gateway runs a TOKEN authorizer."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from chalice import Chalice, IAMAuthorizer
from chalice.app import AuthRequest, AuthResponse, AuthRoute

from chalicelib.auth import JwtAuthorizer, principal_from_context
from sim import tokens
from sim.client import call, sign_headers
from sim.credentials import CredentialIssuer
from sim.gateway import LocalGateway, Observed
from sim.tokens import KeyServer, RsaKeyPair

SECRET = "jitsi-app-secret-0123456789abcdefghijklmnop"
BASE_ENV = {"JWT_ISSUER": "jitsi", "JWT_AUDIENCE": "jibri-autoscaler"}

app = Chalice(app_name="gateway-jwt-probe")


class _Current:
    """The authorizer body a test installs; the app and its routes are defined once."""

    body: Callable[[AuthRequest], AuthResponse] | None = None
    calls = 0


current = _Current()


@app.authorizer(ttl_seconds=0)
def jitsi_jwt(auth_request: AuthRequest) -> AuthResponse:
    current.calls += 1
    assert current.body is not None
    return current.body(auth_request)


@app.route("/v1/requests", methods=["POST"], authorizer=jitsi_jwt)
def create_request() -> dict[str, Any]:
    request = app.current_request
    assert request is not None
    principal = principal_from_context(request.context)
    return {"subject": principal.subject, "tenant": principal.tenant, "authorizer": request.context["authorizer"]}


@app.route("/v1/requests/{request_id}", methods=["GET"], authorizer=jitsi_jwt)
def get_request(request_id: str) -> dict[str, str]:
    return {"id": request_id}


@app.route("/v1/recorders/{instance_id}/status", methods=["POST"], authorizer=IAMAuthorizer())
def report_status(instance_id: str) -> dict[str, str]:
    return {"instance_id": instance_id}


@pytest.fixture
def gateway() -> Iterator[LocalGateway]:
    gw = LocalGateway(app, CredentialIssuer()).start()
    current.calls = 0
    try:
        yield gw
    finally:
        gw.stop()
        current.body = None


@pytest.fixture
def hs256(aws: boto3.session.Session, unique: str) -> None:
    name = f"/jibri/{unique}/jwt-secret"
    aws.client("ssm").put_parameter(Name=name, Value=SECRET, Type="SecureString")
    env = {**BASE_ENV, "JWT_SECRET_PARAMETER": name, "POOL_TENANTS": "acme,globex"}
    current.body = JwtAuthorizer(env, client_factory=aws.client)


def post(gateway: LocalGateway, authorization: str | None, path: str = "/v1/requests") -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return call("POST", f"{gateway.url}{path}", headers, b'{"room": "standup"}')


def test_a_valid_token_reaches_the_route_with_the_authorizers_context(gateway: LocalGateway, hs256: None) -> None:
    seen: list[Observed] = []
    gateway.on_request = seen.append
    token = tokens.hs256(tokens.claims(tenant="acme"), SECRET)
    status, reply = post(gateway, f"Bearer {token}")
    assert status == 200
    assert (reply["subject"], reply["tenant"]) == ("meet.example.com", "acme")
    assert reply["authorizer"] == {"tenant": "acme", "principalId": "meet.example.com"}
    assert seen[0].authorizer == reply["authorizer"] and seen[0].caller is None


def refused(gateway: LocalGateway, authorization: str | None) -> tuple[int, dict[str, str]]:
    seen: list[Observed] = []
    gateway.on_request = seen.append
    status, reply = post(gateway, authorization)
    assert seen == [], "a refused request must never reach the app"
    return status, reply["error"]


def test_no_token_is_401_without_invoking_the_authorizer(gateway: LocalGateway, hs256: None) -> None:
    status, error = refused(gateway, None)
    assert (status, error["code"]) == (401, "unauthorized") and "bearer token" in error["message"]
    assert refused(gateway, "")[0] == 401
    assert current.calls == 0


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-a-token",
        f"Bearer {tokens.hs256(tokens.claims(tenant='acme', lifetime=-3600), SECRET)}",
        f"Bearer {tokens.hs256(tokens.claims(tenant='acme', nbf=4_000_000_000), SECRET)}",
        f"Bearer {tokens.hs256(tokens.claims(tenant='acme', issuer='evil'), SECRET)}",
        f"Bearer {tokens.hs256(tokens.claims(tenant='acme', audience='other'), SECRET)}",
        f"Bearer {tokens.hs256(tokens.claims(tenant='acme'), 'a-different-secret-of-enough-length-000')}",
        f"Bearer {tokens.unsigned(tokens.claims(tenant='acme'))}",
    ],
    ids=["basic", "empty-bearer", "garbage", "expired", "not-yet-valid", "issuer", "audience", "secret", "alg-none"],
)
def test_an_invalid_token_is_401(gateway: LocalGateway, hs256: None, authorization: str) -> None:
    status, error = refused(gateway, authorization)
    assert (status, error["code"]) == (401, "unauthorized")
    assert current.calls == 1


def test_a_tenant_this_pool_does_not_serve_is_403_with_the_reason(gateway: LocalGateway, hs256: None) -> None:
    status, error = refused(gateway, f"Bearer {tokens.hs256(tokens.claims(tenant='initech'), SECRET)}")
    assert (status, error) == (403, {"code": "forbidden", "message": "tenant 'initech' may not use this pool"})
    status, error = refused(gateway, f"Bearer {tokens.hs256(tokens.claims(), SECRET)}")
    assert status == 403 and "names no tenant" in error["message"]


def test_a_failing_authorizer_is_500_and_never_reaches_the_app(
    gateway: LocalGateway, aws: boto3.session.Session, unique: str
) -> None:
    current.body = JwtAuthorizer(
        {**BASE_ENV, "JWT_SECRET_PARAMETER": f"/jibri/{unique}/absent"}, client_factory=aws.client
    )
    status, error = refused(gateway, f"Bearer {tokens.hs256(tokens.claims(), SECRET)}")
    assert (status, error["code"]) == (500, "authorizer_configuration_error")


def test_the_policy_is_evaluated_against_the_method_and_path(gateway: LocalGateway) -> None:
    current.body = lambda request: AuthResponse(routes=[AuthRoute("/v1/requests", ["POST"])], principal_id="p")
    assert post(gateway, "Bearer anything")[0] == 200
    status, reply = call("GET", f"{gateway.url}/v1/requests/r-1", {"Authorization": "Bearer anything"})
    assert (status, reply["error"]["code"]) == (403, "forbidden")


def test_an_rs256_token_is_checked_against_the_key_server(gateway: LocalGateway) -> None:
    pair = RsaKeyPair.generate()
    keys = KeyServer().start()
    try:
        keys.publish("jitsi/key-1", pair)
        current.body = JwtAuthorizer({**BASE_ENV, "JWT_ALGORITHM": "RS256", "JWT_PUBLIC_KEY_URL": keys.url})
        token = tokens.rs256(tokens.claims(tenant="acme"), pair, kid="jitsi/key-1")
        status, reply = post(gateway, f"Bearer {token}")
        assert (status, reply["tenant"]) == (200, "acme")
        forged = tokens.hs256_with_any_key(tokens.claims(tenant="acme"), pair.public_pem, kid="jitsi/key-1")
        assert refused(gateway, f"Bearer {forged}")[0] == 401
        unknown = tokens.rs256(tokens.claims(tenant="acme"), pair, kid="jitsi/key-2")
        assert refused(gateway, f"Bearer {unknown}")[0] == 401
        keys.stop()
        fresh = tokens.rs256(tokens.claims(tenant="acme"), pair, kid="jitsi/key-3")
        assert refused(gateway, f"Bearer {fresh}")[0] == 401, "a key server that is down is a 401, not a 500"
    finally:
        keys.stop()


def test_iam_routes_still_need_sigv4_beside_jwt_routes(gateway: LocalGateway, hs256: None) -> None:
    url = f"{gateway.url}/v1/recorders/i-1/status"
    token = tokens.hs256(tokens.claims(tenant="acme"), SECRET)
    status, reply = call("POST", url, {"Authorization": f"Bearer {token}"}, b"{}")
    assert (status, reply["error"]["code"]) == (403, "missing_authentication")
    creds = gateway.issuer.role_session("jibri-agent", "i-1")
    assert call("POST", url, sign_headers("POST", url, creds, b"{}"), b"{}") == (200, {"instance_id": "i-1"})
    assert current.calls == 0


def test_replies_are_json_with_the_api_error_shape(gateway: LocalGateway, hs256: None) -> None:
    request = urllib.request.Request(f"{gateway.url}/v1/requests", data=b"{}", method="POST")
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as error:
        assert error.code == 401 and error.headers["Content-Type"] == "application/json"
        assert set(json.loads(error.read())["error"]) == {"code", "message"}
    else:
        pytest.fail("a request without a token was accepted")
