"""Plots of a run (matplotlib is imported only in this package)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(records: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Train and valid loss (and accuracy or MSE) against the optimizer step, on one axis per metric.

    Validation points sit at the step at which they were measured, so both splits share the
    iteration axis.
    """
    metrics = ["loss"] + [
        name
        for name in ("accuracy", "mse")
        if any(name in record for record in records)
    ]
    figure, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        for split, style in (("train", "-"), ("valid", "o-")):
            points = [(r["step"], r[metric]) for r in records if r["split"] == split and metric in r]
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, style, label=split, markersize=4)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel(metric)
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def plot_schedule(steps: list[int], lr: list[float], path: Path, momentum: list[float] | None = None,
                  title: str = "", epoch_steps: int | None = None) -> Path:
    """The learning rate (and a cycled momentum, on a second axis) against the optimizer step."""
    figure, axis = plt.subplots(figsize=(8, 4))
    axis.plot(steps, lr, color="tab:blue", label="lr")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("learning rate", color="tab:blue")
    axis.grid(alpha=0.3)
    if epoch_steps and steps and len(steps) // epoch_steps <= 50:
        for boundary in range(epoch_steps, steps[-1], epoch_steps):
            axis.axvline(boundary + 0.5, color="grey", alpha=0.15, linewidth=0.8)
    if momentum is not None:
        second = axis.twinx()
        second.plot(steps, momentum, color="tab:orange", label="momentum")
        second.set_ylabel("momentum", color="tab:orange")
    axis.set_title(title or "learning-rate schedule")
    figure.tight_layout()
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    """Write a figure atomically as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + ".tmp.png")
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    os.replace(temporary, path)
    return path
