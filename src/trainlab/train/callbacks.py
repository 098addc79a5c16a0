"""What happens around the loop: records to metrics.jsonl and TensorBoard, progress on screen.

The loop produces *records* (plain dicts: ``step``, ``epoch``, ``split``, ``loss``, ``lr``,
metric values, ``time``) and calls every callback's hooks; callbacks never touch tensors, so
they cost nothing between log points.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Protocol


class Callback(Protocol):
    def on_train_start(self, total_steps: int, start_step: int) -> None: ...

    def on_step(self, step: int, samples: int) -> None: ...

    def on_record(self, record: dict[str, Any]) -> None: ...

    def on_train_end(self, status: str) -> None: ...


class BaseCallback:
    """No-op hooks; subclasses override what they need."""

    def on_train_start(self, total_steps: int, start_step: int) -> None:
        pass

    def on_step(self, step: int, samples: int) -> None:
        pass

    def on_record(self, record: dict[str, Any]) -> None:
        pass

    def on_train_end(self, status: str) -> None:
        pass


class CallbackList(BaseCallback):
    def __init__(self, callbacks: list[Any]):
        self.callbacks = list(callbacks)

    def on_train_start(self, total_steps: int, start_step: int) -> None:
        for callback in self.callbacks:
            callback.on_train_start(total_steps, start_step)

    def on_step(self, step: int, samples: int) -> None:
        for callback in self.callbacks:
            callback.on_step(step, samples)

    def on_record(self, record: dict[str, Any]) -> None:
        for callback in self.callbacks:
            callback.on_record(record)

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
    """Scalars ``<split>/<metric>`` and ``lr`` against the optimizer step, in the run's folder."""

    def __init__(self, folder: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when asked for

        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)

    def on_record(self, record: dict[str, Any]) -> None:
        step, split = record["step"], record["split"]
        for key, value in record.items():
            if key in ("step", "epoch", "split", "time") or not isinstance(value, (int, float)):
                continue
            tag = key if key in ("lr", "momentum") else f"{split}/{key}"
            self.writer.add_scalar(tag, value, step)

    def on_train_end(self, status: str) -> None:
        self.writer.flush()
        self.writer.close()


def _format_record(record: dict[str, Any]) -> str:
    parts = [f"epoch {record['epoch']}", f"step {record['step']}", record["split"]]
    for key, value in record.items():
        if key in ("step", "epoch", "split", "time"):
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
