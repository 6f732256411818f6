"""The local stack: moto as AWS, the Chalice app behind the local gateway, and
simulated Jibri instances each running the real agent.

Tests and the demo build on it; nothing here ships to Lambda.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

import boto3
from chalice.local import LambdaContext

from agent import finalize
from agent.agent import Agent
from agent.config import parse_config
from chalicelib.auth import JwtAuthorizer
from chalicelib.autoscaling import AutoScaling
from chalicelib.bootstrap import bootstrap
from chalicelib.clock import Clock, SystemClock
from chalicelib.config import Settings
from chalicelib.runtime import Runtime
from sim.aws import FAKE_CREDENTIALS, MotoServer, create_group, group_instances
from sim.client import signed_call
from sim.credentials import CredentialIssuer, IssuedCredentials
from sim.events import scheduled_event
from sim.gateway import LocalGateway
from sim.imds import FakeImds
from sim.jibri import FakeJibri
from sim.net import free_port


@dataclass
class SimRecorder:
    """One Jibri instance: its Jibri, its instance metadata, and the agent between them."""

    instance_id: str
    jibri: FakeJibri
    imds: FakeImds
    agent: Agent
    recordings_dir: str = ""
    spool_dir: str = ""
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def finish_recording(self, session_id: str, files: dict[str, bytes], metadata: dict[str, Any]) -> str:
        """What Jibri does at the end of a recording: a session directory, then the finalize script."""
        session_dir = os.path.join(self.recordings_dir, session_id)
        os.makedirs(session_dir)
        for name, data in files.items():
            with open(os.path.join(session_dir, name), "wb") as out:
                out.write(data)
        with open(os.path.join(session_dir, "metadata.json"), "w") as out:
            json.dump(metadata, out)
        code = finalize.main(["--spool-dir", self.spool_dir, session_dir])
        if code != 0:
            raise RuntimeError(f"the finalize script exited {code} for {session_dir}")
        self.agent.wake()
        return session_dir

    def start(self) -> SimRecorder:
        self.imds.start()
        self.jibri.start()
        self.thread = threading.Thread(
            target=self.agent.run, args=(self.stop,), name=f"agent-{self.instance_id}", daemon=True
        )
        self.thread.start()
        return self

    def shutdown(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.jibri.stop()
        self.imds.stop()


class LocalStack:
    def __init__(
        self,
        *,
        group_name: str = "jibri-local",
        group_size: int = 2,
        agent_role: str = "jibri-agent-local",
        clock: Clock | None = None,
        poll_interval_seconds: float = 0.2,
        report_interval_seconds: float = 5.0,
        agent_log_level: str = "INFO",
        settings: dict[str, str] | None = None,
        s3_endpoint_url: str | None = None,
        part_size: int | None = None,
        autoscaling: AutoScaling | None = None,
        autoscaling_url: str | None = None,
    ) -> None:
        # A simulated group instead of moto's (which has no lifecycle engine): the control plane's port,
        # and the Auto Scaling endpoint its agents call.
        self.autoscaling = autoscaling
        self.autoscaling_url = autoscaling_url
        self.s3_endpoint_url = s3_endpoint_url  # e.g. an S3Proxy in front of moto
        self.part_size = part_size
        self.workdir = tempfile.mkdtemp(prefix="jibri-stack-")
        self.recordings_bucket = f"{group_name}-recordings"
        self.ready_topic_name = f"{group_name}-recording-ready"
        self.agent_log_level = agent_log_level
        self.extra_settings = settings or {}
        self.group_name = group_name
        self.group_size = group_size
        self.agent_role = agent_role
        self.clock = clock or SystemClock()
        self.poll_interval_seconds = poll_interval_seconds
        self.report_interval_seconds = report_interval_seconds
        self.moto = MotoServer()
        self.issuer = CredentialIssuer()
        self.recorders: dict[str, SimRecorder] = {}
        self.instance_ids: list[str] = []
        self._saved_env: dict[str, str | None] = {}
        self._saved_runtime: Runtime | None = None
        self.gateway: LocalGateway | None = None
        self.operator: IssuedCredentials = self.issuer.user("operator")

    def start(self) -> LocalStack:
        self.moto.start()
        self._set_env({**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": self.moto.url})
        self.session = boto3.session.Session(region_name=FAKE_CREDENTIALS["AWS_DEFAULT_REGION"])
        self.ready_topic_arn = self.session.client("sns").create_topic(Name=self.ready_topic_name)["TopicArn"]
        self._set_env(
            {
                "TABLE_NAME": f"{self.group_name}-registry",
                "ASG_NAME": self.group_name,
                "POOL_NAME": self.group_name,
                "AGENT_ROLE_NAME": self.agent_role,
                "RECORDINGS_BUCKET": self.recordings_bucket,
                "RECORDING_READY_TOPIC_ARN": self.ready_topic_arn,
                **({"AWS_ENDPOINT_URL_S3": self.s3_endpoint_url} if self.s3_endpoint_url else {}),
                **self.extra_settings,
            }
        )
        settings = Settings.from_env()
        bootstrap(settings, self.session)
        s3 = self.session.client("s3")
        if settings.recordings_bucket and not any(
            b["Name"] == settings.recordings_bucket for b in s3.list_buckets().get("Buckets", [])
        ):
            s3.create_bucket(Bucket=settings.recordings_bucket)
        self.instance_ids = create_group(
            self.session, self.group_name, desired=self.group_size, maximum=max(10, self.group_size)
        )
        import app as app_module  # the deployed app, wired to this stack

        self._saved_runtime = app_module.runtime
        app_module.runtime = Runtime(settings=settings, clock=self.clock, autoscaling=self.autoscaling)
        app_module.jwt_authorizer = JwtAuthorizer()  # reads this stack's JWT_* settings
        self._app_module = app_module
        self.gateway = LocalGateway(app_module.app, self.issuer).start()
        return self

    def add_recorder(self, instance_id: str, target_lifecycle_state: str = "InService") -> SimRecorder:
        assert self.gateway is not None, "start() the stack first"
        credentials = self.issuer.role_session(self.agent_role, instance_id)
        imds = FakeImds(
            instance_id,
            credentials=credentials.for_imds(),
            role_name=self.agent_role,
            target_lifecycle_state=target_lifecycle_state,
        )
        webhook_port = free_port()
        recordings_dir = os.path.join(self.workdir, instance_id, "recordings")
        spool_dir = os.path.join(self.workdir, instance_id, "spool")
        os.makedirs(recordings_dir, exist_ok=True)
        os.makedirs(spool_dir, exist_ok=True)
        jibri = FakeJibri(f"jibri-{instance_id}", subscribers=[f"http://127.0.0.1:{webhook_port}"])
        imds.start()  # the agent's config needs its address
        config = parse_config(
            {
                "api_url": self.gateway.url,
                "imds_url": imds.url,
                "aws_endpoint_url": self.autoscaling_url or self.moto.url,
                "asg_name": self.group_name,
                "jibri_health_url": jibri.health_url,
                "jibri_internal_url": jibri.internal_url,
                "webhook_listen": f"127.0.0.1:{webhook_port}",
                "poll_interval_seconds": str(self.poll_interval_seconds),
                "report_interval_seconds": str(self.report_interval_seconds),
                "request_timeout_seconds": "5",
                "log_level": self.agent_log_level,
                "spool_dir": spool_dir,
                "recordings_dir": recordings_dir,
                **({"part_size": str(self.part_size)} if self.part_size else {}),
            }
        )
        agent = Agent(config, jibri_starter=jibri.restart, jibri_restarter=jibri.restart)
        recorder = SimRecorder(instance_id, jibri, imds, agent, recordings_dir=recordings_dir, spool_dir=spool_dir)
        self.recorders[instance_id] = recorder.start()
        return recorder

    def evaluate(self) -> None:
        """What the one-minute schedule does: EventBridge invokes the evaluator Lambda."""
        event = scheduled_event("jibri-autoscaler-local-evaluate_pool-event", self.clock.now())
        self._app_module.evaluate_pool(event, LambdaContext("jibri-autoscaler-local-evaluate_pool", 512))

    def sync_recorders(self) -> tuple[list[str], list[str]]:
        """Boot an agent on each new group instance and stop those the group terminated."""
        in_group = set(group_instances(self.session, self.group_name))
        started = [self.add_recorder(i).instance_id for i in sorted(in_group - set(self.recorders))]
        stopped = sorted(set(self.recorders) - in_group)
        for instance_id in stopped:
            self.recorders.pop(instance_id).shutdown()
        return started, stopped

    def pool(self, **query: str) -> dict[str, Any]:
        assert self.gateway is not None
        suffix = "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
        status, body = signed_call("GET", f"{self.gateway.url}/v1/pool{suffix}", self.operator)
        if status != 200:
            raise RuntimeError(f"GET /v1/pool answered {status}: {body}")
        return dict(body)

    def protected(self, instance_id: str) -> bool:
        found = self.session.client("autoscaling").describe_auto_scaling_instances(InstanceIds=[instance_id])
        return any(i["ProtectedFromScaleIn"] for i in found["AutoScalingInstances"])

    def stop(self) -> None:
        for recorder in self.recorders.values():
            recorder.shutdown()
        if self.gateway is not None:
            self.gateway.stop()
        if self._saved_runtime is not None:
            self._app_module.runtime = self._saved_runtime
        self.moto.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value
