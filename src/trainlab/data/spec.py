"""What the data stage hands the rest of trainlab: loaders plus a description of the data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

Task = Literal["classification", "regression", "sequence"]


@dataclass
class DataSpec:
    """The shape of the data, known before any batch is drawn.

    ``input_shape`` is one sample's shape without the batch dimension, e.g. ``(1, 32, 32)`` for
    grey images or ``(16,)`` for a feature vector. ``input_dtype`` is ``torch.float32`` for
    features and images, ``torch.int64`` for token ids (then ``vocab_size`` is set).
    ``target_shape`` is one sample's target shape: ``()`` for a class index, ``(k,)`` for k
    regression targets, ``(S,)`` for a label sequence.
    """

    task: Task
    input_shape: tuple[int, ...]
    num_classes: int | None = None
    class_names: list[str] | None = None
    target_shape: tuple[int, ...] = ()
    input_dtype: torch.dtype = torch.float32
    vocab_size: int | None = None
    num_samples: dict[str, int] = field(default_factory=dict)  # split -> number of samples
    normalization: dict[str, Any] | None = None  # how inputs were normalised (mean/std), for later stages
    padding_idx: int | None = None  # token inputs: the id that pads a sequence (never a real token)

    @property
    def output_size(self) -> int:
        """Width of the model's last layer: classes, or regression targets."""
        if self.task in ("classification", "sequence"):
            assert self.num_classes is not None
            return self.num_classes
        size = 1
        for dimension in self.target_shape:
            size *= dimension
        return size


class Loader(Protocol):
    """A re-iterable source of ``(inputs, targets)`` batches with a resumable position.

    ``state_dict()`` holds plain Python values (epoch, position in the epoch, seed) so a
    checkpoint restores the exact next batch; restoring fast-forwards the index order,
    it never consumes batches.
    """

    batch_size: int
    num_samples: int
    drop_last: bool

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Preprocessor(Protocol):
    """What turns raw inputs into model inputs, fitted on the training split and saved with a run
    so prediction and serving reuse it exactly (tokenizer, column transformer, eval transforms).

    ``save(folder)`` writes only safe formats (JSON, safetensors) into ``folder`` and must include
    ``preprocessing.json`` with ``{"kind": kind, ...}``; ``load(folder)`` (a classmethod) reads it
    back. :func:`trainlab.data.load_preprocessor` dispatches on ``kind``.
    """

    kind: str

    def save(self, folder: Path) -> None: ...


@dataclass
class DataBundle:
    """The loaders of each split and the :class:`DataSpec` they share.

    ``config`` is the data section as resolved by loading (e.g. ``Normalize: dataset`` replaced by
    the mean and std it computed, paths made absolute), written into the run's recipe.yaml;
    ``notes`` are facts worth printing once (an inferred task, the worker count chosen, files
    skipped); ``preprocessor`` is saved with the run.
    """

    spec: DataSpec
    train: Loader
    valid: Loader | None = None
    test: Loader | None = None
    config: Any = None
    notes: list[str] = field(default_factory=list)
    preprocessor: Preprocessor | None = None

    def loader(self, split: str) -> Loader | None:
        return {"train": self.train, "valid": self.valid, "test": self.test}[split]
