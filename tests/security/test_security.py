"""Attacks on the API's trust boundaries, over real HTTP through the local gateway (moto as AWS)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from sim import tokens
from sim.client import call, sign_headers, signed_call
from sim.stack import LocalStack
from tests.property.pool_world import PoolWorld

SECRET = "a-security-secret-of-at-least-32-bytes!"
JWT = {
    "JWT_ALGORITHM": "HS256",
    "JWT_ISSUER": "jitsi",
    "JWT_AUDIENCE": "jibri-autoscaler",
    "JWT_SECRET_PARAMETER": "/jibri/security-secret",
}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(group_name="jibri-sec", group_size=2, settings=JWT) as running:
        running.session.client("ssm").put_parameter(Name="/jibri/security-secret", Value=SECRET, Type="SecureString")
        yield running


def url(stack: LocalStack, path: str) -> str:
    assert stack.gateway is not None
    return f"{stack.gateway.url}{path}"


def report() -> dict[str, Any]:
    sent_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
    return {"busy_status": "IDLE", "health": "HEALTHY", "pending_uploads": 0, "sent_at": sent_at}


def ask(stack: LocalStack, token: str | None, body: bytes | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = body if body is not None else json.dumps({"room": "r", "kind": "recording"}).encode()
    request = urllib.request.Request(url(stack, "/v1/requests"), data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def is_error(body: Any, code: str | None = None) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    shaped = isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str)
    return shaped and (code is None or error["code"] == code)


def test_an_agent_cannot_report_for_another_instance(stack: LocalStack) -> None:
    mine, other = stack.instance_ids[:2]
    creds = stack.issuer.role_session(stack.agent_role, mine)
    status, body = signed_call("POST", url(stack, f"/v1/recorders/{other}/status"), creds, report())
    assert status == 403 and is_error(body, "forbidden")
    assert "only for itself" in body["error"]["message"]
    assert signed_call("POST", url(stack, f"/v1/recorders/{mine}/status"), creds, report())[0] == 200


def test_an_operator_or_another_role_cannot_report_as_an_agent(stack: LocalStack) -> None:
    instance = stack.instance_ids[0]
    for creds in (stack.operator, stack.issuer.role_session("some-other-role", instance)):
        status, body = signed_call("POST", url(stack, f"/v1/recorders/{instance}/status"), creds, report())
        assert status == 403 and is_error(body)


def test_a_signature_over_another_body_is_refused(stack: LocalStack) -> None:
    instance = stack.instance_ids[0]
    target = url(stack, f"/v1/recorders/{instance}/status")
    creds = stack.issuer.role_session(stack.agent_role, instance)
    signed = sign_headers("POST", target, creds, json.dumps(report()).encode())
    tampered = json.dumps({**report(), "pending_uploads": 0, "busy_status": "BUSY"}).encode()
    status, body = call("POST", target, signed, tampered)
    assert status == 403 and is_error(body, "invalid_signature")


def claims(**changes: Any) -> dict[str, Any]:
    return tokens.claims(**changes)


BAD_TOKENS = {
    "expired": tokens.hs256(claims(lifetime=-120), SECRET),
    "not yet valid": tokens.hs256(claims(nbf=int(time.time()) + 3600), SECRET),
    "wrong issuer": tokens.hs256(claims(issuer="someone-else"), SECRET),
    "wrong audience": tokens.hs256(claims(audience="another-api"), SECRET),
    "wrong key": tokens.hs256(claims(), "another-secret-of-at-least-32-bytes!!!"),
    "alg none": tokens.unsigned(claims()),
    "alg None": tokens.unsigned(claims(), alg="None"),
    "no exp": tokens.hs256({k: v for k, v in claims().items() if k != "exp"}, SECRET),
    "garbage": "not.a.jwt",
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_tokens_the_authorizer_must_refuse_get_401_through_the_gateway(stack: LocalStack, kind: str) -> None:
    status, body = ask(stack, BAD_TOKENS[kind])
    assert status == 401 and is_error(body, "unauthorized"), (kind, body)


def test_a_good_token_is_accepted_so_the_refusals_above_mean_something(stack: LocalStack) -> None:
    status, body = ask(stack, tokens.hs256(claims(), SECRET))
    assert status in (201, 202), body


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_the_jwt_verifier_refuses_each_bad_token(kind: str) -> None:
    from chalicelib.auth import AuthSettings, verify_token
    from chalicelib.errors import Unauthorized

    class Keys:
        def hmac_secret(self) -> bytes:
            return SECRET.encode()

        def public_key(self, kid: str) -> Any:
            raise AssertionError("HS256 needs no public key")

    settings = AuthSettings(issuer="jitsi", audience="jibri-autoscaler", secret_parameter="/jibri/security-secret")
    with pytest.raises(Unauthorized):
        verify_token(BAD_TOKENS[kind], settings, Keys())


def test_an_oversized_body_is_refused_with_413_in_the_error_shape(stack: LocalStack) -> None:
    padding = "x" * 70_000
    status, body = ask(
        stack, tokens.hs256(claims(), SECRET), json.dumps({"room": padding, "kind": "recording"}).encode()
    )
    assert status == 413 and is_error(body, "payload_too_large")
    instance = stack.instance_ids[0]
    creds = stack.issuer.role_session(stack.agent_role, instance)
    status, body = signed_call(
        "POST", url(stack, f"/v1/recorders/{instance}/status"), creds, {**report(), "jibri": {"pad": padding}}
    )
    assert status == 413 and is_error(body, "payload_too_large")


def test_protection_a_stranger_sets_on_an_idle_recorder_is_lifted_by_the_reconciler() -> None:
    world = PoolWorld(minimum=1, desired=1)
    (instance_id,) = list(world.jibris)

    def heartbeat() -> None:  # the agent reports; it leaves protection alone while Jibri is idle
        world.report(instance_id, hold=True)
        world.deliver(instance_id, world.jibris[instance_id].in_flight.pop(), obey=False)

    heartbeat()
    world.group.protect([instance_id], True)  # someone else's script, or a console click
    for _ in range(11):  # idle for longer than protection_idle_seconds
        world.advance(60)
        heartbeat()
        world.tick()
    assert not world.group.instances[instance_id].protected
    assert ("protect", ((instance_id,), False)) in world.group.calls


def test_no_token_secret_or_signature_appears_in_the_logs(stack: LocalStack, capfd: pytest.CaptureFixture[str]) -> None:
    good = tokens.hs256(claims(), SECRET)
    bad = BAD_TOKENS["wrong key"]
    ask(stack, good)
    ask(stack, bad)
    ask(stack, good, b"{not json")
    instance = stack.instance_ids[0]
    target = url(stack, f"/v1/recorders/{instance}/status")
    creds = stack.issuer.role_session(stack.agent_role, instance)
    body = json.dumps(report()).encode()
    headers = sign_headers("POST", target, creds, body)
    call("POST", target, headers, body)
    other = url(stack, f"/v1/recorders/{stack.instance_ids[1]}/status")
    wrong = sign_headers("POST", other, creds, body)
    call("POST", other, wrong, body)  # refused: logged as a refusal, without the signature
    logs = capfd.readouterr()
    text = logs.out + logs.err
    assert text, "the flows above log something"
    signatures = [h.split("Signature=")[1] for h in (headers["Authorization"], wrong["Authorization"])]
    secrets = {
        "the good token": good,
        "the bad token": bad,
        "the token's signature": good.rsplit(".", 1)[1],
        "the HS256 secret": SECRET,
        "the agent's secret key": creds.secret_key,
        "the agent's session token": creds.token,
        **{f"SigV4 signature {n}": s for n, s in enumerate(signatures)},
    }
    leaked = [name for name, value in secrets.items() if value and value in text]
    assert leaked == []
