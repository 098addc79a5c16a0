"""``source: idx``: MNIST / Fashion-MNIST style IDX files, gzipped or not.

An IDX file is a big-endian header and the raw values: two zero bytes, a type code (0x08 unsigned
byte, 0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of
dimensions, one uint32 per dimension, then the values in C order. Gzipped files are recognised by
their first bytes (1f 8b), whatever their suffix.

Images (N, H, W) of unsigned bytes become grey (N, 1, H, W) uint8 images held in memory, served
like a cached image folder (:mod:`trainlab.data.images`): the same transforms, ``Normalize:
dataset``, vectorised batch augmentation and the same preprocessor (mode L). Validation is held out
of the training files by ``split.valid`` (stratified, seeded); the test split is the test files
when given, else ``split.test`` of the training files.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainlab.data.files import PACKAGE_PREFIX, resolve_path
from trainlab.data.images import ImagePipelines, SplitSource, image_bundle
from trainlab.data.spec import DataBundle
from trainlab.data.splits import held_valid, split_indices
from trainlab.data.transforms import BatchPipeline
from trainlab.recipe.errors import Problem, TrainlabError
from trainlab.recipe.schema import IdxData

GZIP_MAGIC = b"\x1f\x8b"
IDX_TYPES = {  # type code -> big-endian numpy dtype
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
PREFIX_CHUNK = 4096  # images per chunk when applying the cached first steps


def _idx_error(key: str, path: Path, message: str, hint: str) -> TrainlabError:
    return TrainlabError(problems=[Problem(key, f"{path}: {message}", str(path), hint=hint)])


def read_idx(path: Path, key: str = "data") -> torch.Tensor:
    """The array an IDX file holds, as a tensor of its own type (uint8 for 0x08); problems name the
    file and are located at ``key`` (the recipe key that named it)."""
    hint = "Give an IDX file such as train-images-idx3-ubyte.gz (as published, gzipped or not)."
    try:
        raw = path.read_bytes()
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise _idx_error(key, path, f"cannot read it ({error})", hint) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        found = raw[:4].hex(" ") or "nothing"
        raise _idx_error(key, path, f"not an IDX file: it starts with {found}, not 00 00 <type> <dimensions>", hint)
    dims = raw[3]
    header = 4 + 4 * dims
    if dims == 0 or len(raw) < header:
        raise _idx_error(key, path, f"the header is truncated or names {dims} dimensions", hint)
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    dtype = IDX_TYPES[raw[2]]
    expected = math.prod(shape) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "longer than its header says"
        raise _idx_error(key, path, f"{what}: a {'x'.join(map(str, shape))} array of {dtype.name} needs "
                         f"{expected:,} bytes of data, the file has {found:,}",
                         "Download the file again; it may be incomplete.")
    values = np.frombuffer(raw, dtype=dtype, count=math.prod(shape), offset=header).reshape(shape)
    return torch.from_numpy(values.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: Path, values: torch.Tensor | np.ndarray, compress: bool | None = None) -> Path:
    """Write ``values`` as an IDX file (gzipped when ``compress``, default: when the name ends in .gz)."""
    array = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    codes = {np.dtype(dtype).newbyteorder("="): code for code, dtype in IDX_TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"IDX files cannot hold {array.dtype} values")
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    data = header + array.astype(IDX_TYPES[code]).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data) if (path.suffix == ".gz" if compress is None else compress) else data)
    return path


def _locate(config: IdxData, base: Path | None, key: str) -> Path:
    name = getattr(config, key)
    if base is not None and not name.startswith(PACKAGE_PREFIX) and not Path(name).expanduser().is_absolute():
        name = str(base / name)
    return resolve_path(name, f"data.{key}", kind="file")


def _images(path: Path, key: str) -> torch.Tensor:
    """IDX images (N, H, W) of unsigned bytes -> (N, 1, H, W) uint8."""
    images = read_idx(path, f"data.{key}")
    if images.dim() != 3 or images.dtype != torch.uint8:
        raise _idx_error(f"data.{key}", path, f"expected images (N, H, W) of unsigned bytes, found a "
                         f"{'x'.join(map(str, images.shape))} array of {images.dtype}".replace("torch.", ""),
                         "Give the images file (idx3-ubyte), not the labels.")
    return images.unsqueeze(1)


def _labels(path: Path, key: str, count: int, images_key: str) -> torch.Tensor:
    """IDX labels (N,) of integers, as many as the images -> int64."""
    labels = read_idx(path, f"data.{key}")
    if labels.dim() != 1 or labels.dtype.is_floating_point:
        raise _idx_error(f"data.{key}", path, f"expected labels (N,) of integers, found a "
                         f"{'x'.join(map(str, labels.shape))} array of {labels.dtype}".replace("torch.", ""),
                         "Give the labels file (idx1-ubyte), not the images.")
    if len(labels) != count:
        raise _idx_error(f"data.{key}", path, f"holds {len(labels):,} labels but data.{images_key} holds {count:,} images",
                         f"Give the labels that belong to data.{images_key}.")
    return labels.long()


def _check_labels(labels: torch.Tensor, path: Path, key: str, class_names: list[str] | None) -> None:
    if labels.min() < 0 or (class_names is not None and labels.max() >= len(class_names)):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        hint = f"data.class_names names {len(class_names)} classes (labels 0..{len(class_names) - 1}); add " \
               "the missing names." if class_names is not None else "Labels must be class numbers 0, 1, 2, ..."
        raise _idx_error(f"data.{key}", path, f"holds label {bad}, outside the classes", hint)


def _cached(images: torch.Tensor, prefix: BatchPipeline) -> torch.Tensor:
    """``images`` (N, 1, H, W) uint8 through the cached first steps (Resize, ...), chunk by chunk."""
    if not prefix.steps:
        return images
    chunks = [prefix(chunk, torch.arange(len(chunk)), 0, 0, 0) for chunk in images.split(PREFIX_CHUNK)]
    return torch.cat(chunks)


def load_idx(config: IdxData, seed: int) -> DataBundle:
    """IDX image and label files as a :class:`DataBundle` of in-memory grey images."""
    pipelines = ImagePipelines.parse(config.transforms)
    base = resolve_path(config.path, "data.path", kind="folder") if config.path else None
    paths = {key: _locate(config, base, key) for key in ("train_images", "train_labels", "test_images",
                                                           "test_labels") if getattr(config, key)}
    train_images = _images(paths["train_images"], "train_images")
    train_labels = _labels(paths["train_labels"], "train_labels", len(train_images), "train_images")
    _check_labels(train_labels, paths["train_labels"], "train_labels", config.class_names)
    notes: list[str] = []
    test: tuple[torch.Tensor, torch.Tensor] | None = None  # (images, labels) of the test files
    if "test_images" in paths:
        test_images = _images(paths["test_images"], "test_images")
        test_labels = _labels(paths["test_labels"], "test_labels", len(test_images), "test_images")
        _check_labels(test_labels, paths["test_labels"], "test_labels", config.class_names)
        if test_images.shape[1:] != train_images.shape[1:]:
            raise _idx_error("data.test_images", paths["test_images"], f"holds {tuple(test_images.shape[2:])} images, "
                             f"the training file {tuple(train_images.shape[2:])}", "Give files of one data set.")
        test = (test_images, test_labels)
        if config.split.test > 0:
            notes.append(f"split.test ({config.split.test}) is not used: the test files are the test split")
    classes = int(max(train_labels.max(), test[1].max() if test else 0)) + 1
    class_names = list(config.class_names) if config.class_names else [str(label) for label in range(classes)]
    notes.append(f"idx: {len(train_images):,} training images{f' and {len(test[0]):,} test images' if test else ''} "
                 f"of {'x'.join(map(str, train_images.shape[2:]))} pixels, {len(class_names)} classes, held in memory")
    if config.cache in ("none", "disk"):
        notes.append(f"cache: {config.cache} does not apply to IDX files: they are read into memory whole")
    prefix = BatchPipeline(pipelines.prefix)
    cached = _cached(train_images, prefix)
    parts = split_indices(train_labels, held_valid(config, notes, "images"), 0.0 if test else config.split.test, seed,
                          stratify=True)
    splits = {name: SplitSource(train_labels[index], images=cached[index]) for name, index in parts.items()}
    if test is not None:
        splits["test"] = SplitSource(test[1], images=_cached(test[0], prefix))
    splits = {name: splits[name] for name in ("train", "valid", "test") if name in splits}
    sample = train_images[int(parts["train"][0])]  # (1, H, W) before the cached steps
    # the resolved recipe names every file absolutely (package: names stay: they are portable)
    updates: dict[str, Any] = {key: str(path) for key, path in paths.items()
                               if not getattr(config, key).startswith(PACKAGE_PREFIX)}
    if base is not None and not str(config.path).startswith(PACKAGE_PREFIX):
        updates["path"] = str(base)
    return image_bundle(config, pipelines, splits, class_names, "L", seed, sample,
                        f"{paths['train_images'].name} image {int(parts['train'][0])}", notes, updates)


__all__ = ["IDX_TYPES", "load_idx", "read_idx", "write_idx"]
