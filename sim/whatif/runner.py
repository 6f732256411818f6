"""One run: a trace, a policy, a model, and what came out of it."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from chalicelib.observability import logger
from sim.whatif.engine import Engine
from sim.whatif.group import SimulatedGroup
from sim.whatif.metrics import Result, lower_bound_result, summarize
from sim.whatif.model import Model
from sim.whatif.policies import BaselineConfig, controller_for
from sim.whatif.policies import lower_bound as bound
from sim.whatif.trace import TraceRequest
from sim.whatif.world import Sample, World


@dataclass(frozen=True)
class Run:
    result: Result
    samples: list[Sample]
    wall_seconds: float


def simulate(
    trace: list[TraceRequest],
    policy: str,
    model: Model | None = None,
    config: BaselineConfig | None = None,
    since: float = 0.0,
) -> Run:
    model = model or Model()
    started = time.perf_counter()
    if policy == "lower_bound":
        return Run(lower_bound_result(trace, model, since), bound.samples(trace), time.perf_counter() - started)
    engine = Engine()
    group = SimulatedGroup(engine, model)
    world = World(engine, group, model, trace)
    controller = controller_for(policy, config)
    with _control_plane_quiet():
        world.run(controller)
    label = config.label() if config is not None else _default_label(policy, model)
    result = summarize(policy, label, world.records, group.segments, group.size_changes, model, engine.now(), since)
    return Run(result, world.samples, time.perf_counter() - started)


def _default_label(policy: str, model: Model) -> str:
    if policy == "forecast":
        return f"warm pool {model.warm_pool}" + (", lifecycle hooks" if model.lifecycle_hooks else "")
    pool = model.fixed_warm_pool()
    if policy == "classic":
        return "defaults" + (f", warm pool {pool}" if pool else "")
    return "defaults"


@contextlib.contextmanager
def _control_plane_quiet() -> Iterator[None]:
    """The control plane's info logs (each lifecycle action, each repair) would mix into the report on stdout."""
    level = logger.log_level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
