"""Clocks for the simulated world: one a test moves by hand, one that runs faster than real time."""

from __future__ import annotations

import threading
import time


class ManualClock:
    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, epoch: float) -> None:
        with self._lock:
            self._now = epoch


class ScaledClock:
    """Wall time, `speed` times faster, starting from `start` (default: now)."""

    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._origin_real = time.time()
        self._origin = self._origin_real if start is None else start

    def now(self) -> float:
        return self._origin + (time.time() - self._origin_real) * self.speed
