"""The fake IMDS is strict about IMDSv2, and botocore's own fetcher gets the role's credentials from it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from botocore.utils import InstanceMetadataFetcher

from sim.imds import FakeImds

CREDENTIALS = {"AccessKeyId": "ASIAFAKEIMDS00000001", "SecretAccessKey": "secret", "Token": "token"}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    fake = FakeImds("i-0abc", credentials=CREDENTIALS, role_name="jibri-role", private_ip="10.1.2.3").start()
    yield fake
    fake.stop()


def _call(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=b"" if method == "PUT" else None)
    try:
        with _OPENER.open(request, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _token(imds: FakeImds, ttl: str = "60") -> str:
    status, token = _call(f"{imds.url}/latest/api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": ttl})
    assert status == 200
    return token


def _get(imds: FakeImds, path: str, token: str | None) -> tuple[int, str]:
    headers = {"X-aws-ec2-metadata-token": token} if token else {}
    return _call(f"{imds.url}/latest/{path}", headers=headers)


@pytest.mark.parametrize("ttl", [None, "0", "21601", "ten", ""])
def test_token_needs_a_ttl_from_1_to_21600(imds, ttl):
    headers = {} if ttl is None else {"X-aws-ec2-metadata-token-ttl-seconds": ttl}
    assert _call(f"{imds.url}/latest/api/token", "PUT", headers)[0] == 400


def test_gets_need_a_valid_token(imds):
    assert _get(imds, "meta-data/instance-id", None)[0] == 401
    assert _get(imds, "meta-data/instance-id", "made-up")[0] == 401
    assert _get(imds, "meta-data/instance-id", _token(imds, "1"))[1] == "i-0abc"
    assert _get(imds, "meta-data/instance-id", _token(imds, "21600"))[1] == "i-0abc"
    assert imds.rejected_requests == 2


def test_revoked_tokens_are_refused(imds):
    token = _token(imds)
    imds.revoke_tokens()
    assert _get(imds, "meta-data/instance-id", token)[0] == 401


def test_metadata_paths(imds):
    token = _token(imds)
    assert _get(imds, "meta-data/placement/region", token) == (200, "us-east-1")
    assert _get(imds, "meta-data/placement/availability-zone", token) == (200, "us-east-1a")
    assert _get(imds, "meta-data/local-ipv4", token) == (200, "10.1.2.3")
    assert _get(imds, "meta-data/autoscaling/target-lifecycle-state", token) == (200, "InService")
    imds.target_lifecycle_state = "Terminated"
    assert _get(imds, "meta-data/autoscaling/target-lifecycle-state", token) == (200, "Terminated")
    assert _get(imds, "meta-data/iam/security-credentials/", token) == (200, "jibri-role")
    document = json.loads(_get(imds, "dynamic/instance-identity/document", token)[1])
    assert document["instanceId"] == "i-0abc" and document["region"] == "us-east-1"
    assert document["privateIp"] == "10.1.2.3" and document["availabilityZone"] == "us-east-1a"
    assert _get(imds, "meta-data/nothing-here", token)[0] == 404


def test_a_lifecycle_change_is_seen_on_the_next_read(imds):
    token = _token(imds)
    path = "meta-data/autoscaling/target-lifecycle-state"
    imds.target_lifecycle_state = "Warmed:Stopped"
    assert _get(imds, path, token) == (200, "Warmed:Stopped")
    imds.target_lifecycle_state = "InService"
    assert _get(imds, path, token) == (200, "InService")
    imds.target_lifecycle_state = None  # not in a group: IMDS has no such entry
    assert _get(imds, path, token)[0] == 404


def test_role_credentials_shape(imds):
    status, text = _get(imds, "meta-data/iam/security-credentials/jibri-role", _token(imds))
    body = json.loads(text)
    assert status == 200
    assert set(body) == {"Code", "LastUpdated", "Type", "AccessKeyId", "SecretAccessKey", "Token", "Expiration"}
    assert body["Code"] == "Success" and body["Type"] == "AWS-HMAC"
    assert (body["AccessKeyId"], body["SecretAccessKey"], body["Token"]) == ("ASIAFAKEIMDS00000001", "secret", "token")
    assert body["Expiration"].endswith("Z") and body["Expiration"] > body["LastUpdated"]


def test_botocore_fetcher_reads_the_role(imds):
    fetched = InstanceMetadataFetcher(base_url=imds.url, timeout=2, num_attempts=1).retrieve_iam_role_credentials()
    assert fetched["role_name"] == "jibri-role"
    assert (fetched["access_key"], fetched["secret_key"], fetched["token"]) == (
        "ASIAFAKEIMDS00000001",
        "secret",
        "token",
    )
    assert imds.token_requests == 1


def test_credentials_must_be_complete():
    with pytest.raises(ValueError, match="Token"):
        FakeImds("i-1", credentials={"AccessKeyId": "a", "SecretAccessKey": "b"})
