"""Evaluation metrics of a split's predictions, computed with torchmetrics' functional API.

Metric names by task (``evaluate.metrics`` in a recipe; all of them by default):

* classification: ``accuracy``, ``top_k_accuracy`` (k = ``evaluate.top_k``; only when there are
  more than k classes), ``precision``, ``recall``, ``f1`` (each as ``<name>_macro`` and
  ``<name>_weighted`` plus per class), ``confusion_matrix`` (counts and row-normalized),
  ``roc_auc`` and ``average_precision`` (binary: of the positive class, class 1; more classes:
  one-vs-rest per class plus the macro average) with their ROC and precision-recall curves.
* regression: ``mse``, ``rmse``, ``mae``, ``r2``, ``rmsle`` (only when every target and prediction
  is above -1). With k > 1 targets each metric is the uniform average of its k per-target values
  (torchmetrics' and scikit-learn's ``multioutput="uniform_average"``; for ``rmse`` and ``rmsle``
  the average of the per-target roots).

Conventions, the same as scikit-learn's:

* precision, recall and F1 of a class that is never predicted (or never a target) are 0
  (``zero_division=0``). A class absent from both the targets and the predictions is left out
  of the macro average (torchmetrics' rule; scikit-learn's with its default ``labels``), and
  weighs nothing in the weighted one.
* ROC AUC of a class is undefined without positive or without negative targets, average
  precision without positive targets; such a class gets no value and no curve, is left out of
  the macro average, and a note says so.

A metric that cannot be computed on these data is skipped with a note when it came from the
defaults, and is an error when the recipe named it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torchmetrics.functional import classification as tmc
from torchmetrics.functional import regression as tmr

from trainlab.evaluate.predictions import Predictions
from trainlab.recipe.errors import Problem, TrainlabError
from trainlab.registry import did_you_mean

CLASSIFICATION_METRICS: tuple[str, ...] = (
    "accuracy", "top_k_accuracy", "precision", "recall", "f1", "confusion_matrix", "roc_auc", "average_precision",
)
REGRESSION_METRICS: tuple[str, ...] = ("mse", "rmse", "mae", "r2", "rmsle")
METRICS: dict[str, tuple[str, ...]] = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}

NEEDS_PROBABILITIES = ("top_k_accuracy", "roc_auc", "average_precision")
NEEDS_TWO_CLASSES = ("roc_auc", "average_precision")

CURVE_POINTS = 1000  # points kept per curve in memory: plenty for a figure
JSON_CURVE_POINTS = 200  # points per curve in the JSON form, which stays small with many classes

_LABEL_METRICS: dict[str, Callable[..., torch.Tensor]] = {
    "precision": tmc.multiclass_precision,
    "recall": tmc.multiclass_recall,
    "f1": tmc.multiclass_f1_score,
}


# ------------------------------------------------------------------------------------ result


@dataclass
class EvalResult:
    """The metrics of one split.

    ``scalars``: one number per name, e.g. ``accuracy``, ``top_5_accuracy``, ``f1_macro``,
    ``roc_auc_macro`` (``roc_auc`` for two classes), ``rmse``. ``per_class``: class name ->
    ``support`` and, when computed, ``precision``, ``recall``, ``f1``, ``roc_auc``,
    ``average_precision``. ``confusion``: ``{"counts": C x C ints, "normalized": C x C floats}``,
    rows the true class, columns the predicted one, each row of ``normalized`` summing to 1
    (0 for a class without targets). ``curves``: ``{"roc": {class: {"fpr", "tpr", "auc"}},
    "pr": {class: {"precision", "recall", "ap"}}}``. ``notes``: what was skipped and why.
    """

    task: str
    scalars: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    confusion: dict[str, list[list[Any]]] | None = None
    curves: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {"roc": {}, "pr": {}})
    notes: list[str] = field(default_factory=list)
    class_names: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict; each curve downsampled to at most ``JSON_CURVE_POINTS`` points."""
        curves: dict[str, dict[str, dict[str, Any]]] = {}
        for kind, (x_key, y_key, area_key) in _CURVE_KEYS.items():
            curves[kind] = {}
            for name, curve in self.curves.get(kind, {}).items():
                xs, ys = downsample_curve(curve[x_key], curve[y_key], JSON_CURVE_POINTS)
                curves[kind][name] = {
                    x_key: [round(x, 5) for x in xs],
                    y_key: [round(y, 5) for y in ys],
                    area_key: float(curve[area_key]),
                }
        return {
            "task": self.task,
            "class_names": list(self.class_names) if self.class_names is not None else None,
            "scalars": {name: float(value) for name, value in self.scalars.items()},
            "per_class": {name: dict(values) for name, values in self.per_class.items()},
            "confusion": (
                {"counts": [list(map(int, row)) for row in self.confusion["counts"]],
                 "normalized": [list(map(float, row)) for row in self.confusion["normalized"]]}
                if self.confusion is not None else None
            ),
            "curves": curves,
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalResult:
        """The result that ``to_json`` wrote (its curves as downsampled there)."""
        curves = data.get("curves") or {}
        return cls(
            task=data["task"],
            scalars=dict(data.get("scalars") or {}),
            per_class={name: dict(values) for name, values in (data.get("per_class") or {}).items()},
            confusion=data.get("confusion"),
            curves={kind: {name: dict(curve) for name, curve in curves.get(kind, {}).items()} for kind in _CURVE_KEYS},
            notes=list(data.get("notes") or []),
            class_names=data.get("class_names"),
        )


_CURVE_KEYS = {"roc": ("fpr", "tpr", "auc"), "pr": ("recall", "precision", "ap")}


def downsample_curve(xs: list[float], ys: list[float], limit: int) -> tuple[list[float], list[float]]:
    """At most ``limit`` points of a curve, evenly spaced along it, keeping both ends."""
    count = len(xs)
    if count <= limit:
        return [float(x) for x in xs], [float(y) for y in ys]
    picked = sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})
    return [float(xs[i]) for i in picked], [float(ys[i]) for i in picked]


# ------------------------------------------------------------------------------------ names


def default_metrics(task: str) -> list[str]:
    """The metrics computed when a recipe names none: every metric of the task."""
    return list(METRICS.get(task, ()))


def check_metrics(names: list[str], task: str, num_classes: int | None = None, top_k: int = 5,
                  key: str = "evaluate.metrics") -> list[Problem]:
    """Problems with a recipe's metric names, each located at ``<key>[i]``.

    Unknown names (with a did-you-mean over the task's names), a metric of the other task, a
    name listed twice, ``roc_auc`` / ``average_precision`` with fewer than 2 classes and
    ``top_k_accuracy`` with no more classes than ``top_k`` (``num_classes`` None: not checked).
    """
    problems: list[Problem] = []
    known = list(METRICS.get(task, ()))
    top_k_key = key.rsplit(".", 1)[0] + ".top_k" if "." in key else "top_k"
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        path = f"{key}[{index}]"
        if name in seen:
            problems.append(Problem(path, f"listed twice (also at {key}[{seen[name]}])", received=name,
                                    hint="Remove one."))
            continue
        seen[name] = index
        if name not in known:
            problems.append(_unknown_problem(path, name, task, known))
        elif name in NEEDS_TWO_CLASSES and num_classes is not None and num_classes < 2:
            problems.append(Problem(path, f"needs at least 2 classes; the data have {_classes(num_classes)}",
                                    received=name,
                                    hint=f"Remove {name} from {key}."))
        elif name == "top_k_accuracy" and num_classes is not None and num_classes <= top_k:
            hint = (f"Set {top_k_key} below {num_classes}, or remove top_k_accuracy." if num_classes > 1
                    else "Remove top_k_accuracy.")
            problems.append(Problem(
                path, f"is 1 by construction: {top_k_key} is {top_k} and the data have {_classes(num_classes)}",
                received=name, hint=hint,
            ))
    return problems


def _classes(count: int) -> str:
    return f"{count} class{'es' if count != 1 else ''}"


def _unknown_problem(path: str, name: Any, task: str, known: list[str]) -> Problem:
    """The problem of a name that is no metric of ``task``."""
    if not known:
        return Problem(path, f"the {task} task has no evaluation metrics", received=name,
                       hint="Remove evaluate.metrics.")
    listing = ", ".join(known)
    other = next((t for t, names in METRICS.items() if t != task and name in names), None)
    if other is not None:
        return Problem(path, f"is a {other} metric, but the data's task is {task}", received=name,
                       hint=f"{task.capitalize()} metrics: {listing}.")
    suggestions = did_you_mean(str(name), known)
    hint = f"Did you mean '{suggestions[0]}'?" if suggestions else f"{task.capitalize()} metrics: {listing}."
    return Problem(path, f"unknown {task} metric", received=name, hint=hint)


# ------------------------------------------------------------------------------------ compute


class _Run:
    """The state of one ``compute_metrics`` call: the result being filled and what was skipped."""

    def __init__(self, result: EvalResult, names: list[str], explicit: bool, key: str):
        self.result = result
        self.names = names
        self.explicit = explicit
        self.key = key
        self.problems: list[Problem] = []

    def wants(self, name: str) -> bool:
        return name in self.names

    def skip(self, name: str, reason: str) -> None:
        """A metric that cannot be computed here: an error when the recipe named it, else a note."""
        if self.explicit:
            index = self.names.index(name)
            self.problems.append(Problem(f"{self.key}[{index}]", f"cannot be computed: {reason}", received=name,
                                         hint=f"Remove {name} from {self.key}."))
        else:
            self.result.notes.append(f"{name} skipped: {reason}")

    def scalar(self, name: str, value: torch.Tensor | float) -> None:
        """Record a scalar, or a note when it is not a finite number."""
        number = float(value)
        if math.isfinite(number):
            self.result.scalars[name] = number
        else:
            self.result.notes.append(f"{name} is undefined on these data")


def compute_metrics(pred: Predictions, names: list[str] | None = None, top_k: int = 5, *,
                    key: str = "evaluate.metrics") -> EvalResult:
    """The metrics ``names`` (None: ``default_metrics(pred.task)``) of ``pred``.

    Raises ``TrainlabError`` with a problem at ``<key>[i]`` for a named metric that is unknown,
    of the other task, or cannot be computed on these data (e.g. ``rmsle`` with a value <= -1).
    """
    explicit = names is not None
    names = list(names) if names is not None else default_metrics(pred.task)
    result = EvalResult(task=pred.task)
    if pred.task == "classification":
        num_classes = _num_classes(pred)
        result.class_names = list(pred.class_names) if pred.class_names else [str(i) for i in range(num_classes)]
    else:
        num_classes = None
    if explicit:
        problems = check_metrics(names, pred.task, num_classes, top_k, key)
        if problems:
            raise TrainlabError(problems=problems)
    run = _Run(result, names, explicit, key)
    if len(pred) == 0:
        result.notes.append("no samples: nothing was measured")
    elif pred.task == "classification":
        _classification(pred, run, num_classes, top_k)
    elif pred.task == "regression":
        _regression(pred, run)
    elif names:
        result.notes.append(f"the {pred.task} task has no evaluation metrics")
    if run.problems:
        raise TrainlabError(problems=run.problems)
    return result


def _num_classes(pred: Predictions) -> int:
    """C: the class names', else the probabilities' width, else the largest index seen plus one."""
    if pred.class_names:
        return len(pred.class_names)
    if pred.probabilities is not None:
        return int(pred.probabilities.shape[1])
    if len(pred) == 0:
        return 0
    return int(max(pred.targets.max(), pred.predicted.max())) + 1


def _classification(pred: Predictions, run: _Run, num_classes: int, top_k: int) -> None:
    """Fill ``run.result`` with the classification metrics that ``run`` wants."""
    result = run.result
    names = result.class_names or []
    targets = pred.targets.detach().cpu().long().reshape(-1)  # (N,)
    predicted = pred.predicted.detach().cpu().long().reshape(-1)  # (N,)
    probabilities = None  # (N, C) or None
    if pred.probabilities is not None:
        probabilities = pred.probabilities.detach().cpu()
        # float64 stays; anything else (half precision included) is ranked in float32
        probabilities = probabilities if probabilities.dtype == torch.float64 else probabilities.float()
        if probabilities.shape != (len(targets), num_classes):
            raise ValueError(f"probabilities of shape {tuple(probabilities.shape)}; expected "
                             f"({len(targets)}, {num_classes})")
    if len(predicted) != len(targets):
        raise ValueError(f"{len(predicted)} predictions for {len(targets)} targets")
    if num_classes < 2:
        for name in run.names:
            run.skip(name, f"needs at least 2 classes; the data have {_classes(num_classes)}")
        return

    support = torch.bincount(targets, minlength=num_classes)  # (C,)
    for index, name in enumerate(names):
        result.per_class[name] = {"support": int(support[index])}

    if run.wants("accuracy"):
        run.scalar("accuracy", tmc.multiclass_accuracy(predicted, targets, num_classes, average="micro"))
    if run.wants("top_k_accuracy"):
        if probabilities is None:
            run.skip("top_k_accuracy", "the predictions carry no class probabilities")
        elif num_classes <= top_k:
            run.skip("top_k_accuracy", f"top_k={top_k} is not below the {num_classes} classes")
        else:
            value = tmc.multiclass_accuracy(probabilities, targets, num_classes, average="micro", top_k=top_k)
            run.scalar(f"top_{top_k}_accuracy", value)
    for metric, function in _LABEL_METRICS.items():
        if not run.wants(metric):
            continue
        for average in ("macro", "weighted"):
            run.scalar(f"{metric}_{average}",
                       function(predicted, targets, num_classes, average=average, zero_division=0))
        per_class = function(predicted, targets, num_classes, average="none", zero_division=0)  # (C,)
        for index, name in enumerate(names):
            result.per_class[name][metric] = float(per_class[index])
    if run.wants("confusion_matrix"):
        counts = tmc.multiclass_confusion_matrix(predicted, targets, num_classes)  # (C, C): rows true
        rows = counts.sum(dim=1, keepdim=True)  # (C, 1): the support of each true class
        normalized = counts / rows.clamp(min=1)  # (C, C): a row without targets stays 0
        result.confusion = {"counts": counts.tolist(), "normalized": normalized.tolist()}
    for metric in ("roc_auc", "average_precision"):
        if not run.wants(metric):
            continue
        if probabilities is None:
            run.skip(metric, "the predictions carry no class probabilities")
        elif num_classes == 2:
            _binary_ranking(metric, probabilities[:, 1], targets, run, names[1])
        else:
            _one_vs_rest(metric, probabilities, targets, run, names)


def _binary_ranking(metric: str, scores: torch.Tensor, targets: torch.Tensor, run: _Run, positive: str) -> None:
    """``roc_auc`` or ``average_precision`` of the positive class (class 1), with its curve.

    scores: (N,) probabilities of class 1; targets: (N,) in {0, 1}.
    """
    positives = int(targets.sum())
    if positives == 0 or (metric == "roc_auc" and positives == len(targets)):
        kind = "positive" if positives == 0 else "negative"
        run.result.notes.append(f"{metric} is undefined: the targets hold no {kind} samples of class '{positive}'")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if metric == "roc_auc":
            value = float(tmc.binary_auroc(scores, targets))
            fpr, tpr, _ = tmc.binary_roc(scores, targets)
            curve = {"fpr": fpr, "tpr": tpr, "auc": value}
        else:
            value = float(tmc.binary_average_precision(scores, targets))
            precision, recall, _ = tmc.binary_precision_recall_curve(scores, targets)
            curve = {"precision": precision, "recall": recall, "ap": value}
    run.scalar(metric, value)
    run.result.per_class[positive][metric] = value
    _store_curve(run.result, metric, positive, curve)


def _one_vs_rest(metric: str, probabilities: torch.Tensor, targets: torch.Tensor, run: _Run,
                 names: list[str]) -> None:
    """``roc_auc`` or ``average_precision`` of each class against the rest, their macro average and curves.

    probabilities: (N, C); targets: (N,) class indices.
    """
    num_classes = probabilities.shape[1]
    support = torch.bincount(targets, minlength=num_classes)  # (C,)
    defined = (support > 0) & ((support < len(targets)) if metric == "roc_auc" else True)  # (C,) bool
    with warnings.catch_warnings():  # torchmetrics warns about the undefined classes, handled below
        warnings.simplefilter("ignore", UserWarning)
        if metric == "roc_auc":
            values = tmc.multiclass_auroc(probabilities, targets, num_classes, average="none")  # (C,)
            xs, ys, _ = tmc.multiclass_roc(probabilities, targets, num_classes)  # C curves
        else:
            values = tmc.multiclass_average_precision(probabilities, targets, num_classes, average="none")
            ys, xs, _ = tmc.multiclass_precision_recall_curve(probabilities, targets, num_classes)
    left_out = [names[i] for i in range(num_classes) if not defined[i]]
    if left_out:
        shown = ", ".join(f"'{name}'" for name in left_out[:5]) + (" ..." if len(left_out) > 5 else "")
        run.result.notes.append(f"{metric} is undefined for {len(left_out)} class(es) without "
                                f"{'both positive and negative' if metric == 'roc_auc' else 'positive'} targets "
                                f"({shown}); left out of {metric}_macro")
    if not bool(defined.any()):
        return
    for index in range(num_classes):
        if not defined[index]:
            continue
        value = float(values[index])
        run.result.per_class[names[index]][metric] = value
        if metric == "roc_auc":
            curve = {"fpr": xs[index], "tpr": ys[index], "auc": value}
        else:
            curve = {"precision": ys[index], "recall": xs[index], "ap": value}
        _store_curve(run.result, metric, names[index], curve)
    run.scalar(f"{metric}_macro", values[defined].mean())


def _store_curve(result: EvalResult, metric: str, name: str, curve: dict[str, Any]) -> None:
    """Keep a curve as lists of at most ``CURVE_POINTS`` floats."""
    kind = "roc" if metric == "roc_auc" else "pr"
    x_key, y_key, area_key = _CURVE_KEYS[kind]
    xs, ys = downsample_curve(curve[x_key].tolist(), curve[y_key].tolist(), CURVE_POINTS)
    result.curves.setdefault(kind, {})[name] = {x_key: xs, y_key: ys, area_key: float(curve[area_key])}


def _regression(pred: Predictions, run: _Run) -> None:
    """Fill ``run.result`` with the regression metrics, each the uniform average over the k targets."""
    targets = pred.targets.detach().cpu().double()
    predicted = pred.predicted.detach().cpu().double()
    targets = targets.reshape(len(targets), -1)  # (N, k)
    predicted = predicted.reshape(len(predicted), -1)  # (N, k)
    if targets.shape != predicted.shape:
        raise ValueError(f"predictions of shape {tuple(predicted.shape)} for targets of shape {tuple(targets.shape)}")
    columns = range(targets.shape[1])

    def average(function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return torch.stack([function(predicted[:, j], targets[:, j]) for j in columns]).mean()

    if run.wants("mse"):
        run.scalar("mse", average(tmr.mean_squared_error))
    if run.wants("rmse"):
        run.scalar("rmse", average(lambda p, t: tmr.mean_squared_error(p, t, squared=False)))
    if run.wants("mae"):
        run.scalar("mae", average(tmr.mean_absolute_error))
    if run.wants("r2"):
        if len(targets) < 2:
            run.result.notes.append("r2 is undefined on fewer than 2 samples")
        else:
            run.scalar("r2", tmr.r2_score(predicted, targets, multioutput="uniform_average"))
    if run.wants("rmsle"):
        lowest = float(min(targets.min(), predicted.min()))
        if lowest <= -1:
            run.skip("rmsle", f"needs every target and prediction above -1; the lowest is {lowest:.4g}")
        else:
            run.scalar("rmsle", average(lambda p, t: tmr.mean_squared_log_error(p, t).sqrt()))
