"""The classic recipe: crons, a CloudWatch metric, two alarms and simple scaling.

What runs, as the recipe sets it up:
- A cron on every Jibri, each minute on the minute: put-metric-data of its "free"
  value (1 when Jibri reports IDLE, else 0), and set-instance-protection on itself
  (protected when BUSY, unprotected otherwise). Between two runs the protection is
  stale: a Jibri that went busy since the last run is unprotected.
- CloudWatch alarms on Sum(free) per 60 s period, evaluated when a period closes
  (plus `alarm_delay_s`): "need" when the sum is below `scale_out_below` for
  `scale_out_periods` periods, "surplus" when above `scale_in_above` for
  `scale_in_periods` periods. A period without any datapoint is missing data
  (TreatMissingData=missing): only the periods with data count, and none means
  INSUFFICIENT_DATA, which acts on nothing.
- Each alarm drives a simple scaling policy (ChangeInCapacity). An alarm in ALARM
  invokes its policy at every evaluation. Simple scaling ignores alarms while a
  scaling activity is in progress (launched instances not yet in service) and for
  the cooldown after it completes.
- Scale-in lowers desired capacity: the group picks the victim by its default
  termination policy among unprotected instances, and terminates it at once, killing
  a recording that started since the last protection cron.
- A warm pool only when a fixed size is given (`--warm-pool N`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from sim.whatif.world import Controller, World


@dataclass(frozen=True)
class ClassicConfig:
    period_s: float = 60.0
    scale_out_below: float = 1.0
    scale_out_periods: int = 1
    scale_out_step: int = 1
    scale_in_above: float = 2.0
    scale_in_periods: int = 5
    scale_in_step: int = 1
    cooldown_s: float = 300.0  # the group's default cooldown
    alarm_delay_s: float = 10.0

    def label(self) -> str:
        return (
            f"out<{self.scale_out_below:g}x{self.scale_out_periods} +{self.scale_out_step}"
            f" in>{self.scale_in_above:g}x{self.scale_in_periods} -{self.scale_in_step} cd{self.cooldown_s:g}"
        )


class ClassicController(Controller):
    def __init__(self, config: ClassicConfig | None = None) -> None:
        self.config = config or ClassicConfig()
        self._free: dict[int, int] = {}  # period number -> Sum(free)
        self._datapoints: dict[int, int] = {}  # period number -> datapoints received
        self._activity: set[str] = set()  # instances launched by the scaling activity in progress
        self._awaiting = False
        self._cooldown_until = -math.inf
        self.alarm_actions: list[tuple[float, str]] = []  # (time, "out" | "in") that changed desired capacity

    def start(self, world: World) -> None:
        self.world = world
        period = self.config.period_s
        world.engine.every(period, self._cron, first=0.0)
        world.engine.every(period, self._evaluate_alarms, first=period + self.config.alarm_delay_s)
        if world.model.fixed_warm_pool():
            world.group.put_warm_pool(world.model.fixed_warm_pool())

    def on_ready(self, instance_id: str) -> None:
        self._activity.discard(instance_id)
        self._maybe_finish_activity()

    def on_terminated(self, instance_id: str) -> None:
        self._activity.discard(instance_id)
        self._maybe_finish_activity()

    def _cron(self) -> None:
        period = int(self.world.engine.now() // self.config.period_s)
        group = self.world.group
        for jibri in self.world.jibris.values():
            self._free[period] = self._free.get(period, 0) + (1 if jibri.idle else 0)
            self._datapoints[period] = self._datapoints.get(period, 0) + 1
            busy = jibri.recording is not None
            if group.is_protected(jibri.instance_id) != busy:
                group.set_instance_protection([jibri.instance_id], busy)

    def _evaluate_alarms(self) -> None:
        now = self.world.engine.now()
        c = self.config
        closed = int((now - c.alarm_delay_s) // c.period_s) - 1  # the last period that has closed
        need = self._in_alarm(closed, c.scale_out_periods, lambda s: s < c.scale_out_below)
        surplus = self._in_alarm(closed, c.scale_in_periods, lambda s: s > c.scale_in_above)
        for old in [p for p in self._free if p < closed - max(c.scale_out_periods, c.scale_in_periods)]:
            del self._free[old], self._datapoints[old]
        if self._activity or now < self._cooldown_until:
            return
        group = self.world.group
        if need:
            target = min(group.maximum, group.desired + c.scale_out_step)
            if target != group.desired:
                before = set(group.in_group())
                group.set_desired_capacity(target)
                self._activity = {i for i in group.in_group() if i not in before}
                self._awaiting = True
                self.alarm_actions.append((now, "out"))
                self._maybe_finish_activity()
        elif surplus:
            target = max(group.minimum, group.desired - c.scale_in_step)
            if target != group.desired:
                group.set_desired_capacity(target)
                self.alarm_actions.append((now, "in"))
                self._cooldown_until = now + c.cooldown_s

    def _in_alarm(self, last: int, periods: int, breaching: Callable[[int], bool]) -> bool:
        sums = [self._free[p] for p in range(last - periods + 1, last + 1) if self._datapoints.get(p)]
        return bool(sums) and all(breaching(s) for s in sums)

    def _maybe_finish_activity(self) -> None:
        # The cooldown of a scale-out starts when its last instance is in service.
        if self._awaiting and not self._activity:
            self._awaiting = False
            self._cooldown_until = self.world.engine.now() + self.config.cooldown_s
