"""Losses: every public ``torch.nn`` loss, made to train on ordinary data.

A recipe names a loss by its torch class name (``loss: {name: CrossEntropyLoss, weight: [1, 2]}``);
its other keys are the torch constructor's arguments. The data stage delivers one of three kinds
of targets (see :class:`~trainlab.data.spec.DataSpec`):

* classification: ``(B,)`` int64 class indices;
* regression: ``(B, *target_shape)`` float values;
* sequence: ``(B, S)`` int64 label ids padded with the blank 0, the model emitting ``(B, T, C)``.

Most torch losses want something else (one-hot rows, ``±1`` labels, pairs, triplets, ``(T, B, C)``
log-probabilities...). Each loss therefore has a :class:`Contract` in :data:`CONTRACTS`: what the
model must output, which tasks it trains on, and how a :class:`Criterion` turns the dataset's
targets into the loss's inputs. The contract is also what :func:`check_loss` validates against at
``trainlab validate`` time (task, final activation, output width, tensor arguments) and what
``docs/losses.md`` documents (:func:`contract_table` renders it; a test keeps the two equal).

The training loop codes against :func:`build_loss` and :class:`Criterion` only.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainlab.data.spec import DataSpec
from trainlab.recipe.errors import Problem, RecipeError, TrainlabError
from trainlab.recipe.schema import LossConfig
from trainlab.registry import Entry, Registry, did_you_mean, normalize_name

__all__ = [
    "CONTRACTS",
    "EXCLUDED",
    "LOSSES",
    "Contract",
    "Criterion",
    "ModelOutput",
    "OutputInfo",
    "argument_problems",
    "jsonable_default",
    "build_loss",
    "check_loss",
    "contract_table",
    "default_loss",
    "resolve_loss",
]


# ----------------------------------------------------------------------------------- what the model emits


class OutputInfo(Protocol):
    """What check_loss needs to know about a model: one sample's output shape (no batch
    dimension) and the class name of its final activation module, if any."""

    shape: tuple[int, ...]
    final_activation: str | None


@dataclass
class ModelOutput:
    """A plain :class:`OutputInfo`: ``ModelOutput((10,), "LogSoftmax")``."""

    shape: tuple[int, ...]
    final_activation: str | None = None


# ----------------------------------------------------------------------------------- shared argument checks

DEPRECATED_ARGUMENTS = {
    "size_average": "deprecated in torch; use reduction: mean or sum instead",
    "reduce": "deprecated in torch; use reduction instead",
}

_NUMBER = (int, float)


def _annotation_tokens(parameter: inspect.Parameter) -> set[str]:
    annotation = parameter.annotation
    if annotation is inspect.Parameter.empty:
        return set()
    text = annotation if isinstance(annotation, str) else str(annotation)
    return set(re.findall(r"[A-Za-z_]+", text))


def _count(number: int, noun: str) -> str:
    """``1 value``, ``3 values``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


def _type_problem(parameter: inspect.Parameter, value: Any) -> str | None:
    """What is wrong with ``value`` for ``parameter``, judged by its annotation and default.

    Catches a YAML string or list where torch wants a number (``momentum: "0.9"``) at validate
    time; torch itself would only fail inside ``step()`` or ``forward()``."""
    default = parameter.default
    tokens = _annotation_tokens(parameter)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            return f"expected a list of {len(default)} numbers like {list(default)}"
        for item, default_item in zip(value, default):
            if not (_is_number(item) or (item is None and default_item is None)):
                return f"expected a list of {len(default)} numbers like {list(default)}"
        return None
    if value is None:
        if default is None or "None" in tokens or "Optional" in tokens:
            return None
        return "expected a value, not null"
    if "Tensor" in tokens and not tokens & {"float", "int", "bool", "str"}:
        return None  # tensor arguments have their own check
    accepted: list[str] = []
    if "bool" in tokens or (not tokens and isinstance(default, bool)):
        accepted.append("bool")
    if "float" in tokens or (not tokens and isinstance(default, float)):
        accepted.append("number")
    elif "int" in tokens or (not tokens and type(default) is int):
        accepted.append("integer")
    if "str" in tokens or (not tokens and isinstance(default, str)):
        accepted.append("str")
    if not accepted:
        return None
    checks = {
        "bool": lambda v: isinstance(v, bool),
        "number": _is_number,
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
    }
    if any(checks[kind](value) for kind in accepted):
        return None
    words = {"bool": "true or false", "number": "a number", "integer": "an integer", "str": "a string"}
    return "expected " + " or ".join(words[kind] for kind in accepted)


def argument_problems(
    entry: Entry, arguments: dict[str, Any], path: str, skip: tuple[str, ...] = ()
) -> list[Problem]:
    """Problems with a recipe section's torch arguments: unknown names (with did-you-mean, from
    :meth:`Entry.argument_problems`) and values of the wrong type for the signature."""
    problems = entry.argument_problems(arguments, path, skip=skip)
    parameters = entry.parameters(skip)
    for argument, value in arguments.items():
        parameter = parameters.get(argument)
        if parameter is None:
            continue
        expected = _type_problem(parameter, value)
        if expected:
            default = parameter.default
            shown = "no default" if default is inspect.Parameter.empty else f"torch's default is {jsonable_default(default)!r}"
            problems.append(
                Problem(
                    f"{path}.{argument}",
                    f"wrong type for {argument} of {entry.name}: {expected}",
                    received=value,
                    argument=argument,
                    hint=f"Give {argument} as {expected.removeprefix('expected ')} ({shown}).",
                )
            )
    return problems


def jsonable_default(value: Any) -> Any:
    """A signature default as YAML/JSON would hold it (tuples as lists), or ``...`` if it has none."""
    if isinstance(value, tuple):
        items = [jsonable_default(item) for item in value]
        return ... if ... in items else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return ...


# ----------------------------------------------------------------------------------- runtime target errors


def _target_error(name: str, message: str, received: Any, hint: str) -> TrainlabError:
    """A data problem found while computing the loss, in the one message template."""
    return TrainlabError(Problem(f"loss ({name})", message, received=received, hint=hint).render())


def _value_range(target: Tensor) -> str:
    finite = target[torch.isfinite(target)] if target.is_floating_point() else target
    if finite.numel() == 0:
        return "no finite values"
    return f"values from {finite.min().item():g} to {finite.max().item():g}"


def _batch_mismatch(name: str, output: Tensor, target: Tensor) -> TrainlabError:
    return _target_error(
        name,
        "model output and targets must share the batch dimension",
        f"output shape {tuple(output.shape)}, target shape {tuple(target.shape)}",
        "Return one output row per sample from the model's forward.",
    )


def _check_class_indices(name: str, target: Tensor, num_classes: int, ignore_index: int | None = None) -> None:
    """Class-index targets: integer dtype, one per sample, each in [0, num_classes)."""
    if target.is_floating_point() or target.dtype == torch.bool or target.is_complex():
        raise _target_error(
            name,
            "classification targets must be integer class indices (int64)",
            f"dtype {target.dtype}",
            "Use classification data, or a regression loss such as MSELoss for float targets.",
        )
    if target.dim() != 1:
        raise _target_error(
            name,
            "classification targets must hold one class index per sample, shape (B,)",
            f"target shape {tuple(target.shape)}",
            "Check the data's task and target_shape.",
        )
    if target.numel() == 0:
        return
    low, high = torch.aminmax(target)  # one pass; the masked check below only when needed
    if int(low) >= 0 and int(high) < num_classes:
        return
    outside = (target < 0) | (target >= num_classes)
    if ignore_index is not None:
        outside &= target != ignore_index
    if bool(outside.any()):
        raise _target_error(
            name,
            f"class indices must lie in [0, {num_classes})",
            _value_range(target),
            "Check the data's num_classes and its label encoding.",
        )


def _check_nonnegative(name: str, target: Tensor, what: str, hint: str) -> None:
    """Regression targets that must not be negative (probabilities, counts)."""
    if bool((target < 0).any()):
        raise _target_error(name, f"targets must be non-negative {what}", _value_range(target), hint)


def _check_finite(name: str, target: Tensor) -> None:
    if not target.is_floating_point():
        raise _target_error(
            name,
            "regression targets must be floating point",
            f"dtype {target.dtype}",
            "Use classification data for integer class labels, or convert the targets to float.",
        )
    if not bool(torch.isfinite(target).all()):
        raise _target_error(
            name,
            "targets must be finite numbers",
            f"{int((~torch.isfinite(target)).sum())} NaN/inf values",
            "Remove or impute the missing targets in the data.",
        )


# ----------------------------------------------------------------------------------- contracts

# The final activation a contract needs, and the fix a user reads when the model disagrees.
ACTIVATIONS = {
    "log_probabilities": ("LogSoftmax",),
    "probabilities": ("Sigmoid", "Softmax"),
    "logits": (None,),
}
KNOWN_ACTIVATIONS = ("LogSoftmax", "Softmax", "Sigmoid")
SUGGESTED_FOR_TASK = {
    "classification": "For class labels use CrossEntropyLoss (raw logits) or NLLLoss (after LogSoftmax)",
    "regression": "For regression targets use MSELoss, L1Loss, HuberLoss or GaussianNLLLoss",
    "sequence": "For label sequences use CTCLoss",
}


class Contract:
    """What a loss needs from the model and the data, and how targets are adapted.

    ``targets`` maps each task the loss trains on to a description of what the loss receives.
    ``activation`` is the final activation the model must (``log_probabilities``,
    ``probabilities``) or must not (``logits``) end in. ``reduces_itself`` means torch computes
    unreduced values and the :class:`Criterion` reduces them (masks, ``batchmean``).
    """

    family = ""
    reduces_itself = False

    def __init__(
        self,
        output: str,
        targets: dict[str, str],
        activation: str | None = None,
        prediction: str = "argmax",
        note: str = "",
    ):
        self.output = output
        self.targets = targets
        self.activation = activation
        self.prediction = prediction  # how a class is read from per-class scores: argmax or argmin
        self.note = note

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.targets)

    # -- validate time
    def expected_width(self, spec: DataSpec) -> int | None:
        """Values per sample the model must output, or None for any (embeddings)."""
        return spec.output_size

    def shape_problem(self, name: str, spec: DataSpec, shape: tuple[int, ...]) -> Problem | None:
        width = self.expected_width(spec)
        if width is None or math.prod(shape) == width:
            return None
        return Problem(
            "model",
            f"{name} needs {_count(width, 'output value')} per sample ({self.width_text(spec)})",
            received=f"output shape {tuple(shape)}",
            hint=f"Make the model's last layer output {_count(width, 'value')}, e.g. Linear(out_features: {width}).",
        )

    def width_text(self, spec: DataSpec) -> str:
        return "one per class" if spec.task == "classification" else "one per regression target"

    def argument_problems(self, name: str, arguments: dict[str, Any], spec: DataSpec) -> list[Problem]:
        return []

    def scores(self, spec: DataSpec) -> bool:
        """True when the output is per-class scores over num_classes (then accuracy is reported)."""
        return spec.task == "classification"

    def regression_metric(self) -> bool:
        """True when the output predicts the regression targets (then mse is reported)."""
        return False

    # -- run time
    def check_values(self, criterion: "Criterion", target: Tensor, output: Tensor | None) -> None:
        """Raise TrainlabError when the loss cannot use these targets (reads values: syncs)."""
        if criterion.task == "classification":
            _check_class_indices(criterion.name, target, criterion.num_classes, self.ignore_index(criterion))
        elif criterion.task == "regression":
            _check_finite(criterion.name, target)

    def ignore_index(self, criterion: "Criterion") -> int | None:
        return None

    def inputs(self, criterion: "Criterion", output: Tensor, target: Tensor) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """The torch loss's positional inputs and, for losses that reduce themselves, a mask of
        the values that count."""
        raise NotImplementedError

    def predicted_classes(self, output: Tensor) -> Tensor:
        # max/min along a dim give the first extreme index as argmax/argmin do (ties, NaN alike),
        # and their CPU kernel is ~2.5x faster on rows of a few classes.
        scores = output.reshape(output.shape[0], -1)
        return scores.min(1).indices if self.prediction == "argmin" else scores.max(1).indices

    def predicted_values(self, criterion: "Criterion", output: Tensor, target: Tensor) -> Tensor:
        return _as_target(criterion.name, output, target)

    def class_probabilities(self, output: Tensor) -> Tensor:
        """Per-class probabilities (rows sum to 1) from the model's output, ordered as
        :meth:`predicted_classes` orders the classes: softmax of logits, exp of log-probabilities,
        probabilities renormalised; sigmoids renormalised for one-vs-rest logits (BCE-style)."""
        scores = output.detach().reshape(output.shape[0], -1).float()
        if self.prediction == "argmin":
            scores = -scores
        if self.activation == "log_probabilities":
            return scores.exp() / scores.exp().sum(1, keepdim=True).clamp_min(1e-12)
        if self.activation == "probabilities":
            positive = scores.clamp_min(0.0)
            return positive / positive.sum(1, keepdim=True).clamp_min(1e-12)
        if self.activation == "logits" and isinstance(self, OneHotContract):
            sigmoid = scores.sigmoid()
            return sigmoid / sigmoid.sum(1, keepdim=True).clamp_min(1e-12)
        return scores.softmax(1)


def _scores(name: str, output: Tensor, width: int) -> Tensor:
    scores = output if output.ndim == 2 else output.reshape(output.shape[0], -1)  # (B, C); no view node when 2-D
    if scores.shape[1] != width:
        raise _target_error(
            name,
            f"the model must output {width} values per sample",
            f"output shape {tuple(output.shape)}",
            f"Make the last layer output {width} values (num_classes).",
        )
    return scores


def _as_target(name: str, output: Tensor, target: Tensor) -> Tensor:
    """The output reshaped to the target's shape (B, *target_shape)."""
    if output[0].numel() != target[0].numel():
        raise _target_error(
            name,
            f"the model must output {target[0].numel()} values per sample to match the targets",
            f"output shape {tuple(output.shape)}, target shape {tuple(target.shape)}",
            "Make the last layer output one value per regression target.",
        )
    return output.reshape(target.shape)


class ClassIndexContract(Contract):
    """Per-class scores against class indices, as torch takes them (CrossEntropyLoss, NLLLoss)."""

    family = "class index"

    def ignore_index(self, criterion: "Criterion") -> int | None:
        return criterion.arguments.get("ignore_index")

    def inputs(self, criterion, output, target):
        scores = _scores(criterion.name, output, criterion.num_classes)
        ignore = self.ignore_index(criterion) if criterion.reduces_itself else None  # torch masks it otherwise
        mask = (target != ignore) if ignore is not None else None
        return (scores, target), mask


class OneHotContract(Contract):
    """Per-class scores against a per-class target row built from the class index.

    ``kind`` picks the row: ``one_hot`` (0/1 floats), ``signs`` (+1 for the class, -1 elsewhere),
    ``labels`` (the class index followed by -1 padding, MultiLabelMarginLoss's format) or
    ``distribution`` (one-hot as a probability distribution; its log with ``log_target``).
    ``regression`` says which regression targets are used as they are: ``unit`` ([0, 1]),
    ``nonnegative``, or None (classification only).
    """

    family = "one-hot"

    def __init__(self, output, targets, kind="one_hot", regression=None, **kwargs):
        super().__init__(output, targets, **kwargs)
        self.kind = kind
        self.regression = regression
        self.family = {"one_hot": "one-hot", "signs": "±1", "labels": "label list"}.get(kind, self.family)

    def check_values(self, criterion, target, output):
        super().check_values(criterion, target, output)
        if criterion.task != "regression":
            return
        if self.regression == "unit" and bool(((target < 0) | (target > 1)).any()):
            raise _target_error(
                criterion.name,
                "targets must lie in [0, 1] (probabilities)",
                _value_range(target),
                "Scale the targets to [0, 1], or use MSELoss / L1Loss for unbounded values.",
            )
        if self.regression == "nonnegative" and not criterion.arguments.get("log_target", False):
            _check_nonnegative(criterion.name, target, "probabilities",
                               "Give probability distributions as targets, or set log_target: true for log-probabilities.")

    def inputs(self, criterion, output, target):
        if criterion.task == "regression":
            prediction = _as_target(criterion.name, output, target)
            return (prediction, target.to(prediction.dtype)), None
        scores = _scores(criterion.name, output, criterion.num_classes)  # (B, C)
        if self.kind == "labels":
            labels = torch.full_like(scores, -1, dtype=torch.long)
            labels[:, 0] = target
            return (scores, labels), None
        one_hot = F.one_hot(target, criterion.num_classes).to(scores.dtype)  # (B, C)
        if self.kind == "signs":
            return (scores, 2.0 * one_hot - 1.0), None
        if self.kind == "distribution" and criterion.arguments.get("log_target", False):
            # log(0) is -inf and exp(-inf) * (-inf - x) is NaN; the smallest normal float keeps
            # the zero classes' terms at ~1e-36, i.e. zero in float32.
            return (scores, one_hot.clamp_min(torch.finfo(scores.dtype).tiny).log()), None
        return (scores, one_hot), None

    def regression_metric(self) -> bool:
        return self.regression == "unit"

    def predicted_values(self, criterion, output, target):
        prediction = _as_target(criterion.name, output, target)
        return prediction.sigmoid() if self.activation == "logits" else prediction


class DistributionContract(OneHotContract):
    """KLDivLoss: log-probabilities against a target distribution. It always reduces itself so
    that ``mean`` stays warn-free and ``batchmean`` (sum / batch size, the true KL) works."""

    family = "distribution"
    reduces_itself = True


class ValueContract(Contract):
    """Values against values: regression targets as they are; one-hot rows for class labels."""

    family = "value"

    def inputs(self, criterion, output, target):
        if criterion.task == "classification":
            scores = _scores(criterion.name, output, criterion.num_classes)
            return (scores, F.one_hot(target, criterion.num_classes).to(scores.dtype)), None
        prediction = _as_target(criterion.name, output, target)
        return (prediction, target.to(prediction.dtype)), None

    def regression_metric(self) -> bool:
        return True


class PoissonContract(ValueContract):
    """PoissonNLLLoss: the output is a log-rate (``log_input: true``) or a rate; targets are counts."""

    def check_values(self, criterion, target, output):
        super().check_values(criterion, target, output)
        if criterion.task == "regression":
            _check_nonnegative(criterion.name, target, "counts",
                               "PoissonNLLLoss models counts; use MSELoss or HuberLoss for signed values.")

    def predicted_values(self, criterion, output, target):
        prediction = _as_target(criterion.name, output, target)
        return prediction.exp() if criterion.arguments.get("log_input", True) else prediction


GAUSSIAN_VARIANCE_FLOOR = 1e-6


class GaussianContract(Contract):
    """GaussianNLLLoss: 2*k outputs, k means then k raw variances; variance = softplus(raw) + 1e-6,
    so any real output is a valid (positive) variance."""

    family = "mean and variance"

    def expected_width(self, spec):
        return 2 * spec.output_size

    def width_text(self, spec):
        return f"{_count(spec.output_size, 'mean')}, then {_count(spec.output_size, 'raw variance')}"

    def scores(self, spec):
        return False

    def regression_metric(self) -> bool:
        return True

    def split(self, criterion: "Criterion", output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        width = target[0].numel()
        flat = output.reshape(output.shape[0], -1)  # (B, 2k)
        if flat.shape[1] != 2 * width:
            raise _target_error(
                criterion.name,
                f"the model must output {2 * width} values per sample: {width} means then {width} raw variances",
                f"output shape {tuple(output.shape)}",
                f"Make the last layer output {2 * width} values.",
            )
        mean = flat[:, :width].reshape(target.shape)
        variance = (F.softplus(flat[:, width:]) + GAUSSIAN_VARIANCE_FLOOR).reshape(target.shape)
        return mean, variance

    def inputs(self, criterion, output, target):
        mean, variance = self.split(criterion, output, target)
        return (mean, target.to(mean.dtype), variance), None

    def predicted_values(self, criterion, output, target):
        return self.split(criterion, output, target)[0]


class RankingContract(Contract):
    """MarginRankingLoss on in-batch pairs: sample i is paired with sample i+1 (``torch.roll``);
    the target is sign(y_i - y_{i+1}); ties (sign 0) are masked out of the mean."""

    family = "pair"
    reduces_itself = True

    def expected_width(self, spec):
        return 1

    def width_text(self, spec):
        return "one score"

    def shape_problem(self, name, spec, shape):
        if spec.task == "regression" and spec.output_size != 1:
            return Problem(
                "loss.name",
                f"{name} ranks samples by one target value; this data has {spec.output_size} targets per sample",
                received=f"target shape {tuple(spec.target_shape)}",
                hint="Use it with single-target regression data, or use MSELoss for several targets.",
            )
        return super().shape_problem(name, spec, shape)

    def scores(self, spec):
        return False

    def inputs(self, criterion, output, target):
        score = output.reshape(output.shape[0])  # (B,) one score per sample
        value = target.reshape(target.shape[0]).to(score.dtype)
        sign = torch.sign(value - value.roll(-1))  # (B,) +1: i ranks above i+1
        return (score, score.roll(-1), sign), sign != 0


class EmbeddingContract(Contract):
    """Losses on embeddings compared within the batch: any width, no per-class scores."""

    def expected_width(self, spec):
        return None

    def scores(self, spec):
        return False

    @staticmethod
    def embedding(output: Tensor) -> Tensor:
        return output.reshape(output.shape[0], -1)  # (B, D)


class CosineContract(EmbeddingContract):
    """CosineEmbeddingLoss on in-batch pairs (i, i+1): +1 when the two share a class, else -1."""

    family = "pair"

    def inputs(self, criterion, output, target):
        embedding = self.embedding(output)
        same = target == target.roll(-1)
        sign = torch.where(same, 1.0, -1.0).to(embedding.dtype)
        return (embedding, embedding.roll(-1, dims=0), sign), None


def mine_triplets(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Deterministic in-batch triplets: for each anchor i, the positive is the next sample after
    i (cyclically) with the same label and the negative the next one with a different label.
    Returns ``(positive_index, negative_index, valid)``, each (B,); anchors without a positive or
    a negative are not valid. Runs on the device, without a host sync."""
    batch = labels.shape[0]
    anchors = torch.arange(batch, device=labels.device)
    if batch < 2:
        return anchors, anchors, torch.zeros(batch, dtype=torch.bool, device=labels.device)
    offsets = torch.arange(1, batch, device=labels.device)
    candidates = (anchors[:, None] + offsets[None, :]) % batch  # (B, B-1): i+1, i+2, ... wrapping
    same = labels[candidates] == labels[:, None]
    # argmax returns the first maximal position: the nearest following candidate.
    positive = candidates.gather(1, same.to(torch.int32).argmax(1, keepdim=True)).squeeze(1)
    negative = candidates.gather(1, (~same).to(torch.int32).argmax(1, keepdim=True)).squeeze(1)
    valid = same.any(1) & (~same).any(1)
    return positive, negative, valid


class TripletContract(EmbeddingContract):
    """Triplet losses with deterministic in-batch mining (:func:`mine_triplets`)."""

    family = "triplet"
    reduces_itself = True

    def inputs(self, criterion, output, target):
        embedding = self.embedding(output)
        positive, negative, valid = mine_triplets(target)
        return (embedding, embedding[positive], embedding[negative]), valid


class SequenceContract(Contract):
    """CTCLoss: (B, T, C) log-probabilities against (B, S) label ids padded with the blank 0."""

    family = "sequence"

    def expected_width(self, spec):
        return spec.num_classes

    def scores(self, spec):
        return False

    def shape_problem(self, name, spec, shape):
        if len(shape) == 2 and shape[-1] == spec.num_classes:
            frames, length = shape[0], (spec.target_shape[0] if spec.target_shape else 0)
            if frames < length:
                return Problem(
                    "model",
                    f"{name} needs at least as many output frames as labels per sample "
                    f"({length} labels, padded with the blank 0)",
                    received=f"output shape {tuple(shape)} ({frames} frames)",
                    hint="Downsample the sequence less, or use shorter label sequences.",
                )
            return None
        return Problem(
            "model",
            f"{name} needs (T, {spec.num_classes}) output per sample: T frames of log-probabilities "
            f"over the {spec.num_classes} labels including the blank 0",
            received=f"output shape {tuple(shape)}",
            hint=f"End the model with Linear(out_features: {spec.num_classes}) applied per frame, then LogSoftmax.",
        )

    def argument_problems(self, name, arguments, spec):
        blank = arguments.get("blank", 0)
        if blank != 0:
            return [
                Problem(
                    "loss.blank",
                    "the data pads label sequences with 0, which is therefore the blank",
                    received=blank,
                    argument="blank",
                    hint="Remove blank (or set blank: 0).",
                )
            ]
        return []

    def check_values(self, criterion, target, output):
        name, classes = criterion.name, criterion.num_classes
        if target.is_floating_point() or target.dim() != 2:
            raise _target_error(
                name,
                "sequence targets must be (B, S) integer label ids padded with the blank 0",
                f"dtype {target.dtype}, shape {tuple(target.shape)}",
                "Use sequence data.",
            )
        if bool(((target < 0) | (target >= classes)).any()):
            raise _target_error(
                name,
                f"label ids must lie in [0, {classes})",
                _value_range(target),
                "Check the data's num_classes (label alphabet including the blank 0).",
            )
        present = target != 0
        # padding must be trailing: once a 0 appears, no label may follow
        if target.shape[1] > 1 and bool((present[:, 1:] & ~present[:, :-1]).any()):
            raise _target_error(
                name,
                "label sequences must be padded with 0 at the end only",
                "a label id after a padding 0",
                "Left-align the label ids and pad on the right with 0.",
            )
        if output is not None and output.dim() == 3:
            longest = int(present.sum(1).max()) if target.shape[0] else 0
            if longest > output.shape[1]:
                raise _target_error(
                    name,
                    "a label sequence is longer than the model's output frames",
                    f"{longest} labels for {output.shape[1]} frames",
                    "Emit more frames per sample, or use shorter label sequences.",
                )

    def inputs(self, criterion, output, target):
        if output.dim() != 3:
            raise _target_error(
                criterion.name,
                "the model must output (B, T, C) log-probabilities",
                f"output shape {tuple(output.shape)}",
                "Emit one row of log-probabilities per frame.",
            )
        log_probs = output.transpose(0, 1)  # (T, B, C), the layout CTCLoss takes
        frames, batch = log_probs.shape[0], log_probs.shape[1]
        input_lengths = torch.full((batch,), frames, dtype=torch.long, device=output.device)
        target_lengths = (target != 0).sum(1)  # (B,) labels before the blank padding
        return (log_probs, target, input_lengths, target_lengths), None


# ----------------------------------------------------------------------------------- the contract table

_CLASSES = "class index (B,)"
_LOGITS_C = "raw logits, one per class (no final activation)"
_LOG_PROBS_C = "log-probabilities per class (model ends in LogSoftmax)"

CONTRACTS: dict[str, Contract] = {
    "CrossEntropyLoss": ClassIndexContract(
        _LOGITS_C, {"classification": _CLASSES}, activation="logits",
        note="weight (one per class), ignore_index and label_smoothing are passed to torch.",
    ),
    "MultiMarginLoss": ClassIndexContract(_LOGITS_C, {"classification": _CLASSES}, activation="logits"),
    "NLLLoss": ClassIndexContract(_LOG_PROBS_C, {"classification": _CLASSES}, activation="log_probabilities"),
    "BCEWithLogitsLoss": OneHotContract(
        "raw logits, one per class (or per target)",
        {"classification": "one-hot rows (B, C) of 0/1", "regression": "targets in [0, 1] as they are"},
        activation="logits", regression="unit", note="pos_weight: one per class (or per target).",
    ),
    "MultiLabelSoftMarginLoss": OneHotContract(
        "raw logits, one per class (or per target)",
        {"classification": "one-hot rows (B, C) of 0/1", "regression": "targets in [0, 1] as they are"},
        activation="logits", regression="unit",
    ),
    "BCELoss": OneHotContract(
        "probabilities, one per class (model ends in Sigmoid or Softmax)",
        {"classification": "one-hot rows (B, C) of 0/1", "regression": "targets in [0, 1] as they are"},
        activation="probabilities", regression="unit",
        note="Computed in float32 with autocast off: torch refuses BCELoss under autocast.",
    ),
    "KLDivLoss": DistributionContract(
        _LOG_PROBS_C,
        {"classification": "one-hot distributions (B, C)", "regression": "non-negative target distributions as they are"},
        kind="distribution", activation="log_probabilities", regression="nonnegative",
        note="reduction batchmean gives the true KL divergence; mean is computed warn-free.",
    ),
    "SoftMarginLoss": OneHotContract(
        "one score per class", {"classification": "±1 rows (B, C): +1 for the class, -1 elsewhere"}, kind="signs",
    ),
    "HingeEmbeddingLoss": OneHotContract(
        "one distance per class (small for the true class)",
        {"classification": "±1 rows (B, C): +1 for the class, -1 elsewhere"},
        kind="signs", prediction="argmin", note="The predicted class is the one with the smallest output.",
    ),
    "MultiLabelMarginLoss": OneHotContract(
        "one score per class", {"classification": "rows (B, C): the class index followed by -1 padding"}, kind="labels",
    ),
    "L1Loss": ValueContract("one value per target (per class on classification data)",
                            {"regression": "targets as they are", "classification": "one-hot rows (B, C)"}),
    "MSELoss": ValueContract("one value per target (per class on classification data)",
                             {"regression": "targets as they are", "classification": "one-hot rows (B, C)"}),
    "HuberLoss": ValueContract("one value per target (per class on classification data)",
                               {"regression": "targets as they are", "classification": "one-hot rows (B, C)"}),
    "SmoothL1Loss": ValueContract("one value per target (per class on classification data)",
                                  {"regression": "targets as they are", "classification": "one-hot rows (B, C)"}),
    "PoissonNLLLoss": PoissonContract(
        "one log-rate per target (log_input: true, the default) or a rate (log_input: false)",
        {"regression": "non-negative counts as they are", "classification": "one-hot rows (B, C) as counts"},
    ),
    "GaussianNLLLoss": GaussianContract(
        "2*k values per sample: k means, then k raw variances",
        {"regression": "targets as they are"},
        note="variance = softplus(raw) + 1e-6, so every output is a valid variance.",
    ),
    "MarginRankingLoss": RankingContract(
        "one score per sample",
        {"regression": "pairs (i, i+1) in the batch; target sign(y_i - y_{i+1})",
         "classification": "pairs (i, i+1) in the batch; target sign(class_i - class_{i+1})"},
        note="Ties (sign 0) are left out of the mean; a batch of ties gives 0.",
    ),
    "CosineEmbeddingLoss": CosineContract(
        "an embedding of any width",
        {"classification": "pairs (i, i+1) in the batch; +1 same class, -1 different"},
    ),
    "TripletMarginLoss": TripletContract(
        "an embedding of any width",
        {"classification": "in-batch triplets: positive = next sample of the same class, "
                           "negative = next sample of another class"},
        note="Anchors without a positive or negative are skipped; a batch without any gives 0 (with grad).",
    ),
    "TripletMarginWithDistanceLoss": TripletContract(
        "an embedding of any width",
        {"classification": "in-batch triplets: positive = next sample of the same class, "
                           "negative = next sample of another class"},
        note="Default distance (pairwise L2) only: a recipe cannot name a function.",
    ),
    "CTCLoss": SequenceContract(
        "(T, C) log-probabilities per sample over the labels incl. the blank 0 (model ends in LogSoftmax)",
        {"sequence": "(B, S) label ids padded with 0; input lengths = T, target lengths = non-zero ids"},
        activation="log_probabilities",
        note="The criterion transposes (B, T, C) to (T, B, C); blank is 0.",
    ),
}

# Public torch.nn losses trainlab does not register, and why (a test keeps this list complete).
EXCLUDED: dict[str, str] = {
    "NLLLoss2d": "deprecated in torch; NLLLoss takes (B, C, H, W) inputs directly",
    "LinearCrossEntropyLoss": (
        "it owns a trainable Linear layer that the optimizer, built from the model's parameters, "
        "would never update; end the model in Linear(out_features: num_classes) and use CrossEntropyLoss"
    ),
}

# Arguments a recipe cannot give, with the reason shown to the user.
UNSUPPORTED_ARGUMENTS = {
    **DEPRECATED_ARGUMENTS,
    "distance_function": "a recipe cannot name a Python function; the default pairwise L2 distance is used",
}
REDUCTIONS = ("mean", "sum", "none")
ARGUMENT_RANGES = {"label_smoothing": (0.0, 1.0)}  # argument -> inclusive (low, high)
DEFAULT_LOSSES = {"classification": "CrossEntropyLoss", "regression": "MSELoss", "sequence": "CTCLoss"}


def _tensor_arguments(loss_class: type) -> tuple[str, ...]:
    """Constructor arguments annotated as tensors (weight, pos_weight): lists in a recipe."""
    try:
        parameters = inspect.signature(loss_class).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in parameters if "Tensor" in _annotation_tokens(p))


def _description(name: str, loss_class: type, contract: Contract) -> str:
    summary = (inspect.getdoc(loss_class) or "").strip().split("\n\n")[0].replace("\n", " ")
    targets = "; ".join(f"{task}: {text}" for task, text in contract.targets.items())
    text = f"{summary} Model outputs {contract.output}. Targets: {targets}."
    return f"{text} {contract.note}".strip()


def _build_registry() -> Registry:
    registry = Registry("loss")
    for name, contract in CONTRACTS.items():
        loss_class = getattr(nn, name, None)
        if loss_class is None:  # an older torch without this loss
            continue
        reductions = REDUCTIONS + (("batchmean",) if name == "KLDivLoss" else ())
        registry.add(
            name,
            loss_class,
            description=_description(name, loss_class, contract),
            contract=contract,
            family=contract.family,
            tasks=contract.tasks,
            output=contract.output,
            targets=dict(contract.targets),
            final_activation=contract.activation,
            reductions=reductions,
            tensor_arguments=_tensor_arguments(loss_class),
        )
    return registry


LOSSES: Registry = _build_registry()


# ----------------------------------------------------------------------------------- the criterion


class Criterion(nn.Module):
    """A torch loss plus its contract: ``forward(output, target)`` takes the model's output and
    the dataset's targets as they come and returns a scalar loss.

    ``reduction`` is how the loss reduces over samples, ``mean`` or ``sum`` (torch's ``none`` is
    averaged here and ``batchmean`` is a mean). ``metric_names`` are the keys of
    :meth:`batch_metrics`. Tensor arguments (weight, pos_weight) are buffers of the torch loss,
    so ``criterion.to(device)`` moves them.

    Targets are checked before use: shapes always (metadata, free); values (range, NaN, dtype)
    on every batch whose targets are on the CPU and on the first batch on an accelerator, where
    reading values costs a host-device sync. :meth:`check_target` runs the value checks on
    demand, e.g. on a whole in-memory target tensor once.

    The criterion runs every step, and a module call costs Python time beside the loss itself, so
    calling a criterion is calling :meth:`forward` (it is a module to move its buffers with ``.to``;
    it takes no hooks), and it calls its torch loss's ``forward`` directly (a private module that
    nothing hooks) through a bound method held as a plain attribute: reaching a child module goes
    through ``nn.Module.__getattr__``, about 2 µs a step on a CPU. ``.to`` changes the torch loss
    in place, so the bound method stays valid.
    """

    def __init__(self, name: str, loss: nn.Module, contract: Contract, spec: DataSpec,
                 arguments: dict[str, Any], reduction: str):
        super().__init__()
        self.name = name
        self.loss = loss
        self._loss_forward = loss.forward  # a plain attribute: see the class docstring
        self.contract = contract
        self.task = spec.task
        self.num_classes = spec.num_classes or 0
        self.arguments = dict(arguments)
        self.requested_reduction = reduction  # as the recipe says: mean, sum, none or batchmean
        self.reduction = "sum" if reduction == "sum" else "mean"
        self.reduces_itself = loss_reduces_itself(contract, reduction)
        self.metric_names = metric_names_for(contract, spec)
        self._values_checked = False
        # Per-batch value checks on CPU targets; the caller turns them off after checking a whole
        # in-memory target tensor once (check_target), which makes the hot loop cheaper.
        self.check_every_batch = True

    def extra_repr(self) -> str:
        return f"name={self.name}, reduction={self.requested_reduction}, task={self.task}"

    def check_target(self, target: Tensor, output: Tensor | None = None) -> None:
        """Raise TrainlabError if the loss cannot use ``target`` (reads values: a host sync on GPU)."""
        self.contract.check_values(self, target, output)

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        # Runs every step: every check below is metadata only, the value check happens once. It is
        # written inline, as few Python calls as it takes, because every call here costs each step.
        if not output.ndim or not target.ndim or output.shape[0] != target.shape[0]:
            raise _batch_mismatch(self.name, output, target)
        if not self._values_checked or (self.check_every_batch and target.device.type == "cpu"):
            self.check_target(target, output)
            self._values_checked = True
        if output.dtype in (torch.float16, torch.bfloat16):
            output = output.float()  # losses in float32, as autocast would; BCELoss needs it
        if torch.is_autocast_enabled(output.device.type):
            with torch.autocast(device_type=output.device.type, enabled=False):
                inputs, mask = self.contract.inputs(self, output, target)
                values = self._loss_forward(*inputs)
        else:
            inputs, mask = self.contract.inputs(self, output, target)
            values = self._loss_forward(*inputs)
        if not self.reduces_itself:
            return values
        return self._reduce(values, mask, batch=output.shape[0])

    __call__ = forward

    def _reduce(self, values: Tensor, mask: Tensor | None, batch: int) -> Tensor:
        if mask is not None:
            while mask.dim() < values.dim():
                mask = mask.unsqueeze(-1)
            mask = mask.expand_as(values)
            values = torch.where(mask, values, values.new_zeros(()))  # keeps grad, 0 where masked
            count = mask.sum().clamp_min(1)
        else:
            count = values.numel()
        total = values.sum()
        if self.requested_reduction == "sum":
            return total
        if self.requested_reduction == "batchmean":
            return total / max(batch, 1)
        return total / count

    def batch_metrics(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Per-batch sums as 0-dim tensors on the output's device (no host sync): ``accuracy`` is
        the number of correct predictions (an integer count), ``mse`` the sum over samples of each
        sample's mean squared error. The loop divides by the number of samples it saw.

        Called on every training batch, so it stays lean: a detach instead of a ``no_grad``
        context, and the count is not cast (the loop's float sums take it)."""
        output = output.detach()
        metrics: dict[str, Tensor] = {}
        if "accuracy" in self.metric_names:
            predicted = self.contract.predicted_classes(output)
            metrics["accuracy"] = (predicted == target).sum()
        if "mse" in self.metric_names:
            predicted = self.contract.predicted_values(self, output.float(), target)
            error = (predicted - target.to(predicted.dtype)) ** 2
            metrics["mse"] = error.reshape(error.shape[0], -1).mean(1).sum()
        return metrics


def loss_reduces_itself(contract: Contract, reduction: str) -> bool:
    """Whether torch computes unreduced values that the Criterion reduces (masks, batchmean,
    ``none``): every other loss is reduced by torch exactly as torch documents it."""
    return contract.reduces_itself or reduction not in ("mean", "sum")


# ----------------------------------------------------------------------------------- public functions


def default_loss(spec: DataSpec) -> str:
    """The loss a recipe without ``loss:`` trains with, chosen by the data's task."""
    return DEFAULT_LOSSES[spec.task]


def _config(config: LossConfig | None, spec: DataSpec) -> LossConfig:
    return config if config is not None else LossConfig(name=default_loss(spec))


def _canonical_or_raise(config: LossConfig, spec: DataSpec) -> Entry:
    name = LOSSES.canonical(config.name)
    if name is None:
        raise RecipeError(problems=_name_problems(config.name))
    return LOSSES.get(name)


def resolve_loss(config: LossConfig | None, spec: DataSpec) -> LossConfig:
    """The loss section as the resolved recipe writes it: the canonical name and every argument
    of the torch signature with its default filled in (deprecated size_average/reduce and
    non-serialisable ones such as distance_function left out), the recipe's values kept."""
    config = _config(config, spec)
    entry = _canonical_or_raise(config, spec)
    given = config.arguments()
    resolved: dict[str, Any] = {}
    for argument, parameter in entry.parameters().items():
        if argument in UNSUPPORTED_ARGUMENTS:
            continue
        if argument in given:
            resolved[argument] = given[argument]
            continue
        value = jsonable_default(parameter.default)
        if parameter.default is not inspect.Parameter.empty and value is not ...:
            resolved[argument] = value
    for argument, value in given.items():  # keep anything else so it is still reported
        resolved.setdefault(argument, value)
    return LossConfig(name=entry.name, **resolved)


def _name_problems(name: Any) -> list[Problem]:
    for excluded, reason in EXCLUDED.items():
        if isinstance(name, str) and normalize_name(name) == normalize_name(excluded):
            return [Problem("loss.name", f"{excluded} is not supported: {reason}", received=name,
                            hint="See docs/losses.md for the supported losses.")]
    suggestions = did_you_mean(str(name), LOSSES.names())
    hint = f"Did you mean '{suggestions[0]}'?" if suggestions else "See docs/losses.md for the supported losses."
    return [Problem("loss.name", "unknown loss: expected a torch.nn loss class name such as CrossEntropyLoss",
                    received=name, hint=hint)]


def _tensor_argument_problems(entry: Entry, arguments: dict[str, Any], spec: DataSpec) -> list[Problem]:
    problems = []
    length = spec.output_size if spec.task != "sequence" else spec.num_classes
    per = "class (num_classes)" if spec.task == "classification" else "target"
    for argument in entry.capabilities.get("tensor_arguments", ()):
        value = arguments.get(argument)
        if value is None:
            continue
        if not isinstance(value, list) or not value or not all(_is_number(item) for item in value):
            problems.append(Problem(
                f"loss.{argument}", f"{argument} must be a list of numbers, one per {per}",
                received=value, argument=argument, hint=f"Write it as a YAML list of {length} numbers, e.g. [1, 2].",
            ))
        elif len(value) != length:
            problems.append(Problem(
                f"loss.{argument}", f"{argument} needs one number per {per}: {_count(length, 'number')}",
                received=f"{_count(len(value), 'number')} {value}", argument=None,
                hint=f"Give exactly {_count(length, 'number')}.",
            ))
    return problems


def _value_problems(entry: Entry, arguments: dict[str, Any]) -> list[Problem]:
    problems = []
    for argument, reason in UNSUPPORTED_ARGUMENTS.items():
        if argument in arguments:
            problems.append(Problem(f"loss.{argument}", f"{argument} is not supported: {reason}",
                                    received=arguments[argument], argument=argument,
                                    hint=f"Remove {argument}."))
    reduction = arguments.get("reduction", "mean")
    allowed = entry.capabilities.get("reductions", REDUCTIONS)
    if "reduction" in entry.parameters() and reduction not in allowed:
        hint = did_you_mean(str(reduction), list(allowed))
        problems.append(Problem(
            "loss.reduction", f"reduction must be one of {', '.join(allowed)}", received=reduction,
            argument="reduction",
            hint=(f"Did you mean '{hint[0]}'?" if hint else "Use reduction: mean (the default) or sum."),
        ))
    for argument, (low, high) in ARGUMENT_RANGES.items():
        value = arguments.get(argument)
        if _is_number(value) and not low <= value <= high:
            problems.append(Problem(
                f"loss.{argument}", f"{argument} must lie in [{low:g}, {high:g}]", received=value,
                argument=argument, hint=f"Choose {argument} within [{low:g}, {high:g}].",
            ))
    return problems


def _pairing_problems(name: str, contract: Contract, spec: DataSpec, output: OutputInfo | None) -> list[Problem]:
    if spec.task not in contract.tasks:
        return [Problem(
            "loss.name",
            f"{name} trains on {' or '.join(contract.tasks)} data; this data's task is {spec.task}",
            received=name,
            hint=f"{SUGGESTED_FOR_TASK[spec.task]} (see docs/losses.md).",
        )]
    if output is None:
        return []
    problems = []
    final = output.final_activation
    if contract.activation == "logits" and final in KNOWN_ACTIVATIONS:
        problems.append(Problem(
            "loss.name", f"{name} expects raw logits but the model ends in {final}",
            received=f"model ending in {final}",
            hint=f"Remove the final {final} (model.output_activation), or use "
                 f"{'NLLLoss' if final == 'LogSoftmax' else 'a loss for probabilities such as BCELoss'}.",
        ))
    elif contract.activation in ("log_probabilities", "probabilities") and final not in ACTIVATIONS[contract.activation]:
        wanted = " or ".join(ACTIVATIONS[contract.activation])
        what = "log-probabilities" if contract.activation == "log_probabilities" else "probabilities"
        hint = (
            "Add LogSoftmax as the last layer or set model.output_activation: LogSoftmax."
            if contract.activation == "log_probabilities"
            else "Add Sigmoid as the last layer or set model.output_activation: Sigmoid "
                 "(or use BCEWithLogitsLoss on raw logits)."
        )
        problems.append(Problem(
            "loss.name", f"{name} expects {what}: the model must end in {wanted}",
            received=f"model ending in {final or 'no activation'}", hint=hint,
        ))
    shape_problem = contract.shape_problem(name, spec, tuple(output.shape))
    if shape_problem is not None:
        problems.append(shape_problem)
    return problems


def check_loss(config: LossConfig | None, spec: DataSpec, output: OutputInfo | None = None) -> list[Problem]:
    """Every problem with the loss section, for ``trainlab validate``; never raises for user errors.

    Checks the name (did-you-mean), the arguments against the torch signature, tensor arguments
    (lists of numbers, one per class or target), reduction and ranges, the pairing with the
    data's task, and, given the model's ``output`` (shape and final activation), the final
    activation and the output width. ``output=None`` skips the model checks.
    """
    config = _config(config, spec)
    name = LOSSES.canonical(config.name)
    if name is None:
        return _name_problems(config.name)
    entry = LOSSES.get(name)
    contract: Contract = entry.capabilities["contract"]
    arguments = config.arguments()
    known = {k: v for k, v in arguments.items() if k not in UNSUPPORTED_ARGUMENTS}
    problems = argument_problems(entry, known, "loss")
    problems += _value_problems(entry, arguments)
    problems += _tensor_argument_problems(entry, arguments, spec)
    problems += contract.argument_problems(name, arguments, spec)
    argument_trouble = bool(problems)
    problems += _pairing_problems(name, contract, spec, output)
    if not argument_trouble:
        try:
            _torch_loss(entry, arguments, "mean")
        except Exception as error:  # torch's own validation, e.g. MultiMarginLoss p: 3
            problems.append(Problem("loss", f"torch rejected the arguments of {name}: {error}",
                                    received=arguments, hint="Fix the argument values (see the torch docs)."))
    return problems


def _torch_loss(entry: Entry, arguments: dict[str, Any], torch_reduction: str) -> nn.Module:
    kwargs = dict(arguments)
    for argument in entry.capabilities.get("tensor_arguments", ()):
        if kwargs.get(argument) is not None:
            kwargs[argument] = torch.tensor(kwargs[argument], dtype=torch.float32)
    if "reduction" in entry.parameters():
        kwargs["reduction"] = torch_reduction
    return entry.target(**kwargs)


def build_loss(config: LossConfig | None, spec: DataSpec) -> Criterion:
    """The :class:`Criterion` for the recipe's loss section (the data's default loss when None).

    Raises RecipeError with every problem when the section is invalid."""
    config = _config(config, spec)
    problems = check_loss(config, spec, None)
    if problems:
        raise RecipeError(problems=problems)
    entry = LOSSES.get(config.name)
    contract: Contract = entry.capabilities["contract"]
    resolved = resolve_loss(config, spec).arguments()
    reduction = resolved.get("reduction", "mean")
    torch_reduction = "none" if loss_reduces_itself(contract, reduction) else reduction
    loss = _torch_loss(entry, config.arguments(), torch_reduction)
    return Criterion(entry.name, loss, contract, spec, resolved, reduction)


def metric_names_for(contract: Contract, spec: DataSpec) -> tuple[str, ...]:
    """The per-batch metrics a Criterion with this contract reports on data like ``spec``."""
    if contract.scores(spec):
        return ("accuracy",)
    if spec.task == "regression" and contract.regression_metric():
        return ("mse",)
    return ()


def contract_table() -> str:
    """The loss contract as a Markdown table (docs/losses.md embeds it; a test compares)."""
    lines = [
        "| Loss | Family | Model outputs | Final activation | Targets the loss receives | Metrics | Notes |",
        "|---|---|---|---|---|---|---|",
    ]
    activation_text = {
        "logits": "none (raw logits)",
        "log_probabilities": "LogSoftmax",
        "probabilities": "Sigmoid or Softmax",
        None: "any",
    }
    examples = {
        "classification": DataSpec("classification", (1,), num_classes=2),
        "regression": DataSpec("regression", (1,), target_shape=(1,)),
        "sequence": DataSpec("sequence", (1,), num_classes=2, target_shape=(1,)),
    }
    for entry in LOSSES:
        contract: Contract = entry.capabilities["contract"]
        targets = "<br>".join(f"**{task}**: {text}" for task, text in contract.targets.items())
        metrics = "<br>".join(
            f"{task}: {', '.join(metric_names_for(contract, examples[task])) or '-'}" for task in contract.targets
        )
        lines.append(
            f"| {entry.name} | {contract.family} | {contract.output} | {activation_text[contract.activation]} "
            f"| {targets} | {metrics} | {contract.note} |"
        )
    return "\n".join(lines) + "\n"
