"""Hypothesis budgets for the stateful tests and the API fuzzing. `make test` uses `ci`; a deeper hunt:

PROPERTY_PROFILE=deep .venv/bin/python -m pytest tests/property -q

`ci` is derandomized and keeps no database (CI runs in a clean clone). `deep` draws new examples
on every run and keeps each failure it finds, shrunk, in `.hypothesis/examples` at the repository
root (git-ignored). To replay a failure:

- on the same checkout, run the deep profile again: Hypothesis tries the saved examples first;
- anywhere else, take the `@reproduce_failure("<version>", b"<blob>")` line the failing run
  printed, whole, and run `PROPERTY_REPRODUCE='<that line>' .venv/bin/python -m pytest tests/property -q`
  with that Hypothesis version (test_pool_machine.py applies it to the machine).
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

EXAMPLES = Path(__file__).resolve().parents[2] / ".hypothesis" / "examples"

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
    database=DirectoryBasedExampleDatabase(EXAMPLES),
    print_blob=True,
    stateful_step_count=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def profile() -> settings:
    """The budget the environment asks for; applied per test, never as the global default."""
    return settings.get_profile(os.environ.get("PROPERTY_PROFILE", "ci"))
