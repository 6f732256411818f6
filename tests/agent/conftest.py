"""The agent's world on loopback: moto Auto Scaling, FakeImds, FakeJibri and a stub of the status API."""

from __future__ import annotations

import hmac
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from agent.agent import Agent
from agent.config import AgentConfig
from sim.aws import MotoServer
from sim.imds import FakeImds
from sim.jibri import FakeJibri
from sim.net import LoopbackServer, free_port

REGION = "us-east-1"
# Deliberately unlike the suite's env credentials ("testing"): a report signed with those would fail the stub.
INSTANCE_CREDENTIALS = {
    "AccessKeyId": "ASIAAGENTTEST0000001",
    "SecretAccessKey": "agent-secret-key-not-to-be-logged",
    "Token": "agent-session-token-not-to-be-logged",
}
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<headers>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})$"
)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class FakeClock:
    """Monotonic time that moves only when told, so report and retry deadlines are exact."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass(frozen=True)
class Group:
    name: str
    instance_id: str
    client: Any

    def protected(self) -> bool:
        reply = self.client.describe_auto_scaling_instances(InstanceIds=[self.instance_id])
        return bool(reply["AutoScalingInstances"][0]["ProtectedFromScaleIn"])

    def set_protected(self, protected: bool) -> None:
        self.client.set_instance_protection(
            InstanceIds=[self.instance_id], AutoScalingGroupName=self.name, ProtectedFromScaleIn=protected
        )


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    signature_error: str | None
    access_key: str | None
    protected_at_arrival: bool

    @property
    def busy_status(self) -> str | None:
        return self.body.get("busy_status") if isinstance(self.body, dict) else None


class StubStatusApi:
    """Records reports, checks their SigV4 signature against the instance role, and answers as the test says.

    By default it answers as the control plane would for a plain recorder: protect while BUSY, never drain.
    """

    def __init__(self, group: Group, credentials: dict[str, str]) -> None:
        self.group = group
        self.credentials = credentials
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._once: deque[tuple[int, Any]] = deque()
        self._always: tuple[int, Any] | None = None
        self._server = LoopbackServer(type("StubStatusHandler", (_StubHandler,), {"api": self}))

    @property
    def url(self) -> str:
        return f"{self._server.url}/api"

    def start(self) -> StubStatusApi:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def respond(self, status: int, body: Any) -> None:
        """Answer every later report like this (body: JSON-able, or bytes sent as they are)."""
        self._always = (status, body)

    def respond_once(self, status: int, body: Any) -> None:
        self._once.append((status, body))

    def reports(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def statuses(self) -> list[str | None]:
        return [r.busy_status for r in self.reports()]

    def receive(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        error, key = self._check_signature(path, headers, raw)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        received = Received(path, headers, raw, body, error, key, self.group.protected())
        with self._lock:
            self.requests.append(received)
        if error is not None:
            return 403, {"error": {"code": "invalid_signature", "message": error}}
        if self._once:
            return self._once.popleft()
        if self._always is not None:
            return self._always
        busy = received.busy_status == "BUSY"
        return 200, {"protect": busy, "drain": False, "state": "busy" if busy else "idle", "version": 3}

    def _check_signature(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[str | None, str | None]:
        lower = {k.lower(): v for k, v in headers.items()}
        match = _AUTH.match(lower.get("authorization", ""))
        if match is None:
            return "no SigV4 Authorization header", None
        if match["key"] != self.credentials["AccessKeyId"]:
            return f"signed with {match['key']}, not the instance role", match["key"]
        if match["service"] != "execute-api" or match["region"] != REGION:
            return "wrong credential scope", match["key"]
        if lower.get("x-amz-security-token") != self.credentials["Token"]:
            return "wrong security token", match["key"]
        signed = match["headers"].split(";")
        missing = [name for name in signed if name not in lower]
        if missing:
            return f"signed headers not sent: {missing}", match["key"]
        request = AWSRequest(
            method="POST",
            url=f"http://{lower['host']}{path}",
            data=raw,
            headers={name: lower[name] for name in signed if name != "host"},
        )
        request.context["timestamp"] = lower.get("x-amz-date", "")
        creds = Credentials(
            self.credentials["AccessKeyId"], self.credentials["SecretAccessKey"], self.credentials["Token"]
        )
        signer = SigV4Auth(creds, "execute-api", REGION)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        if not hmac.compare_digest(expected, match["signature"]):
            return "signature mismatch", match["key"]
        return None, match["key"]


class _StubHandler(BaseHTTPRequestHandler):
    api: StubStatusApi

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body = self.api.receive(self.path, dict(self.headers.items()), raw)
        payload = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def group(moto_server: MotoServer) -> Group:
    """A launch template and a group of one in moto; the instance is the one the agent runs on."""
    name = f"jibri-{uuid.uuid4().hex[:8]}"
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_server.url)
    autoscaling = boto3.client("autoscaling", region_name=REGION, endpoint_url=moto_server.url)
    ec2.create_launch_template(
        LaunchTemplateName=name, LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "c5.xlarge"}
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": name, "Version": "$Latest"},
        MinSize=0,
        MaxSize=2,
        DesiredCapacity=1,
        AvailabilityZones=["us-east-1a"],
    )
    found = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
    return Group(name=name, instance_id=found["Instances"][0]["InstanceId"], client=autoscaling)


@pytest.fixture
def imds(group: Group) -> Iterator[FakeImds]:
    fake = FakeImds(group.instance_id, credentials=INSTANCE_CREDENTIALS).start()
    yield fake
    fake.stop()


@pytest.fixture
def status_api(group: Group) -> Iterator[StubStatusApi]:
    api = StubStatusApi(group, INSTANCE_CREDENTIALS).start()
    yield api
    api.stop()


@pytest.fixture
def webhook_port() -> int:
    return free_port()


@pytest.fixture
def jibri(webhook_port: int) -> Iterator[FakeJibri]:
    fake = FakeJibri("jibri-test", subscribers=[f"http://127.0.0.1:{webhook_port}"]).start()
    yield fake
    fake.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Starter:
    """The injected Jibri starter (or restarter): counts calls and brings the fake Jibri back."""

    def __init__(self, jibri: FakeJibri) -> None:
        self.jibri = jibri
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        self.jibri.restart()


@pytest.fixture
def starter(jibri: FakeJibri) -> Starter:
    return Starter(jibri)


@pytest.fixture
def restarter(jibri: FakeJibri) -> Starter:
    """The injected command for an EXPIRED Jibri, kept apart from the starter so tests tell the two apart."""
    return Starter(jibri)


@pytest.fixture
def recordings_dir(tmp_path: Any) -> str:
    """Jibri's recordings directory, which the agent requires while uploads are enabled."""
    path = tmp_path / "jibri-recordings"
    path.mkdir()
    return str(path)


@pytest.fixture
def config(
    moto_server: MotoServer,
    imds: FakeImds,
    jibri: FakeJibri,
    status_api: StubStatusApi,
    webhook_port: int,
    recordings_dir: str,
) -> AgentConfig:
    return AgentConfig(
        api_url=status_api.url,
        imds_url=imds.url,
        aws_endpoint_url=moto_server.url,
        jibri_health_url=jibri.health_url,
        jibri_internal_url=jibri.internal_url,
        webhook_listen=f"127.0.0.1:{webhook_port}",
        poll_interval_seconds=5,
        report_interval_seconds=30,
        request_timeout_seconds=2,
        recordings_dir=recordings_dir,
    )


@pytest.fixture
def make_agent(
    config: AgentConfig, clock: FakeClock, starter: Starter, restarter: Starter
) -> Iterator[Callable[..., Agent]]:
    """Agents on the fake clock (deadlines move only when a test advances it); closed after the test."""
    made: list[Agent] = []

    def make(**overrides: Any) -> Agent:
        settings = {name: overrides.pop(name) for name in list(overrides) if name in AgentConfig.__dataclass_fields__}
        options: dict[str, Any] = {
            "clock": clock,
            "jibri_starter": starter,
            "jibri_restarter": restarter,
            "rng": lambda: 0.5,
        }
        options.update(overrides)
        agent = Agent(AgentConfig(**{**config.__dict__, **settings}), **options)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close()


class RunningAgent:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.stop = threading.Event()
        self.thread = threading.Thread(target=agent.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Agent:
        self.thread.start()
        return self.agent

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the agent did not stop"


@pytest.fixture
def running() -> Callable[[Agent], RunningAgent]:
    return RunningAgent


@pytest.fixture
def wait() -> Callable[..., Any]:
    return wait_until
