"""The one composer: recipe -> data -> model -> loss/optimizer/schedule -> fit -> run folder.

Every other module does one stage; this one strings them together for ``train``, ``resume``,
``validate`` and ``show-model``. Validation runs every stage's checks before anything is
written, and raises one :class:`RecipeError` with all the problems.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pydantic import ValidationError

from trainlab import runs
from trainlab.data import build_data
from trainlab.data.spec import DataBundle, DataSpec
from trainlab.models import build_model, check_model, describe_output, resolve_model
from trainlab.recipe.errors import Problem, RecipeError, TrainlabError
from trainlab.recipe.loader import LoadedRecipe, load_recipe, recipe_from_data
from trainlab.recipe.schema import LRFind, Recipe
from trainlab.train import acceleration, distributed
from trainlab.train import checkpoint as checkpoints
from trainlab.train.callbacks import (
    CallbackList,
    MetricsFile,
    Progress,
    TensorBoardLogger,
    truncate_records,
)
from trainlab.train.loop import FitResult, TrainingDiverged, fit, monitor_mode
from trainlab.train.losses import LOSSES, build_loss, check_loss, resolve_loss
from trainlab.train.optimizers import (
    OPTIMIZERS,
    build_optimizer,
    check_optimizer,
    resolve_optimizer,
)
from trainlab.train.precision import choose_device, choose_precision
from trainlab.train.schedules import (
    ScheduleContext,
    build_schedule,
    check_schedule,
    resolve_schedule,
    schedule_problems_from_torch,
)


@dataclass
class Run:
    """A finished (or stopped) training run."""

    folder: Path
    recipe: Recipe
    model: torch.nn.Module
    metrics: list[dict[str, Any]] = field(default_factory=list)
    status: str = "finished"
    result: FitResult | None = None

    def records(self, split: str) -> list[dict[str, Any]]:
        return [record for record in self.metrics if record["split"] == split]

    @property
    def best(self) -> dict[str, Any] | None:
        """The checkpoints/best meta: which step won on train.monitor, and its value."""
        folder = checkpoints.find_checkpoint(self.folder / "checkpoints", "best")
        return json.loads((folder / checkpoints.META_FILE).read_text()) if folder else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def as_loaded(recipe: LoadedRecipe | Recipe | dict[str, Any] | str | Path) -> LoadedRecipe:
    if isinstance(recipe, LoadedRecipe):
        return recipe
    if isinstance(recipe, Recipe):
        return LoadedRecipe(recipe)
    if isinstance(recipe, dict):
        return recipe_from_data(dict(recipe))
    return load_recipe(recipe)


# ----------------------------------------------------------------------------------- validation


def _train_problems(recipe: Recipe, metric_keys: tuple[str, ...] | None, has_valid: bool) -> list[Problem]:
    """Training options that only make sense together with the data, loss and optimizer."""
    problems = []
    train = recipe.train
    optimizer = OPTIMIZERS.get(recipe.optimizer.name) if recipe.optimizer.name in OPTIMIZERS else None
    if optimizer is not None and optimizer.capabilities.get("needs_closure"):
        if train.accumulate != 1:
            problems.append(Problem("train.accumulate", f"{optimizer.name} re-evaluates each batch in a closure and "
                                    "cannot accumulate gradients", train.accumulate, hint="Set train.accumulate: 1."))
        if train.precision == "16-mixed":
            problems.append(Problem("train.precision", f"{optimizer.name} cannot be used with a GradScaler",
                                    train.precision, hint="Use precision: 32 or bf16-mixed."))
    if optimizer is not None and recipe.optimizer.lr == "auto" and optimizer.capabilities.get("range_test") is False:
        reason = optimizer.capabilities.get("range_test_reason", "")
        problems.append(Problem("optimizer.lr", f"lr: auto runs the LR range test, which means nothing for "
                                f"{optimizer.name}: {reason}".rstrip(": "), "auto",
                                hint="Give optimizer.lr a number."))
    split, _, metric = train.monitor.partition("/")
    if split not in ("train", "valid") or not metric:
        problems.append(Problem("train.monitor", "expected '<split>/<metric>' with split train or valid",
                                train.monitor, hint="For example valid/loss or valid/accuracy."))
    elif split == "valid" and not has_valid:
        problems.append(Problem("train.monitor", "monitors the valid split but the data have no validation split",
                                train.monitor, hint="Set data.split.valid (e.g. 0.2), give a validation file or "
                                "folder, or monitor train/loss."))
    elif metric_keys is not None and train.monitor not in metric_keys:
        available = ", ".join(metric_keys)
        problems.append(Problem("train.monitor", f"this recipe does not produce that metric; it produces {available}",
                                train.monitor, hint=f"Use one of: {available}."))
    return problems


def metric_keys(recipe: Recipe, metric_names: tuple[str, ...], has_valid: bool) -> tuple[str, ...]:
    """The ``<split>/<metric>`` keys a run of this recipe logs (what monitors may watch)."""
    keys = [f"train/{name}" for name in ("loss", *(metric_names if recipe.train.train_metrics else ()))]
    if has_valid:
        keys += [f"valid/{name}" for name in ("loss", *metric_names)]
    return tuple(keys)


@dataclass
class Checked:
    """What validation built on the way: reused by training so nothing is built twice."""

    recipe: Recipe
    data: DataBundle
    model: torch.nn.Module  # built right after torch.manual_seed(recipe.seed)
    rng_after_build: torch.Tensor  # the torch RNG state right after building it

    @property
    def spec(self) -> DataSpec:
        return self.data.spec


def steps_per_epoch(recipe: Recipe, data: DataBundle) -> int:
    """Optimizer steps per epoch: batches grouped into accumulation windows."""
    return math.ceil(len(data.train) / recipe.train.accumulate)


def schedule_context(recipe: Recipe, data: DataBundle, metric_names: tuple[str, ...] = ()) -> ScheduleContext:
    """What the schedule is resolved against: the run's length, the optimizer's lr and momentum."""
    optimizer = resolve_optimizer(recipe.optimizer) if recipe.optimizer.name in OPTIMIZERS else recipe.optimizer
    cycles = OPTIMIZERS.get(optimizer.name).capabilities.get("cycles_momentum") if optimizer.name in OPTIMIZERS else None
    if cycles == "momentum" and not optimizer.arguments().get("momentum"):
        cycles = None  # SGD / RMSprop without momentum: nothing to cycle
    lr = optimizer.lr if isinstance(optimizer.lr, (int, float)) else None
    return ScheduleContext(recipe.train.epochs, steps_per_epoch(recipe, data), lr, cycles,
                           metric_keys(recipe, metric_names, data.valid is not None))


def check(recipe: LoadedRecipe | Recipe | dict[str, Any] | str | Path) -> Checked:
    """Every check of a schema-valid recipe against torch and its data; raises RecipeError with all
    problems. Loads the data (in-memory sources are cheap, and a missing file is a recipe problem)."""
    loaded = as_loaded(recipe)
    config = loaded.recipe
    problems: list[Problem] = []
    try:
        data = build_data(config.data, config.seed)
    except TrainlabError as error:
        raise RecipeError(f"{loaded.origin} is not a valid recipe", loaded.locate(error.problems or [
            Problem("data", error.message)])) from None
    spec = data.spec
    problems += check_model(config.model, spec)
    model = None
    optimizer = None
    metric_names: tuple[str, ...] | None = None
    if not problems:
        torch.manual_seed(config.seed)
        model = build_model(config.model, spec)
        rng_after_build = torch.get_rng_state()
        output = describe_output(model, spec)
        loss_problems = check_loss(config.loss, spec, output)
        problems += loss_problems
        optimizer_problems = check_optimizer(config.optimizer, model)
        problems += optimizer_problems
        if not loss_problems:
            criterion = build_loss(config.loss, spec)
            metric_names = criterion.metric_names
            problems += _target_problems(criterion, data)
        if not optimizer_problems:
            optimizer = build_optimizer(config.optimizer, model)
    else:
        if config.optimizer.name not in OPTIMIZERS:
            problems += [p for p in check_optimizer(config.optimizer, torch.nn.Linear(1, 1)) if p.path == "optimizer.name"]
        if config.loss is not None and config.loss.name not in LOSSES:
            problems += [p for p in check_loss(config.loss, spec, None) if p.path == "loss.name"]
    context = schedule_context(config, data, metric_names or ())
    schedule_problems = check_schedule(config.schedule, context if metric_names is not None else None)
    if not schedule_problems and optimizer is not None and metric_names is not None and config.schedule is not None:
        schedule_problems = schedule_problems_from_torch(config.schedule, optimizer, context)
    problems += schedule_problems
    has_valid = data.valid is not None
    problems += _train_problems(config, metric_keys(config, metric_names, has_valid) if metric_names is not None
                                else None, has_valid)
    problems += _metric_problems(config, spec)
    problems += acceleration.problems(config, tuple(spec.input_shape), _device_or_none(config.train.device))
    if problems:
        raise RecipeError(f"{loaded.origin} is not a valid recipe", loaded.locate(problems))
    assert model is not None
    return Checked(config, data, model, rng_after_build)


def _device_or_none(name: str) -> torch.device | None:
    try:
        return choose_device(name)
    except TrainlabError:  # reported by training itself, with the device's own message
        return None


def _in_memory_targets(data: DataBundle) -> list[tuple[str, torch.Tensor]]:
    """Every split's targets that are held in memory (:func:`split_targets`), by split name."""
    found = ((name, split_targets(loader)) for name, loader in (("train", data.train), ("valid", data.valid),
                                                                  ("test", data.test)) if loader is not None)
    return [(name, targets) for name, targets in found if targets is not None]


def _target_problems(criterion: Any, data: DataBundle) -> list[Problem]:
    """Check every in-memory target once, at validate time (a NaN or out-of-range label)."""
    problems = []
    for split, targets in _in_memory_targets(data):
        try:
            criterion.check_target(targets)
        except TrainlabError as error:
            problems.append(Problem(f"data ({split} split)", error.message.rstrip(".")))
    return problems


def resolve(recipe: Recipe, data: DataBundle) -> Recipe:
    """The recipe with canonical names and every default filled in, as written into the run."""
    spec = data.spec
    resolved = recipe.model_copy(deep=True)
    if data.config is not None:  # e.g. Normalize: dataset replaced by the mean/std it computed
        resolved.data = data.config
    resolved.model = resolve_model(recipe.model)
    resolved.loss = resolve_loss(recipe.loss, spec)
    resolved.optimizer = resolve_optimizer(recipe.optimizer)
    resolved.schedule = resolve_schedule(recipe.schedule, schedule_context(recipe, data))
    resolved.train.mode = monitor_mode(recipe.train.monitor, recipe.train.mode)  # type: ignore[assignment]
    return Recipe.model_validate(resolved.model_dump())


def recipe_dump(recipe: Recipe) -> dict[str, Any]:
    return recipe.model_dump(mode="json")


def recipe_hash(recipe: Recipe) -> str:
    return hashlib.sha256(json.dumps(recipe_dump(recipe), sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------- training


def _place_data(data: DataBundle, device: torch.device, limit_bytes: int = 1 << 30) -> None:
    """Keep small in-memory splits on the accelerator so batches need no copy; larger ones on a
    CUDA GPU reach it through page-locked buffers, batch by batch."""
    if device.type == "cpu":
        return
    for loader in (data.train, data.valid, data.test):
        if loader is not None and hasattr(loader, "to") and hasattr(loader, "inputs"):
            size = loader.inputs.element_size() * loader.inputs.nelement()
            if size <= limit_bytes:
                loader.to(device)
            elif device.type == "cuda" and getattr(loader, "stages_batches", False):
                loader.stage_to(device)


def _data_description(data: DataBundle) -> dict[str, Any]:
    spec = data.spec
    return {
        "task": spec.task,
        "input_shape": list(spec.input_shape),
        "input_dtype": str(spec.input_dtype).removeprefix("torch."),
        "num_classes": spec.num_classes,
        "class_names": spec.class_names,
        "target_shape": list(spec.target_shape),
        "vocab_size": spec.vocab_size,
        "num_samples": spec.num_samples,
        "normalization": spec.normalization,
        "padding_idx": spec.padding_idx,
        "notes": list(data.notes),
        "preprocessing": PREPROCESSING_DIR if data.preprocessor is not None else None,
    }


PREPROCESSING_DIR = "preprocessing"


def _write_preprocessing(folder: Path, data: DataBundle) -> None:
    """Save the fitted preprocessing (tokenizer, column transformer, eval transforms) atomically as
    ``preprocessing/`` so prediction and serving reuse exactly what training used."""
    if data.preprocessor is None:
        return
    partial = folder / (PREPROCESSING_DIR + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    data.preprocessor.save(partial)
    os.replace(partial, folder / PREPROCESSING_DIR)


def _training_objects(recipe: Recipe, data: DataBundle, model: torch.nn.Module) -> tuple[Any, Any, Any, Any]:
    """Device, precision, criterion and optimizer for ``model`` (moved to the device in the recipe's memory
    format), with the data placed on the device."""
    device = distributed.local_device(choose_device(recipe.train.device))
    precision = choose_precision(recipe.train.precision, device)
    _place_data(data, device)
    criterion = build_loss(recipe.loss, data.spec).to(device)
    if len(_in_memory_targets(data)) == sum(loader is not None for loader in (data.train, data.valid, data.test)):
        criterion.check_every_batch = False  # every target was checked once by check()
    acceleration.prepare_model(model, recipe.train, device)
    return device, precision, criterion, build_optimizer(recipe.optimizer, model)


def _range_test(recipe: Recipe, data: DataBundle, model: torch.nn.Module, settings: LRFind) -> Any:
    """The LR range test on this recipe's model, data and optimizer; leaves them exactly as they were."""
    from trainlab.train.lr_finder import lr_range_test

    _, precision, criterion, optimizer = _training_objects(recipe, data, model)
    return lr_range_test(
        model, criterion, optimizer, data, recipe.train, precision, start_lr=settings.start_lr,
        end_lr=settings.end_lr, num_iter=settings.num_iter, mode=settings.mode, divergence=settings.divergence,
        suggestion=settings.suggestion, accuracy_every=settings.accuracy_every,
    )


def _write_lr_find(result: Any, folder: Path, title: str) -> None:
    from trainlab.evaluate.plots import plot_lr_find

    folder.mkdir(parents=True, exist_ok=True)
    checkpoints.write_json_atomic(folder / "lr_find.json", result.to_json())
    plot_lr_find(result, folder / "lr_find.png", title=title)


def lr_find(
    recipe: LoadedRecipe | Recipe | dict[str, Any] | str | Path, out: str | Path | None = None, **settings: Any
) -> Any:
    """Run the LR range test for a recipe (``settings`` override ``optimizer.lr_find``); writes
    ``lr_find.png`` and ``lr_find.json`` to ``out`` when given, nothing else anywhere."""
    checked = check(recipe)
    config = checked.recipe
    chosen = (config.optimizer.lr_find or LRFind()).model_dump()
    chosen.update({key: value for key, value in settings.items() if value is not None})
    try:
        options = LRFind.model_validate(chosen)
    except ValidationError as error:
        raise TrainlabError(f"lr-find settings are invalid: {error.errors()[0]['msg']}") from None
    seed_everything(config.seed)
    torch.set_rng_state(checked.rng_after_build)
    result = _range_test(config, checked.data, checked.model, options)
    if out is not None:
        _write_lr_find(result, Path(out), title=f"{config.name}: LR range test")
    return result


@dataclass
class _Held:
    """A checkpoint kept in memory until it is written: its snapshot (in ``copier``'s buffers, which
    a checkpoint of the same state shares), its folder, meta.json and loop position."""

    taken: checkpoints.Snapshot
    copier: checkpoints.HostCopier
    target: Path
    meta: dict[str, Any]
    position: tuple[int, int, int]


class _Checkpointer:
    """Writes checkpoints for fit(): a snapshot of the tensors on the CPU at once, the rest (the
    files, fsync, SHA-256, the atomic swap, best/ as a hard-linked copy of last/) on a background thread.
    A held checkpoint waits in memory as its snapshot and is written with the next one that is not
    held, or by ``wait()`` / ``close()``; a newer checkpoint of its kind replaces it unwritten.
    ``wait()`` returns when every checkpoint is durable; fit() calls it before it returns."""

    def __init__(self, folder: Path, metrics: MetricsFile, digest: str, name: str):
        self.folder, self.metrics, self.digest, self.name = folder, metrics, digest, name
        self.writer = checkpoints.BackgroundWriter()
        self.copiers: list[checkpoints.HostCopier] = []  # snapshot buffers, kept for the next snapshots
        self.held: dict[str, _Held] = {}
        self.written: tuple[int, int, int] | None = None  # loop position of the latest checkpoints/last written

    def __call__(self, kind: str, module: torch.nn.Module, state: Callable[[], dict[str, Any]],
                 info: dict[str, Any], *, hold: bool = False) -> None:
        meta = {"kind": kind, **info, "records": self.metrics.line_count, "recipe_hash": self.digest,
                "recipe_name": self.name}
        position = (info["step"], info["epoch"], info["batch"])
        target = self.folder / "checkpoints" / kind
        self.held.pop(kind, None)  # a newer checkpoint of a kind replaces the held one
        if self._links(kind, position):  # no snapshot to take
            self._submit(kind, target, meta, position, None)
            return
        same = next((entry for entry in self.held.values() if entry.position == position), None)
        if same is not None:  # another kind holds this state: share its snapshot (written once, then linked)
            self.held[kind] = _Held(same.taken, same.copier, target, meta, position)
        else:
            self.writer.wait()  # written checkpoints free their buffers; held ones keep theirs
            copier = self._free_copier()
            self.held[kind] = _Held(checkpoints.snapshot(module, state(), copier), copier, target, meta, position)
        if not hold:
            self._flush()

    def _links(self, kind: str, position: tuple[int, int, int]) -> bool:
        """Whether ``kind`` holds the state last/ was written with: a hard-linked copy, not a rewrite."""
        return kind != "last" and position == self.written

    def _free_copier(self) -> checkpoints.HostCopier:
        busy = [entry.copier for entry in self.held.values()]
        for copier in self.copiers:
            if not any(copier is used for used in busy):
                return copier
        self.copiers.append(checkpoints.HostCopier())
        return self.copiers[-1]

    def _flush(self, check: bool = True) -> None:
        """Write every held checkpoint, last/ first (another kind of the same state links to it)."""
        for kind in sorted(self.held, key=lambda name: name != "last"):
            entry = self.held.pop(kind)
            self._submit(kind, entry.target, entry.meta, entry.position, entry.taken, check)

    def _submit(self, kind: str, target: Path, meta: dict[str, Any], position: tuple[int, int, int],
                taken: checkpoints.Snapshot | None, check: bool = True) -> None:
        if self._links(kind, position):
            source = self.folder / "checkpoints" / "last"
            self.writer.submit(lambda: checkpoints.copy_checkpoint(source, target, meta), check=check)
            return
        assert taken is not None
        self.writer.submit(lambda: checkpoints.finish_checkpoint(checkpoints.write_snapshot(target, taken), target,
                                                                 meta), check=check)
        if kind == "last":
            self.written = position

    def wait(self) -> None:
        self._flush()
        self.writer.wait()

    def close(self) -> None:
        """Write what is held (the state at an epoch end before whatever ends the run early) and end the
        writer thread; an error of the writer stays for ``wait()``."""
        self._flush(check=False)
        self.writer.close()


def _execute(
    folder: Path,
    recipe: Recipe,
    spec: DataSpec,
    data: DataBundle,
    model: torch.nn.Module,
    resume_state: dict[str, Any] | None,
    progress: str | None,
    index_root: Path | None = None,
) -> Run:
    """Build the training objects, run :func:`fit` and keep the run folder's files current: status,
    metrics, checkpoints, plots, the validation evaluation, report.html and the run index."""
    device, precision, criterion, optimizer = _training_objects(recipe, data, model)
    schedule = build_schedule(recipe.schedule, optimizer, schedule_context(recipe, data, criterion.metric_names))
    trained = distributed.wrap(acceleration.compiled(model, recipe.train), device)  # shares model's parameters
    fixed_shapes = not getattr(data.train, "variable_shapes", False)

    def run_fit(callbacks: CallbackList | None, checkpointer: _Checkpointer | None) -> FitResult:
        with acceleration.kernel_settings(recipe.train, precision.name, device, fixed_shapes):
            try:
                return fit(trained, criterion, optimizer, data, recipe.train, precision, schedule, callbacks,
                           checkpointer, resume_state, _validation_metrics(recipe, data, criterion))
            except Exception as error:
                failure = acceleration.compile_failure(error)
                if failure is None:
                    raise
                raise failure from error

    if not distributed.is_main():  # the other processes of a data-parallel run write nothing
        result = run_fit(None, None)
        return Run(folder, recipe, model, [], result.state.status, result)

    metrics_path = folder / runs.METRICS_FILE
    metrics = MetricsFile(metrics_path)
    start_step = resume_state["loop"]["step"] if resume_state else 0
    callbacks: list[Any] = [metrics]
    if recipe.log.tensorboard:
        log = recipe.log
        callbacks.append(TensorBoardLogger(
            folder / "tensorboard", resume_step=start_step if resume_state else None, model=model, data=data,
            histograms=log.histograms, graph=log.graph, images=log.images, embeddings=log.embeddings,
            hparams=recipe_dump(recipe) if log.hparams else None, monitor=recipe.train.monitor,
        ))
    callbacks.append(Progress(progress or recipe.log.progress, recipe.train.epochs))
    digest = recipe_hash(recipe)

    checkpointer = _Checkpointer(folder, metrics, digest, recipe.name)

    runs.write_status(folder, "running", device=str(device), precision=precision.name,
                      fused_optimizer=bool(optimizer.defaults.get("fused")), pid=os.getpid(), host=socket.gethostname())
    _index(folder, index_root)
    try:
        result = run_fit(CallbackList(callbacks), checkpointer)
    except BaseException as error:
        checkpointer.close()  # held and in-flight checkpoints are written; this error is the one raised
        if isinstance(error, TrainingDiverged):
            runs.write_status(folder, "diverged")
        elif isinstance(error, KeyboardInterrupt):
            runs.write_status(folder, "interrupted")
        else:
            runs.write_status(folder, "failed", error=f"{type(error).__name__}: {error}")
        _record(folder, recipe, index_root)
        raise
    checkpointer.close()  # fit() waited for every checkpoint: the writer's thread ends with the run
    status = result.state.status
    runs.write_status(
        folder, status, step=result.state.step, epoch=result.state.epoch,
        best_value=result.state.best_value, best_step=result.state.best_step, monitor=recipe.train.monitor,
        seconds=round(result.seconds, 3), samples_per_second=round(result.samples_per_second, 1),
        warmup_seconds=round(result.warmup_seconds, 3), stopped_by=result.stopped_by,
    )
    if recipe.log.plots:
        from trainlab.evaluate.plots import plot_curves  # matplotlib loads only here

        plot_curves(metrics.records, folder / "plots" / "curves.png", title=recipe.name)
        rates = [(record["step"], record["lr"]) for record in metrics.records if "lr" in record]
        if rates:  # the learning rate as training used it (every step for per-step schedules)
            from trainlab.evaluate.plots import plot_schedule

            steps, lrs = zip(*sorted(dict(rates).items()))
            plot_schedule(list(steps), list(lrs), folder / "plots" / "schedule.png",
                          title=f"{recipe.name}: learning rate", epoch_steps=steps_per_epoch(recipe, data))
        if data.valid is not None and data.spec.task in ("classification", "regression"):
            distributed.unshard_data(data)  # rank 0 evaluates the whole split
            _evaluate(_trained_run(folder, recipe, data, model), "valid", None, report=False)
    _record(folder, recipe, index_root)
    return Run(folder, recipe, model, metrics.records, status, result)


def _validation_metrics(recipe: Recipe, data: DataBundle, criterion: Any) -> Callable[..., dict[str, float]] | None:
    """The scalar ``evaluate`` metrics (F1, ROC AUC, RMSE in the target's own units, ...) of the whole
    validation split, for every validation record; None when there is nothing to add."""
    spec = data.spec
    if data.valid is None or spec.task not in ("classification", "regression"):
        return None
    from trainlab.evaluate.metrics import compute_metrics
    from trainlab.evaluate.predictions import Predictions

    contract, settings = criterion.contract, recipe.evaluate
    inverse = getattr(data.preprocessor, "inverse_target", None)

    def measure(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        if spec.task == "classification":
            predictions = Predictions("classification", targets.cpu(), contract.predicted_classes(outputs).cpu(),
                                      contract.class_probabilities(outputs).cpu(), spec.class_names)
        else:
            values = contract.predicted_values(criterion, outputs, targets).float().cpu()
            truth = targets.float().cpu().reshape(len(targets), -1)
            values = values.reshape(len(values), -1)
            if inverse is not None:
                truth, values = inverse(truth), inverse(values)
            predictions = Predictions("regression", truth, values)
        try:
            return compute_metrics(predictions, settings.metrics, settings.top_k).scalars
        except TrainlabError:  # a metric this split cannot give (e.g. rmsle of a negative value): none this time
            return {}

    return measure


def _index(folder: Path, index_root: Path | None) -> None:
    """Add or update the run in its runs folder's index (a convenience: it never fails a run)."""
    if index_root is not None:
        from trainlab.runindex import update_run

        update_run(folder, index_root)  # None when the index cannot be written


def _record(folder: Path, recipe: Recipe, index_root: Path | None) -> None:
    """report.html and the run index after training ended, however it ended."""
    if recipe.log.report:
        from trainlab.evaluate.report import write_report

        write_report(folder)
    _index(folder, index_root)


def _trained_run(folder: Path, recipe: Recipe, data: DataBundle, model: torch.nn.Module) -> "LoadedRun":
    """The run just trained, with its best checkpoint's weights (else the last) in a copy of the model."""
    kind = "best" if checkpoints.find_checkpoint(folder / "checkpoints", "best") else "last"
    found = checkpoints.find_checkpoint(folder / "checkpoints", kind)
    evaluated = copy.deepcopy(model)
    if found is not None:
        checkpoints.load_weights(found, evaluated)
    evaluated.eval()
    return LoadedRun(folder, Checked(recipe, data, evaluated, torch.get_rng_state()), evaluated,
                     found or folder / "checkpoints", kind)


def train(
    recipe: LoadedRecipe | Recipe | dict[str, Any] | str | Path,
    out: str | Path | None = None,
    root: str | Path = "runs",
    progress: str | None = None,
    report: Callable[[str], None] | None = None,
) -> Run:
    """Validate, then train a recipe into a new run folder (``out`` exactly, or under ``root``).
    ``report`` receives the data stage's notes (an inferred task, the loader chosen, ...).

    Launched by ``torchrun``, every process calls this and trains its shard of the data with
    DistributedDataParallel; rank 0 alone writes the run folder (see :mod:`trainlab.train.distributed`)."""
    with distributed.session():
        return _train(recipe, out, root, progress, report)


def _train(recipe: LoadedRecipe | Recipe | dict[str, Any] | str | Path, out: str | Path | None, root: str | Path,
           progress: str | None, report: Callable[[str], None] | None) -> Run:
    checked = check(recipe)
    config, data = checked.recipe, checked.data
    for note in data.notes if report is not None and distributed.is_main() else ():
        report(note)
    # The model validation built is the model a fresh seeded build gives; continue from the same RNG state.
    seed_everything(config.seed)
    torch.set_rng_state(checked.rng_after_build)
    found = None
    index_root = Path(root) if out is None else None
    if config.optimizer.lr == "auto":  # the range test leaves model, optimizer and every RNG as they were
        found = _range_test(config, data, checked.model, config.optimizer.lr_find or LRFind())
        lr = distributed.from_main(lambda: found.lr)  # every process trains with rank 0's lr
        config = config.model_copy(update={"optimizer": config.optimizer.model_copy(update={"lr": lr})})
    distributed.shard_data(data)  # before resolve: a schedule counts this process's steps per epoch
    resolved = resolve(config, data)

    def new_folder() -> Path:
        folder = runs.new_run_folder(config.name, out, root)
        if found is not None:
            _write_lr_find(found, folder / "plots", title=f"{config.name}: LR range test (lr: auto -> {found.lr:.3g})")
        runs.write_recipe(folder, recipe_dump(resolved))
        device = choose_device(config.train.device)
        checkpoints.write_json_atomic(folder / runs.ENV_FILE, runs.environment(device, config.train.precision))
        checkpoints.write_json_atomic(folder / runs.DATA_FILE, _data_description(data))
        _write_preprocessing(folder, data)
        return folder

    folder = distributed.from_main(new_folder)  # rank 0 writes it; every process gets its path
    return _execute(folder, resolved, data.spec, data, checked.model, None, progress, index_root)


RESUMABLE_OVERRIDES = ("train.", "log.")


def resume(folder: str | Path, overrides: list[str] | None = None, progress: str | None = None) -> Run:
    """Continue a run from ``checkpoints/last`` exactly (or extend it with e.g. ``train.epochs=20``).

    Everything is verified (recipe, checkpoint integrity, weights fit the model) before any file
    of the run is touched. Under ``torchrun`` give the same number of processes the run was trained
    with; every process reads the checkpoint and rank 0 alone writes.
    """
    with distributed.session():
        return _resume(Path(folder), overrides, progress)


def _resume(folder: Path, overrides: list[str] | None, progress: str | None) -> Run:
    if not folder.is_dir():
        raise TrainlabError(f"run folder '{folder}' does not exist. Give the folder that `trainlab train` printed")
    recipe_path = folder / runs.RECIPE_FILE
    if not recipe_path.is_file():
        raise TrainlabError(f"'{folder}' is not a trainlab run folder: it has no {runs.RECIPE_FILE}")
    found = checkpoints.find_checkpoint(folder / "checkpoints", "last")
    if found is None:
        raise TrainlabError(
            f"run '{folder}' has no complete checkpoint to resume from (checkpoints/last is missing: a run killed "
            "before its first epoch end past train.checkpoint_seconds has none). Start it again with `trainlab train`"
        )
    meta = checkpoints.read_meta(found)
    for override in overrides or []:
        if not override.strip().startswith(RESUMABLE_OVERRIDES):
            raise TrainlabError(
                f"resume override '{override}': a resumed run continues the same recipe, so only train.* and "
                "log.* keys (e.g. train.epochs=20) can change. To change anything else, start a new run with "
                "`trainlab train`"
            )
    loaded = load_recipe(recipe_path, overrides)
    checked = check(loaded)
    config, data, model = checked.recipe, checked.data, checked.model
    distributed.shard_data(data)
    resolved = resolve(config, data)
    checkpoints.load_weights(found, model)
    state = checkpoints.load_state(found)
    if not isinstance(state, dict) or not {"loop", "optimizer", "rng", "meter"} <= set(state):
        raise TrainlabError(f"'{found / checkpoints.STATE_FILE}' is not a trainlab training state")
    metric_names = build_loss(config.loss, data.spec).metric_names if config.train.train_metrics else ()
    saved_names = tuple(state["meter"].get("names", ()))
    if saved_names and saved_names != ("loss", *metric_names):
        raise TrainlabError(
            f"the checkpoint holds training metrics {', '.join(saved_names)} but the resumed recipe computes "
            f"{', '.join(('loss', *metric_names))}: train.train_metrics cannot change when resuming")
    # From here on the run folder changes: drop records written after the checkpoint.
    if distributed.is_main():
        if overrides:
            runs.write_recipe(folder, recipe_dump(resolved))
        truncate_records(folder / runs.METRICS_FILE, int(meta.get("records", 0)))
    index_root = folder.parent.parent if (folder.parent.parent / "index.sqlite").exists() else None
    return _execute(folder, resolved, data.spec, data, model, state, progress, index_root)


@dataclass
class ScheduleReport:
    """What ``trainlab schedule`` shows: the resolved schedule and its lr at every optimizer step."""

    recipe: Recipe
    schedule: Any  # the resolved ScheduleConfig, or None for a constant lr
    context: ScheduleContext
    preview: Any  # trainlab.train.schedules.SchedulePreview


def preview(recipe: LoadedRecipe | Recipe | dict[str, Any] | str | Path) -> ScheduleReport:
    """Resolve a recipe's schedule and step it over the whole run on a throwaway optimizer."""
    from trainlab.train.schedules import preview_schedule

    checked = check(recipe)
    config = checked.recipe
    criterion = build_loss(config.loss, checked.spec)
    context = schedule_context(config, checked.data, criterion.metric_names)
    resolved = resolve_schedule(config.schedule, context)
    optimizer = build_optimizer(config.optimizer, checked.model)
    return ScheduleReport(config, resolved, context, preview_schedule(resolved, optimizer, context))


# ----------------------------------------------------------------------------------- data preview


@dataclass
class DataPreview:
    """What ``trainlab data show`` reports: class counts per split and augmented training samples."""

    recipe: Recipe
    spec: DataSpec
    counts: dict[str, dict[str, int]]  # split -> class name -> samples (classification only)
    notes: list[str]
    images: torch.Tensor | None = None  # (N, C, H, W) in [0, 1], inverse-normalized; None if not images
    labels: list[str] = field(default_factory=list)


def split_targets(loader: Any) -> torch.Tensor | None:
    """All targets of a split without drawing batches (in-memory loaders and file-backed datasets)."""
    for owner in (loader, getattr(loader, "dataset", None)):
        targets = getattr(owner, "targets", None)
        if targets is not None:
            return torch.as_tensor(targets)
    return None


def data_preview(recipe: LoadedRecipe | Recipe | dict[str, Any] | str | Path, count: int = 32) -> DataPreview:
    """Class counts of every split, and the first ``count`` training samples exactly as the first
    epoch serves them (augmented), mapped back to [0, 1] for display."""
    checked = check(recipe)
    data, spec = checked.data, checked.spec
    counts: dict[str, dict[str, int]] = {}
    if spec.task == "classification" and spec.class_names:
        for split in ("train", "valid", "test"):
            loader = data.loader(split)
            targets = split_targets(loader) if loader is not None else None
            if targets is not None:
                tally = torch.bincount(targets.reshape(-1).long().cpu(), minlength=len(spec.class_names))
                counts[split] = {name: int(n) for name, n in zip(spec.class_names, tally.tolist())}
    preview = DataPreview(checked.recipe, spec, counts, list(data.notes))
    if len(spec.input_shape) == 3 and spec.input_dtype.is_floating_point:
        from trainlab.data.images import show_batch

        images, labels = show_batch(data, count)
        preview.images = images.float().clamp(0.0, 1.0)
        names = spec.class_names or []
        preview.labels = [names[label] if label < len(names) else str(label) for label in labels.tolist()]
    return preview


# ----------------------------------------------------------------------------------- runs after training


@dataclass
class LoadedRun:
    """A run folder ready for evaluation or prediction: its recipe checked against its data (the
    preprocessing rebuilt exactly as training did), and its model with a checkpoint's weights."""

    folder: Path
    checked: Checked
    model: torch.nn.Module
    checkpoint: Path
    kind: str  # best | last

    @property
    def recipe(self) -> Recipe:
        return self.checked.recipe


def load_run(folder: str | Path, checkpoint: str = "best") -> LoadedRun:
    """Load ``folder``'s resolved recipe, data and the ``checkpoint`` (best | last) weights."""
    folder = Path(folder)
    if checkpoint not in ("best", "last"):
        raise TrainlabError(f"unknown checkpoint '{checkpoint}': expected best or last")
    if not folder.is_dir():
        raise TrainlabError(f"run folder '{folder}' does not exist. Give the folder that `trainlab train` printed")
    if not (folder / runs.RECIPE_FILE).is_file():
        raise TrainlabError(f"'{folder}' is not a trainlab run folder: it has no {runs.RECIPE_FILE}")
    found = checkpoints.find_checkpoint(folder / "checkpoints", checkpoint)
    if found is None:
        other = "last" if checkpoint == "best" else "best"
        has_other = checkpoints.find_checkpoint(folder / "checkpoints", other) is not None
        raise TrainlabError(
            f"run '{folder}' has no complete checkpoints/{checkpoint}"
            + (f"; use --checkpoint {other}" if has_other else ": it stopped before its first checkpoint. "
               "Train it again, or resume it with `trainlab resume`"))
    checkpoints.read_meta(found)  # verifies the files' SHA-256
    checked = check(folder / runs.RECIPE_FILE)
    model = checked.model
    checkpoints.load_weights(found, model)
    model.eval()
    return LoadedRun(folder, checked, model, found, checkpoint)


MAX_KEPT_IMAGE_BYTES = 256 << 20  # images kept for pictures of the mistakes, at most


def collect_predictions(run: LoadedRun, split: str = "valid", tta: str | None = None) -> Any:
    """The model's :class:`~trainlab.evaluate.predictions.Predictions` on a split. Classification
    keeps per-class probabilities; with ``tta`` (fivecrop | tencrop | hflip, image data) the views
    of each sample are folded into the batch and their probabilities averaged. Regression values are
    in the original target units (a target transform undone)."""
    from trainlab.evaluate.predictions import Predictions

    data, spec, recipe = run.checked.data, run.checked.spec, run.recipe
    loader = data.loader(split)
    if loader is None:
        available = ", ".join(name for name in ("train", "valid", "test") if data.loader(name) is not None)
        raise TrainlabError(f"the run's data have no {split} split (it has: {available}). Choose one of those "
                            "with --split, or give the recipe a test split (data.split.test or test files)")
    if spec.task not in ("classification", "regression"):
        raise TrainlabError(f"evaluation covers classification and regression; this run's task is {spec.task}")
    criterion = build_loss(recipe.loss, spec)
    contract = criterion.contract
    device = choose_device(recipe.train.device)
    model = run.model.to(device).eval()
    if tta is not None:
        if spec.task != "classification":
            raise TrainlabError("test-time augmentation averages class probabilities: it needs a classification run")
        from trainlab.data.images import tta_loader

        batches: Any = tta_loader(data, split, tta)
    else:
        loader.set_epoch(0)
        batches = loader
    keep_images = len(spec.input_shape) == 3 and spec.input_dtype.is_floating_point and \
        4 * math.prod(spec.input_shape) * loader.num_samples <= MAX_KEPT_IMAGE_BYTES
    targets, predicted, probabilities, images = [], [], [], []
    with torch.no_grad():
        for inputs, target in batches:
            inputs = inputs.to(device)
            if tta is not None:  # (B, V, C, H, W): views folded into the batch, probabilities averaged
                count, views = inputs.shape[:2]
                outputs = model(inputs.flatten(0, 1)).float()
                chances = contract.class_probabilities(outputs).view(count, views, -1).mean(1)
                probabilities.append(chances.cpu())
                predicted.append(chances.argmax(1).cpu())
                inputs = inputs[:, 0]  # the first view (the image itself) for pictures
            else:
                outputs = model(inputs).float()
                if spec.task == "classification":
                    probabilities.append(contract.class_probabilities(outputs).cpu())
                    predicted.append(contract.predicted_classes(outputs).cpu())
                else:
                    predicted.append(contract.predicted_values(criterion, outputs, target.to(device)).float().cpu())
            targets.append(target.cpu())
            if keep_images:
                images.append(inputs.detach().float().cpu())
    truth, guess = torch.cat(targets), torch.cat(predicted)
    if spec.task == "regression":
        truth, guess = truth.float().reshape(len(truth), -1), guess.reshape(len(guess), -1)
        inverse = getattr(data.preprocessor, "inverse_target", None)
        if inverse is not None:  # back to the original units
            truth, guess = inverse(truth), inverse(guess)
    shown = None
    if images:
        from trainlab.data.transforms import inverse_normalize

        shown = inverse_normalize(torch.cat(images), spec.normalization)
    return Predictions(spec.task, truth, guess, torch.cat(probabilities) if probabilities else None,
                       list(spec.class_names) if spec.class_names else None, None, shown)


# ----------------------------------------------------------------------------------- evaluation

EVAL_DIR = "eval"


@dataclass
class Evaluation:
    """What ``trainlab evaluate`` measured on one split, and where it wrote it."""

    folder: Path
    split: str
    checkpoint: str
    tta: str | None
    result: Any  # trainlab.evaluate.metrics.EvalResult
    figures: dict[str, Path]
    path: Path  # eval/<split>.json


def _metric_problems(recipe: Recipe, spec: DataSpec) -> list[Problem]:
    if recipe.evaluate.metrics is None or spec.task not in ("classification", "regression"):
        return []
    from trainlab.evaluate.metrics import check_metrics

    return check_metrics(recipe.evaluate.metrics, spec.task, spec.num_classes, recipe.evaluate.top_k)


def evaluate_run(folder: str | Path, split: str = "valid", checkpoint: str = "best", tta: str | None = None,
                 report: bool = True) -> Evaluation:
    """Metrics (``evaluate.metrics``, defaults per task) of a run's checkpoint on a split, written to
    ``eval/<split>[-<tta>].json`` with their plots under ``plots/``; the report is rewritten."""
    return _evaluate(load_run(folder, checkpoint), split, tta, report)


def _evaluate(run: LoadedRun, split: str, tta: str | None, report: bool) -> Evaluation:
    from trainlab.evaluate.figures import write_figures
    from trainlab.evaluate.metrics import compute_metrics

    folder, checkpoint = run.folder, run.kind
    predictions = collect_predictions(run, split, tta)
    settings = run.recipe.evaluate
    result = compute_metrics(predictions, settings.metrics, settings.top_k)
    name = split if tta is None else f"{split}-{tta}"
    figures = write_figures(predictions, result, folder / "plots", prefix=name)
    payload = {"split": split, "checkpoint": checkpoint, "tta": tta, "samples": len(predictions),
               **result.to_json(), "figures": {kind: str(path.relative_to(folder)) for kind, path in figures.items()}}
    path = folder / EVAL_DIR / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    checkpoints.write_json_atomic(path, payload)
    if report and run.recipe.log.report:
        from trainlab.evaluate.report import write_report

        write_report(folder)
    return Evaluation(folder, split, checkpoint, tta, result, figures, path)
