"""A SigV4-signing HTTP client for IAM routes: what an operator's tooling (or awscurl) does."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any
from unittest import mock

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sim.credentials import IssuedCredentials


def sign_headers(
    method: str,
    url: str,
    creds: IssuedCredentials,
    body: bytes = b"",
    *,
    region: str = "us-east-1",
    service: str = "execute-api",
    at: float | None = None,
) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    credentials = Credentials(creds.access_key, creds.secret_key, creds.token or None)
    signer = SigV4Auth(credentials, service, region)
    if at is None:
        signer.add_auth(request)
    else:  # sign as if at another moment, to show the gateway refuses it
        moment = datetime.fromtimestamp(at, tz=UTC).replace(tzinfo=None)
        with mock.patch("botocore.auth.get_current_datetime", return_value=moment):
            signer.add_auth(request)
    return dict(request.headers.items())


def call(method: str, url: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body if body else None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def signed_call(method: str, url: str, creds: IssuedCredentials, payload: Any = None) -> tuple[int, Any]:
    body = b"" if payload is None else json.dumps(payload).encode()
    return call(method, url, sign_headers(method, url, creds, body), body)
