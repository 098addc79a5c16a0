"""Compare runs: the final and best value of every logged metric side by side, and their curves overlaid.

The values come from each run's ``metrics.jsonl``: *final* is the metric's last logged value,
*best* the lowest or highest logged value (``max`` for accuracy-like metrics, as
``train.mode: auto`` decides). Training time and status come from ``status.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainlab.recipe.errors import TrainlabError
from trainlab.runindex import METRICS_FILE, NOT_METRICS, format_seconds, read_run

PLOTTED = ("valid/loss", "valid/accuracy", "train/loss")  # the overlay's panels, when any run logged them
PLOT_FILE = "compare.png"


@dataclass
class MetricSummary:
    """One metric of one run: its last logged value and its best one (with the step it was logged at)."""

    final: float
    best: float
    best_step: int | None


@dataclass
class RunSummary:
    """One run of a comparison."""

    folder: Path
    label: str  # the name in the table and the legend: the recipe name, made unique with the folder name
    name: str
    status: str
    seconds: float | None
    step: int | None
    metrics: dict[str, MetricSummary]  # "<split>/<metric>" -> summary
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        """Steps and values of one ``<split>/<metric>`` key."""
        split, _, metric = key.partition("/")
        points = [(record["step"], record[metric]) for record in self.records
                  if record.get("split") == split and _is_number(record.get(metric)) and "step" in record]
        return [step for step, _ in points], [value for _, value in points]


@dataclass
class CompareResult:
    """The runs compared, the metric keys in display order, and the overlay plot written."""

    runs: list[RunSummary]
    metrics: list[str]
    plot: Path

    def to_json(self) -> dict[str, Any]:
        """Plain data (``trainlab runs compare --json``)."""
        return {
            "plot": str(self.plot),
            "runs": [
                {"folder": str(run.folder), "label": run.label, "name": run.name, "status": run.status,
                 "seconds": run.seconds, "step": run.step,
                 "metrics": {key: vars(summary) for key, summary in run.metrics.items()}}
                for run in self.runs
            ],
        }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summarize_metrics(records: list[dict[str, Any]]) -> dict[str, MetricSummary]:
    """The final and best value of every ``<split>/<metric>`` in a run's records."""
    from trainlab.train.loop import monitor_mode

    summaries: dict[str, MetricSummary] = {}
    for record in records:
        split = record.get("split")
        for metric, value in record.items():
            if metric in NOT_METRICS or not isinstance(split, str) or not _is_number(value):
                continue
            key = f"{split}/{metric}"
            value = float(value)
            summary = summaries.get(key)
            if summary is None:
                summaries[key] = MetricSummary(value, value, record.get("step"))
                continue
            summary.final = value
            better = value > summary.best if monitor_mode(key, "auto") == "max" else value < summary.best
            if better:
                summary.best, summary.best_step = value, record.get("step")
    return dict(sorted(summaries.items(), key=lambda item: _metric_order(item[0])))


def _metric_order(key: str) -> tuple[int, int, str]:
    split, _, metric = key.partition("/")
    return ({"train": 0, "valid": 1}.get(split, 2), 0 if metric == "loss" else 1, key)


def _read_records(folder: Path) -> list[dict[str, Any]]:
    from trainlab.train.callbacks import read_records

    path = folder / METRICS_FILE
    return read_records(path) if path.is_file() else []


def _labels(runs: list[tuple[Path, str]]) -> list[str]:
    """Recipe names; where names repeat, ``name (folder name)``; where that repeats too, the folder path."""
    names = [name for _, name in runs]
    labels = [name if names.count(name) == 1 else f"{name} ({folder.name})" for folder, name in runs]
    return [label if labels.count(label) == 1 else str(folder) for (folder, _), label in zip(runs, labels)]


def compare_runs(folders: list[Path], out: Path) -> CompareResult:
    """Summarize the runs in ``folders`` and write their overlaid curves as a PNG to ``out``
    (``out/compare.png`` when ``out`` is an existing folder)."""
    if not folders:
        raise TrainlabError("no runs to compare. Give one or more run folders, e.g. "
                            "`trainlab runs compare runs/a/<timestamp> runs/b/<timestamp>`")
    found = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise TrainlabError(f"run folder '{folder}' does not exist. Give a folder that `trainlab train` printed "
                                "(see `trainlab runs`)")
        found.append((folder, read_run(folder, folder.resolve().parent.parent)))
    labels = _labels([(folder, row.name) for folder, row in found])
    runs = []
    for (folder, row), label in zip(found, labels):
        records = _read_records(folder)
        runs.append(RunSummary(folder, label, row.name, row.shown_status, row.seconds, row.step,
                               summarize_metrics(records), records))
    keys = sorted({key for run in runs for key in run.metrics}, key=_metric_order)
    out = Path(out)
    target = out / PLOT_FILE if out.is_dir() else out
    plot_overlay(runs, target)
    return CompareResult(runs, keys, target)


def plot_overlay(runs: list[RunSummary], path: Path) -> Path:
    """One panel per key of :data:`PLOTTED` that any run logged; one colour per run, named in the legend."""
    from trainlab.evaluate.plots import _save, plt

    panels = [key for key in PLOTTED if any(run.curve(key)[0] for run in runs)] or ["train/loss"]
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, key in zip(axes[0], panels):
        for index, run in enumerate(runs):
            steps, values = run.curve(key)
            if steps:
                style = "o-" if key.startswith("valid/") else "-"
                axis.plot(steps, values, style, color=colors[index % len(colors)], label=run.label, markersize=3)
        if axis.lines:
            axis.legend(fontsize=8)
        else:
            axis.text(0.5, 0.5, "no records", ha="center", va="center", transform=axis.transAxes)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel(key)
        axis.set_title(key)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def compare_table(result: CompareResult) -> Any:
    """The comparison as a rich Table: one column per run, a final and a best row per metric; the
    best run of each metric row is bold."""
    from rich.table import Table
    from rich.text import Text

    from trainlab.train.loop import monitor_mode

    table = Table(title=f"{len(result.runs)} runs")
    table.add_column("")
    for run in result.runs:
        table.add_column(Text(run.label), justify="right")
    table.add_row("status", *(Text(run.status) for run in result.runs))
    table.add_row("duration", *(format_seconds(run.seconds) for run in result.runs))
    table.add_row("steps", *("-" if run.step is None else f"{run.step:,}" for run in result.runs))
    for key in result.metrics:
        for kind in ("final", "best"):
            values = [getattr(run.metrics[key], kind) if key in run.metrics else None for run in result.runs]
            known = [value for value in values if value is not None]
            winner = (max if monitor_mode(key, "auto") == "max" else min)(known) if len(known) > 1 else None
            cells = [Text("-") if value is None else Text(f"{value:.4g}", style="bold" if value == winner else "")
                     for value in values]
            table.add_row(f"{key} {kind}", *cells)
    return table
