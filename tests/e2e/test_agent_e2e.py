"""The real agent, a fake Jibri and fake IMDS, over real HTTP to the app behind the local gateway,
with moto (server mode) as DynamoDB and Auto Scaling."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.registry import transition
from chalicelib.states import RecorderState
from sim.client import signed_call
from sim.gateway import Observed
from sim.stack import LocalStack
from tests.e2e.waiting import wait_until

S = RecorderState


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    with LocalStack(group_name="jibri-e2e", group_size=2) as running:
        yield running


def recorder_view(stack: LocalStack, instance_id: str) -> dict[str, Any] | None:
    return next((r for r in stack.pool(limit="100")["recorders"] if r["instance_id"] == instance_id), None)


def in_state(stack: LocalStack, instance_id: str, state: str) -> Callable[[], bool]:
    return lambda: (recorder_view(stack, instance_id) or {}).get("state") == state


def test_busy_is_protected_in_auto_scaling_before_the_registry_shows_it_and_idle_clears_it(
    stack: LocalStack,
) -> None:
    instance = stack.instance_ids[0]
    registry = stack._app_module.runtime.registry
    seen: list[tuple[str, bool, str | None]] = []

    def observe(request: Observed) -> None:
        # Runs when a report reaches the gateway, before the app applies it.
        if request.path.endswith("/status"):
            stored = registry.get(instance)
            seen.append(
                (json.loads(request.body)["busy_status"], stack.protected(instance), stored.state if stored else None)
            )

    assert stack.gateway is not None
    stack.gateway.on_request = observe
    recorder = stack.add_recorder(instance)
    wait_until(in_state(stack, instance, "idle"), "the recorder to register idle")
    assert stack.protected(instance) is False

    recorder.jibri.set_busy_status("BUSY")
    wait_until(in_state(stack, instance, "busy"), "GET /v1/pool to show the recorder busy")
    first_busy = next(entry for entry in seen if entry[0] == "BUSY")
    assert first_busy[1] is True, "the BUSY report arrived before scale-in protection was set"
    assert first_busy[2] is S.IDLE, "the registry showed busy before the first BUSY report was applied"
    pool = stack.pool()
    assert pool["counts"]["busy"] == 1 and pool["group"]["name"] == "jibri-e2e"

    recorder.jibri.set_busy_status("IDLE")
    wait_until(lambda: not stack.protected(instance), "protection to clear once idle")
    wait_until(in_state(stack, instance, "idle"), "the registry to show the recorder idle again")


def test_a_drain_takes_jibri_out_of_service_and_a_withdrawn_drain_brings_it_back(stack: LocalStack) -> None:
    instance = stack.instance_ids[1]
    registry = stack._app_module.runtime.registry
    recorder = stack.add_recorder(instance)
    wait_until(in_state(stack, instance, "idle"), "the recorder to register idle")

    idle = registry.get(instance)
    assert idle is not None
    registry.save(idle, transition(idle, S.DRAINING, time.time()))  # what the evaluator does for scale-in
    wait_until(
        lambda: recorder.jibri.graceful_shutdown_calls == 1 and not recorder.jibri.running,
        "Jibri to shut down gracefully",
    )
    wait_until(
        lambda: (recorder_view(stack, instance) or {}).get("busy_status") == "OFFLINE", "the agent to report OFFLINE"
    )
    assert recorder_view(stack, instance)["state"] == "draining"  # type: ignore[index]

    draining = registry.get(instance)
    assert draining is not None
    registry.save(draining, transition(draining, S.IDLE, time.time()))  # the drain is withdrawn
    wait_until(lambda: recorder.jibri.running, "the agent to start Jibri again")
    wait_until(lambda: (recorder_view(stack, instance) or {}).get("busy_status") == "IDLE", "Jibri back in service")


def test_an_agent_cannot_report_for_another_instance(stack: LocalStack) -> None:
    mine, theirs = stack.instance_ids
    assert stack.gateway is not None
    my_credentials = stack.issuer.role_session(stack.agent_role, mine)
    report = {
        "busy_status": "IDLE",
        "health": "HEALTHY",
        "pending_uploads": 0,
        "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    status, body = signed_call("POST", f"{stack.gateway.url}/v1/recorders/{theirs}/status", my_credentials, report)
    assert status == 403 and body["error"]["code"] == "forbidden"
    assert recorder_view(stack, theirs) is None
    status, body = signed_call("POST", f"{stack.gateway.url}/v1/recorders/{mine}/status", my_credentials, report)
    assert (status, body["state"]) == (200, "idle")


def test_the_evaluator_drains_and_terminates_idle_recorders_only() -> None:
    settings = {"SCALE_IN_HOLD_SECONDS": "0", "SERVICE_LEVEL": "0.5", "MIN_IDLE": "1", "OFFLINE_CONFIRM_SECONDS": "0"}
    with LocalStack(group_name="jibri-e2e-scale-in", group_size=4, settings=settings) as stack:
        stack.sync_recorders()
        wait_until(lambda: stack.pool()["counts"]["idle"] == 4, "four recorders to register")
        busy = stack.instance_ids[0]
        stack.recorders[busy].jibri.set_busy_status("BUSY")
        wait_until(in_state(stack, busy, "busy"), "the recording to start")

        stack.evaluate()  # buffer 1: three idle is a surplus of two
        draining = [r["instance_id"] for r in stack.pool(state="draining")["recorders"]]
        assert len(draining) == 2 and busy not in draining
        wait_until(
            lambda: all((recorder_view(stack, i) or {}).get("busy_status") == "OFFLINE" for i in draining),
            "the drained agents to take Jibri out of service",
        )
        stack.evaluate()
        _, stopped = stack.sync_recorders()
        assert sorted(stopped) == sorted(draining)
        pool = stack.pool()
        assert pool["group"]["desired"] == 2 and sorted(pool["decisions"][0]["terminated"]) == sorted(draining)
        assert stack.protected(busy) and recorder_view(stack, busy)["state"] == "busy"  # type: ignore[index]
