"""The bench run's picture: each robot's distance to its target over time and the top view of its flight."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sim2real.bench.metrics import NS_PER_S, BagContents
from sim2real.eval.report import new_figure


def plot_tracking(
    contents: BagContents,
    targets: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    start_ns: int,
    hold_from_ns: int | None = None,
    title: str = "",
) -> Path | None:
    """Write ``path`` (PNG) from the bag's ground truth; None without matplotlib or ground truth.

    Left: distance to target (m) against time since ``start_ns`` (s), the hold window (from ``hold_from_ns``,
    where the tracking error is measured) shaded. Right: the x-y trajectories (m) with the targets as crosses.
    """
    robots = [r for r in sorted(contents.truth) if r in targets and contents.truth[r]]
    made = new_figure(11.0, 4.5, 2)
    if made is None or not robots:
        return None
    fig, (error_ax, top_ax) = made
    end_s = 0.0
    for i, robot in enumerate(robots):
        stamps = np.array(sorted(contents.truth[robot]), dtype=np.int64)
        positions = np.stack([contents.truth[robot][s] for s in stamps])
        target = np.asarray(targets[robot], dtype=np.float64)
        seconds = (stamps - start_ns) / NS_PER_S
        end_s = max(end_s, float(seconds[-1]))
        error_ax.plot(seconds, np.linalg.norm(positions - target, axis=1), color=f"C{i}", lw=1.0, label=robot)
        top_ax.plot(positions[:, 0], positions[:, 1], color=f"C{i}", lw=1.0)
        top_ax.plot(target[0], target[1], "x", color=f"C{i}", ms=9, mew=2)
    if hold_from_ns is not None:
        error_ax.axvspan((hold_from_ns - start_ns) / NS_PER_S, end_s, color="0.9", zorder=0)
    error_ax.set(xlabel="time since flight start [s]", ylabel="distance to target [m]", yscale="log")
    error_ax.set_title("tracking error (shaded: hold window)", fontsize=10)
    error_ax.legend(fontsize=8)
    top_ax.set(xlabel="x [m]", ylabel="y [m]", aspect="equal")
    top_ax.set_title("top view (x: targets)", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)
