"""Figures of an evaluation: confusion matrices, ROC and precision-recall curves, per-class F1,
regression residuals and the most confidently wrong images.

Each ``plot_*`` draws one PNG (written atomically by ``plots._save``) and returns its path;
``write_figures`` writes every figure that applies to a split. Figures stay readable with many
classes: at most ``MAX_TICKS`` class names on an axis, at most ``MAX_BARS`` bars, and beyond
``MAX_LEGEND`` curves only the weakest classes are named.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from trainlab.evaluate.metrics import EvalResult
from trainlab.evaluate.plots import _save, plot_samples, plt
from trainlab.evaluate.predictions import Predictions

# ``plt`` comes from ``plots``, which selects the file-only backend before pyplot is imported.

MAX_TICKS = 40  # class names written along one axis of a confusion matrix
MAX_ANNOTATED = 15  # classes up to which each cell of a confusion matrix shows its value
MAX_LEGEND = 10  # curves up to which every class is named in the legend; beyond, the weakest few
WEAKEST = 5  # curves named (and drawn in colour) when there are more than MAX_LEGEND
MAX_BARS = 50  # classes shown in the per-class F1 chart; beyond, the lowest-scoring ones
MAX_PANELS = 4  # targets shown by the residual plot
MAX_POINTS = 5000  # points per residual panel; more are thinned evenly


# ------------------------------------------------------------------------------- classification


def tick_positions(count: int, limit: int = MAX_TICKS) -> list[int]:
    """Indices of the ``count`` classes to name along an axis: all of them, or every n-th (n as small as fits)."""
    step = max(1, math.ceil(count / limit))
    return list(range(0, count, step))


def _tick_font(count: int) -> float:
    """A tick-label font size that keeps ``count`` labels apart."""
    return 9 if count <= 10 else 8 if count <= 20 else 6.5


def plot_confusion(result: EvalResult, path: Path, normalized: bool = False) -> Path:
    """The confusion matrix: true class down, predicted class across; counts or row-normalized.

    A row-normalized matrix shows each class's recall on its diagonal. With more than
    ``MAX_ANNOTATED`` classes the cells carry no numbers; with more than ``MAX_TICKS`` only
    every n-th class is named.
    """
    if result.confusion is None:
        raise ValueError("the result has no confusion matrix")
    matrix = torch.tensor(result.confusion["normalized" if normalized else "counts"], dtype=torch.float)  # (C, C)
    count = matrix.shape[0]
    names = _class_names(result, count)
    side = min(3.5 + 0.35 * count, 16.0)
    figure, axis = plt.subplots(figsize=(side + 1.2, side))
    image = axis.imshow(matrix.numpy(), cmap="Blues", vmin=0.0, vmax=1.0 if normalized else None,
                        interpolation="nearest")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.03, aspect=30,
                    label="fraction of the true class" if normalized else "samples")
    ticks = tick_positions(count)
    font = _tick_font(len(ticks))
    tilted = {"rotation": 45, "ha": "right", "rotation_mode": "anchor"} if count > 4 else {}
    axis.set_xticks(ticks, [names[i] for i in ticks], fontsize=font, **tilted)
    axis.set_yticks(ticks, [names[i] for i in ticks], fontsize=font)
    if count <= MAX_ANNOTATED:
        threshold = float(matrix.max()) / 2 if matrix.numel() else 0.0
        for row in range(count):
            for column in range(count):
                value = float(matrix[row, column])
                text = f"{value:.2f}" if normalized else f"{int(value)}"
                axis.text(column, row, text, ha="center", va="center", fontsize=8 if count <= 10 else 6,
                          color="white" if value > threshold else "black")
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    shown = "" if len(ticks) == count else f"; one class in {ticks[1] - ticks[0]} named"
    axis.set_title(f"confusion matrix ({'row-normalized: recall on the diagonal' if normalized else 'counts'}"
                   f"{shown})", fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def plot_roc(result: EvalResult, path: Path) -> Path:
    """ROC curves: the positive class's (two classes) or one per class against the rest, with the chance line."""
    curves = result.curves.get("roc") or {}
    if not curves:
        raise ValueError("the result has no ROC curves")
    figure, axis = plt.subplots(figsize=(6.5, 5.5))
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
    _draw_curves(axis, curves, "fpr", "tpr", "auc", "AUC")
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    _unit_square(axis)
    axis.legend(fontsize=8, loc="lower right")
    if "roc_auc_macro" in result.scalars:
        title = f"ROC curves, one class against the rest (macro AUC {result.scalars['roc_auc_macro']:.3f})"
    else:
        title = f"ROC curve of class '{next(iter(curves))}' (AUC {next(iter(curves.values()))['auc']:.3f})"
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def plot_pr(result: EvalResult, path: Path) -> Path:
    """Precision-recall curves, laid out as ``plot_roc``; a single curve gets its chance level (the positive rate)."""
    curves = result.curves.get("pr") or {}
    if not curves:
        raise ValueError("the result has no precision-recall curves")
    figure, axis = plt.subplots(figsize=(6.5, 5.5))
    _draw_curves(axis, curves, "recall", "precision", "ap", "AP", drawstyle="steps-post")
    if len(curves) == 1:
        name = next(iter(curves))
        total = sum(values.get("support", 0) for values in result.per_class.values())
        support = result.per_class.get(name, {}).get("support")
        if total and support is not None:
            axis.axhline(support / total, linestyle="--", color="grey", linewidth=0.8,
                         label=f"chance (positive rate {support / total:.2f})")
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    _unit_square(axis)
    axis.legend(fontsize=8, loc="lower left")
    if "average_precision_macro" in result.scalars:
        title = f"precision-recall curves, one class against the rest (macro AP " \
                f"{result.scalars['average_precision_macro']:.3f})"
    else:
        title = f"precision-recall curve of class '{next(iter(curves))}' (AP {next(iter(curves.values()))['ap']:.3f})"
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def _draw_curves(axis: Any, curves: dict[str, dict[str, Any]], x_key: str, y_key: str, area_key: str,
                 area_label: str, drawstyle: str = "default") -> None:
    """One line per class, named in the legend with its area; beyond ``MAX_LEGEND`` classes the
    ``WEAKEST`` lowest-area classes in colour and the others thin and grey. Precision-recall
    curves are steps (``drawstyle="steps-post"``), as average precision sums them."""
    if len(curves) <= MAX_LEGEND:
        for name, curve in curves.items():
            axis.plot(curve[x_key], curve[y_key], linewidth=1.5, label=f"{name} ({area_label} {curve[area_key]:.3f})",
                      drawstyle=drawstyle)
        return
    ranked = sorted(curves, key=lambda name: curves[name][area_key])
    for position, name in enumerate(ranked[WEAKEST:]):
        axis.plot(curves[name][x_key], curves[name][y_key], color="grey", alpha=0.25, linewidth=0.6,
                  drawstyle=drawstyle, label=f"{len(ranked) - WEAKEST} other classes" if position == 0 else None)
    for name in ranked[:WEAKEST]:
        curve = curves[name]
        axis.plot(curve[x_key], curve[y_key], linewidth=1.5, label=f"{name} ({area_label} {curve[area_key]:.3f})",
                  drawstyle=drawstyle)


def _unit_square(axis: Any) -> None:
    axis.set_xlim(-0.01, 1.01)
    axis.set_ylim(-0.01, 1.01)
    axis.set_aspect("equal")
    axis.grid(alpha=0.3)


def plot_f1(result: EvalResult, path: Path) -> Path:
    """Per-class F1 as horizontal bars, each class labelled with its support, the macro F1 as a line.

    Up to ``MAX_BARS`` classes in their order; beyond, the ``MAX_BARS`` lowest, lowest first.
    """
    scores = {name: values["f1"] for name, values in result.per_class.items() if "f1" in values}
    if not scores:
        raise ValueError("the result has no per-class F1")
    names = list(scores)
    title = "F1 per class"
    if len(names) > MAX_BARS:
        names = sorted(names, key=lambda name: scores[name])[:MAX_BARS]
        title += f" (the {MAX_BARS} lowest of {len(scores)} classes)"
    if "f1_macro" in result.scalars:
        title += f", macro F1 {result.scalars['f1_macro']:.3f}"
    labels = [f"{name} (n={int(result.per_class[name].get('support', 0))})" for name in names]
    values = [scores[name] for name in names]
    figure, axis = plt.subplots(figsize=(7.5, max(2.5, 0.26 * len(names) + 1.2)))
    positions = list(range(len(names)))
    axis.barh(positions, values, color="tab:blue", height=0.7)
    axis.set_yticks(positions, labels, fontsize=_tick_font(len(names)))
    axis.invert_yaxis()  # the first class on top
    if len(names) <= 30:
        for position, value in zip(positions, values):
            axis.text(min(value, 1.0) + 0.01, position, f"{value:.2f}", va="center", fontsize=7)
    if "f1_macro" in result.scalars:
        axis.axvline(result.scalars["f1_macro"], color="tab:red", linestyle="--", linewidth=1, label="macro F1")
        axis.legend(fontsize=8, loc="lower right")
    axis.set_xlim(0, 1.1)
    axis.set_xlabel("F1")
    axis.grid(axis="x", alpha=0.3)
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def _class_names(result: EvalResult, count: int) -> list[str]:
    names = list(result.class_names or [])
    return names if len(names) == count else [str(i) for i in range(count)]


# ------------------------------------------------------------------------------- regression


def plot_residuals(pred: Predictions, path: Path) -> Path:
    """Residual (target - predicted) against the prediction, one panel per target (the first ``MAX_PANELS``)."""
    if pred.task != "regression":
        raise ValueError(f"residuals need regression predictions, not {pred.task}")
    targets = pred.targets.detach().cpu().double().reshape(len(pred), -1)  # (N, k)
    predicted = pred.predicted.detach().cpu().double().reshape(len(pred), -1)  # (N, k)
    residuals = targets - predicted  # (N, k)
    outputs = targets.shape[1]
    panels = min(outputs, MAX_PANELS)
    rows = torch.arange(len(pred))
    if len(rows) > MAX_POINTS:  # thin evenly (deterministic) to keep the file small
        rows = torch.linspace(0, len(pred) - 1, MAX_POINTS).round().long()
    columns = min(panels, 2)  # 1, 2 side by side, or a 2 x 2 grid
    grid_rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(grid_rows, columns, figsize=(5.5 * columns, 4 * grid_rows), squeeze=False)
    for column, axis in enumerate(axes.flat):
        rmse = float(residuals[:, column].pow(2).mean().sqrt()) if len(pred) else float("nan")
        axis.scatter(predicted[rows, column].numpy(), residuals[rows, column].numpy(), s=8,
                     alpha=0.6 if len(rows) <= 500 else 0.25, color="tab:blue", edgecolors="none")
        axis.axhline(0.0, color="tab:red", linewidth=1)
        axis.set_xlabel("predicted")
        axis.set_ylabel("residual (target - predicted)")
        axis.set_title(f"{f'target {column}' if outputs > 1 else 'residuals'} (RMSE {rmse:.4g})", fontsize=10)
        axis.grid(alpha=0.3)
    if outputs > panels:
        figure.suptitle(f"the first {panels} of {outputs} targets", fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


# ------------------------------------------------------------------------------- mistakes


def most_confident_mistakes(pred: Predictions, count: int = 16) -> list[int]:
    """Indices of up to ``count`` misclassified samples, the most confident (highest probability
    of the predicted class) first; ties and missing probabilities keep the data order."""
    targets = pred.targets.detach().cpu().reshape(-1)  # (N,)
    predicted = pred.predicted.detach().cpu().reshape(-1)  # (N,)
    wrong = torch.nonzero(predicted != targets).flatten()  # (M,)
    if pred.probabilities is None or len(wrong) == 0:
        return wrong[:count].tolist()
    confidence = pred.probabilities.detach().cpu().float()[wrong, predicted[wrong]]  # (M,)
    order = torch.sort(confidence, descending=True, stable=True).indices
    return wrong[order][:count].tolist()


def mistake_title(pred: Predictions, index: int) -> str:
    """``"true → predicted (p=0.97)"`` for sample ``index``, on two lines when long (p: the
    predicted class's probability, left out without probabilities)."""
    names = pred.class_names or []

    def name(label: int) -> str:
        return names[label] if 0 <= label < len(names) else str(label)

    guessed = int(pred.predicted[index])
    true, guess = name(int(pred.targets[index])), name(guessed)
    confidence = f" (p={float(pred.probabilities[index, guessed]):.2f})" if pred.probabilities is not None else ""
    separator = " →\n" if len(true) + len(guess) + len(confidence) > 24 else " → "
    return f"{true}{separator}{guess}{confidence}"


def plot_wrong(pred: Predictions, path: Path, count: int = 16) -> Path | None:
    """A grid of the most confidently wrong images, titled "true → predicted (p=0.97)".

    None (nothing written) without images or without mistakes.
    """
    if pred.task != "classification" or pred.images is None:
        return None
    chosen = most_confident_mistakes(pred, count)
    if not chosen:
        return None
    titles = [mistake_title(pred, index) for index in chosen]
    images = pred.images.detach().cpu().float().clamp(0.0, 1.0)[chosen]  # (M, C, H, W)
    mistakes = int((pred.predicted.reshape(-1).cpu() != pred.targets.reshape(-1).cpu()).sum())
    return plot_samples(images, titles, path, columns=math.ceil(math.sqrt(len(chosen))),
                        title=f"the {len(chosen)} most confident of {mistakes} mistakes")


# ------------------------------------------------------------------------------- all


def write_figures(pred: Predictions, result: EvalResult, folder: Path, prefix: str) -> dict[str, Path]:
    """Every figure that applies, as ``<folder>/<prefix>_<kind>.png``; returns kind -> path.

    Kinds: ``confusion``, ``confusion_normalized``, ``roc``, ``pr``, ``f1`` (classification, when
    the metrics were computed), ``residuals`` (regression) and ``wrong`` (image data with mistakes).
    """
    folder = Path(folder)

    def target(kind: str) -> Path:
        return folder / (f"{prefix}_{kind}.png" if prefix else f"{kind}.png")

    written: dict[str, Path] = {}
    if result.confusion is not None:
        written["confusion"] = plot_confusion(result, target("confusion"))
        written["confusion_normalized"] = plot_confusion(result, target("confusion_normalized"), normalized=True)
    if result.curves.get("roc"):
        written["roc"] = plot_roc(result, target("roc"))
    if result.curves.get("pr"):
        written["pr"] = plot_pr(result, target("pr"))
    if any("f1" in values for values in result.per_class.values()):
        written["f1"] = plot_f1(result, target("f1"))
    if pred.task == "regression" and len(pred):
        written["residuals"] = plot_residuals(pred, target("residuals"))
    if pred.task == "classification":
        wrong = plot_wrong(pred, target("wrong"))
        if wrong is not None:
            written["wrong"] = wrong
    return written
