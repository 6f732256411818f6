"""Schemathesis against the local stack: every operation of chalicelib/openapi.json, with valid
and invalid inputs, over real HTTP through the local gateway (SigV4 on IAM routes, the JWT
authorizer on Jitsi routes). No reply may be a 5xx; every error is JSON of the documented shape.

Bounded for `make test`; a deeper run:

    PROPERTY_PROFILE=deep .venv/bin/python -m pytest tests/fuzz -q
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks

from sim import tokens
from sim.client import sign_headers
from sim.stack import LocalStack

SPEC = Path(__file__).resolve().parents[2] / "chalicelib" / "openapi.json"
SECRET = "a-fuzzing-secret-of-at-least-32-bytes!!"
JWT = {
    "JWT_ALGORITHM": "HS256",
    "JWT_ISSUER": "jitsi",
    "JWT_AUDIENCE": "jibri-autoscaler",
    "JWT_SECRET_PARAMETER": "/jibri/fuzz-secret",
}
DEEP = os.environ.get("PROPERTY_PROFILE") == "deep"

schema = schemathesis.openapi.from_path(SPEC)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    deterministic=not DEEP,
    database="none",
    with_security_parameters=False,  # send() signs or adds the token to every request
)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(group_name="jibri-fuzz", group_size=2, settings=JWT) as running:
        running.session.client("ssm").put_parameter(Name="/jibri/fuzz-secret", Value=SECRET, Type="SecureString")
        yield running


def send(stack: LocalStack, case: Any) -> requests.Response:
    """Send the case as the caller its route expects: a signed agent or operator, or a Jitsi token."""
    assert stack.gateway is not None
    kwargs = case.as_transport_kwargs(base_url=stack.gateway.url)
    kwargs["headers"]["Content-Type"] = "application/json"
    prepared = requests.Request(
        method=kwargs["method"],
        url=kwargs["url"],
        headers=kwargs["headers"],
        params=kwargs.get("params"),
        json=kwargs.get("json"),
        data=kwargs.get("data"),
    ).prepare()
    security = case.operation.definition.raw.get("security", [{}])[0]
    if "sigv4" in security:
        if case.path.startswith("/v1/pool"):
            creds = stack.operator
        elif case.path.startswith("/v1/recorders/"):
            # The agent of whatever instance the path names (most are not in the group: 403).
            session = str(case.path_parameters.get("instance_id", "")) or "i-unknown"
            creds = stack.issuer.role_session(stack.agent_role, session[:64])
        else:
            creds = stack.issuer.role_session(stack.agent_role, stack.instance_ids[0])
        body = prepared.body if isinstance(prepared.body, bytes) else (prepared.body or "").encode()
        prepared.headers.update(sign_headers(prepared.method or "GET", prepared.url or "", creds, body))
    else:
        prepared.headers["Authorization"] = f"Bearer {tokens.hs256(tokens.claims(), SECRET)}"
    with requests.Session() as session:
        return session.send(prepared, timeout=30)


def assert_error_shape(response: requests.Response) -> None:
    where = f"{response.request.method} {response.request.url}"
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:
        assert response.headers.get("Content-Type", "").startswith("application/json"), (where, response.text)
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        assert isinstance(error, dict), f"not the error shape: {body}"
        assert isinstance(error.get("code"), str) and error["code"], body
        assert isinstance(error.get("message"), str) and error["message"], body


@schema.parametrize()
@settings(
    max_examples=400 if DEEP else 12,
    deadline=None,
    derandomize=not DEEP,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_gets_a_5xx_and_every_error_has_the_documented_shape(stack: LocalStack, case: Any) -> None:
    response = send(stack, case)
    assert_error_shape(response)
    meta = case.meta
    # Headers are left out: send() rewrites the ones that authenticate.
    invalid = [loc for loc, info in (meta.components if meta else {}).items() if info.mode is GenerationMode.NEGATIVE]
    if any(str(getattr(loc, "value", loc)) in ("body", "query", "path") for loc in invalid):
        assert 400 <= response.status_code < 500, (
            f"schema-violating input accepted: {response.status_code} {case.method} {case.path} {meta.components}"
            f" {case.body!r:.1500}"
        )
    # Of Schemathesis' own checks: the status code and the Content-Type must be documented ones.
    # Not checked: positive data acceptance (cross-field and time rules, such as a booking in the
    # past, refuse some schema-valid inputs) and the auth probes (tests/security covers them).
    case.validate_response(response, checks=[checks.status_code_conformance, checks.content_type_conformance])
