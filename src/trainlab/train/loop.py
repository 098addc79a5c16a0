"""The fit loop: one readable training loop, written like a hand-written one.

    for each epoch:
        for each batch:
            forward under autocast -> loss * (batch items / window items) -> backward
            at the last batch of an accumulation window:
                unscale -> clip -> optimizer step -> scaler update -> zero_grad(set_to_none=True)
                -> per-step schedule -> log every N steps -> checkpoint every N steps
        validate -> per-epoch schedule -> best / early stopping
        -> checkpoint (held in memory when the last write is under train.checkpoint_seconds ago)

Losses and metrics are summed on the device and read only at log points, so there is no
host-device synchronisation between them. Everything the loop needs to continue (its position,
the meters, the optimizer, scheduler and scaler, every RNG) goes into the checkpoint, so an
interrupted run resumes to the same metrics and bitwise-identical weights.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol

import torch

from trainlab.data.spec import DataBundle, Loader
from trainlab.recipe.errors import TrainlabError
from trainlab.recipe.schema import TrainConfig
from trainlab.train import distributed
from trainlab.train.acceleration import memory_format, to_device
from trainlab.train.callbacks import BaseCallback
from trainlab.train.checkpoint import rng_state, set_rng_state
from trainlab.train.optimizers import needs_closure
from trainlab.train.precision import Precision
from trainlab.train.schedules import Schedule, momentum_of

NO_CONTEXT = contextlib.nullcontext()  # reusable: a ``with`` that does nothing

class Checkpointer(Protocol):
    """Writes ``checkpoints/<kind>`` from the model and the training state (built only if needed),
    with ``info`` in its meta.json. ``hold``: keep the checkpoint in memory, to be written with the
    next one that is not held or when the checkpointer waits (fit waits before it returns)."""

    def __call__(self, kind: str, model: torch.nn.Module, state: Callable[[], dict[str, Any]],
                 info: dict[str, Any], *, hold: bool = False) -> None: ...


class TrainingDiverged(TrainlabError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class StopTraining(Exception):
    """Raised by a callback to end training at the current optimizer step (status ``stopped``).

    Nothing is checkpointed: the caller asked for the stop and owns what happens next (the LR
    range test restores the state it started from)."""


@dataclass
class TrainState:
    """Where the loop is. Plain numbers, saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches consumed in the current epoch
    step: int = 0  # optimizer steps taken
    samples: int = 0  # training samples seen
    best_value: float | None = None  # best value of train.monitor so far
    best_step: int | None = None
    stale_validations: int = 0  # validations without improvement (early stopping)
    status: str = "running"  # running | finished | early_stopped | interrupted | diverged | stopped


class Meter:
    """Running sums of the loss and metrics over an epoch, kept on the device.

    Per batch the loop only holds on to the detached loss, outputs and targets; every
    ``FLUSH_BATCHES`` batches, at a log point (or sooner when the held outputs grow large, or their
    shape changes) they are reduced in one go: a stacked sum for the loss and one ``batch_metrics``
    call over the concatenated outputs. That spends a handful of tensor ops per window instead of
    per step; measured inside a training loop on a CPU, such a reduction costs ~250 µs, most of it
    fixed per op (kernels that the step itself does not run are cold), so fewer, larger reductions
    are cheaper. A log window is the difference to the sums at the last log point. Sums are float64
    where the device has it. Held batches go into checkpoints as they are, so a resumed run
    reduces exactly the same groups as an uninterrupted one.
    """

    FLUSH_BATCHES = 64
    FLUSH_ELEMENTS = 1 << 22  # output elements held at most before reducing

    def __init__(self, criterion: Any, device: torch.device, metrics: bool = True) -> None:
        """Under data-parallel training the averages are over every process's samples."""
        self.criterion = criterion
        self.names = ("loss", *(criterion.metric_names if metrics else ()))
        self.with_metrics = len(self.names) > 1
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.device = device
        self.sums = torch.zeros(len(self.names), dtype=self.dtype, device=device)
        self._views = [self.sums[index] for index in range(len(self.names))]  # 0-dim views, made once
        self.count = 0  # samples, known on the host without a sync
        self.marked_sums = torch.zeros_like(self.sums)
        self.marked_count = 0
        self._clear()

    def _clear(self) -> None:
        self._batches: list[tuple[torch.Tensor, int, torch.Tensor | None, torch.Tensor | None]] = []
        self._held = 0  # output elements held
        self._tail: tuple[int, ...] | None = None  # the held outputs' shape past the batch dimension

    def add(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Hold one batch: its loss (a mean loss counts times the batch size) and what its metrics need.
        Runs every step, so it makes as few Python calls as it can: the detaches and one append."""
        shape = outputs.shape
        count = shape[0]
        self.count += count
        if not self.with_metrics:
            self._batches.append((loss.detach(), count, None, None))
            if len(self._batches) >= self.FLUSH_BATCHES:
                self.flush()
            return
        tail = shape[1:]
        if tail != self._tail:
            if self._batches:
                self.flush()  # outputs of another shape (a shorter sequence) cannot be concatenated
            self._tail = tail
        self._batches.append((loss.detach(), count, outputs.detach(), targets))
        self._held += outputs.numel()
        if len(self._batches) >= self.FLUSH_BATCHES or self._held >= self.FLUSH_ELEMENTS:
            self.flush()

    def flush(self) -> None:
        """Reduce the held batches into the sums (no host sync)."""
        batches = self._batches
        if not batches:
            return
        mean = self.criterion.reduction == "mean"
        counts = [count for _, count, _, _ in batches]
        if len(batches) == 1:  # logging every step: no stacking, one fused multiply-add
            self._views[0].add_(batches[0][0], alpha=counts[0] if mean else 1)
        else:
            losses = torch.stack([loss for loss, _, _, _ in batches])  # (n,)
            if not mean:
                self._views[0].add_(losses.sum(dtype=self.dtype))
            elif min(counts) == max(counts):  # equal batches: no host-to-device copy of the counts
                self._views[0].add_(losses.sum(dtype=self.dtype), alpha=counts[0])
            else:
                weights = torch.tensor(counts, dtype=self.dtype).to(self.device, non_blocking=True)
                self._views[0].add_(torch.dot(losses.to(self.dtype), weights))
        if self.with_metrics:
            outputs = torch.cat([held[2] for held in batches]) if len(batches) > 1 else batches[0][2]
            targets = torch.cat([held[3] for held in batches]) if len(batches) > 1 else batches[0][3]
            metrics = self.criterion.batch_metrics(outputs, targets)
            for name, view in zip(self.names[1:], self._views[1:]):
                view.add_(metrics[name])
        self._clear()

    def _averages(self, sums: torch.Tensor, count: int) -> dict[str, float]:
        sums, count = distributed.reduce_sums(sums, count)  # every process's part (no-op in one process)
        if not count:
            return {}
        return {name: value / count for name, value in zip(self.names, sums.tolist())}  # the host sync

    def window(self) -> dict[str, float]:
        """Averages since the last call (a log window), then start a new window."""
        self.flush()
        averages = self._averages(self.sums - self.marked_sums, self.count - self.marked_count)
        self.marked_sums.copy_(self.sums)
        self.marked_count = self.count
        return averages

    def epoch(self) -> dict[str, float]:
        """Averages over the whole epoch, then start a new epoch."""
        self.flush()
        averages = self._averages(self.sums, self.count)
        self.sums.zero_()
        self.marked_sums.zero_()
        self.count = self.marked_count = 0
        return averages

    def state_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names), "sums": self.sums.cpu(), "count": self.count,
            "marked_sums": self.marked_sums.cpu(), "marked_count": self.marked_count,
            "held": {"losses": [loss.cpu() for loss, _, _, _ in self._batches],
                     "counts": [count for _, count, _, _ in self._batches],
                     "outputs": [outputs.cpu() for _, _, outputs, _ in self._batches if outputs is not None],
                     "targets": [targets.cpu() for _, _, _, targets in self._batches if targets is not None]},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state.get("names", self.names)) != self.names:
            raise TrainlabError(
                f"the checkpoint's training metrics ({', '.join(state['names'])}) differ from this run's "
                f"({', '.join(self.names)}): train.train_metrics cannot change when resuming")
        self.sums.copy_(state["sums"])
        self.marked_sums.copy_(state["marked_sums"])
        self.count, self.marked_count = int(state["count"]), int(state["marked_count"])
        held = state["held"]
        losses = [t.to(self.device) for t in held["losses"]]
        counts = [int(c) for c in held["counts"]]
        outputs = [t.to(self.device) for t in held["outputs"]] or [None] * len(losses)
        targets = [t.to(self.device) for t in held["targets"]] or [None] * len(losses)
        self._batches = list(zip(losses, counts, outputs, targets))
        self._held = sum(t.numel() for t in outputs if t is not None)
        self._tail = outputs[-1].shape[1:] if losses and outputs[-1] is not None else None

def monitor_mode(monitor: str, mode: str) -> str:
    """``min`` or ``max`` for a monitor key such as ``valid/accuracy``."""
    if mode != "auto":
        return mode
    metric = monitor.split("/", 1)[-1]
    return "max" if metric in ("accuracy", "top5_accuracy", "f1", "precision", "recall", "auroc", "r2") else "min"


def window_items(loader: Loader, batch_index: int, accumulate: int) -> int:
    """Samples in the accumulation window that holds ``batch_index`` (a last window may be short)."""
    first = (batch_index // accumulate) * accumulate
    last = min(first + accumulate, len(loader))
    return sum(min(loader.batch_size, loader.num_samples - index * loader.batch_size) for index in range(first, last))


@torch.inference_mode()
def evaluate_loader(
    model: torch.nn.Module, criterion: Any, loader: Loader, precision: Precision, device: torch.device,
    extra: Callable[[torch.Tensor, torch.Tensor], dict[str, float]] | None = None,
    layout: torch.memory_format = torch.preserve_format,
) -> dict[str, float]:
    """Mean loss and metrics over a whole split (one host sync at the end). ``extra(outputs, targets)``
    adds metrics computed on the whole split's outputs (e.g. F1, ROC AUC); they never replace the
    loss's own. ``layout``: the memory format image batches go to the device in (the training's)."""
    was_training = model.training
    model = distributed.unwrap(model)  # no collectives per batch: processes may hold different batch counts
    model.eval()
    meter = Meter(criterion, device)
    loader.set_epoch(0)
    autocast = precision.autocast()
    held: list[tuple[torch.Tensor, torch.Tensor]] = []
    for inputs, targets in loader:
        inputs = to_device(inputs, device, layout)
        targets = targets.to(device, non_blocking=True)
        with autocast:
            outputs = model(inputs)
            loss = criterion(outputs, targets)
        meter.add(loss, outputs, targets)
        if extra is not None:
            held.append((outputs.detach().float(), targets))
    model.train(was_training)
    values = meter.epoch()
    if extra is not None:
        outputs, targets = (torch.cat([o for o, _ in held]), torch.cat([t for _, t in held])) if held else (None, None)
        outputs, targets = distributed.gather_outputs(outputs, targets, device)  # the whole split's
        if outputs is not None:
            more = extra(outputs, targets)
            values.update({name: value for name, value in more.items() if name not in values})
    return values


# Ctrl-C, and SIGTERM: what `kill`, job schedulers, container runtimes and torchrun send before SIGKILL.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _StopSignals:
    """A stop signal asks the loop to stop at the next optimizer step, where it writes its
    checkpoints (held ones included); a second one stops at once (KeyboardInterrupt: the
    checkpointer still writes what it holds). Outside fit the signals act as they did before."""

    def __init__(self) -> None:
        self.received: str | None = None  # the first signal's name
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in STOP_SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for number, previous in self._previous.items():
            if previous is not None:  # None: a handler not installed from Python, which cannot be put back
                signal.signal(number, previous)


def _synchronized_clock(device: torch.device) -> float:
    """perf_counter once the device has finished the work queued so far (asynchronous on GPUs)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _throughput(seconds: float, samples: int, warmup: tuple[float, int] | None) -> tuple[float, float]:
    """(samples per second after the warm-up step, warm-up seconds); the whole fit when it had one step."""
    warmup_seconds, warmup_samples = warmup or (0.0, 0)
    if samples > warmup_samples and seconds > warmup_seconds:
        return (samples - warmup_samples) / (seconds - warmup_seconds), warmup_seconds
    return (samples / seconds if seconds else 0.0), warmup_seconds


@dataclass
class FitResult:
    state: TrainState
    last_validation: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # the whole fit, warm-up, validation and checkpoint snapshots included (not the
    # final wait until the last checkpoint is on disk)
    samples_per_second: float = 0.0  # training samples per second after the warm-up, of every process together
    warmup_seconds: float = 0.0  # up to the end of the first optimizer step (compilation, cuDNN autotuning)
    stopped_by: str | None = None  # the signal that interrupted training in this process (SIGINT, SIGTERM)


def fit(
    model: torch.nn.Module,
    criterion: Any,
    optimizer: torch.optim.Optimizer,
    data: DataBundle,
    config: TrainConfig,
    precision: Precision,
    schedule: Schedule | None = None,
    callbacks: BaseCallback | None = None,
    checkpointer: Checkpointer | None = None,
    resume: dict[str, Any] | None = None,
    valid_metrics: Callable[[torch.Tensor, torch.Tensor], dict[str, float]] | None = None,
) -> FitResult:
    """Train ``model`` for ``config.epochs`` epochs (or until early stopping) and return where it ended.
    ``valid_metrics(outputs, targets)`` adds metrics of the whole validation split to its records.

    ``resume`` is the ``state.pt`` of a checkpoint: the loop continues from exactly that point.
    """
    device = precision.device
    callbacks = callbacks or BaseCallback()
    loader = data.train
    accumulate = config.accumulate
    steps_per_epoch = math.ceil(len(loader) / accumulate)
    mode = monitor_mode(config.monitor, config.mode)
    closure_optimizer = needs_closure(optimizer)
    layout = memory_format(config)
    world = distributed.world_size()  # every process trains equally many samples per step
    stops = distributed.StopPoint() if world > 1 else None
    # Decided once, so that a step spends its Python on the step: the forward's autocast context
    # (entered anew each step), and whether clipping needs the gradients unscaled first.
    autocast = precision.autocast()
    clips = config.clip_grad_norm is not None or config.clip_grad_value is not None
    # Batches that a loader serves on the device already (in-memory splits placed there) need no move.
    moves = getattr(loader, "device", None) != device or layout is torch.channels_last

    state = TrainState()
    meter = Meter(criterion, device, metrics=config.train_metrics)
    if resume is not None:
        state = TrainState(**resume["loop"])
        optimizer.load_state_dict(resume["optimizer"])
        if schedule is not None and resume.get("schedule") is not None:
            schedule.load_state_dict(resume["schedule"])
        precision.load_state_dict(resume.get("scaler") or {})
        meter.load_state_dict(resume["meter"])
        set_rng_state(resume["rng"])
        state.status = "running"

    def training_state() -> dict[str, Any]:
        return {
            "loop": asdict(state),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict() if schedule is not None else None,
            "scaler": precision.state_dict(),
            "meter": meter.state_dict(),
            "loader": {"epoch": state.epoch, "position": state.batch},
            "rng": rng_state(),
        }

    saved_at: dict[str, tuple[int, int]] = {}
    written_at = time.perf_counter()  # when a checkpoint was last written rather than held

    def save(kind: str, extra: dict[str, Any] | None = None, hold: bool = False) -> None:
        nonlocal written_at
        saved_at[kind] = (state.step, state.epoch)
        if checkpointer is not None:
            info = {"step": state.step, "epoch": state.epoch, "batch": state.batch, **(extra or {})}
            checkpointer(kind, model, training_state, info, hold=hold)
        if not hold:
            written_at = time.perf_counter()

    per_step_lr = schedule is not None and schedule.steps_every_optimizer_step
    cycles_momentum = schedule is not None and schedule.cycles_momentum
    rates: dict[str, float] = {}  # the lr (and momentum) the latest optimizer step used

    def emit(split: str, values: dict[str, float]) -> None:
        record: dict[str, Any] = {"step": state.step, "epoch": state.epoch + (1 if split == "train" else 0), "split": split}
        record.update(values)
        if split == "train":
            record.update(rates)
        record["time"] = time.time()
        callbacks.on_record(record)

    def log_train() -> None:
        values = meter.window()
        if not values:
            return
        if not math.isfinite(values["loss"]):
            state.status = "diverged"
        emit("train", values)

    def note_rates() -> None:
        rates["lr"] = optimizer.param_groups[0]["lr"]
        if cycles_momentum:
            rates["momentum"] = momentum_of(optimizer) or 0.0

    def clip() -> None:
        if config.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
        if config.clip_grad_value is not None:
            torch.nn.utils.clip_grad_value_(model.parameters(), config.clip_grad_value)

    last_validation: dict[str, float] = {}
    total_steps = steps_per_epoch * config.epochs
    callbacks.on_train_start(total_steps, state.step)
    started = time.perf_counter()
    samples_at_start = state.samples
    warmup: tuple[float, int] | None = None  # (seconds, samples) of the first optimizer step
    model.to(device)
    model.train()
    optimizer.zero_grad(set_to_none=True)

    with _StopSignals() as interrupt:
        while state.epoch < config.epochs and state.status == "running":
            loader.set_epoch(state.epoch)
            loader.load_state_dict({"epoch": state.epoch, "position": state.batch, "seed": loader.seed})
            batches = len(loader)
            window_samples = 0
            read_gradients = callbacks.wants_gradients(state.epoch + 1)  # asked once an epoch: a step tests a bool
            for batch_index, (inputs, targets) in enumerate(loader, start=state.batch):
                if moves:
                    inputs = to_device(inputs, device, layout)  # (B, ...)
                    targets = targets.to(device, non_blocking=True)
                if state.samples == 0:  # a run's very first batch (never a resumed run's)
                    callbacks.on_first_batch(inputs, targets)
                count = inputs.shape[0]
                window_end = batch_index % accumulate == accumulate - 1 or batch_index == batches - 1

                if closure_optimizer:  # LBFGS re-evaluates the batch itself, several times per step
                    captured: dict[str, Any] = {}

                    def closure() -> torch.Tensor:
                        optimizer.zero_grad(set_to_none=True)
                        with autocast:
                            outputs = model(inputs)
                            loss = criterion(outputs, targets)
                        loss.backward()
                        clip()
                        captured.setdefault("outputs", outputs.detach())
                        captured.setdefault("loss", loss.detach())
                        return loss

                    note_rates()
                    optimizer.step(closure)
                    outputs, loss = captured["outputs"], captured["loss"]
                    stepped = True
                else:
                    # Under accumulation DDP all-reduces the gradients once a window, at its last backward.
                    with distributed.no_sync(model, skip=not window_end) if accumulate > 1 else NO_CONTEXT:
                        with autocast:
                            outputs = model(inputs)
                            loss = criterion(outputs, targets)
                        if accumulate > 1 and criterion.reduction == "mean":
                            # Normalise by the whole window's item count: accumulation equals the larger batch.
                            if batch_index % accumulate == 0 or batch_index == state.batch:
                                items = window_items(loader, batch_index, accumulate)
                            precision.backward(loss * (count / items))
                        else:
                            precision.backward(loss)
                    stepped = False

                meter.add(loss, outputs, targets)
                state.batch = batch_index + 1
                state.samples += count
                window_samples += count

                if not window_end:
                    continue
                if not closure_optimizer:
                    if clips:  # at their true scale (the scaler's step unscales them itself otherwise)
                        precision.unscale(optimizer)
                        clip()
                    note_rates()
                    stepped = precision.step(optimizer)
                if read_gradients and state.batch == batches:  # the epoch's last step: callbacks read the gradients
                    callbacks.on_gradients(state.step + 1, distributed.unwrap(model))
                if not closure_optimizer:
                    optimizer.zero_grad(set_to_none=True)
                state.step += 1
                if warmup is None:  # this fit's first step: compiling and autotuning happen in it
                    warmup = _synchronized_clock(device) - started, state.samples - samples_at_start
                if stepped and schedule is not None:
                    schedule.after_optimizer_step()
                if state.step % config.log_every == 0 or state.batch == batches:  # log points and epoch ends
                    log_train()
                elif per_step_lr:  # the lr changes every step: record each one
                    emit("train", {})
                try:
                    callbacks.on_step(state.step, window_samples * world)  # every process's samples
                except StopTraining:
                    state.status = "stopped"
                window_samples = 0
                if interrupt.requested and state.status == "running":
                    state.status = "interrupted"
                if stops is not None:  # every process stops at the same step
                    state.status = stops(state.step, state.status)
                if state.status in ("diverged", "stopped", "interrupted"):
                    break
                if config.checkpoint_every and state.step % config.checkpoint_every == 0 and state.batch < batches:
                    save("last")

            if state.status in ("diverged", "interrupted", "stopped"):
                break
            state.epoch += 1
            state.batch = 0
            epoch_values = meter.epoch()

            validate_now = state.epoch % config.validate_every == 0 or state.epoch == config.epochs
            if validate_now and data.valid is not None:
                last_validation = evaluate_loader(model, criterion, data.valid, precision, device, valid_metrics,
                                                  layout)
                emit("valid", last_validation)
                if not math.isfinite(last_validation.get("loss", 0.0)):
                    state.status = "diverged"
                    break
            if schedule is not None:
                schedule.after_epoch({"train": epoch_values, "valid": last_validation if validate_now else None})

            improved = False
            split, _, metric = config.monitor.partition("/")
            current = {"train": epoch_values, "valid": last_validation if validate_now else {}}.get(split, {}).get(metric)
            if current is not None:
                best = state.best_value
                delta = config.early_stopping.min_delta if config.early_stopping else 0.0
                if best is None or (current < best - delta if mode == "min" else current > best + delta):
                    state.best_value, state.best_step, state.stale_validations = current, state.step, 0
                    improved = True
                else:
                    state.stale_validations += 1
                if config.early_stopping and state.stale_validations >= config.early_stopping.patience:
                    state.status = "early_stopped"
            if state.epoch >= config.epochs and state.status == "running":
                state.status = "finished"
            if interrupt.requested and state.status == "running":
                state.status = "interrupted"
            state.status = distributed.agree(state.status)
            callbacks.on_epoch_end(state)
            # Epochs that end within train.checkpoint_seconds of the last write keep their checkpoints in
            # memory: short epochs do not pay a durable write each. The checkpointer writes them with the
            # next one that is due, and at the latest when fit waits for it below.
            hold = time.perf_counter() - written_at < config.checkpoint_seconds
            if improved:  # first, so that last/ written next takes best/ along as a hard-linked copy
                save("best", {"monitor": config.monitor, "value": current}, hold=True)
            save("last", hold=hold)

        if state.status == "interrupted" and saved_at.get("last") != (state.step, state.epoch):
            save("last")
        elif state.status == "running":  # resumed a run that had already finished
            state.status = "finished"
        seconds = time.perf_counter() - started  # training ends here; making its files durable is teardown
        if checkpointer is not None and hasattr(checkpointer, "wait"):
            checkpointer.wait()  # checkpoints written in the background are durable before fit returns

    callbacks.on_train_end(state.status)
    warmup = (warmup[0], warmup[1] * world) if warmup is not None else None  # the throughput is all of theirs
    result = FitResult(state, last_validation, seconds,
                       *_throughput(seconds, (state.samples - samples_at_start) * world, warmup),
                       stopped_by=interrupt.received if state.status == "interrupted" else None)
    if state.status == "diverged":
        raise TrainingDiverged(
            f"the loss became NaN or infinite at step {state.step}; training stopped and the last good checkpoint "
            "was kept. Lower optimizer.lr, set train.clip_grad_norm, or check the data for NaN values"
        )
    return result
