"""The simulated Auto Scaling group: launch delays, warm pool, scale-in protection, billing, lifecycle hooks.

It implements chalicelib's `AutoScaling` port, plus what the classic recipe uses
(`set_instance_protection`, and lowering desired capacity so that the group picks
victims by the default termination policy).

What it models, and what it leaves out:
- Raising desired capacity starts a stopped warm-pool instance when one is parked
  (ready after the warm-start delay), else launches a new one (cold-launch delay).
  "Ready" means Jibri is up and idle in the brewery; the instance is `Pending` until then.
- The warm pool is refilled to its minimum size by cold launches that stop once
  initialized; its size is exactly that minimum (as if MaxGroupPreparedCapacity
  never made it larger).
- Lowering desired capacity terminates unprotected instances chosen by the default
  termination policy: one Availability Zone and one launch template, so it comes down
  to "closest to the next billing hour", ties broken at random (seeded). When too few
  are unprotected, the group retries every minute, as Auto Scaling keeps retrying.
- Without lifecycle hooks (the default) termination is immediate.
- With a launch hook, every launch (into the group, into the warm pool, or out of it)
  waits in `Pending:Wait` (`Warmed:Pending:Wait`) from the moment it starts, as Auto
  Scaling puts it there before the instance boots; its agent runs once the boot delay
  is over, and the instance goes on only when the action is completed with CONTINUE
  (ABANDON terminates it and the group launches a replacement), or when the heartbeat
  timeout or the global timeout applies the hook's default result. With a terminate
  hook, every termination (TerminateInstanceInAutoScalingGroup, scale-in, an unhealthy
  instance replaced, a smaller warm pool) waits in `Terminating:Wait` until the action
  is completed (either result terminates) or times out. Instances waiting to
  terminate no longer count toward desired capacity but still run and are billed.
  Each action is delivered to the listener as the event EventBridge would carry.
  An abandoned launch ends at once, without a terminate action.
- Billing is per second with a 60 s minimum for every run (launch or start from the
  pool, until stop or termination, boot included); stopped pool instances are billed
  at the warm price, per second.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

from chalicelib.autoscaling import GroupInstance, GroupSize, GroupState, LifecycleActionGone
from chalicelib.lifecycle import MAX_GLOBAL_TIMEOUT, WARM_POOL, LifecycleEvent
from sim.whatif.engine import Engine, Event, Phase
from sim.whatif.model import Model

PENDING = "Pending"
PENDING_WAIT = "Pending:Wait"
IN_SERVICE = "InService"
TERMINATING_WAIT = "Terminating:Wait"
WARMED_PENDING = "Warmed:Pending"
WARMED_PENDING_WAIT = "Warmed:Pending:Wait"
WARMED_STOPPED = "Warmed:Stopped"
WARMED_TERMINATING_WAIT = "Warmed:Terminating:Wait"
TERMINATED = "Terminated"
_IN_GROUP = (PENDING, PENDING_WAIT, IN_SERVICE)  # what counts toward desired capacity
_IN_POOL = (WARMED_PENDING, WARMED_PENDING_WAIT, WARMED_STOPPED)
_LISTED = (*_IN_GROUP, TERMINATING_WAIT)  # what DescribeAutoScalingGroups lists
_RUNNING_IN_GROUP = _LISTED  # the group's size, for the peak and the plots: instances that still run
# Where an instance comes from and goes to, as lifecycle events name it.
GROUP = "AutoScalingGroup"
EC2 = "EC2"
RESULTS = ("CONTINUE", "ABANDON")
MIN_BILLED_SECONDS = 60.0
SCALE_IN_RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class Segment:
    """A stretch of billing for one instance: `run` at the on-demand price, `park` stopped in the pool."""

    instance_id: str
    kind: str
    start: float
    end: float


@dataclass(frozen=True)
class LifecycleHookConfig:
    """One lifecycle hook on the group, as PutLifecycleHook creates it."""

    name: str
    heartbeat_timeout_s: float = 7200.0
    default_result: str = "ABANDON"

    def __post_init__(self) -> None:
        if self.heartbeat_timeout_s <= 0:
            raise ValueError("the heartbeat timeout must be positive")
        if self.default_result not in RESULTS:
            raise ValueError(f"the default result must be one of {', '.join(RESULTS)}")

    @property
    def global_timeout_s(self) -> float:
        return min(float(MAX_GLOBAL_TIMEOUT), 100 * self.heartbeat_timeout_s)


@dataclass(frozen=True)
class ActionOutcome:
    """How a lifecycle action ended: completed by a call, or by one of its timeouts."""

    at: float  # trace seconds
    instance_id: str
    transition: str  # "launch" or "terminate"
    result: str  # CONTINUE or ABANDON
    cause: str  # "completed", "heartbeat timeout" or "global timeout"


@dataclass
class OpenAction:
    event: LifecycleEvent
    hook: LifecycleHookConfig
    timeout: Event | None = field(default=None, repr=False)
    deadline: Event | None = field(default=None, repr=False)

    def cancel_timers(self) -> None:
        for timer in (self.timeout, self.deadline):
            if timer is not None:
                timer.cancel()
        self.timeout = self.deadline = None


@dataclass
class SimInstance:
    instance_id: str
    lifecycle: str
    run_started: float | None = None
    park_started: float | None = None
    protected: bool = False
    from_warm_pool: bool = False
    timer: Event | None = field(default=None, repr=False)
    booted: bool = False
    action: OpenAction | None = None
    last_event_at: float | None = None


class GroupListener:
    def on_in_service(self, instance_id: str) -> None: ...

    def on_terminated(self, instance_id: str) -> None: ...

    def on_lifecycle_action(self, event: LifecycleEvent) -> None:
        """A lifecycle action began: what EventBridge delivers to the control plane."""

    def on_booted_waiting(self, instance_id: str, into_warm_pool: bool) -> None:
        """The instance booted while its launch action is still open: its agent runs from now on."""


class SimulatedGroup:
    group_name = "jibri-recorders"

    def __init__(
        self,
        engine: Engine,
        model: Model,
        listener: GroupListener | None = None,
        *,
        launch_hook: LifecycleHookConfig | None = None,
        terminate_hook: LifecycleHookConfig | None = None,
    ) -> None:
        self._engine = engine
        self._model = model
        self.listener = listener or GroupListener()
        self._rng = random.Random(model.seed)
        # Tokens come from their own generator, so turning hooks on leaves the tie-breaks as they were.
        self._tokens = random.Random(model.seed)
        self._instances: dict[str, SimInstance] = {}
        self._ids = 0
        self.desired = model.minimum
        self.minimum = model.minimum
        self.maximum = model.maximum
        self.warm_pool_min = 0
        self.launch_hook = launch_hook
        self.terminate_hook = terminate_hook
        self.segments: list[Segment] = []
        # (time, instances running in the group, those waiting to terminate included): a step
        # function, for the peak and the plots.
        self.size_changes: list[tuple[float, int]] = [(engine.now(), 0)]
        self.outcomes: list[ActionOutcome] = []
        self.heartbeats: list[tuple[float, str]] = []  # (trace seconds, instance id) of accepted heartbeats
        self._retry: Event | None = None
        self._outbox: deque[LifecycleEvent] = deque()
        self._delivering = False

    # --- the AutoScaling port -------------------------------------------------------------

    def is_member(self, instance_id: str) -> bool:
        instance = self._instances.get(instance_id)
        return instance is not None and instance.lifecycle in _IN_GROUP

    def group_size(self) -> GroupSize:
        return GroupSize(desired=self.desired, minimum=self.minimum, maximum=self.maximum)

    def describe(self) -> GroupState:
        members = tuple(
            GroupInstance(i.instance_id, i.lifecycle, i.protected, i.from_warm_pool)
            for i in self._instances.values()
            if i.lifecycle in _LISTED
        )
        return GroupState(size=self.group_size(), instances=members, warm_pool_size=self.warm_pool_count())

    def set_desired_capacity(self, desired: int) -> None:
        if not self.minimum <= desired <= self.maximum:
            raise ValueError(f"desired capacity {desired} is outside [{self.minimum}, {self.maximum}]")
        self.desired = desired
        self._reconcile()
        self._deliver()

    def terminate(self, instance_id: str, decrement: bool = True) -> None:
        """TerminateInstanceInAutoScalingGroup; with `decrement` False the group launches a replacement."""
        instance = self._instances.get(instance_id)
        if instance is None or instance.lifecycle not in _IN_GROUP:
            raise ValueError(f"instance {instance_id} is not in the group")
        # TerminateInstanceInAutoScalingGroup refuses to go below the minimum when decrementing.
        if decrement and self.desired - 1 < self.minimum:
            raise ValueError(f"terminating {instance_id} would take desired capacity below {self.minimum}")
        if decrement:
            self.desired -= 1
        self._leave(instance)
        self._reconcile()
        self._deliver()

    def put_warm_pool(self, min_size: int) -> None:
        if min_size < 0:
            raise ValueError("warm pool size cannot be negative")
        self.warm_pool_min = min_size
        self._fit_warm_pool()
        self._deliver()

    def complete_lifecycle_action(self, hook_name: str, token: str, instance_id: str, result: str) -> None:
        if result not in RESULTS:
            raise ValueError(f"LifecycleActionResult must be one of {', '.join(RESULTS)}, not {result!r}")
        instance = self._open(hook_name, token, instance_id)
        self._conclude(instance, result, "completed")
        self._deliver()

    def record_lifecycle_action_heartbeat(self, hook_name: str, token: str, instance_id: str) -> None:
        instance = self._open(hook_name, token, instance_id)
        action = instance.action
        assert action is not None
        if action.timeout is not None:
            action.timeout.cancel()
        action.timeout = self._engine.after(
            action.hook.heartbeat_timeout_s,
            partial(self._timed_out, instance, token, "heartbeat timeout"),
            Phase.INSTANCE,
        )
        self.heartbeats.append((self._engine.now(), instance_id))

    def set_instance_health(self, instance_id: str, healthy: bool) -> None:
        instance = self._instances.get(instance_id)
        if healthy or instance is None or instance.lifecycle not in _IN_GROUP:
            return
        # Auto Scaling replaces an unhealthy instance: it terminates it and launches another.
        self._leave(instance)
        self._reconcile()
        self._deliver()

    # --- what the baselines use as well ---------------------------------------------------

    def set_instance_protection(self, instance_ids: Iterable[str], protected: bool) -> None:
        for instance_id in instance_ids:
            instance = self._instances.get(instance_id)
            if instance is not None and instance.lifecycle in _IN_GROUP:
                instance.protected = protected

    def start(self, count: int) -> list[str]:
        """Put `count` instances in service at once: the group as it stands when the trace begins."""
        self.desired = count
        started = []
        for _ in range(count):
            instance = self._new(IN_SERVICE)
            instance.booted = True
            started.append(instance.instance_id)
        self._size_changed()
        for instance_id in started:
            self.listener.on_in_service(instance_id)
        return started

    # --- reading ------------------------------------------------------------------------------

    def lifecycle(self, instance_id: str) -> str | None:
        instance = self._instances.get(instance_id)
        return None if instance is None else instance.lifecycle

    def open_action(self, instance_id: str) -> LifecycleEvent | None:
        """The instance's open lifecycle action, as it was delivered."""
        instance = self._instances.get(instance_id)
        return None if instance is None or instance.action is None else instance.action.event

    def is_protected(self, instance_id: str) -> bool:
        instance = self._instances.get(instance_id)
        return instance is not None and instance.protected

    def in_group(self) -> list[str]:
        return [i.instance_id for i in self._instances.values() if i.lifecycle in _IN_GROUP]

    def in_service(self) -> list[str]:
        return [i.instance_id for i in self._instances.values() if i.lifecycle == IN_SERVICE]

    def pending(self) -> list[str]:
        return [i.instance_id for i in self._instances.values() if i.lifecycle in (PENDING, PENDING_WAIT)]

    def all_instances(self) -> list[SimInstance]:
        """Every instance the group still holds, warm-pool ones included (describe() lists no pool states)."""
        return list(self._instances.values())

    def warm_pool_count(self) -> int:
        return sum(1 for i in self._instances.values() if i.lifecycle in _IN_POOL)

    def close(self) -> None:
        """End every open billing segment at the current time: the end of the run."""
        now = self._engine.now()
        for instance in self._instances.values():
            self._stop_run(instance, now)
            self._stop_park(instance, now)

    # --- inside ---------------------------------------------------------------------------------

    def _reconcile(self) -> None:
        members = [i for i in self._instances.values() if i.lifecycle in _IN_GROUP]
        if len(members) < self.desired:
            for _ in range(self.desired - len(members)):
                self._launch()
            self._size_changed()
            self._fit_warm_pool()
        elif len(members) > self.desired:
            excess = len(members) - self.desired
            for victim in self._victims(members, excess):
                self._leave(victim)
            if len(self.in_group()) > self.desired and self._retry is None:
                self._retry = self._engine.after(SCALE_IN_RETRY_SECONDS, self._retry_scale_in, Phase.INSTANCE)

    def _retry_scale_in(self) -> None:
        self._retry = None
        self._reconcile()
        self._deliver()

    def _victims(self, members: list[SimInstance], count: int) -> list[SimInstance]:
        now = self._engine.now()
        candidates = [i for i in members if not i.protected]
        chosen: list[SimInstance] = []
        while candidates and len(chosen) < count:
            # Closest to the next billing hour: the most of its current hour used up.
            used = {i.instance_id: (now - _or(i.run_started, now)) % 3600.0 for i in candidates}
            most = max(used.values())
            tied = [i for i in candidates if used[i.instance_id] == most]
            victim = tied[0] if len(tied) == 1 else self._rng.choice(tied)
            chosen.append(victim)
            candidates.remove(victim)
        return chosen

    def _launch(self) -> None:
        now = self._engine.now()
        parked = next((i for i in self._instances.values() if i.lifecycle == WARMED_STOPPED), None)
        if parked is not None:
            self._stop_park(parked, now)
            parked.lifecycle = PENDING
            parked.from_warm_pool = True
            parked.booted = False
            parked.run_started = now
            delay = self._model.warm_start_s
            instance = parked
        else:
            instance = self._new(PENDING)
            delay = self._model.cold_launch_s
        instance.timer = self._engine.after(delay, partial(self._booted, instance), Phase.INSTANCE)
        if self.launch_hook is not None:
            instance.lifecycle = PENDING_WAIT
            self._begin(instance, "launch", self.launch_hook, WARM_POOL if parked is not None else EC2, GROUP)

    def _booted(self, instance: SimInstance) -> None:
        instance.timer = None
        instance.booted = True
        if instance.lifecycle == PENDING:
            instance.lifecycle = IN_SERVICE
            self.listener.on_in_service(instance.instance_id)
        elif instance.lifecycle == WARMED_PENDING:
            self._park(instance)
        else:
            # Still waiting on its launch action: its agent is up now and may complete it.
            self.listener.on_booted_waiting(instance.instance_id, instance.lifecycle == WARMED_PENDING_WAIT)
        self._deliver()

    def _new(self, lifecycle: str) -> SimInstance:
        self._ids += 1
        instance = SimInstance(f"i-{self._ids:017x}", lifecycle, run_started=self._engine.now())
        self._instances[instance.instance_id] = instance
        return instance

    def _leave(self, instance: SimInstance) -> None:
        """Start terminating the instance: at once, or through the terminate hook."""
        if instance.timer is not None:
            instance.timer.cancel()  # it will never come into service or park
            instance.timer = None
        if instance.action is not None:
            # The launch action ends with the instance; Auto Scaling forgets its token.
            instance.action.cancel_timers()
            instance.action = None
        if self.terminate_hook is None:
            self._terminate(instance)
            return
        in_pool = instance.lifecycle in _IN_POOL
        instance.lifecycle = WARMED_TERMINATING_WAIT if in_pool else TERMINATING_WAIT
        self._begin(instance, "terminate", self.terminate_hook, WARM_POOL if in_pool else GROUP, EC2)

    def _terminate(self, instance: SimInstance) -> None:
        now = self._engine.now()
        was_running = instance.lifecycle in _RUNNING_IN_GROUP
        if instance.timer is not None:
            instance.timer.cancel()
            instance.timer = None
        if instance.action is not None:
            instance.action.cancel_timers()
            instance.action = None
        self._stop_run(instance, now)
        self._stop_park(instance, now)
        instance.lifecycle = TERMINATED
        del self._instances[instance.instance_id]
        if was_running:
            self._size_changed()
            self.listener.on_terminated(instance.instance_id)

    def _fit_warm_pool(self) -> None:
        pool = [i for i in self._instances.values() if i.lifecycle in _IN_POOL]
        for _ in range(self.warm_pool_min - len(pool)):
            instance = self._new(WARMED_PENDING)
            instance.timer = self._engine.after(
                self._model.cold_launch_s, partial(self._booted, instance), Phase.INSTANCE
            )
            if self.launch_hook is not None:
                instance.lifecycle = WARMED_PENDING_WAIT
                self._begin(instance, "launch", self.launch_hook, EC2, WARM_POOL)
        if len(pool) > self.warm_pool_min:
            # Stopped ones go first: they are ready and cheap, but the pool is smaller now.
            pool.sort(key=lambda i: i.lifecycle != WARMED_STOPPED)
            for instance in pool[: len(pool) - self.warm_pool_min]:
                self._leave(instance)

    def _park(self, instance: SimInstance) -> None:
        now = self._engine.now()
        instance.timer = None
        self._stop_run(instance, now)
        instance.lifecycle = WARMED_STOPPED
        instance.park_started = now

    # --- lifecycle actions ----------------------------------------------------------------------

    def _begin(self, instance: SimInstance, transition: str, hook: LifecycleHookConfig, origin: str, to: str) -> None:
        now = self._engine.now()
        # Events about one instance must be ordered, as their times order them for the control plane;
        # two in one simulated instant are a millisecond apart.
        at = self._model.epoch + now
        if instance.last_event_at is not None:
            at = max(at, instance.last_event_at + 0.001)
        instance.last_event_at = at
        event = LifecycleEvent(
            transition=transition,
            group=self.group_name,
            instance_id=instance.instance_id,
            hook_name=hook.name,
            token=str(uuid.UUID(int=self._tokens.getrandbits(128), version=4)),
            time=at,
            origin=origin,
            destination=to,
        )
        action = OpenAction(event, hook)
        action.timeout = self._engine.after(
            hook.heartbeat_timeout_s,
            partial(self._timed_out, instance, event.token, "heartbeat timeout"),
            Phase.INSTANCE,
        )
        action.deadline = self._engine.after(
            hook.global_timeout_s, partial(self._timed_out, instance, event.token, "global timeout"), Phase.INSTANCE
        )
        instance.action = action
        self._outbox.append(event)

    def _open(self, hook_name: str, token: str, instance_id: str) -> SimInstance:
        instance = self._instances.get(instance_id)
        action = instance.action if instance is not None else None
        if instance is None or action is None or action.event.token != token or action.event.hook_name != hook_name:
            # What Auto Scaling answers for a completed, abandoned or timed-out action, or a wrong token.
            raise LifecycleActionGone(f"No active Lifecycle Action found with instance ID {instance_id}")
        return instance

    def _timed_out(self, instance: SimInstance, token: str, cause: str) -> None:
        action = instance.action
        if action is None or action.event.token != token:
            return
        self._conclude(instance, action.hook.default_result, cause)
        self._deliver()

    def _conclude(self, instance: SimInstance, result: str, cause: str) -> None:
        action = instance.action
        assert action is not None
        action.cancel_timers()
        instance.action = None
        transition = action.event.transition
        self.outcomes.append(ActionOutcome(self._engine.now(), instance.instance_id, transition, result, cause))
        if transition == "terminate":
            self._terminate(instance)  # either result terminates it
            return
        if result == "ABANDON":
            self._terminate(instance)
            self._reconcile()  # the group replaces it
            self._fit_warm_pool()
            return
        into_pool = instance.lifecycle == WARMED_PENDING_WAIT
        if not instance.booted:
            # It goes on, and comes into service (or stops in the pool) once booted.
            instance.lifecycle = WARMED_PENDING if into_pool else PENDING
        elif into_pool:
            self._park(instance)
        else:
            instance.lifecycle = IN_SERVICE
            self.listener.on_in_service(instance.instance_id)

    def _deliver(self) -> None:
        """Hand the queued lifecycle events to the listener, once the group's own change is complete."""
        if self._delivering:
            return  # a call made while delivering: the outer loop delivers what it queued
        self._delivering = True
        try:
            while self._outbox:
                self.listener.on_lifecycle_action(self._outbox.popleft())
        finally:
            self._delivering = False

    # --- billing --------------------------------------------------------------------------------

    def _stop_run(self, instance: SimInstance, now: float) -> None:
        if instance.run_started is not None:
            self.segments.append(Segment(instance.instance_id, "run", instance.run_started, now))
            instance.run_started = None

    def _stop_park(self, instance: SimInstance, now: float) -> None:
        if instance.park_started is not None:
            self.segments.append(Segment(instance.instance_id, "park", instance.park_started, now))
            instance.park_started = None

    def _size_changed(self) -> None:
        size = sum(1 for i in self._instances.values() if i.lifecycle in _RUNNING_IN_GROUP)
        now = self._engine.now()
        if self.size_changes[-1][0] == now:
            self.size_changes[-1] = (now, size)
        else:
            self.size_changes.append((now, size))


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def billed_seconds(segments: Iterable[Segment], kind: str, start: float, end: float) -> float:
    """Seconds billed within [start, end]: runs carry a 60 s minimum, charged where they begin."""
    total = 0.0
    for s in segments:
        if s.kind != kind:
            continue
        total += max(0.0, min(s.end, end) - max(s.start, start))
        if kind == "run" and start <= s.start < end and s.end - s.start < MIN_BILLED_SECONDS:
            total += MIN_BILLED_SECONDS - (s.end - s.start)
    return total
