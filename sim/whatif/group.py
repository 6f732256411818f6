"""The simulated Auto Scaling group: launch delays, warm pool, scale-in protection, billing.

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
- Termination is immediate: no lifecycle hooks.
- Billing is per second with a 60 s minimum for every run (launch or start from the
  pool, until stop or termination, boot included); stopped pool instances are billed
  at the warm price, per second.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

from chalicelib.autoscaling import GroupInstance, GroupSize, GroupState, LifecycleActionGone
from sim.whatif.engine import Engine, Event, Phase
from sim.whatif.model import Model

PENDING = "Pending"
IN_SERVICE = "InService"
WARMED_PENDING = "Warmed:Pending"
WARMED_STOPPED = "Warmed:Stopped"
TERMINATED = "Terminated"
_IN_GROUP = (PENDING, IN_SERVICE)
_IN_POOL = (WARMED_PENDING, WARMED_STOPPED)
MIN_BILLED_SECONDS = 60.0
SCALE_IN_RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class Segment:
    """A stretch of billing for one instance: `run` at the on-demand price, `park` stopped in the pool."""

    instance_id: str
    kind: str
    start: float
    end: float


@dataclass
class SimInstance:
    instance_id: str
    lifecycle: str
    run_started: float | None = None
    park_started: float | None = None
    protected: bool = False
    from_warm_pool: bool = False
    timer: Event | None = field(default=None, repr=False)


class GroupListener:
    def on_in_service(self, instance_id: str) -> None: ...

    def on_terminated(self, instance_id: str) -> None: ...


class SimulatedGroup:
    group_name = "jibri-recorders"

    def __init__(self, engine: Engine, model: Model, listener: GroupListener | None = None) -> None:
        self._engine = engine
        self._model = model
        self.listener = listener or GroupListener()
        self._rng = random.Random(model.seed)
        self._instances: dict[str, SimInstance] = {}
        self._ids = 0
        self.desired = model.minimum
        self.minimum = model.minimum
        self.maximum = model.maximum
        self.warm_pool_min = 0
        self.segments: list[Segment] = []
        # (time, instances in the group): a step function, for the peak and the plots.
        self.size_changes: list[tuple[float, int]] = [(engine.now(), 0)]
        self._retry: Event | None = None

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
            if i.lifecycle in _IN_GROUP
        )
        return GroupState(size=self.group_size(), instances=members, warm_pool_size=self.warm_pool_count())

    def set_desired_capacity(self, desired: int) -> None:
        if not self.minimum <= desired <= self.maximum:
            raise ValueError(f"desired capacity {desired} is outside [{self.minimum}, {self.maximum}]")
        self.desired = desired
        self._reconcile()

    def terminate(self, instance_id: str) -> None:
        instance = self._instances.get(instance_id)
        if instance is None or instance.lifecycle not in _IN_GROUP:
            raise ValueError(f"instance {instance_id} is not in the group")
        # TerminateInstanceInAutoScalingGroup refuses to go below the minimum when decrementing.
        if self.desired - 1 < self.minimum:
            raise ValueError(f"terminating {instance_id} would take desired capacity below {self.minimum}")
        self.desired -= 1
        self._terminate(instance)
        self._reconcile()

    def put_warm_pool(self, min_size: int) -> None:
        if min_size < 0:
            raise ValueError("warm pool size cannot be negative")
        self.warm_pool_min = min_size
        self._fit_warm_pool()

    def complete_lifecycle_action(self, hook_name: str, token: str, instance_id: str, result: str) -> None:
        # This group runs no lifecycle hooks, so no action is ever open: what Auto Scaling answers then.
        raise LifecycleActionGone(f"No active Lifecycle Action found with instance ID {instance_id}")

    def record_lifecycle_action_heartbeat(self, hook_name: str, token: str, instance_id: str) -> None:
        raise LifecycleActionGone(f"No active Lifecycle Action found with instance ID {instance_id}")

    def set_instance_health(self, instance_id: str, healthy: bool) -> None:
        instance = self._instances.get(instance_id)
        if healthy or instance is None or instance.lifecycle not in _IN_GROUP:
            return
        # Auto Scaling replaces an unhealthy instance: it terminates it and launches another.
        self._terminate(instance)
        self._reconcile()

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
            started.append(instance.instance_id)
        self._size_changed()
        for instance_id in started:
            self.listener.on_in_service(instance_id)
        return started

    # --- reading ------------------------------------------------------------------------------

    def lifecycle(self, instance_id: str) -> str | None:
        instance = self._instances.get(instance_id)
        return None if instance is None else instance.lifecycle

    def is_protected(self, instance_id: str) -> bool:
        instance = self._instances.get(instance_id)
        return instance is not None and instance.protected

    def in_group(self) -> list[str]:
        return [i.instance_id for i in self._instances.values() if i.lifecycle in _IN_GROUP]

    def in_service(self) -> list[str]:
        return [i.instance_id for i in self._instances.values() if i.lifecycle == IN_SERVICE]

    def pending(self) -> list[str]:
        return [i.instance_id for i in self._instances.values() if i.lifecycle == PENDING]

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
                self._terminate(victim)
            if len(self.in_group()) > self.desired and self._retry is None:
                self._retry = self._engine.after(SCALE_IN_RETRY_SECONDS, self._retry_scale_in, Phase.INSTANCE)

    def _retry_scale_in(self) -> None:
        self._retry = None
        self._reconcile()

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
            parked.run_started = now
            delay = self._model.warm_start_s
            instance = parked
        else:
            instance = self._new(PENDING)
            delay = self._model.cold_launch_s
        instance.timer = self._engine.after(delay, lambda: self._ready(instance), Phase.INSTANCE)

    def _ready(self, instance: SimInstance) -> None:
        instance.timer = None
        instance.lifecycle = IN_SERVICE
        self.listener.on_in_service(instance.instance_id)

    def _new(self, lifecycle: str) -> SimInstance:
        self._ids += 1
        instance = SimInstance(f"i-{self._ids:017x}", lifecycle, run_started=self._engine.now())
        self._instances[instance.instance_id] = instance
        return instance

    def _terminate(self, instance: SimInstance) -> None:
        now = self._engine.now()
        was_member = instance.lifecycle in _IN_GROUP
        if instance.timer is not None:
            instance.timer.cancel()
            instance.timer = None
        self._stop_run(instance, now)
        self._stop_park(instance, now)
        instance.lifecycle = TERMINATED
        del self._instances[instance.instance_id]
        if was_member:
            self._size_changed()
            self.listener.on_terminated(instance.instance_id)

    def _fit_warm_pool(self) -> None:
        pool = [i for i in self._instances.values() if i.lifecycle in _IN_POOL]
        for _ in range(self.warm_pool_min - len(pool)):
            instance = self._new(WARMED_PENDING)
            instance.timer = self._engine.after(
                self._model.cold_launch_s, partial(self._park, instance), Phase.INSTANCE
            )
        if len(pool) > self.warm_pool_min:
            # Stopped ones go first: they are ready and cheap, but the pool is smaller now.
            pool.sort(key=lambda i: i.lifecycle != WARMED_STOPPED)
            for instance in pool[: len(pool) - self.warm_pool_min]:
                self._terminate(instance)

    def _park(self, instance: SimInstance) -> None:
        now = self._engine.now()
        instance.timer = None
        self._stop_run(instance, now)
        instance.lifecycle = WARMED_STOPPED
        instance.park_started = now

    def _stop_run(self, instance: SimInstance, now: float) -> None:
        if instance.run_started is not None:
            self.segments.append(Segment(instance.instance_id, "run", instance.run_started, now))
            instance.run_started = None

    def _stop_park(self, instance: SimInstance, now: float) -> None:
        if instance.park_started is not None:
            self.segments.append(Segment(instance.instance_id, "park", instance.park_started, now))
            instance.park_started = None

    def _size_changed(self) -> None:
        size = sum(1 for i in self._instances.values() if i.lifecycle in _IN_GROUP)
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
