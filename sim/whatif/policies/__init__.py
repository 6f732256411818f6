"""The policies a trace can be replayed against."""

from __future__ import annotations

from sim.whatif.policies.classic import ClassicConfig, ClassicController
from sim.whatif.policies.forecast import ForecastController
from sim.whatif.policies.jitsi import JitsiConfig, JitsiController
from sim.whatif.world import Controller

POLICY_NAMES = ("forecast", "classic", "jitsi", "lower_bound")
SIMULATED = ("forecast", "classic", "jitsi")

BaselineConfig = ClassicConfig | JitsiConfig


def controller_for(name: str, config: BaselineConfig | None = None) -> Controller:
    if name == "forecast":
        return ForecastController()
    if name == "classic":
        return ClassicController(config if isinstance(config, ClassicConfig) else None)
    if name == "jitsi":
        return JitsiController(config if isinstance(config, JitsiConfig) else None)
    raise ValueError(f"unknown policy {name!r}; expected one of {', '.join(SIMULATED)}")
