"""The data stage: ``build_data(recipe.data, seed) -> DataBundle``.

Each source is a :data:`SOURCES` entry whose function ``load(config, seed)`` returns a
:class:`DataBundle`: the loaders of each split, the :class:`DataSpec` they share, the data section
as resolved, notes worth printing and the fitted :class:`Preprocessor` saved with the run.
Validation builds the data too (a missing file is a recipe problem), and training reuses what it
built. Data that fits in memory (tensors, tables, token ids, decoded small image sets) is served
by index slicing (:class:`TensorLoader`); file-backed data by a DataLoader with workers
(:class:`SamplerLoader`). The choice is automatic and overridable with ``data.loader``. Sources
with heavy dependencies (PIL, pandas, tokenizers) import them only when used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainlab.data.builtin import load_digits, load_synthetic
from trainlab.data.loaders import (
    SamplerLoader,
    TensorLoader,
    bundle_from_tensors,
    make_loader,
)
from trainlab.data.spec import DataBundle, DataSpec, Loader, Preprocessor
from trainlab.recipe.errors import TrainlabError
from trainlab.registry import Registry


def _images(config: Any, seed: int) -> DataBundle:
    from trainlab.data.images import load_images

    return load_images(config, seed)


def _idx(config: Any, seed: int) -> DataBundle:
    from trainlab.data.idx import load_idx

    return load_idx(config, seed)


def _csv(config: Any, seed: int) -> DataBundle:
    from trainlab.data.tabular import load_csv

    return load_csv(config, seed)


def _text(config: Any, seed: int) -> DataBundle:
    from trainlab.data.text import load_text

    return load_text(config, seed)


SOURCES = Registry("data source")
SOURCES.add("sklearn-digits", load_digits, "scikit-learn's bundled 8x8 digits, 10 classes.")
SOURCES.add("synthetic", load_synthetic, "Seeded random tensors labelled by a random teacher.")
SOURCES.add("images", _images, "An image folder, one sub-folder per class (torchvision transforms).")
SOURCES.add("idx", _idx, "MNIST / Fashion-MNIST style IDX files.")
SOURCES.add("csv", _csv, "A CSV table with scikit-learn preprocessing.")
SOURCES.add("text", _text, "Text in a CSV/TSV file, tokenized by a tokenizer trained on the training split.")


def build_data(config: Any, seed: int) -> DataBundle:
    """Load the data of a recipe's ``data`` section and wrap each split in a loader."""
    bundle: DataBundle = SOURCES.get(config.source).target(config, seed)
    if bundle.config is None:
        bundle.config = config
    return bundle


PREPROCESSING_FILE = "preprocessing.json"


def load_preprocessor(folder: str | Path) -> Preprocessor:
    """The preprocessor a run saved under ``folder`` (its ``preprocessing/``), by the kind it wrote."""
    folder = Path(folder)
    try:
        kind = json.loads((folder / PREPROCESSING_FILE).read_text())["kind"]
    except (OSError, ValueError, KeyError) as error:
        raise TrainlabError(f"{folder} holds no readable {PREPROCESSING_FILE} ({error}). "
                            "Was the run trained on csv, text or image data?") from None
    if kind == "images":
        from trainlab.data.images import ImagePreprocessor as kind_class
    elif kind == "tabular":
        from trainlab.data.tabular import TabularPreprocessor as kind_class  # type: ignore[assignment]
    elif kind == "text":
        from trainlab.data.text import TextPreprocessor as kind_class  # type: ignore[assignment]
    else:
        raise TrainlabError(f"{folder / PREPROCESSING_FILE}: unknown preprocessing kind '{kind}'")
    return kind_class.load(folder)


__all__ = [
    "SOURCES",
    "DataBundle",
    "DataSpec",
    "Loader",
    "Preprocessor",
    "SamplerLoader",
    "TensorLoader",
    "build_data",
    "bundle_from_tensors",
    "load_preprocessor",
    "make_loader",
]
