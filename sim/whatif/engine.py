"""The discrete-event engine: a virtual clock and a queue of timed callbacks.

Time is seconds since the start of the trace. Events at the same instant run by
phase (see `Phase`), then in the order they were scheduled, so a run is a pure
function of its inputs.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from enum import IntEnum


class Phase(IntEnum):
    # Machines change first, then recordings end and free a recorder, then requests
    # arrive, then the control loops look at the result of all of that.
    INSTANCE = 0
    RECORDING_END = 1
    REQUEST = 2
    CONTROL = 3


class Event:
    __slots__ = ("action", "at", "cancelled")

    def __init__(self, at: float, action: Callable[[], None]) -> None:
        self.at = at
        self.action = action
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Engine:
    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._queue: list[tuple[float, int, int, Event]] = []
        self._order = itertools.count()
        self.events_run = 0

    def now(self) -> float:
        return self._now

    def at(self, when: float, action: Callable[[], None], phase: Phase = Phase.CONTROL) -> Event:
        if when < self._now:
            raise ValueError(f"cannot schedule at {when}: the clock is already at {self._now}")
        event = Event(when, action)
        heapq.heappush(self._queue, (when, int(phase), next(self._order), event))
        return event

    def after(self, delay: float, action: Callable[[], None], phase: Phase = Phase.CONTROL) -> Event:
        return self.at(self._now + delay, action, phase)

    def every(
        self, period: float, action: Callable[[], None], first: float | None = None, phase: Phase = Phase.CONTROL
    ) -> None:
        """Run `action` at `first` (default: now) and every `period` after, until the run ends."""
        if period <= 0:
            raise ValueError("period must be positive")

        def tick() -> None:
            action()
            self.at(self._now + period, tick, phase)

        self.at(self._now if first is None else first, tick, phase)

    def run(self, until: float) -> None:
        """Process every event due at or before `until`, then leave the clock at `until`."""
        queue = self._queue
        while queue and queue[0][0] <= until:
            when, _, _, event = heapq.heappop(queue)
            if event.cancelled:
                continue
            self._now = when
            self.events_run += 1
            event.action()
        self._now = max(self._now, until)


class EpochClock:
    """The engine's clock as chalicelib sees it: seconds since the epoch."""

    def __init__(self, engine: Engine, epoch: float) -> None:
        self._engine = engine
        self.epoch = epoch

    def now(self) -> float:
        return self.epoch + self._engine.now()
