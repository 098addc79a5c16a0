"""The LR range test (Leslie Smith, arXiv 1506.01186; fastai's ``lr_find``): train a few dozen
optimizer steps while the learning rate rises from ``start_lr`` to ``end_lr``, record the training
loss at every step, stop when it diverges, and suggest learning rates from the curve.

How it runs
-----------
The test *is* a short training run: :func:`lr_range_test` calls :func:`trainlab.train.loop.fit`
with a per-optimizer-step ``LambdaLR`` schedule, so gradient accumulation, mixed precision,
clipping and every loss contract behave exactly as in training. ``num_iter`` counts optimizer
steps (with ``accumulate: 4`` one point of the curve is four batches). No validation, checkpoint
or early stopping happens inside that run; a callback records each step's loss and lr and stops
the run after ``num_iter`` steps or on divergence.

The lr of optimizer step ``i`` (0-based) is torch-lr-finder's convention, so the first step uses
exactly ``start_lr`` and the last exactly ``end_lr``::

    exp:    start_lr * (end_lr / start_lr) ** (i / (num_iter - 1))
    linear: start_lr + (end_lr - start_lr) * i / (num_iter - 1)

With several parameter groups, group 0 sweeps ``start_lr .. end_lr`` and every other group keeps
its ratio to group 0 (a group configured at 10x the base lr sweeps at 10x); the recorded lrs and
the suggestions are group 0's, i.e. values for ``optimizer.lr``.

Smoothing and divergence (fastai): ``avg = beta*avg + (1-beta)*loss``, ``smoothed = avg / (1 -
beta**(i+1))`` (a bias-corrected EMA, beta 0.98); the test stops early when the smoothed loss
exceeds ``divergence`` times the best smoothed loss so far, or when the loss is not finite (a
non-finite point is not recorded).

State
-----
Before the test, an in-memory snapshot is taken of the model's parameters and buffers (BatchNorm
statistics included) and gradients, every module's train/eval mode, the optimizer's state and
param groups, the GradScaler, the train and valid loaders' positions and every RNG; afterwards, on
success and on any exception, all of it is put back, so the model and optimizer are bitwise what
they were (pitfall 3: a model left modified by the test trains worse afterwards). Nothing is
written to disk: restoring through a temporary file breaks with ``weights_only`` and leaves files
behind.

Suggestions
-----------
Computed on the smoothed losses of the points left after dropping the first ``num_iter // 10``
and the last 5 points, as fastai does (when that leaves fewer than 3 points, as after a very
early divergence, the whole curve is used). Slopes are always taken against ``log(lr)``, never
against the lr itself, so low-lr noise cannot dominate (pitfall 2, Lightning #21141).

- ``valley`` (the default): fastai's ``valley``, exactly. The longest strictly decreasing
  subsequence of the loss is found by an O(n^2) dynamic programme (``lds[i]`` = its length ending
  at ``i``; the first longest wins); its start is taken as fastai takes it, ``start = end -
  lds[end]``, so with ``L = end - start`` (= ``lds[end]``) the suggestion is
  ``lrs[start + L//3 + L//6]``: about halfway down the valley, or ``lds/2`` points before its end
  when noise leaves gaps in the subsequence. Robust to early spikes. The index is clipped to the
  curve (fastai's own becomes -1 for a two-point valley at the very start).
- ``steep``: the lr at the most negative slope ``(loss[i+1]-loss[i]) / (log lr[i+1]-log lr[i])``
  (the left point of the steepest segment).
- ``minimum``: the lr of the lowest smoothed loss, divided by 10.
- ``slide``: fastai's ``slide``: ``np.gradient`` of the losses; a 15-point window starts at the
  right end and slides left while ``|grad[right] - grad[left]| > 0.005``; the lr at its left end.
- ``one_cycle_max_lr``: the ``valley`` lr; fastai designs ``valley`` as the ``lr_max`` of a
  one-cycle run (``OneCycleLR.max_lr``).
- ``cyclic_max_lr``: Smith's classic rule for cyclical schedules: ``max_lr`` where the loss still
  falls fast, just before it flattens and rises. Here: the largest lr, no later than the
  smoothed minimum, whose slope against ``log(lr)`` is still at least half the steepest slope.
- ``cyclic_base_lr``: ``cyclic_max_lr / 4`` (the rule says 1/3 to 1/4 of ``max_lr``; base below
  max, never swapped).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainlab.data.spec import DataBundle
from trainlab.recipe.errors import TrainlabError
from trainlab.recipe.schema import TrainConfig
from trainlab.train.callbacks import BaseCallback
from trainlab.train.checkpoint import rng_state, set_rng_state
from trainlab.train.loop import StopTraining, TrainingDiverged, evaluate_loader, fit
from trainlab.train.optimizers import OPTIMIZERS
from trainlab.train.precision import Precision
from trainlab.train.schedules import Schedule

__all__ = [
    "MODES",
    "SUGGESTIONS",
    "LRFinderResult",
    "cyclic_max_index",
    "lr_at",
    "lr_range_test",
    "minimum_index",
    "slide_index",
    "smooth",
    "steep_index",
    "suggest",
    "trim",
    "valley_index",
]

MODES = ("exp", "linear")
SUGGESTIONS = ("valley", "steep", "minimum", "slide", "one_cycle_max_lr", "cyclic_max_lr", "cyclic_base_lr")
SKIP_END = 5  # points dropped at the end before suggesting (fastai)
MIN_TRIMMED = 3  # fewer points than this after trimming: suggest from the whole curve
CYCLIC_STEEPNESS = 0.5  # cyclic_max_lr: the slope is still at least this fraction of the steepest
CYCLIC_BASE_FRACTION = 0.25  # cyclic_base_lr = cyclic_max_lr / 4
SLIDE_WINDOW = 15  # fastai slide: lr_diff
SLIDE_THRESHOLD = 0.005  # fastai slide: thresh


# ----------------------------------------------------------------------------------- the result


@dataclass
class LRFinderResult:
    """The recorded curve of a range test and the learning rates suggested from it.

    ``lrs[i]`` is the (group 0) lr optimizer step ``i`` used and ``losses[i]`` the training loss
    of the batches of that step (measured before the step); ``smoothed`` is their bias-corrected
    EMA. ``accuracy`` holds ``(lr, validation accuracy)`` pairs when the test was asked to
    measure them. ``suggestion`` names the entry of ``suggestions`` that :attr:`lr` returns.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    accuracy: list[tuple[float, float]] | None = None
    suggestions: dict[str, float] = field(default_factory=dict)
    suggestion: str = "valley"
    stopped_early: bool = False  # the loss diverged before num_iter steps
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def lr(self) -> float:
        """The suggested learning rate (``suggestions[suggestion]``)."""
        return self.suggestions[self.suggestion]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (for ``--json`` and the run folder's ``lr_find.json``)."""
        return {
            "lr": self.lr if self.suggestion in self.suggestions else None,
            "suggestion": self.suggestion,
            "suggestions": {name: float(value) for name, value in self.suggestions.items()},
            "stopped_early": bool(self.stopped_early),
            "settings": _plain(self.settings),
            "lrs": [float(value) for value in self.lrs],
            "losses": [float(value) for value in self.losses],
            "smoothed": [float(value) for value in self.smoothed],
            "accuracy": None if self.accuracy is None else [[float(lr), float(value)] for lr, value in self.accuracy],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LRFinderResult:
        """The result :meth:`to_json` wrote (e.g. to re-plot a saved test)."""
        accuracy = data.get("accuracy")
        return cls(
            lrs=list(data["lrs"]),
            losses=list(data["losses"]),
            smoothed=list(data["smoothed"]),
            accuracy=None if accuracy is None else [(float(lr), float(value)) for lr, value in accuracy],
            suggestions=dict(data.get("suggestions", {})),
            suggestion=data.get("suggestion", "valley"),
            stopped_early=bool(data.get("stopped_early", False)),
            settings=dict(data.get("settings", {})),
        )


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists and numpy / torch scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.item()
    return value


# ----------------------------------------------------------------------------------- lr and smoothing


def lr_at(step: int, start_lr: float, end_lr: float, num_iter: int, mode: str = "exp") -> float:
    """The lr of optimizer step ``step`` (0-based): ``start_lr`` at 0, ``end_lr`` at ``num_iter - 1``."""
    fraction = min(step, num_iter - 1) / (num_iter - 1)
    if mode == "exp":
        return start_lr * (end_lr / start_lr) ** fraction
    return start_lr + (end_lr - start_lr) * fraction


def smooth(losses: Sequence[float], beta: float = 0.98) -> list[float]:
    """fastai's bias-corrected exponential moving average of ``losses``."""
    average, smoothed = 0.0, []
    for index, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        smoothed.append(average / (1 - beta ** (index + 1)))
    return smoothed


# ----------------------------------------------------------------------------------- suggestions


def trim(count: int, num_iter: int, skip_end: int = SKIP_END) -> tuple[int, int]:
    """The ``[first, stop)`` range of points suggestions use: fastai drops the first
    ``num_iter // 10`` and the last ``skip_end``; the whole curve when that leaves < 3 points."""
    first, stop = num_iter // 10, count - skip_end
    if stop - first < MIN_TRIMMED:
        return 0, count
    return first, stop


def valley_index(losses: Sequence[float]) -> int:
    """fastai's ``valley``: about halfway down the longest strictly decreasing subsequence.

    As in fastai, the valley's start is estimated as ``end - lds[end]`` (so ``L = lds[end]``);
    the index is clipped to the curve (fastai's own can become -1 for a two-point valley)."""
    count = len(losses)
    if count == 0:
        raise ValueError("valley needs at least one point")
    lds = [1] * count  # length of the longest strictly decreasing subsequence ending at i
    best_start, best_end = 0, 0
    for i in range(1, count):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[best_end] < lds[i]:  # the first longest one wins
            best_end = i
            best_start = best_end - lds[best_end]
    length = best_end - best_start
    return min(max(best_start + length // 3 + length // 6, 0), count - 1)


def _log_slopes(lrs: Sequence[float], losses: Sequence[float]) -> np.ndarray:
    """Slope of segment ``i`` (points i -> i+1) against log10(lr); NaN where the lr did not grow."""
    rates = np.log10(np.asarray(lrs, dtype=np.float64))
    values = np.asarray(losses, dtype=np.float64)
    run = rates[1:] - rates[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(run > 0, (values[1:] - values[:-1]) / np.where(run > 0, run, 1.0), np.nan)


def steep_index(lrs: Sequence[float], losses: Sequence[float]) -> int:
    """fastai's ``steep``: the left point of the segment with the most negative slope vs log(lr)."""
    if len(losses) < 2:
        return 0
    slopes = _log_slopes(lrs, losses)
    if np.all(np.isnan(slopes)):
        return 0
    return int(np.nanargmin(slopes))


def minimum_index(losses: Sequence[float]) -> int:
    """The point of the lowest loss (``minimum`` suggests its lr / 10)."""
    return int(np.argmin(np.asarray(losses, dtype=np.float64)))


def slide_index(losses: Sequence[float], window: int = SLIDE_WINDOW, threshold: float = SLIDE_THRESHOLD) -> int:
    """fastai's ``slide``: slide a window left from the right end while the gradient at its two
    ends differs by more than ``threshold``; the index of its left end (window shortened to fit
    short curves)."""
    count = len(losses)
    if count < 2:
        return 0
    gradient = np.gradient(np.asarray(losses, dtype=np.float64))
    window = min(window, count - 1)
    right, left = count - 1, count - 1 - window
    found = left
    while left >= 0 and abs(gradient[right] - gradient[left]) > threshold:
        found = left
        right, left = right - 1, left - 1
    return found


def cyclic_max_index(lrs: Sequence[float], losses: Sequence[float], steepness: float = CYCLIC_STEEPNESS) -> int:
    """Smith's ``max_lr`` for cyclical schedules: the last point, no later than the minimum, where
    the loss still falls at least ``steepness`` times as fast (vs log lr) as at its steepest."""
    lowest = minimum_index(losses)
    if lowest == 0:
        return 0  # the loss never fell: the smallest lr is the only safe one
    slopes = _log_slopes(lrs, losses)[:lowest]  # segments ending at or before the minimum
    if np.all(np.isnan(slopes)) or np.nanmin(slopes) >= 0:
        return 0
    steepest = float(np.nanmin(slopes))
    fast = np.nonzero(np.nan_to_num(slopes, nan=0.0) <= steepness * steepest)[0]
    return int(fast[-1])


def suggest(lrs: Sequence[float], smoothed: Sequence[float], num_iter: int | None = None) -> dict[str, float]:
    """Every suggestion (see the module docstring) from a recorded curve; ``num_iter`` is the
    requested number of steps (fastai trims ``num_iter // 10`` points at the start)."""
    if not lrs:
        return {}
    first, stop = trim(len(lrs), num_iter if num_iter is not None else len(lrs))
    rates, values = list(lrs[first:stop]), list(smoothed[first:stop])
    valley = rates[valley_index(values)]
    cyclic_max = rates[cyclic_max_index(rates, values)]
    return {
        "valley": float(valley),
        "steep": float(rates[steep_index(rates, values)]),
        "minimum": float(rates[minimum_index(values)] / 10),
        "slide": float(rates[slide_index(values)]),
        "one_cycle_max_lr": float(valley),
        "cyclic_max_lr": float(cyclic_max),
        "cyclic_base_lr": float(cyclic_max * CYCLIC_BASE_FRACTION),
    }


# ----------------------------------------------------------------------------------- state snapshot


class _Snapshot:
    """Everything the range test changes, copied in memory, and put back by :meth:`restore`."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: DataBundle,
                 precision: Precision) -> None:
        self.model, self.optimizer, self.data, self.precision = model, optimizer, data, precision
        # Tensors: each parameter and buffer object with a copy of its value (and gradient), by
        # the module slot that holds it, so values *and* object identity can be put back.
        self.copies: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
        self.slots: list[tuple[dict[str, Any], str, torch.Tensor | None]] = []
        with torch.no_grad():
            for module in model.modules():
                for slots in (module._parameters, module._buffers):
                    for name, tensor in slots.items():
                        self.slots.append((slots, name, tensor))
                        if tensor is not None and id(tensor) not in self.copies:
                            grad = tensor.grad.detach().clone() if tensor.grad is not None else None
                            self.copies[id(tensor)] = (tensor, tensor.detach().clone(), grad)
        self.modes = [(module, module.training) for module in model.modules()]
        self.optimizer_state = {parameter: copy.deepcopy(state) for parameter, state in optimizer.state.items()}
        self.groups = [copy.deepcopy({k: v for k, v in group.items() if k != "params"})
                       for group in optimizer.param_groups]
        self.optimizer_attributes = dict(vars(optimizer))  # LambdaLR patches optimizer.step, _opt_called
        self.scaler = copy.deepcopy(precision.state_dict())
        self.loaders = {split: copy.deepcopy(loader.state_dict())
                        for split, loader in (("train", data.train), ("valid", data.valid)) if loader is not None}
        self.rng = copy.deepcopy(rng_state())

    def restore(self) -> None:
        """Put everything back. Single use: the copies themselves become the live state where
        they can (gradients, optimizer state), so restoring needs no second copy of them."""
        with torch.no_grad():
            for slots, name, tensor in self.slots:
                slots[name] = tensor
            for tensor, value, grad in self.copies.values():
                tensor.copy_(value)
                tensor.grad = grad
        for module, training in self.modes:
            module.training = training
        optimizer = self.optimizer
        optimizer.state.clear()
        for parameter, state in self.optimizer_state.items():
            optimizer.state[parameter] = state
        for group, saved in zip(optimizer.param_groups, self.groups):
            params = group["params"]
            group.clear()
            group.update(saved)
            group["params"] = params
        for name in [name for name in vars(optimizer) if name not in self.optimizer_attributes]:
            delattr(optimizer, name)
        for name, value in self.optimizer_attributes.items():
            if name not in ("state", "param_groups"):
                setattr(optimizer, name, value)
        self.precision.load_state_dict(self.scaler)
        for split, state in self.loaders.items():
            loader = self.data.loader(split)
            if loader is not None:
                loader.load_state_dict(state)
        set_rng_state(self.rng)


# ----------------------------------------------------------------------------------- the test


class _RangeTestRecorder(BaseCallback):
    """Records each optimizer step's loss and lr, stops after ``num_iter`` steps or on divergence,
    measures validation accuracy every ``accuracy_every`` steps, and forwards events to ``extra``
    (e.g. a progress bar, told the test's length rather than fit's)."""

    def __init__(self, num_iter: int, beta: float, divergence: float | None, accuracy_every: int | None,
                 evaluate: Any, extra: BaseCallback | None) -> None:
        self.num_iter, self.beta, self.divergence = num_iter, beta, divergence
        self.accuracy_every, self.evaluate, self.extra = accuracy_every, evaluate, extra
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.accuracy: list[tuple[float, float]] = []
        self.average = 0.0
        self.best = math.inf
        self.diverged = False
        self.stopping = False  # asked fit to stop: under data parallelism it stops one step later
        self.last_lr: float | None = None

    def on_train_start(self, total_steps: int, start_step: int) -> None:
        if self.extra is not None:
            self.extra.on_train_start(self.num_iter, start_step)

    def on_record(self, record: dict[str, Any]) -> None:
        if self.extra is not None:
            self.extra.on_record(record)
        if self.stopping or record.get("split") != "train" or "loss" not in record:
            return
        loss, lr = float(record["loss"]), float(record["lr"])
        self.last_lr = lr
        if not math.isfinite(loss):
            self.diverged = True
            return
        self.average = self.beta * self.average + (1 - self.beta) * loss
        smoothed = self.average / (1 - self.beta ** (len(self.losses) + 1))
        self.lrs.append(lr)
        self.losses.append(loss)
        self.smoothed.append(smoothed)
        self.best = min(self.best, smoothed)
        if self.divergence is not None and smoothed > self.divergence * self.best:
            self.diverged = True

    def on_step(self, step: int, samples: int) -> None:
        if self.extra is not None:
            self.extra.on_step(step, samples)
        if self.stopping:  # data-parallel: every process stops at the step after the first stop
            raise StopTraining
        if self.accuracy_every and step % self.accuracy_every == 0 and not self.diverged and self.last_lr is not None:
            self.accuracy.append((self.last_lr, float(self.evaluate()["accuracy"])))
        if self.diverged or step >= self.num_iter:
            self.stopping = True
            raise StopTraining

    def on_train_end(self, status: str) -> None:
        if self.extra is not None:
            self.extra.on_train_end(status)


def _optimizer_entry_name(optimizer: torch.optim.Optimizer) -> str | None:
    """The registry name of ``optimizer``'s class (exact class first, then a base class)."""
    for exact in (True, False):
        for entry in OPTIMIZERS:
            if (type(optimizer) is entry.target) if exact else isinstance(optimizer, entry.target):
                return entry.name
    return None


def _check_optimizer(optimizer: torch.optim.Optimizer) -> str:
    name = _optimizer_entry_name(optimizer) or type(optimizer).__name__
    if name in OPTIMIZERS and not OPTIMIZERS.get(name).capabilities.get("range_test", True):
        reason = OPTIMIZERS.get(name).capabilities.get("range_test_reason", "")
        default = OPTIMIZERS.get(name).parameters().get("lr")
        default_text = f" (torch's default for {name} is {default.default})" if default is not None else ""
        raise TrainlabError(
            f"the LR range test cannot be used with {name}: {reason}. Set optimizer.lr yourself{default_text}, "
            "or run the range test with an optimizer whose lr scales every step, such as SGD or AdamW"
        )
    return name


def _check_arguments(start_lr: float, end_lr: float, num_iter: int, mode: str, divergence: float | None,
                     beta: float, accuracy_every: int | None, suggestion: str, data: DataBundle,
                     criterion: Any) -> None:
    problems = []
    if not (math.isfinite(start_lr) and start_lr > 0):
        problems.append(f"start_lr must be a positive number, received {start_lr}")
    if not (math.isfinite(end_lr) and end_lr > start_lr):
        problems.append(f"end_lr must be larger than start_lr ({start_lr}), received {end_lr}")
    if not isinstance(num_iter, int) or num_iter < 2:
        problems.append(f"num_iter must be an integer of at least 2 optimizer steps, received {num_iter}")
    if mode not in MODES:
        problems.append(f"mode must be one of {', '.join(MODES)}, received {mode!r}")
    if divergence is not None and not divergence > 1:
        problems.append(f"divergence must be above 1 (or None to never stop early), received {divergence}")
    if not 0 <= beta < 1:
        problems.append(f"beta must be in [0, 1), received {beta}")
    if suggestion not in SUGGESTIONS:
        problems.append(f"suggestion must be one of {', '.join(SUGGESTIONS)}, received {suggestion!r}")
    if accuracy_every is not None:
        if not isinstance(accuracy_every, int) or accuracy_every < 1:
            problems.append(f"accuracy_every must be a positive number of steps, received {accuracy_every}")
        elif data.valid is None:
            problems.append("accuracy_every needs a validation split; set data.split.valid (e.g. 0.2)")
        elif "accuracy" not in getattr(criterion, "metric_names", ()):
            problems.append("accuracy_every needs a loss that reports accuracy (a classification loss); "
                            "this loss reports none")
    if problems:
        raise TrainlabError("the LR range test settings are invalid: " + "; ".join(problems))


def _set_start_lrs(optimizer: torch.optim.Optimizer, start_lr: float) -> list[float]:
    """Group 0 starts at ``start_lr``, the others at the same ratio to it as configured; returns
    the ratios. ``initial_lr`` (left by an earlier scheduler) is removed so LambdaLR bases on it."""
    configured = [float(group["lr"]) for group in optimizer.param_groups]
    base = configured[0]
    ratios = [value / base if base > 0 else 1.0 for value in configured]
    for group, ratio in zip(optimizer.param_groups, ratios):
        group.pop("initial_lr", None)
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(start_lr * ratio)
        else:
            group["lr"] = start_lr * ratio
    return ratios


def lr_range_test(
    model: torch.nn.Module,
    criterion: Any,
    optimizer: torch.optim.Optimizer,
    data: DataBundle,
    train: TrainConfig,
    precision: Precision,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int = 100,
    mode: str = "exp",
    divergence: float | None = 4.0,
    beta: float = 0.98,
    accuracy_every: int | None = None,
    suggestion: str = "valley",
    callbacks: BaseCallback | None = None,
) -> LRFinderResult:
    """Run the LR range test and return the curve with its suggestions (module docstring).

    ``train`` supplies accumulation, clipping and the device settings of the real run (its epochs,
    logging, validation and early stopping are replaced). ``divergence=None`` never stops early
    (a non-finite loss still stops). ``accuracy_every=k`` measures validation accuracy every k
    optimizer steps (slower; needs a validation split and a classification loss). ``callbacks``
    receive fit's events, e.g. a progress bar. The model, optimizer, scaler, loaders and RNGs are
    restored afterwards, also when the test fails. Raises TrainlabError for an optimizer whose lr
    a range test cannot measure (LBFGS, Rprop) and for invalid settings.
    """
    optimizer_name = _check_optimizer(optimizer)
    _check_arguments(start_lr, end_lr, num_iter, mode, divergence, beta, accuracy_every, suggestion, data, criterion)
    device = precision.device
    steps_per_epoch = math.ceil(len(data.train) / train.accumulate)
    config = train.model_copy(update={
        "epochs": math.ceil(num_iter / steps_per_epoch),
        "log_every": 1,  # one record, with its loss and lr, per optimizer step
        "validate_every": 1,
        "checkpoint_every": None,
        "early_stopping": None,
        "monitor": "train/loss",
    })
    no_validation = dataclasses.replace(data, valid=None)

    def evaluate() -> dict[str, float]:
        assert data.valid is not None
        return evaluate_loader(model, criterion, data.valid, precision, device)

    recorder = _RangeTestRecorder(num_iter, beta, divergence, accuracy_every, evaluate, callbacks)
    snapshot = _Snapshot(model, optimizer, data, precision)
    status = "finished"
    try:
        ratios = _set_start_lrs(optimizer, start_lr)
        factor_end = end_lr / start_lr

        def factor(step: int) -> float:  # relative to each group's start lr
            return lr_at(step, 1.0, factor_end, num_iter, mode)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        schedule = Schedule(scheduler, "step", name="LRRangeTest")
        try:
            status = fit(model, criterion, optimizer, no_validation, config, precision, schedule,
                         recorder, checkpointer=None).state.status
        except TrainingDiverged:
            status = "diverged"
    finally:
        snapshot.restore()
    if status == "interrupted":
        raise KeyboardInterrupt
    if not recorder.losses:
        raise TrainlabError(
            f"the LR range test recorded no finite loss: the loss was NaN or infinite from the first step at lr "
            f"{start_lr:g}. Lower start_lr, or check the data and the model's output for NaN values"
        )
    stopped_early = recorder.diverged or status == "diverged"
    first, stop = trim(len(recorder.lrs), num_iter)
    settings = {
        "start_lr": start_lr,
        "end_lr": end_lr,
        "num_iter": num_iter,
        "mode": mode,
        "lr_formula": ("start_lr * (end_lr / start_lr) ** (i / (num_iter - 1))" if mode == "exp"
                       else "start_lr + (end_lr - start_lr) * i / (num_iter - 1)"),
        "divergence": divergence,
        "beta": beta,
        "accumulate": train.accumulate,
        "batch_size": getattr(data.train, "batch_size", None),
        "clip_grad_norm": train.clip_grad_norm,
        "clip_grad_value": train.clip_grad_value,
        "precision": precision.name,
        "device": str(device),
        "optimizer": optimizer_name,
        "group_lr_ratios": ratios,
        "accuracy_every": accuracy_every,
        "steps": len(recorder.lrs),
        "suggestion_points": [first, stop],
    }
    return LRFinderResult(
        lrs=recorder.lrs,
        losses=recorder.losses,
        smoothed=recorder.smoothed,
        accuracy=recorder.accuracy if accuracy_every else None,
        suggestions=suggest(recorder.lrs, recorder.smoothed, num_iter),
        suggestion=suggestion,
        stopped_early=stopped_early,
        settings=settings,
    )
