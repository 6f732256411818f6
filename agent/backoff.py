"""Exponential backoff with full jitter: the delay is uniform in [0, min(cap, base * 2**failures))."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(self, base: float = 1.0, cap: float = 60.0, rng: Callable[[], float] = random.random) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng
        self.failures = 0

    def next_delay(self) -> float:
        # Full jitter spreads a fleet that lost the API at the same moment instead of retrying in lockstep.
        ceiling = min(self.cap, self.base * 2 ** min(self.failures, 32))
        self.failures += 1
        return self._rng() * ceiling

    def reset(self) -> None:
        self.failures = 0
