"""Demand, capacity and idle recorders over time, one panel per policy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sim.whatif.world import Sample


def plot(runs: Sequence[tuple[str, list[Sample]]], path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 1, sharex=True, figsize=(11, 2.4 * len(runs) + 0.6), squeeze=False)
    for ax, (name, samples) in zip(axes[:, 0], runs, strict=True):
        hours = [s.at / 3600.0 for s in samples]
        ax.step(hours, [s.recording + s.queued for s in samples], where="post", label="demand (recording + queued)")
        ax.step(hours, [s.capacity for s in samples], where="post", label="capacity (instances)")
        ax.step(hours, [s.idle for s in samples], where="post", label="idle recorders", alpha=0.8)
        if any(s.warm_pool for s in samples):
            ax.step(hours, [s.warm_pool for s in samples], where="post", label="warm pool", alpha=0.6)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper left", fontsize="small", ncol=4)
    axes[-1, 0].set_xlabel("hours from the start of the trace")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
