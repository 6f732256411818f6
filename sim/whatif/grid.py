"""The grid of each baseline's main thresholds, searched for a configuration as good as ours.

A configuration "reaches our service level" when it serves at least the same share
of requests at once as the forecast policy did, with no more failed requests and no
more killed recordings. Among those, the cheapest per delivered recording-hour is
the baseline's best answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from sim.whatif.metrics import Result
from sim.whatif.policies import BaselineConfig
from sim.whatif.policies.classic import ClassicConfig
from sim.whatif.policies.jitsi import JitsiConfig

# Scale out while fewer than N recorders are free; scale in when more than N + 2 are, for 5 minutes.
CLASSIC_GRID: tuple[ClassicConfig, ...] = tuple(
    ClassicConfig(scale_out_below=below, scale_out_step=step, cooldown_s=cooldown, scale_in_above=below + 2)
    for below, step, cooldown in itertools.product((1, 2, 4, 8), (1, 2, 4), (60, 300))
)
# Scale up while fewer than N are available for 2 periods; down when more than N + 1 are, for 4.
JITSI_GRID: tuple[JitsiConfig, ...] = tuple(
    JitsiConfig(scale_up_threshold=up, scale_up_quantity=quantity, grace_period_s=grace, scale_down_threshold=up + 1)
    for up, quantity, grace in itertools.product((1, 2, 4, 8), (1, 2, 4), (120, 480))
)
GRIDS: dict[str, Sequence[BaselineConfig]] = {"classic": CLASSIC_GRID, "jitsi": JITSI_GRID}


def reaches(result: Result, ours: Result) -> bool:
    return (
        result.served_immediately_pct >= ours.served_immediately_pct
        and result.failed <= ours.failed
        and result.recordings_killed <= ours.recordings_killed
    )


def cheapest_reaching(results: Sequence[Result], ours: Result) -> Result | None:
    matching = [r for r in results if reaches(r, ours)]
    return min(matching, key=lambda r: r.cost_per_recording_hour, default=None)
