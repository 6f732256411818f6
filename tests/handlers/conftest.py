from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chalice.local import LambdaContext

import app as app_module
from chalicelib.autoscaling import GroupInstance, GroupSize, GroupState
from chalicelib.bookings import MemoryBookingStore
from chalicelib.config import Settings
from chalicelib.control import MemoryControlStore
from chalicelib.demand import MemoryDemandStore
from chalicelib.memory_registry import MemoryRegistry
from chalicelib.runtime import Runtime
from chalicelib.tickets import MemoryTicketStore
from sim.clock import ManualClock

EVENTS = Path(__file__).resolve().parent.parent / "events"
INSTANCE = "i-0123456789abcdef0"
AGENT_ROLE = "jibri-agent-dev"
START = 1_795_482_123.0  # 2026-11-24T01:02:03Z, the fixtures' request time


class FakeAutoScaling:
    """The Auto Scaling port as the handlers see it; the boto3 adapter is tested on moto."""

    def __init__(self, members: set[str]) -> None:
        self.group_name = "jibri-dev"
        self.members = members
        self.membership_checks: list[str] = []
        self.calls: list[tuple[str, object]] = []
        self.protected: set[str] = set()

    def is_member(self, instance_id: str) -> bool:
        self.membership_checks.append(instance_id)
        return instance_id in self.members

    def group_size(self) -> GroupSize:
        return GroupSize(desired=len(self.members), minimum=1, maximum=20)

    def describe(self) -> GroupState:
        instances = tuple(GroupInstance(i, "InService", protected=i in self.protected) for i in sorted(self.members))
        return GroupState(self.group_size(), instances)

    def complete_lifecycle_action(self, hook_name: str, token: str, instance_id: str, result: str) -> None:
        self.calls.append(("complete", (token, result)))

    def record_lifecycle_action_heartbeat(self, hook_name: str, token: str, instance_id: str) -> None:
        self.calls.append(("heartbeat", token))

    def set_instance_health(self, instance_id: str, healthy: bool) -> None:
        self.calls.append(("health", (instance_id, healthy)))

    def set_instance_protection(self, instance_ids: list[str], protected: bool) -> None:
        self.calls.append(("protect", (tuple(instance_ids), protected)))
        for instance_id in instance_ids:
            (self.protected.add if protected else self.protected.discard)(instance_id)

    def scaling(self) -> list[tuple[str, object]]:
        return [c for c in self.calls if c[0] in ("desired", "terminate")]

    def set_desired_capacity(self, desired: int) -> None:
        self.calls.append(("desired", desired))

    def terminate(self, instance_id: str) -> None:
        self.calls.append(("terminate", instance_id))

    def put_warm_pool(self, min_size: int) -> None:
        self.calls.append(("warm_pool", min_size))


class Api:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def event(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(json.loads((EVENTS / name).read_text()))

    def invoke(self, event: dict[str, Any]) -> tuple[int, Any]:
        context = LambdaContext(function_name="jibri-autoscaler-dev", memory_size=512)
        result = app_module.app(event, context)
        body = result["body"]
        return result["statusCode"], json.loads(body) if body else None

    def report(
        self,
        body: Any = None,
        *,
        raw: str | None = None,
        instance_id: str = INSTANCE,
        caller_arn: str | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        event = self.event("apigateway_status_report.json")
        event["path"] = f"/v1/recorders/{instance_id}/status"
        event["pathParameters"] = {"instance_id": instance_id}
        if caller_arn is not None:
            event["requestContext"]["identity"]["userArn"] = caller_arn
        if body is not None or raw is not None:
            event["body"] = raw if raw is not None else json.dumps(body)
        event["headers"]["Content-Type"] = content_type
        event["multiValueHeaders"]["Content-Type"] = [content_type]
        return self.invoke(event)

    def pool(self, query: dict[str, str] | None = None) -> tuple[int, Any]:
        event = self.event("apigateway_get_pool.json")
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
        return self.invoke(event)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def group() -> FakeAutoScaling:
    return FakeAutoScaling({INSTANCE, "i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2", "i-0aaaaaaaaaaaaaaa3"})


@pytest.fixture
def registry() -> MemoryRegistry:
    return MemoryRegistry("jibri-dev")


@pytest.fixture
def demand() -> MemoryDemandStore:
    return MemoryDemandStore()


@pytest.fixture
def control() -> MemoryControlStore:
    return MemoryControlStore()


@pytest.fixture
def tickets() -> MemoryTicketStore:
    return MemoryTicketStore()


@pytest.fixture
def api(
    clock: ManualClock,
    group: FakeAutoScaling,
    registry: MemoryRegistry,
    demand: MemoryDemandStore,
    control: MemoryControlStore,
    tickets: MemoryTicketStore,
) -> Iterator[Api]:
    settings = Settings(table_name="unused", asg_name="jibri-dev", agent_role_name=AGENT_ROLE, pool_name="jibri-dev")
    runtime = Runtime(
        settings=settings,
        registry=registry,
        autoscaling=group,
        clock=clock,
        demand=demand,
        control=control,
        tickets=tickets,
        bookings=MemoryBookingStore(),
    )
    previous, app_module.runtime = app_module.runtime, runtime
    try:
        yield Api(runtime)
    finally:
        app_module.runtime = previous


def report_body(busy: str = "IDLE", health: str = "HEALTHY", pending: int = 0, sent_at: str = "2026-11-24T01:02:03Z"):
    return {
        "busy_status": busy,
        "health": health,
        "pending_uploads": pending,
        "sent_at": sent_at,
        "jibri": {"status": {"busyStatus": busy, "health": {"healthStatus": health, "details": {}}}},
    }
