"""What happens around the loop: records to metrics.jsonl and TensorBoard, progress on screen.

The loop produces *records* (plain dicts: ``step``, ``epoch``, ``split``, ``loss``, ``lr``,
metric values, ``time``) and calls every callback's hooks. Most callbacks never touch tensors, so
they cost nothing between log points. The hooks that hand over tensors run rarely: ``on_first_batch``
once a run, ``on_epoch_end`` once an epoch (e.g. weight histograms), and ``on_gradients`` at an
epoch's last step, only in epochs for which some callback's ``wants_gradients`` said yes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trainlab.runindex import RECORD_FIELDS

if TYPE_CHECKING:
    import torch

    from trainlab.data.spec import DataBundle
    from trainlab.train.loop import TrainState


class Callback(Protocol):
    """The hooks :func:`trainlab.train.loop.fit` calls, in this order:

    ``on_train_start`` once; ``on_first_batch`` for a run's very first batch; per epoch
    ``wants_gradients`` (before its first batch), per optimizer step ``on_step`` and ``on_record`` at
    log points, ``on_gradients`` at the epoch's last optimizer step (only if wanted, after the step and
    before ``zero_grad``), ``on_epoch_end`` (after validation, before the epoch's checkpoint);
    ``on_train_end`` once. ``on_step``'s ``samples`` are the step's training samples of every
    process together (under data-parallel training only rank 0's callbacks run).
    """

    def on_train_start(self, total_steps: int, start_step: int) -> None: ...

    def on_first_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        """The first batch of a run as the model receives it, before its forward pass (once, and not
        when a run resumes). Read it, never change it."""
        ...

    def on_step(self, step: int, samples: int) -> None: ...

    def on_record(self, record: dict[str, Any]) -> None: ...

    def wants_gradients(self, epoch: int) -> bool:
        """Whether to call ``on_gradients`` at the last optimizer step of ``epoch`` (1-based, the
        epoch about to run). Asked once an epoch, so a step costs one boolean test."""
        ...

    def on_gradients(self, step: int, model: torch.nn.Module) -> None:
        """The gradients of optimizer step ``step`` are in ``model``'s ``.grad`` (unscaled, clipped)."""
        ...

    def on_epoch_end(self, state: TrainState) -> None:
        """An epoch ended; ``state`` is the loop's position (read only)."""
        ...

    def on_train_end(self, status: str) -> None: ...


class BaseCallback:
    """No-op hooks; subclasses override what they need."""

    def on_train_start(self, total_steps: int, start_step: int) -> None:
        pass

    def on_first_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        pass

    def on_step(self, step: int, samples: int) -> None:
        pass

    def on_record(self, record: dict[str, Any]) -> None:
        pass

    def wants_gradients(self, epoch: int) -> bool:
        return False

    def on_gradients(self, step: int, model: torch.nn.Module) -> None:
        pass

    def on_epoch_end(self, state: TrainState) -> None:
        pass

    def on_train_end(self, status: str) -> None:
        pass


class CallbackList(BaseCallback):
    """Calls each callback's hooks in order. Callbacks written for the four original hooks only
    (without ``on_first_batch``, ``wants_gradients``, ``on_gradients``, ``on_epoch_end``) work unchanged."""

    def __init__(self, callbacks: list[Any]):
        self.callbacks = list(callbacks)
        self._gradient_readers: list[Any] = []
        # on_step runs every optimizer step: only the callbacks that do something in it are called.
        self._steppers = [callback for callback in self.callbacks
                          if getattr(type(callback), "on_step", None) is not BaseCallback.on_step]

    def on_train_start(self, total_steps: int, start_step: int) -> None:
        for callback in self.callbacks:
            callback.on_train_start(total_steps, start_step)

    def on_first_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        for callback in self.callbacks:
            if hasattr(callback, "on_first_batch"):
                callback.on_first_batch(inputs, targets)

    def on_step(self, step: int, samples: int) -> None:
        for callback in self._steppers:
            callback.on_step(step, samples)

    def on_record(self, record: dict[str, Any]) -> None:
        for callback in self.callbacks:
            callback.on_record(record)

    def wants_gradients(self, epoch: int) -> bool:
        self._gradient_readers = [callback for callback in self.callbacks
                                  if getattr(callback, "wants_gradients", None) and callback.wants_gradients(epoch)]
        return bool(self._gradient_readers)

    def on_gradients(self, step: int, model: torch.nn.Module) -> None:
        for callback in self._gradient_readers:
            callback.on_gradients(step, model)

    def on_epoch_end(self, state: TrainState) -> None:
        for callback in self.callbacks:
            if hasattr(callback, "on_epoch_end"):
                callback.on_epoch_end(state)

    def on_train_end(self, status: str) -> None:
        for callback in self.callbacks:
            callback.on_train_end(status)


class MetricsFile(BaseCallback):
    """Appends one JSON object per record to ``metrics.jsonl`` and keeps the records in memory."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records: list[dict[str, Any]] = read_records(self.path) if self.path.exists() else []
        self._handle = open(self.path, "a", encoding="utf-8")

    @property
    def line_count(self) -> int:
        """Records written so far: a checkpoint stores it so resume can drop later records."""
        return len(self.records)

    def on_record(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def on_train_end(self, status: str) -> None:
        self._handle.close()


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a torn last line (a kill mid-write) is ignored."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def truncate_records(path: Path, count: int) -> None:
    """Keep the first ``count`` records of a metrics.jsonl (resume drops what came after its checkpoint)."""
    records = read_records(path)[:count] if path.exists() else []
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    temporary.replace(path)


class TensorBoardLogger(BaseCallback):
    """Everything TensorBoard shows of a run, written by one ``SummaryWriter`` into the run's
    ``tensorboard/`` folder (one run in TensorBoard), against the optimizer step:

    - scalars ``<split>/<metric>``, ``lr`` (and ``momentum``) of every record;
    - with ``histograms`` (N): ``weights/<parameter>`` at the end of every N-th epoch and
      ``gradients/<parameter>`` of that epoch's last optimizer step, both at that step;
    - with ``graph``: the model graph, and with ``images`` (image data): ``train/batch``, a grid of
      the first training batch, from that batch when a run starts (a resumed run has them already);
    - when training ends for good (finished, early stopped, diverged) in a session that took a step:
      with ``embeddings``, the projector for the penultimate-layer features of the first 1,000
      validation samples (not for a diverged run), and with ``hparams`` (the resolved recipe as a
      dict), the hyperparameters with the final metrics ``final/best/<monitor>`` (the best
      monitored value) and ``final/valid/<metric>`` (the last validation).

    ``resume_step`` is the step of the checkpoint a resumed run continues from. Everything up to that
    step was written before that checkpoint was, so it stays; TensorBoard drops what the stopped
    session wrote after it (``purge_step = resume_step + 1``) and the resumed session writes it again.
    A resumed run that ends writes its hyperparameters again; TensorBoard keeps showing the first
    values it read (resume changes only train.* and log.* keys), the metric values are the new ones.
    See :mod:`trainlab.train.tensorboard` for what each entry holds.
    """

    FINAL = ("finished", "early_stopped", "diverged")

    def __init__(
        self,
        folder: Path,
        resume_step: int | None = None,
        *,
        model: torch.nn.Module | None = None,
        data: DataBundle | None = None,
        histograms: int | None = None,
        graph: bool = False,
        images: bool = False,
        embeddings: bool = False,
        hparams: dict[str, Any] | None = None,
        monitor: str | None = None,
    ):
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when asked for

        from trainlab.train import tensorboard

        self.board = tensorboard
        purge_step = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)
        self.model, self.data = model, data
        self.histograms = histograms if model is not None else None
        self.graph, self.images = graph and model is not None, images and data is not None
        self.embeddings = embeddings and model is not None and data is not None
        self.hparams, self.monitor = hparams, monitor
        self._start_step = self._step = resume_step or 0
        self._best: float | None = None
        self._last_valid: dict[str, float] = {}

    def on_train_start(self, total_steps: int, start_step: int) -> None:
        self._start_step = self._step = start_step

    def on_first_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        if self.graph:
            self.board.log_graph(self.writer, self.model, inputs)
        if self.images:
            self.board.log_batch_images(self.writer, inputs, self.data)

    def on_step(self, step: int, samples: int) -> None:
        self._step = step

    def on_record(self, record: dict[str, Any]) -> None:
        step, split = record["step"], record["split"]
        values = {key: value for key, value in record.items()
                  if key not in RECORD_FIELDS and isinstance(value, (int, float))}
        if values:
            self.board.log_scalars(self.writer, {key if key in ("lr", "momentum") else f"{split}/{key}": value
                                                 for key, value in values.items()}, step)
        if split == "valid":
            self._last_valid = values

    def wants_gradients(self, epoch: int) -> bool:
        return self.histograms is not None and epoch % self.histograms == 0

    def on_gradients(self, step: int, model: torch.nn.Module) -> None:
        self.board.log_gradients(self.writer, model, step)

    def on_epoch_end(self, state: TrainState) -> None:
        self._best = state.best_value
        if self.histograms is not None and state.epoch % self.histograms == 0:
            self.board.log_weights(self.writer, self.model, state.step)
        self.writer.flush()  # what the epoch's checkpoint covers is on disk before it

    def final_metrics(self) -> dict[str, float]:
        """``final/best/<monitor>`` and ``final/valid/<metric>`` as far as this session knows them."""
        metrics = {f"final/valid/{key}": float(value) for key, value in self._last_valid.items()}
        if self._best is not None and self.monitor:
            metrics[f"final/best/{self.monitor}"] = float(self._best)
        return metrics

    def on_train_end(self, status: str) -> None:
        if status in self.FINAL and self._step > self._start_step:
            if self.embeddings and status != "diverged":
                self.board.log_embeddings(self.writer, self.model, self.data, self._step)
            if self.hparams is not None:
                self.board.log_hparams(self.writer, self.hparams, self.final_metrics(), self._step)
        self.writer.flush()
        self.writer.close()


def _format_record(record: dict[str, Any]) -> str:
    parts = [f"epoch {record['epoch']}", f"step {record['step']}", record["split"]]
    for key, value in record.items():
        if key in RECORD_FIELDS:
            continue
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return "  ".join(parts)


class Progress(BaseCallback):
    """A rich progress bar (epoch, step, loss, lr, samples/s, ETA) or plain lines off a terminal."""

    def __init__(self, mode: str = "auto", total_epochs: int = 1, console: Any = None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        if mode == "auto":
            mode = "bar" if self.console.is_terminal else "plain"
        self.mode = mode
        self.total_epochs = total_epochs
        self._bar: Any = None
        self._task: Any = None
        self._samples = 0
        self._started = time.perf_counter()
        self._fields = {"epoch": "-", "loss": "-", "lr": "-", "rate": "-"}

    def on_train_start(self, total_steps: int, start_step: int) -> None:
        self._started = time.perf_counter()
        if self.mode != "bar":
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

        self._bar = RichProgress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[rate]} samples/s"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task("train", total=total_steps, completed=start_step, **self._fields)

    def on_step(self, step: int, samples: int) -> None:
        self._samples += samples
        if self._bar is not None:
            self._bar.update(self._task, completed=step)

    def on_record(self, record: dict[str, Any]) -> None:
        if self.mode == "none":
            return
        if "loss" not in record:  # a per-step lr record
            return
        if record["split"] == "train":
            elapsed = time.perf_counter() - self._started
            self._fields = {
                "epoch": f"{record['epoch']}/{self.total_epochs}",
                "loss": f"{record['loss']:.4f}",
                "lr": f"{record.get('lr', 0):.3g}",
                "rate": f"{self._samples / elapsed:,.0f}" if elapsed > 0 else "-",
            }
            if self._bar is not None:
                self._bar.update(self._task, **self._fields)
                return
        if self._bar is not None:
            self._bar.console.print(_format_record(record))
        elif self.mode == "plain":
            print(_format_record(record), file=sys.stderr, flush=True)

    def on_train_end(self, status: str) -> None:
        if self._bar is not None:
            self._bar.stop()
