"""Random interleavings of everything that reaches the control plane, with the invariants of
DESIGN.md checked after every step.

Steps: agents' status reports (fresh, held back and delivered late, duplicated), Jitsi's
requests and cancellations (with and without idempotency keys), lifecycle actions delivered
late, out of order and more than once, evaluator runs, recordings and uploads starting and
ending, agents crashing and restarting, terminations nobody in the control plane asked for,
and Auto Scaling calls failing (throttling, 5xx, timeouts, a reply lost after the call took
effect) anywhere in a decision.

Invariants: no recorder the control plane knows to be busy, reserved or uploading is
terminated at its request, released by it, or lost to a hook timeout it had a run to prevent
(pool_world.py says how each termination is judged); no recorder is assigned to two tickets;
desired capacity stays within [min, max] and is never asked outside it; a duplicate report or
lifecycle event changes nothing.
"""

from __future__ import annotations

import ast
import logging
import os

from hypothesis import reproduce_failure
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from chalicelib import observability
from chalicelib.assignment import Conflict
from tests.property.faulty_aws import FAULTS
from tests.property.pool_world import PoolWorld
from tests.property.profiles import profile

METHODS = (
    "describe",
    "set_desired_capacity",
    "terminate",
    "complete_lifecycle_action",
    "record_lifecycle_action_heartbeat",
    "set_instance_health",
    "set_instance_protection",
    "is_member",
)
ROOMS = ("alpha", "beta", "gamma")
KEYS = (None, None, "key-1", "key-2")


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._level = observability.logger.log_level
        observability.logger.setLevel(logging.CRITICAL)  # thousands of decisions would flood the output
        self.world = PoolWorld()

    def teardown(self) -> None:
        observability.logger.setLevel(self._level)

    @initialize()
    def agents_come_up(self) -> None:
        for instance_id in list(self.world.jibris):
            self.world.report(instance_id)
        self.world.tick()

    # -- choosing ---------------------------------------------------------------------------------

    def _pick(self, data: st.DataObject, pool: list[str]) -> str | None:
        return data.draw(st.sampled_from(pool)) if pool else None  # insertion order: ids may be random

    def _live(self) -> list[str]:
        return list(self.world.jibris)

    # -- time, the schedule ---------------------------------------------------------------------

    @rule(seconds=st.sampled_from([1, 5, 30, 46, 95, 301, 901, 7201]), heartbeats=st.booleans())
    def time_passes(self, seconds: int, heartbeats: bool) -> None:
        """Time passes; agents that run report on their interval (or the network drops them).

        7201 s is a silence longer than a terminate hook's heartbeat timeout: without it an open
        action almost never timed out, and an evaluator that never heartbeated went unnoticed."""
        self.world.advance(seconds)
        if heartbeats:
            for instance_id in self._live():
                self.world.report(instance_id)

    @rule()
    def evaluator_runs(self) -> None:
        self.world.tick()

    # -- agents ---------------------------------------------------------------------------------

    @rule(data=st.data(), hold=st.booleans())
    def agent_reports(self, data: st.DataObject, hold: bool) -> None:
        instance_id = self._pick(data, self._live())
        if instance_id is not None:
            self.world.clock.advance(0.5)
            self.world.report(instance_id, hold=hold)

    @rule(data=st.data())
    def a_late_report_arrives(self, data: st.DataObject) -> None:
        """A report held up in the network arrives after later ones: it must change nothing."""
        late = [(j.instance_id, k) for j in self.world.jibris.values() for k in range(len(j.in_flight))]
        if not late:
            return
        instance_id, k = data.draw(st.sampled_from(late))
        report = self.world.jibris[instance_id].in_flight.pop(k)
        before = self.world.snapshot().get(instance_id)
        reply = self.world.deliver(instance_id, report)
        after = self.world.snapshot().get(instance_id)
        if (
            before is not None
            and before.last_report_sent_at is not None
            and report.sent_at <= before.last_report_sent_at
        ):
            assert reply is None or not reply.applied, "a report older than the stored one was applied"
            assert after == before, f"a stale report changed {instance_id}: {before} -> {after}"

    @rule(data=st.data())
    def a_report_is_delivered_twice(self, data: st.DataObject) -> None:
        sent = [j.instance_id for j in self.world.jibris.values() if j.last_delivered is not None]
        instance_id = self._pick(data, sent)
        if instance_id is None:
            return
        report = self.world.jibris[instance_id].last_delivered
        assert report is not None
        before, group_before = self.world.snapshot(), self.world.group_snapshot()
        reply = self.world.deliver(instance_id, report, obey=False)
        assert reply is None or not reply.applied, "a duplicate report was applied again"
        assert self.world.snapshot() == before, "a duplicate report changed the registry"
        assert self.world.group_snapshot() == group_before, "a duplicate report changed the group"

    @rule(data=st.data())
    def agent_crashes(self, data: st.DataObject) -> None:
        instance_id = self._pick(data, [i for i, j in self.world.jibris.items() if j.agent_up])
        if instance_id is not None:
            self.world.jibris[instance_id].agent_up = False

    @rule(data=st.data())
    def agent_restarts(self, data: st.DataObject) -> None:
        instance_id = self._pick(data, [i for i, j in self.world.jibris.items() if not j.agent_up])
        if instance_id is not None:
            self.world.jibris[instance_id].agent_up = True
            self.world.report(instance_id)

    # -- recordings -----------------------------------------------------------------------------

    @rule(data=st.data())
    def jicofo_starts_a_recording(self, data: st.DataObject) -> None:
        ready = [i for i, j in self.world.jibris.items() if j.jibri == "idle" and j.in_brewery]
        instance_id = self._pick(data, ready)
        if instance_id is not None and self.world.start_recording(instance_id) and data.draw(st.booleans()):
            self.world.report(instance_id)  # the agent reports the change at once

    @rule(data=st.data())
    def a_recording_ends(self, data: st.DataObject) -> None:
        instance_id = self._pick(data, [i for i, j in self.world.jibris.items() if j.jibri == "busy"])
        if instance_id is not None and self.world.end_recording(instance_id) and data.draw(st.booleans()):
            self.world.report(instance_id)

    @rule(data=st.data())
    def an_upload_finishes(self, data: st.DataObject) -> None:
        instance_id = self._pick(data, [i for i, j in self.world.jibris.items() if j.pending > 0])
        if instance_id is not None:
            self.world.upload_done(instance_id)

    # -- Jitsi's requests -------------------------------------------------------------------------

    @rule(room=st.sampled_from(ROOMS), key=st.sampled_from(KEYS))
    def jitsi_asks_for_a_recorder(self, room: str, key: str | None) -> None:
        world = self.world
        known = world.keys.get(key) if key else None
        try:
            status, reply = world.request(room, key)
        except Conflict:
            assert known is not None and known[0] != room, "409 for a new key or the same body"
            return
        assert status in (201, 202)
        if known is not None:
            assert known[0] == room, "a reused key with another body was accepted"
            assert reply["request_id"] == known[1], "a retried request made a second ticket"
        elif key:
            world.keys[key] = (room, reply["request_id"])
        world.requests[reply["request_id"]] = (room, key)

    @rule(data=st.data())
    def jitsi_cancels(self, data: st.DataObject) -> None:
        request_id = self._pick(data, list(self.world.requests))
        if request_id is None:
            return
        first = self.world.cancel(request_id)
        assert self.world.cancel(request_id) == first, "cancelling twice differs from cancelling once"

    # -- Auto Scaling -----------------------------------------------------------------------------

    @rule(data=st.data())
    def a_lifecycle_event_arrives(self, data: st.DataObject) -> None:
        """Any event so far, in any order; one already applied must change nothing."""
        world = self.world
        if not world.events:
            return
        index = data.draw(st.integers(0, len(world.events) - 1))
        again = index in world.delivered_ok
        before, group_before = world.snapshot(), world.group_snapshot()
        world.deliver_event(index)
        if again:
            assert world.snapshot() == before, "a repeated lifecycle event changed the registry"
            assert world.group_snapshot() == group_before, "a repeated lifecycle event changed the group"

    @rule(data=st.data(), cause=st.sampled_from(["spot interruption", "operator", "EC2 health check"]))
    def something_else_terminates_an_instance(self, data: st.DataObject, cause: str) -> None:
        instance_id = self._pick(data, self._live())
        if instance_id is not None:
            self.world.group.begin_external_termination(instance_id, cause)
            self.world.collect_events()

    @rule(data=st.data())
    def a_stranger_protects_an_instance(self, data: st.DataObject) -> None:
        instance_id = self._pick(data, self._live())
        if instance_id is not None:
            self.world.group.protect([instance_id], True)

    @precondition(lambda self: sum(len(q) for q in self.world.group.armed.values()) < 3)
    @rule(method=st.sampled_from(METHODS), kind=st.sampled_from(FAULTS))
    def an_auto_scaling_call_will_fail(self, method: str, kind: str) -> None:
        self.world.group.arm(method, kind)

    # -- invariants -------------------------------------------------------------------------------

    @invariant()
    def invariants_hold(self) -> None:
        observability.metrics.clear_metrics()  # no test reads them; 100 of one name would print a flush
        problems = self.world.check()
        assert not problems, "\n".join(problems)


# Replays one failure the deep profile printed: PROPERTY_REPRODUCE holds its
# `@reproduce_failure('<version>', b'<blob>')` line as printed (see profiles.py).
if replay := os.environ.get("PROPERTY_REPRODUCE"):
    version, blob = ast.literal_eval(replay.strip().removeprefix("@reproduce_failure"))
    PoolMachine = reproduce_failure(version, blob)(PoolMachine)

TestPool = PoolMachine.TestCase
TestPool.settings = profile()
