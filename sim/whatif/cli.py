"""python -m sim: replay a demand trace against the policies and compare them."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from sim.whatif.grid import GRIDS, cheapest_reaching, reaches
from sim.whatif.metrics import Result
from sim.whatif.model import DAY, Model
from sim.whatif.plot import plot
from sim.whatif.policies import POLICY_NAMES, BaselineConfig
from sim.whatif.report import as_json, cell, table
from sim.whatif.runner import Run, simulate
from sim.whatif.trace import TraceError, TraceRequest, read_trace

Job = tuple[str, BaselineConfig | None]


def build_parser() -> argparse.ArgumentParser:
    defaults = Model()
    parser = argparse.ArgumentParser(
        prog="python -m sim",
        description="Replay a demand trace against the scaling policies, in simulated time.",
    )
    parser.add_argument("--trace", required=True, type=Path, help="CSV: request_at_s,duration_s[,announced_at_s]")
    parser.add_argument("--policy", default="all", choices=(*POLICY_NAMES, "all"))
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of the table")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="draw demand, capacity and idle over time")
    parser.add_argument(
        "--warm-pool",
        default=defaults.warm_pool,
        help="auto: the forecast policy sizes it; N: a fixed pool of N (also for classic, an ASG feature); off",
    )
    parser.add_argument("--cold-launch-s", type=float, default=defaults.cold_launch_s)
    parser.add_argument("--warm-start-s", type=float, default=defaults.warm_start_s)
    parser.add_argument("--patience-s", type=float, default=defaults.patience_s)
    parser.add_argument("--price", type=float, default=defaults.price_per_hour, help="USD per running instance-hour")
    parser.add_argument(
        "--warm-price",
        type=float,
        default=defaults.warm_price_per_hour,
        help="USD per stopped warm-pool instance-hour (EBS only: 30 GiB gp3 by default)",
    )
    parser.add_argument("--min", type=int, default=defaults.minimum, help="group minimum size")
    parser.add_argument("--max", type=int, default=defaults.maximum, help="group maximum size")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="for the group's random tie-breaks")
    parser.add_argument(
        "--lifecycle-hooks",
        action="store_true",
        help="give the group launch and terminate hooks that the forecast policy's control plane completes"
        " (the baselines run without hooks)",
    )
    parser.add_argument(
        "--hook-heartbeat-timeout-s",
        type=float,
        default=defaults.hook_heartbeat_timeout_s,
        help="the hooks' heartbeat timeout (30-7200); a held termination ends at min(48 h, 100 x this)."
        " Only held terminations are heartbeated, so below the launch delays every launch times out",
    )
    parser.add_argument(
        "--evaluate-on-busy",
        action=argparse.BooleanOptionalAction,
        default=defaults.evaluate_on_busy,
        help="the forecast policy's control plane evaluates at once when a busy report leaves fewer idle"
        " recorders than the buffer target, and sizes the buffer for it (EVALUATE_ON_BUSY; on by default)",
    )
    parser.add_argument(
        "--from-day", type=int, default=1, metavar="N", help="report only from day N on (day 1 starts at second 0)"
    )
    parser.add_argument(
        "--grid", action="store_true", help="also run each baseline's threshold grid and compare it with ours"
    )
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="runs in parallel")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        model = Model(
            cold_launch_s=args.cold_launch_s,
            warm_start_s=args.warm_start_s,
            patience_s=args.patience_s,
            price_per_hour=args.price,
            warm_price_per_hour=args.warm_price,
            minimum=args.min,
            maximum=args.max,
            seed=args.seed,
            warm_pool=args.warm_pool,
            lifecycle_hooks=args.lifecycle_hooks,
            hook_heartbeat_timeout_s=args.hook_heartbeat_timeout_s,
            evaluate_on_busy=args.evaluate_on_busy,
        )
        trace = read_trace(args.trace)
    except (ValueError, TraceError, OSError) as error:
        parser.error(str(error))
    if args.from_day < 1:
        parser.error("--from-day counts from 1")
    since = (args.from_day - 1) * DAY
    policies = list(POLICY_NAMES) if args.policy == "all" else [args.policy]
    if args.grid and "forecast" not in policies:
        policies.insert(0, "forecast")
    jobs: list[Job] = [(name, None) for name in policies]
    if args.grid:
        jobs += [(name, config) for name, grid in GRIDS.items() for config in grid]

    started = time.perf_counter()
    runs = run_all(trace, jobs, model, since, args.jobs)
    elapsed = time.perf_counter() - started
    main_runs = runs[: len(policies)]
    results = [run.result for run in main_runs]

    if args.json:
        print(as_json(results))
    else:
        window = f", from day {args.from_day}" if args.from_day > 1 else ""
        print(f"{args.trace.name}: {len(trace)} requests{window}\n")
        print(table(results))
        if args.grid:
            print()
            print(grid_report(results, [run.result for run in runs[len(policies) :]]))
    if args.plot:
        plot([(run.result.policy, run.samples) for run in main_runs], args.plot, title=args.trace.name)
    sys.stdout.flush()
    print(f"simulated in {elapsed:.1f} s", file=sys.stderr)
    return 0


def run_all(trace: list[TraceRequest], jobs: list[Job], model: Model, since: float, workers: int) -> list[Run]:
    if workers <= 1 or len(jobs) == 1:
        return [simulate(trace, name, model, config, since) for name, config in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(simulate, trace, name, model, config, since) for name, config in jobs]
        return [f.result() for f in futures]


GRID_COLUMNS = (
    ("config", "configuration"),
    ("served_immediately_pct", "served at once %"),
    ("failed", "failed"),
    ("recordings_killed", "killed"),
    ("cost_vs_lower_bound", "cost ÷ LB"),
    ("cost_per_recording_hour", "$ per rec-h"),
)


def grid_report(results: list[Result], grid: list[Result]) -> str:
    ours = next(r for r in results if r.policy == "forecast")
    lines = []
    for name in GRIDS:
        runs = [r for r in grid if r.policy == name]
        header = "| " + " | ".join(title for _, title in GRID_COLUMNS) + " | reaches ours |"
        lines += [f"{name} grid:", "", header, "|" + " --- |" * (len(GRID_COLUMNS) + 1)]
        for r in runs:
            cells = [r.config if key == "config" else cell(r, key) for key, _ in GRID_COLUMNS]
            lines.append("| " + " | ".join(cells) + f" | {'yes' if reaches(r, ours) else 'no'} |")
        best = cheapest_reaching(runs, ours)
        lines.append("")
        if best is None:
            lines.append(
                f"no {name} configuration reaches ours ({ours.served_immediately_pct:.1f} % at once,"
                f" {ours.failed} failed, {ours.recordings_killed} killed)"
            )
        else:
            lines.append(
                f"cheapest {name} configuration reaching ours: {best.config},"
                f" ${best.cost_per_recording_hour:.3f} per recording-hour vs ours ${ours.cost_per_recording_hour:.3f}"
            )
        lines.append("")
    return "\n".join(lines).rstrip()
