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


def plot_lr_find(result: Any, path: Path, title: str = "") -> Path:
    """The LR range test: training loss against the learning rate on a log axis.

    The smoothed loss is the curve the suggestions are computed from; the raw per-step loss is
    drawn faintly behind it. Every suggestion is a labelled vertical line (suggestions that
    coincide share one line); the chosen one is drawn solid. Validation accuracy, when the
    test recorded it, goes on a second y axis. ``result`` is a ``LRFinderResult``.
    """
    figure, axis = plt.subplots(figsize=(8, 4.5))
    lrs, smoothed, losses = list(result.lrs), list(result.smoothed), list(result.losses)
    if lrs:
        axis.plot(lrs, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="loss (per step)")
        axis.plot(lrs, smoothed, color="tab:blue", linewidth=1.8, label="loss (smoothed)")
        # Keep the diverging tail from flattening the interesting part of the curve.
        lowest = min(range(len(smoothed)), key=smoothed.__getitem__)
        top = max(max(smoothed[: lowest + 1]), smoothed[0])
        bottom = min(min(smoothed), min(losses))
        margin = 0.1 * (top - bottom) or 0.1 * abs(top) or 0.1
        axis.set_ylim(bottom - margin, top + 2 * margin)
    else:
        axis.text(0.5, 0.5, "no finite loss recorded", ha="center", va="center", transform=axis.transAxes)
    axis.set_xscale("log")
    axis.set_xlabel("learning rate (log scale)")
    axis.set_ylabel("training loss")
    axis.grid(alpha=0.3)

    by_value: dict[float, list[str]] = {}
    for name, value in result.suggestions.items():
        by_value.setdefault(float(value), []).append(name)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"][1:]
    chosen = getattr(result, "suggestion", None)
    for index, (value, names) in enumerate(sorted(by_value.items())):
        color = colors[index % len(colors)]
        solid = chosen in names
        label = " = ".join(names) + f": {value:.2g}"
        axis.axvline(value, color=color, linestyle="-" if solid else "--", linewidth=1.6 if solid else 1.0,
                     label=label + (" (suggested)" if solid else ""))
        axis.text(value, 0.98 - 0.06 * (index % 8), f" {names[0]}", color=color, fontsize=7,
                  transform=axis.get_xaxis_transform(), va="top")

    handles, labels = axis.get_legend_handles_labels()
    if result.accuracy:
        second = axis.twinx()
        accuracy_lrs, accuracy = zip(*result.accuracy)
        line = second.plot(accuracy_lrs, accuracy, "o-", color="tab:green", markersize=3, label="valid accuracy")
        second.set_ylabel("validation accuracy", color="tab:green")
        handles += line
        labels += ["valid accuracy"]
    axis.legend(handles, labels, fontsize=7, loc="lower left")
    stopped = " (stopped early: the loss diverged)" if getattr(result, "stopped_early", False) else ""
    axis.set_title((title + "\n" if title else "") + f"LR range test{stopped}", fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def plot_samples(images: Any, titles: list[str], path: Path, columns: int = 8, title: str = "") -> Path:
    """A grid of images (N, C, H, W) with values in [0, 1], each titled (e.g. by its class name)."""
    count = len(images)
    columns = max(1, min(columns, count))
    rows = max(1, -(-count // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)
    for position, axis in enumerate(axes.flat):
        axis.axis("off")
        if position >= count:
            continue
        image = images[position]
        channels = image.shape[0]
        if channels == 1:
            axis.imshow(image[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
        else:
            axis.imshow(image[:3].permute(1, 2, 0).numpy())
        axis.set_title(titles[position] if position < len(titles) else "", fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)
