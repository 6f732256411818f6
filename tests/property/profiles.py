"""Hypothesis budgets for the stateful tests and the API fuzzing. `make test` uses `ci`; a deeper hunt:

PROPERTY_PROFILE=deep .venv/bin/python -m pytest tests/property -q
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,  # the same examples on every run: `make test` does not flake
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "deep",
    max_examples=2000,
    database=None,
    stateful_step_count=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def profile() -> settings:
    """The budget the environment asks for; applied per test, never as the global default."""
    return settings.get_profile(os.environ.get("PROPERTY_PROFILE", "ci"))
