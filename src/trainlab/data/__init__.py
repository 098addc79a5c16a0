"""The data stage: ``build_data(recipe.data, seed) -> DataBundle``.

Each source is a :data:`SOURCES` entry whose function ``load(config, seed)`` returns the
:class:`DataSpec` and the split tensors. Validation builds the data too (in-memory sources are
cheap, and a missing file is a recipe problem), and training reuses what it built. Data that fits
in memory is served by :class:`TensorLoader`; the choice of loader is automatic and overridable
with ``data.loader``.
"""

from __future__ import annotations

from typing import Any

import torch

from trainlab.data.builtin import load_digits, load_synthetic
from trainlab.data.loaders import SamplerLoader, TensorLoader
from trainlab.data.spec import DataBundle, DataSpec, Loader
from trainlab.data.splits import SplitTensors
from trainlab.registry import Registry

SOURCES = Registry("data source")
SOURCES.add("sklearn-digits", load_digits, "scikit-learn's bundled 8x8 digits, 10 classes.")
SOURCES.add("synthetic", load_synthetic, "Seeded random tensors labelled by a random teacher.")


def make_loader(config: Any, inputs: torch.Tensor, targets: torch.Tensor, train: bool, seed: int) -> Loader:
    """A loader for one split of in-memory tensors, as ``data.loader`` asks."""
    batch_size = config.batch_size if train else (config.eval_batch_size or 4 * config.batch_size)
    shuffle = config.shuffle and train
    drop_last = config.drop_last and train
    if config.loader == "dataloader":
        dataset = torch.utils.data.TensorDataset(inputs, targets)
        return SamplerLoader(
            dataset, batch_size, shuffle, seed, drop_last, config.num_workers, pin_memory=torch.cuda.is_available()
        )
    return TensorLoader(inputs, targets, batch_size, shuffle, seed, drop_last)


def bundle_from_tensors(config: Any, spec: DataSpec, splits: SplitTensors, seed: int) -> DataBundle:
    loaders = {
        name: make_loader(config, inputs, targets, name == "train", seed) for name, (inputs, targets) in splits.items()
    }
    spec.num_samples = {name: len(inputs) for name, (inputs, _) in splits.items()}
    return DataBundle(spec, loaders["train"], loaders.get("valid"), loaders.get("test"))


def build_data(config: Any, seed: int) -> DataBundle:
    """Load the data of a recipe's ``data`` section and wrap each split in a loader."""
    spec, splits = SOURCES.get(config.source).target(config, seed)
    return bundle_from_tensors(config, spec, splits, seed)


__all__ = ["DataBundle", "DataSpec", "Loader", "SOURCES", "TensorLoader", "SamplerLoader", "build_data"]
