"""Jitsi's autoscaler (jitsi/jitsi-autoscaler) for a `jibri` group, with its sidecar.

As its sources do it (src/autoscaler.ts, instance_launcher.ts, instance_tracker.ts,
and the sidecar's defaults):
- The sidecar on each instance posts stats every 30 s; for Jibri the metric is 1
  when Jibri is IDLE, else 0. Nothing is stored for an instance that is shutting
  down, nor before its first report (a launched instance is tracked as
  "provisioning" from launch). Every 60 s it polls for a shutdown command; on one it
  runs the graceful shutdown (Jibri leaves the brewery and finishes its recording),
  then terminates its instance.
- Every 30 s the autoscale job, unless the group's grace period is running: `count`
  is the tracked instances not shutting down; it waits while desired != count. The
  metric per period (`scalePeriod`, newest first) is the sum over instances of each
  one's average, with a missing report filled from the next older period when the
  instance reported on both sides. Scale up by `scaleUpQuantity` when each of the
  last `scaleUpPeriodsCount` periods is below `scaleUpThreshold` (and count < max),
  else down by `scaleDownQuantity` when each of the last `scaleDownPeriodsCount` is
  above `scaleDownThreshold` (and count > min). A change starts the grace period.
- Every 30 s the launcher job: launches desired - count instances, or picks
  count - max(min, desired) victims — provisioning ones first, then idle Jibris, then
  busy ones — and marks them for shutdown.
Defaults are those of the jibri groups in its groups.json. It launches instances
itself (no warm pool), so here it drives the simulated group directly: raising
desired capacity to launch, terminating with a decrement when an instance ends.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from sim.whatif.engine import Phase
from sim.whatif.world import Controller, World


@dataclass(frozen=True)
class JitsiConfig:
    scale_up_quantity: int = 1
    scale_down_quantity: int = 1
    scale_up_threshold: float = 1.0
    scale_down_threshold: float = 2.0
    scale_period_s: float = 60.0
    scale_up_periods: int = 2
    scale_down_periods: int = 4
    grace_period_s: float = 480.0  # gracePeriodTTLSec
    job_interval_s: float = 30.0  # GROUP_JOBS_CREATION_INTERVAL_SEC
    stats_interval_s: float = 30.0  # the sidecar's STATS_POLLING_INTERVAL
    shutdown_poll_s: float = 60.0  # the sidecar's SHUTDOWN_POLLING_INTERVAL

    def label(self) -> str:
        return (
            f"up<{self.scale_up_threshold:g}x{self.scale_up_periods} +{self.scale_up_quantity}"
            f" down>{self.scale_down_threshold:g}x{self.scale_down_periods} -{self.scale_down_quantity}"
            f" grace{self.grace_period_s:g}"
        )


@dataclass
class Tracked:
    provisioning: bool = True
    shutdown: bool = False


class JitsiController(Controller):
    def __init__(self, config: JitsiConfig | None = None) -> None:
        self.config = config or JitsiConfig()
        self._tracked: dict[str, Tracked] = {}
        self._metrics: deque[tuple[float, str, int]] = deque()  # (time, instance, 1 when idle)
        self._grace_until = -math.inf
        self.desired_changes: list[tuple[float, int]] = []

    def start(self, world: World) -> None:
        self.world = world
        self.desired = 0  # the instances the trace starts with, counted as they come up
        self.minimum, self.maximum = world.model.minimum, world.model.maximum
        # It launches and ends instances itself: the group is only the launcher.
        world.group.minimum = 0
        interval = self.config.job_interval_s
        world.engine.every(interval, self._autoscale_job, first=0.0)
        world.engine.every(interval, self._launcher_job, first=0.0)

    def on_ready(self, instance_id: str) -> None:
        if instance_id not in self._tracked:
            self._tracked[instance_id] = Tracked()
            self.desired += 1
        self._stats(instance_id)
        self._poll_shutdown(instance_id)

    def on_gone(self, instance_id: str) -> None:
        # The sidecar's terminate script: the instance ends itself.
        self._tracked.pop(instance_id, None)
        self.world.group.terminate(instance_id)

    def on_terminated(self, instance_id: str) -> None:
        self._tracked.pop(instance_id, None)

    # --- the sidecar ------------------------------------------------------------------------

    def _stats(self, instance_id: str) -> None:
        tracked = self._tracked.get(instance_id)
        jibri = self.world.jibris.get(instance_id)
        if tracked is None or jibri is None:
            return
        tracked.provisioning = False
        if not tracked.shutdown:
            self._metrics.append((self.world.engine.now(), instance_id, 1 if jibri.idle else 0))
        self.world.engine.after(self.config.stats_interval_s, lambda: self._stats(instance_id), Phase.CONTROL)

    def _poll_shutdown(self, instance_id: str) -> None:
        tracked = self._tracked.get(instance_id)
        if tracked is None or instance_id not in self.world.jibris:
            return
        if tracked.shutdown:
            self.world.drain(instance_id)
            return
        self.world.engine.after(self.config.shutdown_poll_s, lambda: self._poll_shutdown(instance_id), Phase.CONTROL)

    # --- the autoscaler's jobs ------------------------------------------------------------------

    def _current(self) -> list[str]:
        return [i for i, t in self._tracked.items() if not t.shutdown]

    def _autoscale_job(self) -> None:
        now = self.world.engine.now()
        if now < self._grace_until:
            return
        count = len(self._current())
        if count == 0 or self.desired != count:
            return
        c = self.config
        values = self.available_per_period(now, max(c.scale_up_periods, c.scale_down_periods))
        up = all(
            (count < self.maximum and v < c.scale_up_threshold) or count < self.minimum
            for v in values[: c.scale_up_periods]
        )
        down = all(count > self.minimum and v > c.scale_down_threshold for v in values[: c.scale_down_periods])
        if up:
            self.desired = min(self.maximum, self.desired + c.scale_up_quantity)
        elif down:
            self.desired = max(self.minimum, self.desired - c.scale_down_quantity)
        else:
            return
        self.desired_changes.append((now, self.desired))
        self._grace_until = now + c.grace_period_s

    def available_per_period(self, now: float, periods: int) -> list[float]:
        """Sum over instances of their average "available" value, per period, newest first."""
        period = self.config.scale_period_s
        while self._metrics and now - self._metrics[0][0] >= periods * period:
            self._metrics.popleft()
        points: list[list[tuple[float, str, int]]] = [[] for _ in range(periods)]
        present: list[set[str]] = [set() for _ in range(periods)]
        seen: dict[str, None] = {}
        for metric in self._metrics:
            index = math.floor((now - metric[0]) / period)
            if 0 <= index < periods:
                points[index].append(metric)
                present[index].add(metric[1])
                seen.setdefault(metric[1])
        # Fill a gap in a period from the next older one when the instance reported on both sides.
        for index in range(periods - 2, -1, -1):
            for instance_id in seen:
                if instance_id in present[index] or instance_id not in present[index + 1]:
                    continue
                if index == 0 or instance_id in present[index - 1]:
                    older = [m for m in points[index + 1] if m[1] == instance_id]
                    points[index].append(max(older, key=lambda m: m[0]))
        summary = []
        for metrics in points:
            totals: dict[str, list[int]] = {}
            for _, instance_id, value in metrics:
                totals.setdefault(instance_id, []).append(value)
            summary.append(sum(sum(v) / len(v) for v in totals.values()))
        return summary

    def _launcher_job(self) -> None:
        current = self._current()
        count = len(current)
        group = self.world.group
        if count < self.desired and count < self.maximum:
            before = set(group.in_group())
            group.set_desired_capacity(min(group.maximum, group.desired + min(self.maximum, self.desired) - count))
            for instance_id in group.in_group():
                if instance_id not in before:
                    self._tracked[instance_id] = Tracked()
        elif count > self.desired and count > self.minimum:
            quantity = count - max(self.minimum, self.desired)
            jibris = self.world.jibris
            provisioning = [i for i in current if self._tracked[i].provisioning or i not in jibris]
            rest = [i for i in current if i not in provisioning]
            idle = [i for i in rest if jibris[i].idle]
            busy = [i for i in rest if not jibris[i].idle]
            for instance_id in (provisioning + idle + busy)[:quantity]:
                self._tracked[instance_id].shutdown = True
