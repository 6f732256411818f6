"""Our policy, wired as in production: the real evaluator and status service on in-memory adapters.

- The evaluator runs every 60 s (the schedule), at once when a request finds no idle
  recorder (the request endpoint's trigger), and, with `Model.evaluate_on_busy` (the
  deployed default, EVALUATE_ON_BUSY), at once when a busy report leaves fewer idle
  recorders than the last decision's buffer target: the status service runs the same
  `EvaluateOnBusy` as deployed, and the policy's buffer then covers the lead time plus
  the trigger's latency instead of the evaluation interval. It sees the queue length and
  the bookings announced so far.
- Every request is an arrival in the demand store when it comes in, as the request
  endpoint records it; busy reports are therefore not counted again.
- The agent on each instance reports through `StatusService.apply` on every change:
  IDLE when Jibri is up, BUSY when a recording starts (after protecting its
  instance), IDLE when it ends, OFFLINE once Jibri shut down after a drain. Each reply
  says whether to stay protected and whether to drain.
- An agent learns of a drain from a reply: from its next change, or at its next
  heartbeat (every 30 s from its boot), so Jicofo can still hand a just-drained Jibri
  one more recording, which it finishes. Heartbeats are sent only when they can carry
  that news: simulated agents never go silent, so the evaluator's staleness check is
  turned off instead of paying for a report every 30 s per instance.
- With lifecycle hooks (`Model.lifecycle_hooks`) the group gets a launch and a terminate
  hook, and the control plane is wired as deployed: each lifecycle event goes to
  `LifecycleService.handle`, the status service settles open actions, and the evaluator
  runs the lifecycle tick (heartbeats for held terminations, abandoned launches) and the
  reconciler first. The reconciler's staleness checks are off for the reason above. An
  agent learns that its instance is terminating as it learns of a drain.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass
from functools import partial

from chalicelib.control import MemoryControlStore
from chalicelib.demand import MemoryDemandStore
from chalicelib.evaluator import Evaluator
from chalicelib.lifecycle import LifecycleEvent, LifecycleService, LifecycleSettings
from chalicelib.memory_registry import MemoryRegistry
from chalicelib.policy import Decision, PolicySettings
from chalicelib.reconciler import Reconciler, ReconcilerSettings
from chalicelib.registry import Recorder
from chalicelib.states import RecorderState
from chalicelib.status import EvaluateOnBusy, StatusReply, StatusReport, StatusService
from sim.whatif.engine import EpochClock, Phase
from sim.whatif.group import LifecycleHookConfig
from sim.whatif.world import Controller, RequestRecord, World

EVALUATE_EVERY_S = 60.0
HEARTBEAT_S = 30.0
# The hooks as the template creates them (template.md).
LAUNCH_HOOK = "jibri-launch"
TERMINATE_HOOK = "jibri-terminate"
# An agent hears of a drain or a termination from its next reply.
_LEAVING = (RecorderState.DRAINING, RecorderState.TERMINATING)


@dataclass
class Agent:
    ready_at: float
    last_sent: float = -math.inf
    heartbeat_due: bool = False


class ForecastController(Controller):
    def __init__(self, settings: PolicySettings | None = None) -> None:
        self._settings = settings
        self._agents: dict[str, Agent] = {}
        self._announced: list[float] = []  # request times of the bookings known so far, sorted
        self.decisions: list[tuple[float, Decision]] = []
        self.lifecycle: LifecycleService | None = None
        self.lifecycle_log: list[tuple[float, str]] = []  # (trace seconds, what the lifecycle handler did)
        self.alerts: list[tuple[float, str, str]] = []  # (trace seconds, instance id, message)

    def start(self, world: World) -> None:
        self.world = world
        engine, model = world.engine, world.model
        self.clock = EpochClock(engine, model.epoch)
        settings = self._settings or dataclasses.replace(
            PolicySettings(), warm_pool=model.warm_pool, evaluate_on_busy=model.evaluate_on_busy
        )
        self.settings = settings
        self.registry = MemoryRegistry("sim")
        self.demand = MemoryDemandStore()
        # Simulated agents never go silent (see above): staleness is judged never to set in.
        stale_after = math.inf
        reconciler: Reconciler | None = None
        if model.lifecycle_hooks:
            hooks = LifecycleSettings(heartbeat_timeout_seconds=math.ceil(model.hook_heartbeat_timeout_s))
            world.group.launch_hook = LifecycleHookConfig(LAUNCH_HOOK, model.hook_heartbeat_timeout_s)
            world.group.terminate_hook = LifecycleHookConfig(TERMINATE_HOOK, model.hook_heartbeat_timeout_s)
            self.lifecycle = LifecycleService(self.registry, world.group, self.clock, hooks, on_alert=self._alert)
            reconciler = Reconciler(
                self.registry,
                world.group,
                ReconcilerSettings(
                    launch_timeout_seconds=float(hooks.launch_timeout_seconds),
                    stale_after_seconds=stale_after,
                    lost_after_seconds=stale_after,
                ),
                on_alert=self._alert,
            )
        control = MemoryControlStore()
        on_started = (
            EvaluateOnBusy(self.registry, control, partial(self._evaluate, "busy"))
            if settings.evaluate_on_busy
            else None
        )
        self.status = StatusService(
            self.registry,
            world.group,
            self.clock,
            demand=self.demand,
            count_busy_as_arrivals=False,
            settle=self.lifecycle.settle if self.lifecycle is not None else None,
            on_started=on_started,
        )
        self.evaluator = Evaluator(
            self.registry,
            world.group,
            self.demand,
            control,
            self.clock,
            settings,
            queued=lambda: len(world.queue),
            booked=self._booked,
            stale_after=stale_after,
            lifecycle=self.lifecycle,
            reconciler=reconciler,
        )
        for request in world.trace:
            if request.announced_at is None:
                continue
            if request.announced_at <= 0:
                bisect.insort(self._announced, request.request_at)
            else:
                engine.at(
                    request.announced_at, partial(bisect.insort, self._announced, request.request_at), Phase.REQUEST
                )
        engine.every(EVALUATE_EVERY_S, lambda: self._evaluate("schedule"), first=0.0)

    # --- what the world tells us ----------------------------------------------------------

    def on_arrival(self, record: RequestRecord) -> None:
        self.demand.record_arrival(self.clock.now())

    def on_unserved(self, record: RequestRecord) -> None:
        self._evaluate("request")

    def on_ready(self, instance_id: str) -> None:
        self._agents[instance_id] = Agent(ready_at=self.world.engine.now())
        self._act(instance_id, self._report(instance_id, "IDLE"))

    def on_busy(self, instance_id: str) -> None:
        # The agent protects its instance before it tells anyone that Jibri is busy.
        self.world.group.set_instance_protection([instance_id], True)
        self._act(instance_id, self._report(instance_id, "BUSY"))

    def on_idle(self, instance_id: str) -> None:
        self._act(instance_id, self._report(instance_id, "IDLE"))

    def on_gone(self, instance_id: str) -> None:
        self._act(instance_id, self._report(instance_id, "OFFLINE"))

    def on_terminated(self, instance_id: str) -> None:
        self._agents.pop(instance_id, None)

    def on_lifecycle_action(self, event: LifecycleEvent) -> None:
        if self.lifecycle is not None:
            self.lifecycle_log.append((self.world.engine.now(), self.lifecycle.handle(event)))

    def on_stuck(self, instance_id: str) -> None:
        # Jibri's API never answers: the agent reports OFFLINE, which keeps a launch launching.
        self._agents[instance_id] = Agent(ready_at=self.world.engine.now())
        self._report(instance_id, "OFFLINE")

    def on_prepared_for_pool(self, instance_id: str) -> None:
        # The agent reads its target state from instance metadata and says it is ready to stop.
        self._agents[instance_id] = Agent(ready_at=self.world.engine.now())
        self._report(instance_id, "OFFLINE", target_lifecycle_state="Warmed:Stopped")

    # --- inside -----------------------------------------------------------------------------

    def _booked(self, start: float, end: float) -> int:
        epoch = self.clock.epoch
        return bisect.bisect_left(self._announced, end - epoch) - bisect.bisect_left(self._announced, start - epoch)

    def _evaluate(self, trigger: str) -> None:
        decision = self.evaluator.run(trigger)
        if decision is not None:
            self.decisions.append((self.world.engine.now(), decision))
        for recorder in [r for state in _LEAVING for r in self.registry.list_by_state(state)]:
            jibri = self.world.jibris.get(recorder.instance_id)
            agent = self._agents.get(recorder.instance_id)
            if jibri is None or agent is None or not jibri.in_brewery or agent.heartbeat_due:
                continue
            now = self.world.engine.now()
            beats = math.floor((now - agent.ready_at) / HEARTBEAT_S) + 1
            agent.heartbeat_due = True
            self.world.engine.at(
                agent.ready_at + beats * HEARTBEAT_S, partial(self._heartbeat, recorder.instance_id), Phase.CONTROL
            )

    def _heartbeat(self, instance_id: str) -> None:
        agent = self._agents.get(instance_id)
        jibri = self.world.jibris.get(instance_id)
        if agent is None or jibri is None:
            return
        agent.heartbeat_due = False
        state = "BUSY" if jibri.recording is not None else "OFFLINE" if jibri.gone else "IDLE"
        self._act(instance_id, self._report(instance_id, state))

    def _report(self, instance_id: str, busy_status: str, target_lifecycle_state: str | None = None) -> StatusReply:
        agent = self._agents[instance_id]
        # Two reports in one simulated instant must still be ordered, as the agent's clock orders them.
        agent.last_sent = max(self.clock.now(), agent.last_sent + 0.001)
        report = StatusReport(
            busy_status=busy_status,
            health="HEALTHY",
            pending_uploads=0,
            sent_at=agent.last_sent,
            target_lifecycle_state=target_lifecycle_state,
        )
        return self.status.apply(instance_id, report)

    def _alert(self, recorder: Recorder, message: str) -> None:
        self.alerts.append((self.world.engine.now(), recorder.instance_id, message))

    def _act(self, instance_id: str, reply: StatusReply) -> None:
        jibri = self.world.jibris.get(instance_id)
        if jibri is None:
            return
        if reply.drain and jibri.in_brewery:
            self.world.drain(instance_id)
        elif not reply.drain and not jibri.in_brewery:
            self.world.restart(instance_id)
            self._act(instance_id, self._report(instance_id, "BUSY" if jibri.recording else "IDLE"))
            return
        if not reply.protect and self.world.group.is_protected(instance_id):
            self.world.group.set_instance_protection([instance_id], False)
