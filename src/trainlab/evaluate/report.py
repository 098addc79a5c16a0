"""``report.html``: one self-contained page that tells what a run did.

The page needs nothing but itself: every image is inlined as a base64 data URI, the CSS is
inline, there is no JavaScript and nothing is loaded from elsewhere, so it can be mailed or
archived as a single file. Jinja2 autoescaping escapes every text taken from the run (class
names, recipe values, notes). Each section appears only when the files it is made from exist:

- header: recipe name, status, start and last update (``status.json``, the folder name);
- training: time, steps, epochs, samples/s and the best monitored value (``status.json``);
- final metrics: the last logged train and valid values (``metrics.jsonl``);
- evaluation: scalars, per-class precision/recall/F1 and the confusion matrix of every
  ``eval/<split>.json``, with the figures it names;
- baselines: ``baseline.json``'s models beside the network's evaluated numbers;
- plots: every other PNG under ``plots/``, captioned;
- data (``data.json``), environment (``env.json``) and the resolved ``recipe.yaml`` verbatim.
"""

from __future__ import annotations

import base64
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from trainlab.recipe.errors import TrainlabError
from trainlab.runindex import (
    BEST_META,
    ENV_FILE,
    METRICS_FILE,
    NOT_METRICS,
    RECIPE_FILE,
    STATUS_FILE,
    format_seconds,
    format_time,
    read_json,
    read_recipe,
    started_time,
)

REPORT_FILE = "report.html"
TEMPLATE = "report.html.j2"
TEMPLATES = Path(__file__).parent / "templates"
DATA_FILE = "data.json"
BASELINE_FILE = "baseline.json"
PER_CLASS_COLUMNS = ("precision", "recall", "f1", "support")
MAX_CLASS_NAMES = 50  # class names listed in the data section; the per-class tables show every class

# Captions of the PNGs trainlab writes, by kind: a file is named ``<kind>.png`` or ``<split>_<kind>.png``.
CAPTIONS = {
    "curves": "Training curves: loss and metrics of the train and valid splits against the optimizer step",
    "lr_find": "LR range test: training loss against the learning rate; vertical lines mark the suggestions",
    "schedule": "Learning-rate schedule over the run",
    "confusion": "Confusion matrix (counts)",
    "confusion_normalized": "Confusion matrix, row-normalized: the recall of each class on the diagonal",
    "roc": "ROC curves, one class against the rest",
    "pr": "Precision-recall curves",
    "f1": "F1 score of each class",
    "residuals": "Residuals: prediction minus target",
    "wrong": "The most confident mistakes",
    "samples": "Training samples as the first epoch serves them",
}


def write_report(folder: Path) -> Path:
    """Write ``folder/report.html`` (atomically: a temporary file replaces it) and return its path.

    Raises TrainlabError when ``folder`` is not a run folder.
    """
    folder = Path(folder)
    if not (folder / RECIPE_FILE).is_file() and not (folder / STATUS_FILE).is_file():
        raise TrainlabError(
            f"'{folder}' is not a trainlab run folder: it has no {RECIPE_FILE} or {STATUS_FILE}. "
            "Give a folder that `trainlab train` printed"
        )
    page = render_report(folder)
    target = folder / REPORT_FILE
    handle, name = tempfile.mkstemp(dir=folder, prefix=".report.", suffix=".html.tmp")
    temporary = Path(name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(page)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target


def render_report(folder: Path) -> str:
    """The report page of a run folder as HTML text."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    environment.filters["num"] = format_number
    return environment.get_template(TEMPLATE).render(**report_context(Path(folder)))


def format_number(value: Any) -> str:
    """A table cell: integers with thousands separators, floats to 4 significant digits, ``-`` for none."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


# ----------------------------------------------------------------------------------- the page's content


def report_context(folder: Path) -> dict[str, Any]:
    """Everything the template shows, read from the run folder; absent files give empty sections."""
    recipe = read_recipe(folder)
    status = read_json(folder / STATUS_FILE)
    records = _records(folder)
    evaluations, notes = _evaluations(folder)
    shown = {figure["path"] for evaluation in evaluations for figure in evaluation["figures"]}
    try:
        recipe_text = (folder / RECIPE_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        recipe_text = None
    name = recipe.get("name") if isinstance(recipe.get("name"), str) else folder.name
    return {
        "name": name,
        "folder": str(folder),
        "status": status.get("status", "unknown"),
        "started": format_time(started_time(folder)),
        "updated": format_time(status["updated"]) if isinstance(status.get("updated"), (int, float)) else "-",
        "error": status.get("error"),
        "training": _training(folder, status),
        "final": _final_metrics(records),
        "evaluations": evaluations,
        "baseline": _baseline(folder, evaluations, records),
        "plots": [plot for plot in _plots(folder) if plot["path"] not in shown],
        "data": _data(read_json(folder / DATA_FILE)),
        "environment": _environment(read_json(folder / ENV_FILE)),
        "recipe_text": recipe_text,
        "notes": notes,
    }


def _records(folder: Path) -> list[dict[str, Any]]:
    from trainlab.train.callbacks import read_records

    path = folder / METRICS_FILE
    try:
        return read_records(path) if path.is_file() else []
    except (OSError, UnicodeDecodeError):
        return []


def _training(folder: Path, status: dict[str, Any]) -> list[tuple[str, str]]:
    """Label/value rows about the training itself."""
    best = status.get("best_value")
    best_step = status.get("best_step")
    monitor = status.get("monitor")
    if best is None:
        meta = read_json(folder / BEST_META)
        best, best_step, monitor = meta.get("value"), meta.get("step"), monitor or meta.get("monitor")
    rows = [
        ("training time", format_seconds(status["seconds"]) if isinstance(status.get("seconds"), (int, float))
         else None),
        ("epochs", format_number(status.get("epoch")) if status.get("epoch") is not None else None),
        ("optimizer steps", format_number(status.get("step")) if status.get("step") is not None else None),
        ("throughput", f"{status['samples_per_second']:,.0f} samples/s"
         if isinstance(status.get("samples_per_second"), (int, float)) else None),
        ("device", status.get("device")),
        ("precision", status.get("precision")),
    ]
    if best is not None:
        at = f" at step {format_number(best_step)}" if best_step is not None else ""
        rows.append((f"best {monitor}" if monitor else "best monitored value", f"{format_number(best)}{at}"))
    return [(label, str(value)) for label, value in rows if value is not None]


def _final_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The last record of each split with a loss: a table with a row per split and a column per metric."""
    last: dict[str, dict[str, Any]] = {}
    for record in records:
        if isinstance(record.get("split"), str) and "loss" in record:
            last[record["split"]] = record
    splits = sorted(last, key=lambda split: {"train": 0, "valid": 1, "test": 2}.get(split, 3))
    columns: list[str] = []
    for split in splits:
        columns += [key for key in last[split] if key not in NOT_METRICS and key not in columns]
    rows = [{"split": split, "epoch": last[split].get("epoch"), "step": last[split].get("step"),
             "values": [last[split].get(column) for column in columns]} for split in splits]
    return {"columns": columns, "rows": rows}


def _inside(folder: Path, relative: Any) -> Path | None:
    """``folder / relative`` when that is an existing PNG inside the run folder, else None."""
    if not isinstance(relative, str):
        return None
    path = (folder / relative).resolve()
    if path.suffix.lower() != ".png" or not path.is_file() or not path.is_relative_to(folder.resolve()):
        return None
    return path


def _image(folder: Path, path: Path, caption: str) -> dict[str, str]:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return {"path": path.relative_to(folder.resolve()).as_posix(), "caption": caption,
            "src": f"data:image/png;base64,{data}"}


def caption_for(path: str) -> str:
    """A PNG's caption: the known one for trainlab's plots (``test: ...`` for ``test_<kind>.png``),
    else its name in words."""
    stem = Path(path).stem
    for kind in sorted(CAPTIONS, key=len, reverse=True):  # confusion_normalized before confusion
        if stem == kind:
            return CAPTIONS[kind]
        if stem.endswith("_" + kind):
            return f"{stem[: -len(kind) - 1].replace('_', ' ')}: {CAPTIONS[kind]}"
    return stem.replace("_", " ").replace("-", " ").capitalize()


def _plots(folder: Path) -> list[dict[str, str]]:
    """Every PNG under plots/ (not the temporary files of a plot being written), sorted by path."""
    found = []
    plots = folder / "plots"
    for path in sorted(plots.rglob("*.png")) if plots.is_dir() else []:
        if path.name.endswith(".tmp.png") or not path.is_file():
            continue
        relative = path.relative_to(folder).as_posix()
        found.append(_image(folder, path.resolve(), f"{caption_for(relative)} ({relative})"))
    return found


def _evaluations(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every eval/*.json, and a note for each that could not be read."""
    evaluations, notes = [], []
    files = sorted((folder / "eval").glob("*.json")) if (folder / "eval").is_dir() else []
    for path in sorted(files, key=lambda p: ({"test": 0, "valid": 1, "train": 2}.get(p.stem, 3), p.name)):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            notes.append(f"eval/{path.name} could not be read as JSON and is left out")
            continue
        if not isinstance(raw, dict):
            notes.append(f"eval/{path.name} is not a JSON object and is left out")
            continue
        evaluations.append(_evaluation(folder, path, raw))
    return evaluations, notes


def _evaluation(folder: Path, path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    scalars = raw.get("scalars") if isinstance(raw.get("scalars"), dict) else {}
    per_class = raw.get("per_class") if isinstance(raw.get("per_class"), dict) else {}
    extra = [key for row in per_class.values() if isinstance(row, dict) for key in row
             if key not in PER_CLASS_COLUMNS]
    class_columns = [c for c in PER_CLASS_COLUMNS if any(isinstance(r, dict) and c in r for r in per_class.values())]
    class_columns += list(dict.fromkeys(extra))
    figures = []
    for name, relative in (raw.get("figures") or {}).items() if isinstance(raw.get("figures"), dict) else ():
        found = _inside(folder, relative)
        if found is not None:
            caption = CAPTIONS.get(str(name)) or caption_for(str(relative))
            figures.append(_image(folder, found, f"{caption} ({relative})"))
    names = raw.get("class_names") if isinstance(raw.get("class_names"), list) else list(per_class)
    return {
        "file": f"eval/{path.name}",
        "split": raw.get("split", path.stem),
        "checkpoint": raw.get("checkpoint"),
        "tta": raw.get("tta"),
        "scalars": list(scalars.items()),
        "class_columns": class_columns,
        "per_class": [(name, [row.get(column) if isinstance(row, dict) else None for column in class_columns])
                      for name, row in per_class.items()],
        "confusion": _confusion(raw.get("confusion"), names),
        "figures": figures,
        "notes": [str(note) for note in raw.get("notes") or []] if isinstance(raw.get("notes"), list) else [],
    }


def _confusion(raw: Any, class_names: list[str]) -> dict[str, Any] | None:
    """The confusion matrix as rows of (count, row-normalized share) cells, with row and column labels."""
    if not isinstance(raw, dict) or not isinstance(raw.get("counts"), list) or not raw["counts"]:
        return None
    counts = raw["counts"]
    normalized = raw.get("normalized") if isinstance(raw.get("normalized"), list) else None
    labels = raw.get("labels") if isinstance(raw.get("labels"), list) else None
    if labels is None or len(labels) != len(counts):
        labels = class_names if len(class_names) == len(counts) else [str(index) for index in range(len(counts))]
    rows = []
    for index, (label, row) in enumerate(zip(labels, counts)):
        shares = normalized[index] if normalized is not None and index < len(normalized) else None
        cells = []
        for column, count in enumerate(row if isinstance(row, list) else []):
            share = shares[column] if isinstance(shares, list) and column < len(shares) else None
            share = float(share) if isinstance(share, (int, float)) and math.isfinite(share) else None
            cells.append({"count": count, "share": share, "alpha": round(0.6 * share, 3) if share else 0.0})
        rows.append({"label": str(label), "cells": cells})
    return {"labels": [str(label) for label in labels], "rows": rows, "normalized": normalized is not None}


def _baseline(folder: Path, evaluations: list[dict[str, Any]], records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """baseline.json's models beside the network's numbers on the same metrics.

    The network's rows are its evaluations (baseline split first); without any, its last valid record.
    """
    raw = read_json(folder / BASELINE_FILE)
    models = raw.get("models") if isinstance(raw.get("models"), dict) else {}
    if not models:
        return None
    split = raw.get("split", "test")
    baseline_rows = [(str(name), model.get("scalars") if isinstance(model, dict) and
                      isinstance(model.get("scalars"), dict) else {}) for name, model in models.items()]
    columns = list(dict.fromkeys(key for _, scalars in baseline_rows for key in scalars))
    network = sorted(evaluations, key=lambda evaluation: evaluation["split"] != split)
    network_rows = [(f"network ({evaluation['split']})", dict(evaluation["scalars"])) for evaluation in network]
    if not network_rows:
        final = _final_metrics(records)
        valid = [row for row in final["rows"] if row["split"] == "valid"]
        if valid:
            network_rows = [("network (valid, last validation)", dict(zip(final["columns"], valid[0]["values"])))]
    rows = [{"model": name, "network": True, "values": [scalars.get(column) for column in columns]}
            for name, scalars in network_rows]
    rows += [{"model": f"{name} ({split})", "network": False, "values": [scalars.get(column) for column in columns]}
             for name, scalars in baseline_rows]
    note = raw.get("note") if isinstance(raw.get("note"), str) else None
    return {"split": split, "columns": columns, "rows": rows, "note": note, "samples": raw.get("samples")}


def _data(raw: dict[str, Any]) -> dict[str, Any] | None:
    """data.json as label/value rows, samples per split, class names and notes."""
    if not raw:
        return None
    shape = raw.get("input_shape")
    rows = [
        ("task", raw.get("task")),
        ("input shape", " x ".join(str(size) for size in shape) if isinstance(shape, list) else shape),
        ("input dtype", raw.get("input_dtype")),
        ("target shape", " x ".join(str(size) for size in raw["target_shape"]) or "scalar"
         if isinstance(raw.get("target_shape"), list) else None),
        ("classes", raw.get("num_classes")),
        ("vocabulary size", raw.get("vocab_size")),
        ("normalization", json.dumps(raw["normalization"]) if raw.get("normalization") is not None else None),
        ("preprocessing", raw.get("preprocessing")),
    ]
    names = raw.get("class_names") if isinstance(raw.get("class_names"), list) else []
    samples = raw.get("num_samples") if isinstance(raw.get("num_samples"), dict) else {}
    order = {"train": 0, "valid": 1, "test": 2}
    return {
        "rows": [(label, format_number(value)) for label, value in rows if value is not None],
        "samples": sorted(samples.items(), key=lambda item: order.get(item[0], 3)),
        "class_names": [str(name) for name in names[:MAX_CLASS_NAMES]],
        "more_classes": max(0, len(names) - MAX_CLASS_NAMES),
        "notes": [str(note) for note in raw.get("notes") or []],
    }


def _environment(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """env.json as label/value rows (a command line joined with spaces; versions as written)."""
    return [(str(key), " ".join(map(str, value)) if isinstance(value, list) else "-" if value is None else str(value))
            for key, value in raw.items()]
