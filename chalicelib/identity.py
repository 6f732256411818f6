"""Who is calling: the IAM identity API Gateway puts in the request context."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import Forbidden, Unauthorized

# API Gateway writes the caller of an IAM-authorized route as the STS ARN of
# its role session; for an EC2 instance role the session name is the instance id.
_ASSUMED_ROLE = re.compile(
    r"^arn:aws[\w-]*:sts::(?P<account>\d{12}):assumed-role/(?P<role>[\w+=,.@-]+)/(?P<session>.+)$"
)


@dataclass(frozen=True)
class Caller:
    arn: str
    account: str | None = None
    role: str | None = None
    session: str | None = None


def caller_from_context(request_context: Mapping[str, Any] | None) -> Caller:
    identity = (request_context or {}).get("identity") or {}
    arn = identity.get("userArn")
    if not arn:
        raise Unauthorized("this route needs a SigV4-signed request from an IAM identity")
    match = _ASSUMED_ROLE.match(arn)
    if not match:
        return Caller(arn=arn, account=identity.get("accountId"))
    return Caller(arn=arn, account=match["account"], role=match["role"], session=match["session"])


def require_agent_for(caller: Caller, agent_role: str, instance_id: str) -> None:
    """The caller must be the agent role's session of exactly this instance."""
    if caller.role != agent_role:
        raise Forbidden(f"caller {caller.arn} is not the Jibri agent role {agent_role!r}")
    if caller.session != instance_id:
        raise Forbidden(
            f"caller is the agent of {caller.session}, not of {instance_id}; an agent reports only for itself"
        )
