"""Small builders for the simulator tests."""

from __future__ import annotations

from collections.abc import Iterable

from sim.whatif.engine import Engine
from sim.whatif.group import SimulatedGroup
from sim.whatif.model import Model
from sim.whatif.trace import TraceRequest
from sim.whatif.world import World


def trace(*rows: tuple[float, float] | tuple[float, float, float]) -> list[TraceRequest]:
    """Requests from (request_at, duration[, announced_at]) rows."""
    return [TraceRequest(i, row[0], row[1], row[2] if len(row) > 2 else None) for i, row in enumerate(rows)]


def world(requests: list[TraceRequest], model: Model | None = None, never_healthy: Iterable[str] = ()) -> World:
    model = model or Model()
    engine = Engine()
    return World(engine, SimulatedGroup(engine, model), model, requests, never_healthy=never_healthy)
