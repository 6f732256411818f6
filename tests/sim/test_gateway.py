"""The local API gateway: SigV4 checked as IAM would, identity filled as API Gateway would."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest
from chalice import Chalice, IAMAuthorizer

from sim.client import call, sign_headers
from sim.credentials import CredentialIssuer, IssuedCredentials
from sim.gateway import LocalGateway, Observed

app = Chalice(app_name="gateway-probe")


@app.route("/whoami/{name}", methods=["POST", "GET"], authorizer=IAMAuthorizer())
def whoami(name: str) -> dict[str, Any]:
    time.sleep(0.002)  # widens the window in which a concurrent call could swap the current request
    request = app.current_request
    assert request is not None
    return {
        "name": name,
        "identity": request.context["identity"],
        "resource": request.context["resourcePath"],
        "query": request.query_params,
        "body": request.json_body if request.raw_body else None,
    }


@app.route("/open")
def open_route() -> dict[str, str]:
    return {"open": "yes"}


@pytest.fixture
def issuer() -> CredentialIssuer:
    return CredentialIssuer()


@pytest.fixture
def gateway(issuer: CredentialIssuer) -> Iterator[LocalGateway]:
    gw = LocalGateway(app, issuer).start()
    try:
        yield gw
    finally:
        gw.stop()


def signed(
    url: str,
    creds: IssuedCredentials,
    body: bytes = b"",
    method: str = "POST",
    *,
    service: str = "execute-api",
    at: float | None = None,
    token: str | None = None,
) -> dict[str, str]:
    if token is not None:
        creds = dataclasses.replace(creds, token=token)
    return sign_headers(method, url, creds, body, service=service, at=at)


def send(url: str, headers: dict[str, str], body: bytes = b"", method: str = "POST") -> tuple[int, Any]:
    return call(method, url, headers, body)


def test_a_signed_request_reaches_the_app_with_the_callers_identity(
    gateway: LocalGateway, issuer: CredentialIssuer
) -> None:
    creds = issuer.role_session("jibri-agent", "i-0123456789abcdef0")
    url = f"{gateway.url}/whoami/i-0123456789abcdef0?x=1"
    body = b'{"hello": "world"}'
    status, reply = send(url, signed(url, creds, body), body)
    assert status == 200
    assert reply["name"] == "i-0123456789abcdef0" and reply["query"] == {"x": "1"}
    assert reply["body"] == {"hello": "world"}
    assert reply["resource"] == "/whoami/{name}"
    identity = reply["identity"]
    assert identity["userArn"] == "arn:aws:sts::123456789012:assumed-role/jibri-agent/i-0123456789abcdef0"
    assert identity["accessKey"] == creds.access_key and identity["accountId"] == "123456789012"
    assert identity["caller"].endswith(":i-0123456789abcdef0") and identity["caller"].startswith("AROA")


def test_an_iam_user_with_long_term_keys_is_accepted(gateway: LocalGateway, issuer: CredentialIssuer) -> None:
    creds = issuer.user("operator")
    url = f"{gateway.url}/whoami/x"
    status, reply = send(url, signed(url, creds, method="GET"), method="GET")
    assert status == 200 and reply["identity"]["userArn"] == "arn:aws:iam::123456789012:user/operator"


def refused(gateway: LocalGateway, headers: dict[str, str], body: bytes = b"{}") -> tuple[int, str]:
    seen: list[Observed] = []
    gateway.on_request = seen.append
    status, reply = send(f"{gateway.url}/whoami/x", headers, body)
    assert seen == [], "a refused request must never reach the app"
    return status, reply["error"]["code"]


def test_unsigned_requests_are_refused(gateway: LocalGateway) -> None:
    assert refused(gateway, {"Content-Type": "application/json"}) == (403, "missing_authentication")


def test_a_tampered_body_is_refused(gateway: LocalGateway, issuer: CredentialIssuer) -> None:
    creds = issuer.role_session("jibri-agent", "i-1")
    headers = signed(f"{gateway.url}/whoami/x", creds, b'{"busy": false}')
    assert refused(gateway, headers, b'{"busy": true}') == (403, "invalid_signature")


def test_a_signature_for_another_path_is_refused(gateway: LocalGateway, issuer: CredentialIssuer) -> None:
    creds = issuer.role_session("jibri-agent", "i-1")
    headers = signed(f"{gateway.url}/whoami/i-2", creds, b"{}")
    assert refused(gateway, headers) == (403, "invalid_signature")


def test_unknown_revoked_and_wrong_secret_credentials_are_refused(
    gateway: LocalGateway, issuer: CredentialIssuer
) -> None:
    url = f"{gateway.url}/whoami/x"
    stranger = CredentialIssuer().role_session("jibri-agent", "i-1")
    assert refused(gateway, signed(url, stranger, b"{}")) == (403, "invalid_token")
    creds = issuer.role_session("jibri-agent", "i-1")
    forged = IssuedCredentials(creds.access_key, "not-the-secret", creds.token, creds.arn, creds.principal_id)
    assert refused(gateway, signed(url, forged, b"{}")) == (403, "invalid_signature")
    assert refused(gateway, signed(url, creds, b"{}", token="another-token")) == (403, "invalid_token")
    issuer.revoke(creds.access_key)
    assert refused(gateway, signed(url, creds, b"{}")) == (403, "invalid_token")


def test_old_or_future_signatures_and_other_services_are_refused(
    gateway: LocalGateway, issuer: CredentialIssuer
) -> None:
    url = f"{gateway.url}/whoami/x"
    creds = issuer.role_session("jibri-agent", "i-1")
    assert refused(gateway, signed(url, creds, b"{}", at=time.time() - 600)) == (403, "invalid_signature")
    assert refused(gateway, signed(url, creds, b"{}", at=time.time() + 600)) == (403, "invalid_signature")
    assert refused(gateway, signed(url, creds, b"{}", service="s3")) == (403, "invalid_signature")


def test_routes_without_iam_need_no_signature_and_unknown_paths_get_the_api_error_shape(
    gateway: LocalGateway,
) -> None:
    assert send(f"{gateway.url}/open", {}, method="GET") == (200, {"open": "yes"})
    status, reply = send(f"{gateway.url}/nowhere", {}, method="GET")
    assert status == 404 and reply["error"]["code"] == "not_found"


def test_concurrent_requests_each_get_their_own_reply(gateway: LocalGateway, issuer: CredentialIssuer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def ask(n: int) -> tuple[int, Any]:
        creds = issuer.role_session("jibri-agent", f"i-{n}")
        url = f"{gateway.url}/whoami/i-{n}"
        body = f'{{"n": {n}}}'.encode()
        return send(url, signed(url, creds, body), body)

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(ask, range(40)))
    for n, (status, reply) in enumerate(replies):
        assert status == 200
        assert (reply["name"], reply["body"], reply["identity"]["userArn"].rsplit("/", 1)[1]) == (
            f"i-{n}",
            {"n": n},
            f"i-{n}",
        )
