"""Scale-in protection of the agent's own instance: what is known, what is wanted, and retrying with backoff."""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.aws import AutoScaling
from agent.backoff import Backoff
from agent.log import get_logger

log = get_logger("protection")


class ProtectionKeeper:
    def __init__(
        self,
        autoscaling: AutoScaling,
        asg_name: str,
        protected: bool | None,
        backoff: Backoff,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._autoscaling = autoscaling
        self._asg_name = asg_name
        self.protected = protected  # None: unknown, so either request is sent
        self._backoff = backoff
        self._clock = clock
        self.retry_at: float | None = None

    def ensure(self, protected: bool, reason: str) -> bool:
        """Make the group's protection flag equal `protected`; False if that is not (yet) the case."""
        if self.protected is protected:
            self.retry_at = None
            return True
        now = self._clock()
        if self.retry_at is not None and now < self.retry_at:
            return False
        try:
            self._autoscaling.set_protection(self._asg_name, protected)
        except Exception as exc:
            delay = self._backoff.next_delay()
            self.retry_at = now + delay
            log.error(
                "could not %s scale-in protection (%s); retrying in %.1f s",
                "set" if protected else "clear",
                exc,
                delay,
                extra={"asg_name": self._asg_name, "reason": reason},
            )
            return False
        self.protected = protected
        self.retry_at = None
        self._backoff.reset()
        log.info(
            "scale-in protection %s",
            "set" if protected else "cleared",
            extra={"asg_name": self._asg_name, "reason": reason},
        )
        return True
