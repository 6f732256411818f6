"""python -m sim: the what-if simulator (see sim/whatif/cli.py)."""

from __future__ import annotations

from sim.whatif.cli import main

raise SystemExit(main())
