"""Batch sources with a resumable position.

Both loaders draw the same batches for the same seed and epoch: the epoch's order is
``torch.randperm`` from a generator seeded with :func:`epoch_seed`, cut into consecutive
batches. Their state is ``{"epoch", "position"}`` (batches already drawn this epoch), so a
checkpoint restores the exact next batch by fast-forwarding the index order; no batch is
ever drawn and thrown away.

- :class:`TensorLoader` serves data that fits in memory by index-slicing tensors (no per-sample
  Python, no collate); the tensors can live on the accelerator.
- :class:`SamplerLoader` wraps a ``torch.utils.data.DataLoader`` (workers, pinned memory) for
  datasets that must be read sample by sample.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trainlab.data.spec import DataBundle, DataSpec, Loader


def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed of one epoch's order: distinct per (seed, epoch), stable across versions."""
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**63 - 1)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's random augmentation in one epoch: the same whichever worker, batch
    position or resume point draws it, so augmented epochs are reproducible and resumable."""
    return (epoch_seed(seed, epoch) * 31 + index * 2_654_435_761) % (2**63 - 1)


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    """The sample indices of one epoch, in the order they are served."""
    if not shuffle:
        return torch.arange(num_samples)
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(num_samples, generator=generator)


class _Position:
    """Epoch and batch position shared by both loaders. ``shardable``: the loader serves
    :meth:`indices` (or splits its own batches, as text bucketing does), so :meth:`shard` splits it
    across processes; a loader without it is refused under data-parallel training. ``variable_shapes``: batches differ in shape beyond the batch size (then no cuDNN
    autotuning, which would measure every new shape again)."""

    shardable = True
    variable_shapes = False

    batch_size: int
    num_samples: int
    drop_last: bool
    shuffle: bool
    seed: int

    def _init_position(self) -> None:
        self.epoch = 0
        self.position = 0  # batches already drawn in this epoch
        self.dataset_samples = self.num_samples  # the whole split; num_samples is this process's part
        self.rank, self.world, self.pad = 0, 1, False

    def shard(self, rank: int, world: int, pad: bool) -> None:
        """Serve only process ``rank``'s part of each epoch: ``order[rank::world]`` of the epoch's
        global order. With ``pad`` the order is first extended by its own first samples to a multiple
        of ``world`` (every process gets as many samples and batches); ``shard(0, 1, False)`` undoes it."""
        self.rank, self.world, self.pad = rank, world, pad
        total = self.dataset_samples
        if pad:
            total = math.ceil(total / world) * world
        self.num_samples = len(range(rank, total, world))

    def indices(self) -> torch.Tensor:
        """This process's sample indices of the current epoch, in the order they are served."""
        order = epoch_order(self.dataset_samples, self.seed, self.epoch, self.shuffle)
        if self.world == 1:
            return order
        return self.padded(order)[self.rank::self.world]

    def padded(self, order: torch.Tensor) -> torch.Tensor:
        """An epoch's global ``order``, extended by its own first samples to a multiple of ``world``
        when this loader pads (a training split: every process gets as many samples)."""
        missing = (-len(order)) % self.world if self.pad else 0
        if not missing:
            return order
        return torch.cat([order, order.repeat(math.ceil(missing / len(order)))[:missing]])

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def batch_items(self, index: int) -> int:
        """Samples in batch ``index`` of an epoch (the last one may be short)."""
        return min(self.batch_size, self.num_samples - index * self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch."""
        self.epoch = epoch
        self.position = 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.seed = int(state.get("seed", self.seed))


class _Slot:
    """One page-locked batch buffer and the event that marks its last copy to the device done."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int):
        self.inputs = torch.empty((batch_size, *inputs.shape[1:]), dtype=inputs.dtype, pin_memory=True)
        self.targets = torch.empty((batch_size, *targets.shape[1:]), dtype=targets.dtype, pin_memory=True)
        self.copied: torch.cuda.Event | None = None


class TensorLoader(_Position):
    """Serves ``(inputs[idx], targets[idx])`` batches from tensors held in memory.

    Tensors too large to keep on the GPU stay in host memory with :meth:`stage_to`: each batch is
    gathered straight into one of two page-locked buffers and copied to the device without
    blocking, so the next batch's gather overlaps the copy and the step before it."""

    stages_batches = True  # subclasses that serve batches their own way say False

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ):
        if len(inputs) != len(targets):
            raise ValueError(f"inputs ({len(inputs)}) and targets ({len(targets)}) differ in length")
        self.inputs = inputs
        self.targets = targets
        self.batch_size = batch_size
        self.num_samples = len(inputs)
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self._init_position()
        self.staged_to: torch.device | None = None
        self._slots: list[_Slot] = []

    def to(self, device: torch.device | str) -> TensorLoader:
        """Keep the tensors on ``device`` so batches need no host-to-device copy."""
        self.inputs = self.inputs.to(device)
        self.targets = self.targets.to(device)
        return self

    def stage_to(self, device: torch.device) -> TensorLoader:
        """Keep the tensors in host memory and serve batches on ``device`` (a CUDA GPU) through two
        page-locked buffers, allocated at the first batch."""
        self.staged_to = torch.device(device)
        return self

    def _staged(self, position: int, rows: slice | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``rows`` gathered into buffer ``position % 2`` and on its way to the device."""
        if not self._slots:
            self._slots = [_Slot(self.inputs, self.targets, self.batch_size) for _ in range(2)]
        slot = self._slots[position % 2]
        if slot.copied is not None:
            slot.copied.synchronize()  # the copy out of this buffer, two batches ago, has finished
        count = len(rows) if isinstance(rows, torch.Tensor) else rows.stop - rows.start
        inputs, targets = slot.inputs[:count], slot.targets[:count]
        if isinstance(rows, torch.Tensor):
            torch.index_select(self.inputs, 0, rows, out=inputs)
            torch.index_select(self.targets, 0, rows, out=targets)
        else:
            inputs.copy_(self.inputs[rows])
            targets.copy_(self.targets[rows])
        on_device = (inputs.to(self.staged_to, non_blocking=True), targets.to(self.staged_to, non_blocking=True))
        slot.copied = torch.cuda.Event()
        slot.copied.record()
        return on_device

    @property
    def device(self) -> torch.device:
        """The device batches are served on: the staging device, else where the tensors are."""
        return self.staged_to or self.inputs.device

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = len(self)
        shuffled = self.shuffle or self.world > 1
        if shuffled:
            order = self.indices().to(self.inputs.device)
        while self.position < batches:
            start = self.position * self.batch_size
            stop = min(start + self.batch_size, self.num_samples)
            self.position += 1
            rows = order[start:stop] if shuffled else slice(start, stop)
            if self.staged_to is not None:
                yield self._staged(self.position, rows)
            elif shuffled:
                yield self.inputs[rows], self.targets[rows]
            else:  # contiguous slices are views: no copy
                yield self.inputs[rows], self.targets[rows]


class _ResumableSampler(Sampler[int]):
    """Yields one epoch's order from the loader's current position onwards."""

    def __init__(self, owner: SamplerLoader):
        self.owner = owner

    def __iter__(self) -> Iterator[Any]:
        owner = self.owner
        order = owner.indices()
        start = owner.position * owner.batch_size
        indices = order[start:].tolist()
        if owner.with_seeds:  # the dataset receives (index, seed of this sample's augmentation)
            return iter([(index, sample_seed(owner.seed, owner.epoch, index)) for index in indices])
        return iter(indices)

    def __len__(self) -> int:
        return self.owner.num_samples - self.owner.position * self.owner.batch_size


class SamplerLoader(_Position):
    """A ``DataLoader`` over a map-style dataset, with the same order and state as TensorLoader.

    With ``with_seeds`` the dataset is indexed by ``(index, seed)`` pairs, ``seed`` being
    :func:`sample_seed`: a dataset that seeds its random augmentation with it gives the same
    samples for any worker count and after a mid-epoch resume.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        with_seeds: bool = False,
        collate_fn: Any = None,
    ):
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_samples = len(dataset)  # type: ignore[arg-type]
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.with_seeds = with_seeds
        self._init_position()
        self._loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=_ResumableSampler(self),
            drop_last=drop_last,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers and num_workers > 0,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
            collate_fn=collate_fn,
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = len(self)
        for inputs, targets in self._loader:
            if self.position >= batches:
                break
            self.position += 1
            yield inputs, targets


@dataclass
class LoaderOptions:
    """The DataLoader settings of a recipe's data section, with ``auto`` resolved for this machine."""

    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int | None

    def note(self) -> str:
        return (f"DataLoader: num_workers={self.num_workers}, pin_memory={self.pin_memory}, "
                f"persistent_workers={self.persistent_workers and self.num_workers > 0}, "
                f"prefetch_factor={self.prefetch_factor or (2 if self.num_workers else None)}")

    def arguments(self) -> dict[str, Any]:
        return {"num_workers": self.num_workers, "pin_memory": self.pin_memory,
                "persistent_workers": self.persistent_workers, "prefetch_factor": self.prefetch_factor}


def default_workers() -> int:
    """Worker processes for a file-backed DataLoader: the cores this process may use, less one for
    the training loop, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(0, min(8, cores - 1))


def loader_options(config: Any) -> LoaderOptions:
    workers = default_workers() if config.num_workers == "auto" else int(config.num_workers)
    pin = torch.cuda.is_available() if config.pin_memory == "auto" else bool(config.pin_memory)
    return LoaderOptions(workers, pin, config.persistent_workers, config.prefetch_factor)


def split_batch_size(config: Any, train: bool) -> int:
    """Training batches are ``batch_size``; evaluation ones ``eval_batch_size`` (default 4x)."""
    return config.batch_size if train else (config.eval_batch_size or 4 * config.batch_size)


def make_loader(config: Any, inputs: torch.Tensor, targets: torch.Tensor, train: bool, seed: int) -> Loader:
    """A loader for one split of in-memory tensors, as ``data.loader`` asks (auto: index slicing)."""
    batch_size = split_batch_size(config, train)
    shuffle = config.shuffle and train
    drop_last = config.drop_last and train
    if config.loader == "dataloader":
        dataset = torch.utils.data.TensorDataset(inputs, targets)
        return SamplerLoader(dataset, batch_size, shuffle, seed, drop_last, **loader_options(config).arguments())
    return TensorLoader(inputs, targets, batch_size, shuffle, seed, drop_last)


def bundle_from_tensors(data_config: Any, spec: DataSpec, splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
                        seed: int, /, **extra: Any) -> DataBundle:
    """A :class:`DataBundle` of in-memory splits ``{"train": (x, y), "valid": ..., "test": ...}``,
    batched as ``data_config`` says; ``extra`` are further DataBundle fields (``config``: the
    resolved data section, default ``data_config``; ``notes``; ``preprocessor``). Sources honour
    ``data.merge_valid`` themselves by not holding a validation split out."""
    loaders = {
        name: make_loader(data_config, inputs, targets, name == "train", seed)
        for name, (inputs, targets) in splits.items()
    }
    spec.num_samples = {name: len(inputs) for name, (inputs, _) in splits.items()}
    extra.setdefault("config", data_config)
    bundle = DataBundle(spec, loaders["train"], loaders.get("valid"), loaders.get("test"), **extra)
    if data_config.loader == "dataloader":
        bundle.notes.append(loader_options(data_config).note())
    return bundle
