"""AWS with the instance role only: a boto3 session fed by IMDS, and the few Auto Scaling calls the agent makes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import CredentialResolver, InstanceMetadataProvider
from botocore.utils import InstanceMetadataFetcher


def instance_session(imds_url: str, region: str, timeout: float, num_attempts: int = 3) -> boto3.Session:
    """A session whose only credential source is the instance role, so stray env or file credentials never sign."""
    fetcher = InstanceMetadataFetcher(base_url=imds_url, timeout=timeout, num_attempts=num_attempts)
    provider = InstanceMetadataProvider(iam_role_fetcher=fetcher)
    core = botocore.session.Session()
    core.register_component("credential_provider", CredentialResolver(providers=[provider]))
    core.set_config_variable("region", region)
    return boto3.Session(botocore_session=core, region_name=region)


@dataclass(frozen=True)
class Membership:
    asg_name: str
    protected: bool
    lifecycle_state: str


class NotInGroup(RuntimeError):
    pass


class AutoScaling:
    def __init__(self, client: Any, instance_id: str) -> None:
        self._client = client
        self._instance_id = instance_id

    @classmethod
    def from_session(
        cls, session: boto3.Session, instance_id: str, region: str, endpoint_url: str | None, timeout: float
    ) -> AutoScaling:
        config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2, "mode": "standard"})
        client = session.client("autoscaling", region_name=region, endpoint_url=endpoint_url, config=config)
        return cls(client, instance_id)

    def membership(self) -> Membership:
        reply = self._client.describe_auto_scaling_instances(InstanceIds=[self._instance_id])
        for item in reply.get("AutoScalingInstances", []):
            if item.get("InstanceId") == self._instance_id:
                return Membership(
                    asg_name=str(item["AutoScalingGroupName"]),
                    protected=bool(item.get("ProtectedFromScaleIn", False)),
                    lifecycle_state=str(item.get("LifecycleState", "")),
                )
        raise NotInGroup(f"instance {self._instance_id} is not in any Auto Scaling group")

    def set_protection(self, asg_name: str, protected: bool) -> None:
        self._client.set_instance_protection(
            InstanceIds=[self._instance_id], AutoScalingGroupName=asg_name, ProtectedFromScaleIn=protected
        )
