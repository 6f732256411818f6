"""The parameters of the simulated world, shared by every policy in a run."""

from __future__ import annotations

from dataclasses import dataclass

# 2026-01-05 00:00 UTC, a Monday: trace second 0 is midnight, so day-of-week and
# time-of-day logic in the policy sees whole days.
EPOCH = 1_767_571_200.0
DAY = 86_400.0


@dataclass(frozen=True)
class Model:
    cold_launch_s: float = 240.0  # desired capacity raised -> Jibri idle in the brewery, from scratch
    warm_start_s: float = 45.0  # the same from a stopped instance in the warm pool
    patience_s: float = 300.0  # a queued request gives up after this long
    price_per_hour: float = 0.17  # running instance, on-demand
    # A stopped instance is billed for its EBS volume only: 30 GiB gp3 at $0.08 per GiB-month.
    warm_price_per_hour: float = 0.0033
    minimum: int = 1
    maximum: int = 200
    seed: int = 1  # ties the default termination policy breaks at random
    warm_pool: str = "auto"  # "auto", "off" or a number; see the CLI help
    epoch: float = EPOCH
    # Launch and terminate hooks on the group, completed by the control plane (the forecast
    # policy only: the baselines' recipes have none). Off, the figures match a group without them.
    lifecycle_hooks: bool = False
    hook_heartbeat_timeout_s: float = 7200.0  # both hooks'; the global timeout is min(48 h, 100 x this)
    # The control plane evaluates at once when a busy report leaves fewer idle recorders than
    # the buffer target (EVALUATE_ON_BUSY, on by default), and its policy counts on it.
    evaluate_on_busy: bool = True

    def __post_init__(self) -> None:
        if self.cold_launch_s <= 0 or self.warm_start_s <= 0 or self.patience_s < 0:
            raise ValueError("launch delays must be positive and patience not negative")
        if not 0 <= self.minimum <= self.maximum:
            raise ValueError("the group needs 0 <= min <= max")
        if self.price_per_hour < 0 or self.warm_price_per_hour < 0:
            raise ValueError("prices cannot be negative")
        if self.warm_pool not in ("auto", "off") and not (self.warm_pool.isdigit() and int(self.warm_pool) >= 0):
            raise ValueError("warm pool must be auto, off or a whole number")
        if not 30 <= self.hook_heartbeat_timeout_s <= 7200:
            # PutLifecycleHook's bounds for HeartbeatTimeout.
            raise ValueError("the hook heartbeat timeout must be from 30 to 7200 s")

    def fixed_warm_pool(self) -> int:
        """The warm pool size a policy without its own sizing configures: a number given, else none."""
        return int(self.warm_pool) if self.warm_pool.isdigit() else 0
