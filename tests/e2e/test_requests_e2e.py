"""Jitsi's recorder requests over real HTTP: the app behind the local gateway (JWT authorizer),
moto in server mode as DynamoDB, Auto Scaling and SSM."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from sim import tokens
from sim.client import signed_call
from sim.stack import LocalStack

SECRET = "a-shared-secret-of-at-least-32-bytes!!"
JWT = {
    "JWT_ALGORITHM": "HS256",
    "JWT_ISSUER": "jitsi",
    "JWT_AUDIENCE": "jibri-autoscaler",
    "JWT_SECRET_PARAMETER": "/jibri/jwt-secret",
    "POOL_TENANTS": "acme",
}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(group_name="jibri-requests", group_size=20, settings=JWT) as running:
        running.session.client("ssm").put_parameter(Name="/jibri/jwt-secret", Value=SECRET, Type="SecureString")
        for instance_id in running.instance_ids:  # twenty agents report idle
            creds = running.issuer.role_session(running.agent_role, instance_id)
            status, _ = signed_call(
                "POST", f"{gateway(running)}/v1/recorders/{instance_id}/status", creds, report("IDLE")
            )
            assert status == 200
        yield running


def gateway(stack: LocalStack) -> str:
    assert stack.gateway is not None
    return stack.gateway.url


def report(busy: str) -> dict[str, Any]:
    sent_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
    return {"busy_status": busy, "health": "HEALTHY", "pending_uploads": 0, "sent_at": sent_at}


def call(
    stack: LocalStack,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = "good",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if token == "good":
        token = tokens.hs256(tokens.claims(tenant="acme"), SECRET)
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{gateway(stack)}{path}", data=data, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_hundred_parallel_requests_for_twenty_idle_recorders(stack: LocalStack) -> None:
    def ask(n: int) -> tuple[int, Any]:
        return call(stack, "POST", "/v1/requests", {"room": f"room-{n}", "kind": "recording"})

    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(ask, range(100)))
    assigned = [body for status, body in replies if status == 201]
    queued = [body for status, body in replies if status == 202]
    assert len(assigned) == 20 and len(queued) == 80
    assert sorted(b["recorder"]["instance_id"] for b in assigned) == sorted(stack.instance_ids)
    assert sorted(b["position"] for b in queued) == list(range(1, 81))
    by_position = sorted(queued, key=lambda b: b["position"])
    assert [b["created_at"] for b in by_position] == sorted(b["created_at"] for b in queued)

    # A recording starts on one reserved recorder and ends: the recorder serves the queue head first.
    first = assigned[0]
    instance_id = first["recorder"]["instance_id"]
    creds = stack.issuer.role_session(stack.agent_role, instance_id)
    url = f"{gateway(stack)}/v1/recorders/{instance_id}/status"
    assert signed_call("POST", url, creds, report("BUSY"))[1]["state"] == "busy"
    assert call(stack, "GET", f"/v1/requests/{first['request_id']}")[1]["status"] == "consumed"
    time.sleep(0.01)
    assert signed_call("POST", url, creds, report("IDLE"))[1]["state"] == "reserved"
    head = call(stack, "GET", f"/v1/requests/{by_position[0]['request_id']}")[1]
    assert head["status"] == "assigned" and head["recorder"]["instance_id"] == instance_id
    second = call(stack, "GET", f"/v1/requests/{by_position[1]['request_id']}")[1]
    assert (second["status"], second["position"]) == ("queued", 1)


@pytest.mark.parametrize(
    ("token", "status"),
    [
        (None, 401),
        ("not-a-jwt", 401),
        (tokens.hs256(tokens.claims(tenant="acme", lifetime=-60), SECRET), 401),
        (tokens.hs256(tokens.claims(tenant="acme", issuer="someone"), SECRET), 401),
        (tokens.hs256(tokens.claims(tenant="acme", audience="other"), SECRET), 401),
        (tokens.hs256(tokens.claims(tenant="acme"), "another-secret-of-at-least-32-bytes!!"), 401),
        (tokens.unsigned(tokens.claims(tenant="acme")), 401),
        (tokens.hs256(tokens.claims(tenant="globex"), SECRET), 403),
    ],
)
def test_tokens_that_may_not_ask_are_refused_in_the_api_error_shape(
    stack: LocalStack, token: str | None, status: int
) -> None:
    got, body = call(stack, "POST", "/v1/requests", {"room": "r", "kind": "recording"}, token=token)
    assert got == status and set(body["error"]) == {"code", "message"}


def test_idempotent_retry_unknown_ids_and_bad_bodies(stack: LocalStack) -> None:
    key = {"Idempotency-Key": "retry-1"}
    first = call(stack, "POST", "/v1/requests", {"room": "same", "kind": "streaming"}, headers=key)
    again = call(stack, "POST", "/v1/requests", {"room": "same", "kind": "streaming"}, headers=key)
    assert first == again
    assert call(stack, "POST", "/v1/requests", {"room": "other", "kind": "streaming"}, headers=key)[0] == 409
    assert call(stack, "GET", "/v1/requests/req-unknown")[0] == 404
    status, body = call(stack, "POST", "/v1/requests", {"room": "r", "kind": "dance"})
    assert status == 400 and "kind" in body["error"]["message"]
    status, body = call(stack, "DELETE", f"/v1/requests/{first[1]['request_id']}")
    assert status == 200 and body["status"] == "cancelled"


def test_bookings_over_the_api_raise_the_buffer_ahead_of_their_start(stack: LocalStack) -> None:
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 240))
    status, booking = call(stack, "POST", "/v1/bookings", {"start_at": start, "count": 4, "kind": "recording"})
    assert status == 201 and booking["count"] == 4
    assert call(stack, "POST", "/v1/bookings", {"start_at": start, "count": 99, "kind": "recording"})[0] == 400
    listed = call(stack, "GET", "/v1/bookings")[1]["bookings"]
    assert [b["booking_id"] for b in listed] == [booking["booking_id"]]
    stack.evaluate()
    latest = stack.pool()["decisions"][0]
    assert "booked 4" in latest["reason"]
    assert call(stack, "DELETE", f"/v1/bookings/{booking['booking_id']}")[1]["status"] == "cancelled"
    assert call(stack, "DELETE", f"/v1/bookings/{booking['booking_id']}")[0] == 404
