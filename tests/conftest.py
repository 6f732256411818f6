from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.aws import MotoServer, use_fake_credentials  # noqa: E402

# Records each Lambda's AWS calls and checks them against its IAM policy (tests/aws_calls.py).
pytest_plugins = ["tests.aws_calls"]

# Nothing in the suite may reach a real AWS account.
use_fake_credentials()
os.environ.pop("AWS_ENDPOINT_URL", None)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws(moto_server: MotoServer) -> boto3.session.Session:
    """A boto3 session whose clients talk to moto in server mode."""

    class _Session(boto3.session.Session):
        def client(self, *args, **kwargs):  # type: ignore[no-untyped-def,override]
            kwargs.setdefault("endpoint_url", moto_server.url)
            return super().client(*args, **kwargs)

        def resource(self, *args, **kwargs):  # type: ignore[no-untyped-def,override]
            kwargs.setdefault("endpoint_url", moto_server.url)
            return super().resource(*args, **kwargs)

    return _Session(region_name="us-east-1")


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]
