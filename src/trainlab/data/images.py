"""``source: images``: an image folder with one sub-folder per class.

Layouts (class names are the sorted folder names of the training images):

- ``path/train/<class>/*`` and ``path/valid/<class>/*`` (or ``val/``), optionally ``path/test/<class>/*``;
  without ``valid/`` the validation split is held out of ``train/`` by ``split.valid`` (and without
  ``test/`` a test split by ``split.test``), seeded and stratified;
- ``path/<class>/*``, split by ``split:`` the same way.

With ``data.merge_valid: true`` the validation images train too: a ``split.valid`` fraction is not
held out, and a ``valid/`` folder's images join the training split; the test split is the same
images either way (the test split is drawn first).

Files are found recursively inside each class folder, by suffix (``extensions``, case-insensitive),
in sorted order; hidden files and folders are left out, and so are files with other suffixes
(counted in the notes).

Every image is converted to one PIL mode: ``mode: auto`` picks RGB when any image has colour (an
RGB, RGBA, CMYK, ... image, or a palette image whose palette has colour), else L. Transparent
images (RGBA, LA, palette images with a transparent colour) are composited on white before
conversion to RGB or L; ``mode: RGBA`` keeps the alpha channel. 16-bit grey images are scaled to
8 bits, and EXIF orientation is applied.

Decoding (``cache``): each image is decoded once, put through the deterministic uint8 steps that
start both transform pipelines (Resize, CenterCrop, ...) and stacked into one uint8 tensor
(N, C, H, W) (``memory``), also saved under ``cache_dir`` as safetensors keyed by the files and
those steps (``disk``); batches then apply the rest of the pipeline, vectorised over the batch
where the steps allow (:class:`~trainlab.data.transforms.BatchPipeline`). ``none`` decodes every
image every epoch in DataLoader workers. ``auto`` keeps the images in memory when they fit in
``cache_limit_mb`` and have one size after those first steps.

Augmentation is reproducible: a sample's or a batch's random draws are seeded by (seed, epoch,
index or batch position), never by the global RNG, so an epoch resumed mid-way serves the same
remaining batches, whatever the number of workers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from trainlab.data import PREPROCESSING_FILE
from trainlab.data.files import PACKAGE_PREFIX, resolve_path
from trainlab.data.loaders import (
    SamplerLoader,
    TensorLoader,
    loader_options,
    split_batch_size,
)
from trainlab.data.spec import DataBundle, DataSpec, Loader
from trainlab.data.splits import held_valid, split_indices
from trainlab.data.transforms import (
    BatchPipeline,
    Pipeline,
    Step,
    channel_statistics,
    describe_steps,
    fill_normalize,
    fixes_size,
    inverse_normalize,
    parse_pipeline,
    parse_transforms,
    preserved_rng,
    resolve_imagenet,
    run_steps,
    shared_prefix,
)
from trainlab.recipe.errors import Problem, TrainlabError
from trainlab.recipe.schema import ImagesData, Transforms

SPLITS = ("train", "valid", "test")
VALID_FOLDERS = ("valid", "val")
EXIF_HEADER_FORMATS = frozenset({"JPEG", "MPO", "TIFF", "WEBP"})
COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})
DEFAULT_CACHE_DIR = "~/.cache/trainlab/images"
CACHE_FORMAT = "trainlab-images-1"
STATISTICS_CHUNK = 512  # images per chunk when computing Normalize: dataset
SHOWN_FILES = 5  # file names listed in a message or note


def _workers() -> int:
    """Threads that decode images (PIL and torch release the GIL while they work)."""
    return max(1, min(8, os.cpu_count() or 1))


def _megabytes(count: int) -> str:
    """A byte count for notes: 12.3 MB (or 4.5 kB below a megabyte)."""
    return f"{count / 1e6:,.1f} MB" if count >= 1e6 else f"{count / 1e3:,.1f} kB"


# ----------------------------------------------------------------------------------- decoding


class UnreadableImage(Exception):
    """A file with an image suffix that PIL cannot decode; the message says why."""


def _has_colour(image: Any) -> bool:
    """Whether a PIL image (header only) holds colour: a colour mode, or a palette with a colour."""
    if image.mode in COLOUR_MODES:
        return True
    if image.mode in ("P", "PA"):
        palette = image.getpalette() or []
        return any(palette[i] != palette[i + 1] or palette[i] != palette[i + 2] for i in range(0, len(palette) - 2, 3))
    return False


def inspect_image(path: Path) -> tuple[tuple[int, int], bool]:
    """((width, height) as displayed, whether it has colour) from the file's header, without decoding."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            # EXIF orientations that swap width and height; only formats whose EXIF is in the header
            # (a PNG's may follow the pixels, and reading it would decode the whole image)
            if image.format in EXIF_HEADER_FORMATS and image.getexif().get(0x0112) in (5, 6, 7, 8):
                width, height = height, width
            return (width, height), _has_colour(image)
    except Exception as error:  # noqa: BLE001 - format plugins raise many kinds of errors on corrupt files
        raise UnreadableImage(str(error) or type(error).__name__) from None


def _eight_bit(image: Any) -> Any:
    """16-bit and 32-bit grey images (modes I;16, I, F) as 8-bit L: 16-bit values scaled by 1/257."""
    import numpy as np
    from PIL import Image

    values = np.asarray(image).astype(np.float64)
    if image.mode.startswith("I;16") or values.max(initial=0) > 255:
        values = values / 257.0
    return Image.fromarray(np.clip(values.round(), 0, 255).astype(np.uint8), "L")


def convert_image(image: Any, mode: str) -> Any:
    """A PIL image in ``mode`` (L, RGB or RGBA); for L and RGB, transparency is composited on white."""
    from PIL import Image

    if mode == "RGBA":
        return image.convert("RGBA")
    if image.mode.startswith("I") or image.mode == "F":
        image = _eight_bit(image)
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == mode else image.convert(mode)


def image_tensor(image: Any, mode: str) -> torch.Tensor:
    """A PIL image as a uint8 tensor (C, H, W) in ``mode``, EXIF orientation applied."""
    from PIL import ImageOps
    from torchvision.transforms.v2.functional import pil_to_tensor

    return pil_to_tensor(convert_image(ImageOps.exif_transpose(image), mode))


def decode_image(path: Path, mode: str) -> torch.Tensor:
    """The image file at ``path`` as a uint8 tensor (C, H, W) in ``mode``."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image_tensor(image, mode)
    except Exception as error:  # noqa: BLE001 - a truncated file fails in whichever decoder reads it
        raise UnreadableImage(str(error) or type(error).__name__) from None


# ----------------------------------------------------------------------------------- the folder


@dataclass
class ImageFolder:
    """The images a folder holds: each file with its class and the split folder it lies in
    (``train``, ``valid``, ``test``, or ``all`` for the one-folder layout)."""

    root: Path
    class_names: list[str]
    files: list[Path]
    labels: list[int]
    folders: list[str]
    layout: str  # "split folders" or "class folders"
    other_suffixes: dict[str, int] = field(default_factory=dict)  # ignored files by suffix
    loose_files: int = 0  # files outside any class folder (ignored)
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (relative paths)

    def keep(self, keep: list[int]) -> None:
        """Keep only the files at positions ``keep`` (after unreadable ones were left out)."""
        self.files = [self.files[i] for i in keep]
        self.labels = [self.labels[i] for i in keep]
        self.folders = [self.folders[i] for i in keep]

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def skipped_note(self) -> str | None:
        if not self.skipped:
            return None
        count = len(self.skipped)
        more = f", ... ({count - SHOWN_FILES} more)" if count > SHOWN_FILES else ""
        names = sorted(self.skipped)
        return f"skipped {count:,} unreadable file{'s' if count != 1 else ''}: {', '.join(names[:SHOWN_FILES])}{more}"


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _subfolders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and _visible(p.name)), key=lambda p: p.name)


def _walk(folder: Path) -> list[Path]:
    """Every visible file under ``folder``, in sorted order of relative path."""
    found = []
    for directory, folders, files in os.walk(folder, followlinks=True):
        folders[:] = sorted(name for name in folders if _visible(name))
        found += [Path(directory) / name for name in files if _visible(name)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def scan_folder(root: Path, extensions: list[str]) -> ImageFolder:
    """Find the classes and image files under ``root``; every layout problem is raised at once."""
    suffixes = {(e if e.startswith(".") else "." + e).lower() for e in extensions}
    if (root / "train").is_dir():
        valid = next((root / name for name in VALID_FOLDERS if (root / name).is_dir()), None)
        split_folders = {"train": root / "train", "valid": valid, "test": root / "test"}
        split_folders = {name: folder for name, folder in split_folders.items() if folder is not None and folder.is_dir()}
        layout = "split folders"
    else:
        strays = [name for name in (*VALID_FOLDERS, "test") if (root / name).is_dir()]
        if strays:
            raise TrainlabError(problems=[Problem(
                "data.path", f"{root} has {strays[0]}/ but no train/ folder", str(root),
                hint=f"Add {root / 'train'}/<class>/... with the training images, or put one folder per class "
                     f"directly in {root}.")])
        split_folders = {"all": root}
        layout = "class folders"
    problems: list[Problem] = []
    first = next(iter(split_folders.values()))
    class_names = [folder.name for folder in _subfolders(first)]
    if not class_names:
        raise TrainlabError(problems=[Problem(
            "data.path", f"{first} has no class folders", str(root),
            hint=f"Put the images of each class in a folder of its own: {first}/<class>/image.png.")])
    scan = ImageFolder(root, class_names, [], [], [], layout)
    index = {name: position for position, name in enumerate(class_names)}
    for split, folder in split_folders.items():
        scan.loose_files += sum(1 for p in folder.iterdir() if p.is_file() and _visible(p.name))
        for class_folder in _subfolders(folder):
            if class_folder.name not in index:
                problems.append(Problem(
                    "data.path", f"{class_folder} is a class that {first} does not have", str(root),
                    hint=f"Every class needs training images: add {first / class_folder.name}/ or remove the "
                         "folder (class names are case-sensitive)."))
                continue
            files = _walk(class_folder)
            images = [p for p in files if p.suffix.lower() in suffixes]
            for other in files:
                if other.suffix.lower() not in suffixes:
                    scan.other_suffixes[other.suffix.lower() or "(none)"] = scan.other_suffixes.get(
                        other.suffix.lower() or "(none)", 0) + 1
            if not images:
                found = f" (it holds {len(files)} files with other suffixes)" if files else ""
                problems.append(Problem(
                    "data.path", f"the class folder {class_folder} holds no images{found}", str(root),
                    hint="Add images to it or remove it; image suffixes are data.extensions "
                         f"({', '.join(sorted(suffixes))})."))
                continue
            scan.files += images
            scan.labels += [index[class_folder.name]] * len(images)
            scan.folders += [split] * len(images)
    if problems:
        raise TrainlabError(problems=problems)
    return scan


def _bad_file_problems(scan: ImageFolder, bad: dict[int, str]) -> list[Problem]:
    hint = "Delete or replace the file, or set data.on_bad_file: skip to leave unreadable files out."
    positions = sorted(bad)
    problems = [Problem("data.path", f"cannot read {scan.files[i]} as an image: {bad[i]}", str(scan.root), hint=hint)
                for i in positions[:SHOWN_FILES]]
    if len(positions) > SHOWN_FILES:
        problems.append(Problem("data.path", f"and {len(positions) - SHOWN_FILES} more unreadable files in "
                                f"{scan.root}", str(scan.root), hint=hint))
    return problems


def _drop_bad_files(scan: ImageFolder, bad: dict[int, str], on_bad_file: str) -> None:
    """Fail naming the unreadable files, or leave them out (listed in ``scan.skipped``); every class
    must keep a training image."""
    if not bad:
        return
    if on_bad_file == "fail":
        raise TrainlabError(problems=_bad_file_problems(scan, bad))
    scan.skipped += [scan.relative(scan.files[i]) for i in sorted(bad)]
    scan.keep([i for i in range(len(scan.files)) if i not in bad])
    empty = sorted(set(range(len(scan.class_names))) - {label for label, folder in zip(scan.labels, scan.folders)
                                                        if folder in ("train", "all")})
    if empty:
        names = ", ".join(scan.class_names[i] for i in empty)
        raise TrainlabError(problems=[Problem(
            "data.path", f"no readable training image is left in class {names} of {scan.root}", str(scan.root),
            hint="Replace the unreadable files with images.")])


def _inspect_all(files: list[Path]) -> list[tuple[tuple[int, int], bool] | str]:
    """Header facts of every file, or the reason it cannot be read."""
    def one(path: Path) -> tuple[tuple[int, int], bool] | str:
        try:
            return inspect_image(path)
        except UnreadableImage as error:
            return str(error)

    with ThreadPoolExecutor(_workers()) as pool:
        return list(pool.map(one, files))


# ----------------------------------------------------------------------------------- splits


def split_positions(folders: list[str], labels: torch.Tensor, valid: float, test: float,
                    seed: int, merge_valid: bool = False) -> dict[str, torch.Tensor]:
    """Positions of each split's files: a split folder gives its own files; splits without a folder
    are held out of the training files by ``valid`` / ``test`` (stratified, seeded). With
    ``merge_valid`` a ``valid`` folder's files train too (``valid`` is then 0: see ``held_valid``)."""
    folder = torch.tensor([SPLITS.index(name) if name in SPLITS else -1 for name in folders])  # (N,)
    if (folder == -1).all():  # one folder of classes
        return split_indices(labels, valid, test, seed, stratify=True)
    train = (folder == 0).nonzero().flatten()
    has_valid, has_test = bool((folder == 1).any()), bool((folder == 2).any())
    parts = split_indices(labels[train], 0.0 if has_valid else valid, 0.0 if has_test else test, seed, stratify=True)
    result = {name: train[index] for name, index in parts.items()}
    if has_valid and merge_valid:
        result["train"] = torch.cat([result["train"], (folder == 1).nonzero().flatten()]).sort().values
    elif has_valid:
        result["valid"] = (folder == 1).nonzero().flatten()
    if has_test:
        result["test"] = (folder == 2).nonzero().flatten()
    return result


# ----------------------------------------------------------------------------------- the uint8 cache


def default_cache_dir() -> Path:
    return Path(DEFAULT_CACHE_DIR).expanduser()


def cache_key(files: list[Path], mode: str, prefix: list[Step]) -> str:
    """sha256 of what the cached tensor depends on: each file's path, size and modification time, the
    mode and the deterministic steps applied before caching."""
    entries = []
    for path in files:
        stat = path.stat()
        entries.append([str(path), stat.st_size, stat.st_mtime_ns])
    text = json.dumps({"format": CACHE_FORMAT, "files": entries, "mode": mode, "prefix": describe_steps(prefix)})
    return hashlib.sha256(text.encode()).hexdigest()


def decode_all(files: list[Path], mode: str, prefix: BatchPipeline,
               shape: tuple[int, ...]) -> tuple[torch.Tensor, dict[int, str]]:
    """Decode ``files`` into one uint8 tensor (N, C, H, W) through ``prefix`` (each image must come out
    as ``shape``); also the unreadable files by position (their rows are left zero)."""
    images = torch.zeros((len(files), *shape), dtype=torch.uint8)
    bad: dict[int, str] = {}
    wrong: list[tuple[int, tuple[int, ...]]] = []

    def one(position: int) -> None:
        try:
            image = prefix.sample(decode_image(files[position], mode))
        except UnreadableImage as error:
            bad[position] = str(error)
            return
        if tuple(image.shape) != shape:
            wrong.append((position, tuple(image.shape)))
            return
        images[position] = image

    with ThreadPoolExecutor(_workers()) as pool:
        list(pool.map(one, range(len(files))))
    if wrong:
        position, found = min(wrong)
        raise TrainlabError(problems=[Problem(
            "data.transforms", f"{files[position]} becomes a {found} image but the others {shape}: the images "
            "cannot be stacked into one cached tensor", hint="Start both data.transforms.train and .eval with a "
            "Resize to a fixed size, e.g. {Resize: [64, 64]}, or set data.cache: none.")])
    return images, bad


def _load_disk_cache(path: Path, key: str, count: int) -> tuple[torch.Tensor, list[int]] | None:
    """The cached tensor and skipped positions, when ``path`` holds the cache of ``key``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("key") != key:
                return None
            images = handle.get_tensor("images")
        skipped = [int(i) for i in json.loads(meta.get("skipped", "[]"))]
    except (OSError, ValueError, RuntimeError, KeyError):  # an unreadable or foreign file: decode again
        return None
    if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != count - len(skipped):
        return None
    return images, skipped


def _write_disk_cache(path: Path, key: str, images: torch.Tensor, skipped: list[int]) -> None:
    """Write the cache atomically: a temporary file in the same folder, then os.replace."""
    from safetensors.torch import save_file

    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({"images": images.contiguous()}, str(temporary),
                  metadata={"key": key, "format": CACHE_FORMAT, "skipped": json.dumps(skipped)})
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _cache_images(config: ImagesData, scan: ImageFolder, mode: str, prefix: BatchPipeline,
                  shape: tuple[int, ...], kind: str, notes: list[str]) -> torch.Tensor:
    """Decode every file once into the uint8 cache (N, C, H, W) (``memory``); ``disk`` also keeps it in a
    safetensors file under ``cache_dir``, reused while the files and the cached steps stay the same."""
    path = key = None
    if kind == "disk":
        folder = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TrainlabError(problems=[Problem(
                "data.cache_dir", f"cannot create the cache folder {folder}: {error.strerror or error}",
                config.cache_dir, hint="Give data.cache_dir a folder you can write to, or set data.cache: memory.")])
        key = cache_key(scan.files, mode, prefix.steps)
        path = folder / f"images-{key[:32]}.safetensors"
        found = _load_disk_cache(path, key, len(scan.files))
        if found is not None:
            images, skipped = found
            _drop_bad_files(scan, {i: "unreadable when the cache was written" for i in skipped}, config.on_bad_file)
            notes.append(f"reused the disk cache {path} ({len(images):,} images, {_megabytes(images.nelement())})")
            return images
    images, bad = decode_all(scan.files, mode, prefix, shape)
    _drop_bad_files(scan, bad, config.on_bad_file)
    if bad:
        images = images[[i for i in range(len(images)) if i not in bad]]
    where = "memory"
    if path is not None and key is not None:
        _write_disk_cache(path, key, images, sorted(bad))
        where = f"disk: {path}"
    notes.append(f"decoded {len(images):,} images once into a {_megabytes(images.nelement())} uint8 cache ({where})")
    return images


def choose_cache(config: Any, uniform: bool, estimate: int, root: Path) -> tuple[str, str | None]:
    """``memory``, ``disk`` or ``none`` for a recipe's ``cache``, and a note on what auto decided.

    ``uniform``: every image has one shape after the deterministic first steps; ``estimate``: bytes of
    the decoded uint8 set."""
    limit = config.cache_limit_mb * 1_000_000
    if config.cache in ("memory", "disk"):
        if not uniform:
            raise TrainlabError(problems=[Problem(
                "data.cache", f"cache: {config.cache} stacks every image into one tensor, but the images in "
                f"{root} differ in size and the first steps of the pipelines do not give them one size",
                config.cache, hint="Start both data.transforms.train and .eval with a Resize to a fixed size, "
                "e.g. {Resize: [64, 64]} (or a CenterCrop), or set data.cache: none.")])
        return config.cache, None
    if config.cache == "none":
        return "none", None
    if not uniform:
        return "none", ("cache: auto decodes every image every epoch: the images differ in size and no "
                        "Resize/CenterCrop at the start of both pipelines gives them one (add one to cache them)")
    if estimate > limit:
        return "none", (f"cache: auto decodes every image every epoch: decoded, the images need "
                        f"{_megabytes(estimate)}, above cache_limit_mb ({config.cache_limit_mb:,} MB)")
    return "memory", None


# ----------------------------------------------------------------------------------- loaders


class ImageTensorLoader(TensorLoader):
    """Batches from a uint8 image cache held in memory (``inputs`` (N, C, H, W), ``targets`` (N,)),
    each put through ``transform`` (the pipeline after its cached first steps): vectorised on the
    batch's device where possible, else image by image with per-sample seeds."""

    stages_batches = False  # its batches go through the transforms after the gather

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, batch_size: int, transform: BatchPipeline,
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False):
        super().__init__(images, targets, batch_size, shuffle, seed, drop_last)
        self.transform = transform

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = len(self)
        order = self.indices()  # (N,) dataset indices of this process's part of the epoch, on the CPU
        indexed = self.shuffle or self.world > 1
        while self.position < batches:
            position = self.position
            start = position * self.batch_size
            stop = min(start + self.batch_size, self.num_samples)
            self.position += 1
            index = order[start:stop]  # (B,) dataset indices, on the CPU: they seed per-sample augmentation
            if indexed:
                on_device = index.to(self.inputs.device)
                images, targets = self.inputs[on_device], self.targets[on_device]
            else:  # contiguous slices are views: no copy
                images, targets = self.inputs[start:stop], self.targets[start:stop]
            # batch-wise randomness differs between processes (the same position on every rank otherwise)
            draw = position * self.world + self.rank
            yield self.transform(images, index, self.seed, self.epoch, draw), targets


class ImageDataset(Dataset):
    """Map-style dataset indexed by ``(index, seed)``: a cached uint8 image (``images``) or a file
    decoded on the spot (``files`` in ``mode``, through ``prefix``), then ``transform`` with its
    random steps seeded by ``seed``. Returns ((C, H, W) float tensor, label)."""

    def __init__(self, targets: torch.Tensor, transform: BatchPipeline, images: torch.Tensor | None = None,
                 files: list[Path] | None = None, mode: str = "RGB", prefix: BatchPipeline | None = None):
        self.targets = targets
        self.transform = transform
        self.images = images
        self.files = files
        self.mode = mode
        self.prefix = prefix

    def __len__(self) -> int:
        return len(self.targets)

    def image(self, index: int) -> torch.Tensor:
        """The uint8 image (C, H, W) after the cached first steps."""
        if self.images is not None:
            return self.images[index]
        assert self.files is not None and self.prefix is not None
        try:
            image = decode_image(self.files[index], self.mode)
        except UnreadableImage as error:
            raise TrainlabError(f"cannot read {self.files[index]} as an image: {error}. Replace or delete the "
                                "file (with cache: none images are decoded only when served, so a file whose "
                                "header reads but whose pixels do not is found only then)") from None
        return self.prefix.sample(image)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item
        return self.transform.sample(self.image(index), seed), self.targets[index]


@dataclass
class SplitSource:
    """One split's images: cached uint8 (N, C, H, W) or files to decode, and targets (N,)."""

    targets: torch.Tensor
    images: torch.Tensor | None = None
    files: list[Path] | None = None

    def chunks(self, mode: str, prefix: BatchPipeline, size: int = STATISTICS_CHUNK) -> Iterator[torch.Tensor]:
        """The split's uint8 images after the cached first steps, in chunks (B, C, H, W)."""
        if self.images is not None:
            yield from self.images.split(size)
            return
        assert self.files is not None
        dataset = ImageDataset(self.targets, prefix, files=self.files, mode=mode, prefix=prefix)
        with ThreadPoolExecutor(_workers()) as pool:
            for start in range(0, len(self.files), size):
                yield torch.stack(list(pool.map(dataset.image, range(start, min(start + size, len(self.files))))))


# ----------------------------------------------------------------------------------- the bundle


@dataclass
class ImagePipelines:
    """Both pipelines of a recipe and the deterministic steps they share (applied before caching)."""

    train: Pipeline
    eval: Pipeline
    prefix: list[Step]

    @classmethod
    def parse(cls, transforms: Transforms) -> ImagePipelines:
        train, evaluation = parse_transforms(transforms)
        return cls(train, evaluation, shared_prefix(train, evaluation))

    def rest(self, pipeline: Pipeline) -> list[Step]:
        return pipeline.steps[len(self.prefix):]


def _dataset_normalization(pipelines: ImagePipelines, train: SplitSource, mode: str, prefix: BatchPipeline,
                           notes: list[str]) -> None:
    """Compute ``Normalize: dataset`` once: per-channel mean/std of the training split after the eval
    pipeline's steps before its first Normalize (so scaled to [0, 1] by ToTensor)."""
    if "dataset" not in pipelines.train.presets() | pipelines.eval.presets():
        return
    stop = pipelines.eval.normalize_index()
    steps = pipelines.rest(pipelines.eval)[: None if stop is None else stop - len(pipelines.prefix)]
    scale = BatchPipeline(steps)
    batches = (scale(chunk, torch.arange(len(chunk)), 0, 0, 0) for chunk in train.chunks(mode, prefix))
    mean, std, count = channel_statistics(batches)
    for pipeline in (pipelines.train, pipelines.eval):
        fill_normalize(pipeline, "dataset", mean, std)
    notes.append(f"Normalize: dataset -> mean {mean}, std {std} (over the {count:,} training images)")


def _output_shape(pipelines: ImagePipelines, train_rest: BatchPipeline, sample: torch.Tensor,
                  what: str) -> tuple[int, ...]:
    """(C, H, W) the eval pipeline makes of ``sample`` (uint8 after the cached steps); the training
    pipeline must make the same shape. Problems are located at the failing step."""
    problems = []
    evaluated, problem = run_steps(pipelines.rest(pipelines.eval), sample, what)
    problems += [problem] if problem is not None else []
    trained = evaluated
    if pipelines.train.key != pipelines.eval.key:  # a training list of its own
        trained, problem = run_steps(pipelines.rest(pipelines.train), sample, what)
        if problem is None:
            try:  # the batch path too: a vectorised crop checks its size against the padded image
                trained = train_rest(sample[None], torch.zeros(1, dtype=torch.long), 0, 0, 0)[0]
            except (TypeError, ValueError, RuntimeError, IndexError) as error:
                problem = Problem(pipelines.train.key, f"the training pipeline fails on {what}: {error}",
                                  pipelines.train.items(), hint="Check its crop sizes against the image size.")
        problems += [problem] if problem is not None else []
    if problems:
        raise TrainlabError(problems=problems)
    if trained.shape != evaluated.shape:
        raise TrainlabError(problems=[Problem(
            pipelines.train.key, f"the training pipeline makes {tuple(trained.shape)} images of {what} but the eval "
            f"pipeline {tuple(evaluated.shape)}: the model sees both", pipelines.train.items(),
            hint="Make both end at the same size, e.g. crop in train to the size eval resizes to.")])
    return tuple(evaluated.shape)


def image_bundle(config: Any, pipelines: ImagePipelines, splits: dict[str, SplitSource], class_names: list[str],
                 mode: str, seed: int, sample: torch.Tensor, sample_name: str, notes: list[str],
                 updates: dict[str, Any]) -> DataBundle:
    """The bundle of an image source once its images are found (and maybe cached).

    ``splits`` hold uint8 images after the shared deterministic steps (or files to decode);
    ``sample`` is one decoded training image before those steps, named ``sample_name`` in messages.
    Fills the Normalize presets, checks both pipelines on the sample, builds one loader per split,
    the :class:`DataSpec`, the :class:`ImagePreprocessor` and the resolved data section
    (``updates`` plus the resolved transforms)."""
    cached = all(source.images is not None for source in splits.values())
    if config.loader == "memory" and not cached:
        raise TrainlabError(problems=[Problem(
            "data.loader", "loader: memory serves images from the in-memory cache, but the images are decoded "
            "every epoch here", config.loader, hint="Set data.cache: memory (with a Resize first in both "
            "pipelines if the images differ in size) or data.loader: auto.")])
    prefix = BatchPipeline(pipelines.prefix)
    problems = resolve_imagenet(pipelines.eval, sample)
    if pipelines.train.key != pipelines.eval.key:
        problems += resolve_imagenet(pipelines.train, sample)
    if problems:
        raise TrainlabError(problems=problems)
    _dataset_normalization(pipelines, splits["train"], mode, prefix, notes)
    train_rest = BatchPipeline(pipelines.rest(pipelines.train))
    eval_rest = BatchPipeline(pipelines.rest(pipelines.eval))
    cached_sample = prefix.sample(sample)
    input_shape = _output_shape(pipelines, train_rest, cached_sample, sample_name)
    loaders: dict[str, Loader] = {}
    options = loader_options(config)
    streamed = False
    for name, source in splits.items():
        train = name == "train"
        transform = train_rest if train else eval_rest
        batch_size = split_batch_size(config, train)
        shuffle, drop_last = config.shuffle and train, config.drop_last and train
        if source.images is not None and config.loader != "dataloader":
            loaders[name] = ImageTensorLoader(source.images, source.targets, batch_size, transform, shuffle, seed,
                                              drop_last)
        else:
            dataset = ImageDataset(source.targets, transform, source.images, source.files, mode, prefix)
            loaders[name] = SamplerLoader(dataset, batch_size, shuffle, seed, drop_last, with_seeds=True,
                                          **options.arguments())
            streamed = True
    if streamed:
        notes.append(options.note())
    if pipelines.prefix:
        when = "once when decoding" if cached else "when decoding"
        notes.append(f"transforms: {', '.join(step.name for step in pipelines.prefix)} {when}; training batches "
                     f"{train_rest.describe()}")
    else:
        notes.append(f"transforms: training batches {train_rest.describe()}")
    normalization = pipelines.eval.normalization
    spec = DataSpec(task="classification", input_shape=input_shape, num_classes=len(class_names),
                    class_names=list(class_names), num_samples={name: len(s.targets) for name, s in splits.items()},
                    normalization=normalization)
    transforms = Transforms(train=None if config.transforms.train is None else pipelines.train.items(),
                            eval=pipelines.eval.items())
    resolved = config.model_copy(update={**updates, "transforms": transforms})
    preprocessor = ImagePreprocessor(list(class_names), mode, pipelines.eval.items(), input_shape, normalization)
    return DataBundle(spec, loaders["train"], loaders.get("valid"), loaders.get("test"), config=resolved, notes=notes,
                      preprocessor=preprocessor)


def _first_sample(scan: ImageFolder, mode: str, on_bad_file: str) -> tuple[torch.Tensor, str]:
    """The first training image that decodes, uint8 (C, H, W), and its path (for messages); unreadable
    files before it fail or are left out as ``on_bad_file`` says."""
    bad: dict[int, str] = {}
    found: tuple[torch.Tensor, str] | None = None
    for position, folder in enumerate(scan.folders):
        if folder not in ("train", "all"):
            continue
        try:
            found = decode_image(scan.files[position], mode), str(scan.files[position])
            break
        except UnreadableImage as error:
            bad[position] = str(error)
            if on_bad_file == "fail":
                break
    _drop_bad_files(scan, bad, on_bad_file)  # fails, or leaves them out (a class left empty fails)
    assert found is not None
    return found


def load_images(config: ImagesData, seed: int) -> DataBundle:
    """An image folder as a :class:`DataBundle` (see the module docstring for layouts, modes and caching)."""
    pipelines = ImagePipelines.parse(config.transforms)  # recipe problems first: no file is read for them
    root = resolve_path(config.path, "data.path", kind="folder")
    scan = scan_folder(root, config.extensions)
    found = f"images: {len(scan.files):,} files of {len(scan.class_names)} classes in {root} ({scan.layout})"
    notes: list[str] = [found]
    if scan.other_suffixes or scan.loose_files:
        kinds = ", ".join(f"{suffix}: {count}" for suffix, count in sorted(scan.other_suffixes.items()))
        parts = [f"{sum(scan.other_suffixes.values()):,} with other suffixes ({kinds})"] if kinds else []
        parts += [f"{scan.loose_files:,} outside the class folders"] if scan.loose_files else []
        notes.append(f"ignored files: {'; '.join(parts)}")
    headers = _inspect_all(scan.files)
    _drop_bad_files(scan, {i: facts for i, facts in enumerate(headers) if isinstance(facts, str)}, config.on_bad_file)
    facts = [facts for facts in headers if not isinstance(facts, str)]
    mode = config.mode
    if mode == "auto":
        colour = sum(1 for _, has_colour in facts if has_colour)
        mode = "RGB" if colour else "L"
        notes.append(f"mode: auto -> RGB ({colour:,} of {len(facts):,} images have colour)" if colour else
                     "mode: auto -> L (no image has colour)")
    prefix = BatchPipeline(pipelines.prefix)
    sample, sample_name = _first_sample(scan, mode, config.on_bad_file)
    cached_sample, problem = run_steps(pipelines.prefix, sample, sample_name)
    if problem is not None:
        raise TrainlabError(problems=[problem])
    shape = tuple(cached_sample.shape)
    uniform = fixes_size(pipelines.prefix) or len({size for size, _ in facts}) == 1
    kind, note = choose_cache(config, uniform, len(scan.files) * int(torch.Size(shape).numel()), root)
    if note:
        notes.append(note)
    images = _cache_images(config, scan, mode, prefix, shape, kind, notes) if kind != "none" else None
    skipped = scan.skipped_note()
    if skipped:
        notes.append(skipped)
    labels = torch.tensor(scan.labels, dtype=torch.long)  # (N,)
    merge = bool(getattr(config, "merge_valid", False))
    if merge and "valid" in scan.folders:
        notes.append("data.merge_valid: the validation folder's images join the training split; there is no "
                     "validation split")
    valid = held_valid(config, None if "valid" in scan.folders else notes, "images")
    positions = split_positions(scan.folders, labels, valid, config.split.test, seed, merge)
    splits = {}
    for name in SPLITS:
        if name in positions:
            index = positions[name]
            splits[name] = SplitSource(labels[index], images=images[index] if images is not None else None,
                                       files=None if images is not None else [scan.files[i] for i in index.tolist()])
    path = config.path if config.path.startswith(PACKAGE_PREFIX) else str(root)
    return image_bundle(config, pipelines, splits, scan.class_names, mode, seed, sample, sample_name, notes,
                        {"path": path})


# ----------------------------------------------------------------------------------- prediction


@dataclass
class ImagePreprocessor:
    """What turns images into model inputs at prediction time, exactly as evaluation did: the class
    names, the PIL mode, the resolved eval pipeline, the input shape and the normalization."""

    class_names: list[str]
    mode: str
    transforms: list[Any]
    input_shape: tuple[int, ...]
    normalization: dict[str, Any] | None = None
    kind: ClassVar[str] = "images"

    def save(self, folder: Path) -> None:
        """Write ``preprocessing.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        payload = {"kind": self.kind, "class_names": self.class_names, "mode": self.mode,
                   "transforms": self.transforms, "input_shape": list(self.input_shape),
                   "normalization": self.normalization}
        (folder / PREPROCESSING_FILE).write_text(json.dumps(payload, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> ImagePreprocessor:
        path = Path(folder) / PREPROCESSING_FILE
        try:
            payload = json.loads(path.read_text())
            if payload.get("kind") != cls.kind:
                raise ValueError(f"its kind is {payload.get('kind')!r}, not {cls.kind!r}")
            preprocessor = cls(list(payload["class_names"]), str(payload["mode"]), list(payload["transforms"]),
                               tuple(int(size) for size in payload["input_shape"]), payload.get("normalization"))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise TrainlabError(f"{path} is not an image preprocessing file ({error}). Give the preprocessing/ "
                                "folder of a run trained on images") from None
        _, problems = parse_pipeline(preprocessor.transforms, "transforms", evaluation=True)
        if problems:
            raise TrainlabError(f"{path} holds transforms this version cannot build", problems)
        return preprocessor

    @functools.cached_property
    def pipeline(self) -> BatchPipeline:
        """The eval pipeline, built once."""
        pipeline, problems = parse_pipeline(self.transforms, "transforms", evaluation=True)
        if problems:
            raise TrainlabError("the saved eval transforms cannot be built", problems)
        return BatchPipeline(pipeline.steps)

    def encode(self, images: Sequence[Any]) -> torch.Tensor:
        """PIL images or image file paths -> model inputs (N, C, H, W): converted to the run's mode and
        put through the eval pipeline."""
        from PIL import Image

        pipeline = self.pipeline
        encoded = []
        for item in images:
            if isinstance(item, (str, Path)):
                try:
                    tensor = decode_image(Path(item), self.mode)
                except UnreadableImage as error:
                    raise TrainlabError(f"cannot read {item} as an image: {error}") from None
            elif isinstance(item, Image.Image):
                tensor = image_tensor(item, self.mode)
            else:
                raise TrainlabError(f"expected PIL images or image file paths, got a {type(item).__name__}")
            encoded.append(pipeline.sample(tensor))
        if not encoded:
            return torch.empty((0, *self.input_shape))
        batch = torch.stack(encoded)  # (N, C, H, W)
        if tuple(batch.shape[1:]) != tuple(self.input_shape):
            raise TrainlabError(f"the images become {tuple(batch.shape[1:])} inputs but the model takes "
                                f"{tuple(self.input_shape)}: its eval pipeline has no Resize to a fixed size, "
                                "so give images of the training size")
        return batch


# ----------------------------------------------------------------------------------- viewing and TTA


def show_batch(bundle: DataBundle, count: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` training samples of epoch 0 exactly as training sees them (augmented), mapped
    back to [0, 1] for display (undoing the training pipeline's Normalize): (images (N, C, H, W) float,
    labels (N,)). The loader's position and the global RNG are left as they were."""
    loader = bundle.train
    state = loader.state_dict()
    images, labels = [], []
    with preserved_rng():
        loader.set_epoch(0)
        for inputs, targets in loader:
            images.append(inputs.detach().cpu())
            labels.append(targets.detach().cpu())
            if sum(len(batch) for batch in images) >= count:
                break
    loader.load_state_dict(state)
    batch = torch.cat(images)[:count]
    pipeline = getattr(loader, "transform", None) or getattr(getattr(loader, "dataset", None), "transform", None)
    normalization = pipeline.normalization if pipeline is not None else bundle.spec.normalization
    return inverse_normalize(batch, normalization), torch.cat(labels)[:count]


TTA_VIEWS = {"hflip": 2, "fivecrop": 5, "tencrop": 10}


def tta_views(batch: torch.Tensor, mode: str, crop_size: tuple[int, int]) -> torch.Tensor:
    """Test-time augmentation views of an eval batch (B, C, H, W) -> (B, V, C, H, W): hflip = [the
    image, flipped]; fivecrop / tencrop = torchvision's five_crop / ten_crop of ``crop_size``, each crop
    resized back to (H, W) (bilinear, antialiased)."""
    from torchvision.transforms.v2 import functional as F

    height, width = batch.shape[-2:]
    if mode == "hflip":
        return torch.stack([batch, batch.flip(-1)], dim=1)
    crops = F.five_crop(batch, list(crop_size)) if mode == "fivecrop" else F.ten_crop(batch, list(crop_size))
    views = [F.resize(crop, [height, width], antialias=True) for crop in crops]  # V x (B, C, H, W)
    return torch.stack(views, dim=1)


class TTALoader:
    """An eval loader whose batches are ``(views (B, V, C, H, W), targets (B,))`` (see :func:`tta_views`),
    in the same order as the loader it wraps; every iteration starts from the first batch."""

    def __init__(self, loader: Loader, mode: str, crop_size: tuple[int, int]):
        self.loader = loader
        self.mode = mode
        self.crop_size = crop_size
        self.views = TTA_VIEWS[mode]

    @property
    def batch_size(self) -> int:
        return self.loader.batch_size

    @property
    def num_samples(self) -> int:
        return self.loader.num_samples

    @property
    def drop_last(self) -> bool:
        return self.loader.drop_last

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.loader.set_epoch(0)
        for inputs, targets in self.loader:
            yield tta_views(inputs, self.mode, self.crop_size), targets

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)


def tta_loader(bundle: DataBundle, split: str = "test", mode: str = "hflip",
               crop_size: int | Sequence[int] | None = None) -> TTALoader:
    """Test-time augmentation over a split's eval images: ``mode`` hflip (2 views), fivecrop (5) or
    tencrop (10); crops are ``crop_size`` (default 7/8 of the input height and width, rounded)."""
    if mode not in TTA_VIEWS:
        raise TrainlabError(f"unknown test-time augmentation '{mode}': expected one of {', '.join(TTA_VIEWS)}")
    loader = bundle.loader(split)
    if loader is None:
        raise TrainlabError(f"the data has no {split} split for test-time augmentation")
    if len(bundle.spec.input_shape) != 3:
        raise TrainlabError("test-time augmentation needs image inputs (C, H, W)")
    _, height, width = bundle.spec.input_shape
    if crop_size is None:
        size = (round(height * 7 / 8), round(width * 7 / 8))
    elif isinstance(crop_size, int):
        size = (crop_size, crop_size)
    else:
        size = (int(crop_size[0]), int(crop_size[-1]))
    if not (0 < size[0] <= height and 0 < size[1] <= width):
        raise TrainlabError(f"test-time crop size {size} does not fit the {height}x{width} inputs")
    return TTALoader(loader, mode, size)


__all__ = [
    "ImageDataset",
    "ImageFolder",
    "ImagePipelines",
    "ImagePreprocessor",
    "ImageTensorLoader",
    "SplitSource",
    "TTALoader",
    "convert_image",
    "decode_image",
    "image_bundle",
    "load_images",
    "scan_folder",
    "show_batch",
    "tta_loader",
    "tta_views",
]
