"""AWS on loopback: moto in server mode, for tests, the local stack and the demo."""

from __future__ import annotations

import logging
import os
import threading
import urllib.request
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from sim.net import free_port

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class _OneDynamoDBRequestAtATime:
    """WSGI wrapper: DynamoDB applies each request to an item atomically (an ADD counter, a conditional
    write), moto's threaded server does not, and concurrent requests can lose an update. DynamoDB
    requests therefore take turns here; everything else (S3 parts, above all) stays concurrent."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            with self._lock:
                return list(self._app(environ, start_response))
        return self._app(environ, start_response)


class _ThreadedMotoServer(ThreadedMotoServer):
    def _server_entry(self) -> None:
        app = _OneDynamoDBRequestAtATime(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        self._server = _ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(request, timeout=10).close()


def use_fake_credentials(environ: dict[str, str] | None = None) -> None:
    """Point boto3 at nothing real: fixed fake credentials, one region."""
    env = os.environ if environ is None else environ
    for name, value in FAKE_CREDENTIALS.items():
        env[name] = value
    env.pop("AWS_PROFILE", None)


def create_group(session: Any, name: str, *, desired: int, minimum: int = 0, maximum: int = 10) -> list[str]:
    """An Auto Scaling group of recorders in moto, with its instances; returns their ids."""
    ec2 = session.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    template_name = f"{name}-template"
    existing = ec2.describe_launch_templates(Filters=[{"Name": "launch-template-name", "Values": [template_name]}])[
        "LaunchTemplates"
    ]
    if not existing:
        ec2.create_launch_template(
            LaunchTemplateName=template_name, LaunchTemplateData={"ImageId": image, "InstanceType": "c5.xlarge"}
        )
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    autoscaling = session.client("autoscaling")
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": template_name, "Version": "$Latest"},
        MinSize=minimum,
        MaxSize=maximum,
        DesiredCapacity=desired,
        VPCZoneIdentifier=subnet,
    )
    autoscaling.suspend_processes(AutoScalingGroupName=name, ScalingProcesses=["AZRebalance"])
    return group_instances(session, name)


def group_instances(session: Any, name: str) -> list[str]:
    groups = session.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return sorted(i["InstanceId"] for g in groups["AutoScalingGroups"] for i in g["Instances"])
