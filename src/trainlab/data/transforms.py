"""``torchvision.transforms.v2`` pipelines from a recipe's ``data.transforms`` lists.

Each item is a transform name (``ToTensor``, ``RandomHorizontalFlip``) or a one-key mapping from the
name to its arguments, given as

- a mapping of keyword arguments: ``{RandomCrop: {size: 32, padding: 4}}``;
- a list: the value of the first argument when the list holds only numbers and that argument is a
  size, padding, degrees or kernel size (``{Resize: [32, 32]}`` is ``size: [32, 32]``, ``{Pad: [4]}``
  is ``padding: [4]``); otherwise the positional arguments in order
  (``{ColorJitter: [0.4, 0.4, 0.4]}``, ``{Normalize: [[0.5], [0.5]]}``);
- a single value: the first argument (``{RandomRotation: 10}``).

Any ``torchvision.transforms.v2`` class can be named (spelling-insensitively; the resolved recipe
holds the canonical name); its arguments are bound to the real signature and the transform is
built once, so a wrong value is a recipe problem at ``data.transforms.train[2]``, reported together
with every other problem. Presets:

- ``ToTensor``: ``ToImage`` + ``ToDtype(float32, scale=True)`` (uint8 0..255 -> float 0..1).
- ``{Normalize: imagenet}``: the ImageNet mean/std; for 1-channel images the mean of the three
  channel values (mean 0.449, std 0.226).
- ``{Normalize: dataset}``: the per-channel mean/std of the training split, computed once by the
  data source and written into the resolved recipe as ``{Normalize: {mean: [...], std: [...]}}``.

Images enter a pipeline as uint8 tensors (C, H, W). A pipeline splits into a deterministic uint8
*prefix* (the leading Resize / CenterCrop / Pad / Grayscale ... steps), which a data source applies
once when it decodes and caches the images, and the *rest*, applied to every sample or batch served
(:class:`BatchPipeline`).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from trainlab.data.loaders import sample_seed
from trainlab.recipe.errors import Problem, TrainlabError, missing
from trainlab.recipe.loader import join_path
from trainlab.registry import Entry, Registry, UnknownName, normalize_name

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
NORMALIZE_PRESETS = ("imagenet", "dataset")
TO_TENSOR = "ToTensor"
NOTHING = missing()  # "Received: nothing" in a problem

# Deterministic steps that keep uint8 images uint8: a pipeline's leading run of them is its prefix.
PREFIX_STEPS = frozenset({"Resize", "CenterCrop", "Pad", "Grayscale", "RGB", "Identity", "ToImage"})
# Deterministic steps that give the same result on a batch (B, C, H, W) as on each image.
BATCH_STEPS = PREFIX_STEPS | {TO_TENSOR, "ToDtype", "ConvertImageDtype", "Normalize", "ToPureTensor"}
# Random steps drawn for a whole batch at once, from one seeded generator.
VECTOR_RANDOM_STEPS = frozenset({"RandomCrop", "RandomHorizontalFlip", "RandomVerticalFlip"})
# A list of numbers is the value of a first parameter with one of these names.
SEQUENCE_FIRST = frozenset({"size", "padding", "degrees", "kernel_size"})
FLOAT_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
                "float": torch.float32, "float64": torch.float64, "double": torch.float64}
INTEGER_DTYPES = {"uint8": torch.uint8, "int8": torch.int8, "int16": torch.int16, "int32": torch.int32,
                  "int64": torch.int64, "uint16": torch.uint16}

_NEEDS_TRANSFORMS = "it takes other transforms as arguments; list those transforms in the pipeline itself"
_NO_BOXES = "it works on bounding boxes, key points or videos, which image classification data does not have"
NOT_TRANSFORMS = {
    "Compose": _NEEDS_TRANSFORMS,
    "RandomApply": _NEEDS_TRANSFORMS,
    "RandomChoice": _NEEDS_TRANSFORMS,
    "RandomOrder": _NEEDS_TRANSFORMS,
    "Lambda": "it runs a Python function, which a recipe cannot hold",
    "MixUp": "it mixes whole batches and their labels, not single images",
    "CutMix": "it mixes whole batches and their labels, not single images",
    "FiveCrop": "it turns one image into five; five-crop test-time augmentation is a tta mode (fivecrop)",
    "TenCrop": "it turns one image into ten; ten-crop test-time augmentation is a tta mode (tencrop)",
    "ToPILImage": "images reach the pipeline as uint8 tensors and the model needs tensors",
    "PILToTensor": "images reach the pipeline as uint8 tensors already (ToTensor scales them to float)",
    "LinearTransformation": "it needs a transformation matrix tensor, which a recipe cannot hold",
    "ClampBoundingBoxes": _NO_BOXES,
    "ConvertBoundingBoxFormat": _NO_BOXES,
    "SanitizeBoundingBoxes": _NO_BOXES,
    "ClampKeyPoints": _NO_BOXES,
    "SanitizeKeyPoints": _NO_BOXES,
    "SetClampingMode": _NO_BOXES,
    "RandomIoUCrop": _NO_BOXES,
    "UniformTemporalSubsample": _NO_BOXES,
}


def _to_tensor() -> v2.Compose:
    """ToImage + ToDtype(float32, scale=True): uint8 0..255 becomes float 0..1."""
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


@functools.lru_cache(maxsize=1)
def transform_registry() -> Registry:
    """Every ``torchvision.transforms.v2`` class a recipe may name, plus the ``ToTensor`` preset."""
    registry = Registry("transform")
    for name in sorted(dir(v2)):
        target = getattr(v2, name)
        if (inspect.isclass(target) and issubclass(target, v2.Transform) and target is not v2.Transform
                and not name.startswith("_") and name not in NOT_TRANSFORMS and name != TO_TENSOR):
            registry.add(name, target)
    registry.add(TO_TENSOR, _to_tensor, "ToImage + ToDtype(float32, scale=True): uint8 0..255 becomes float 0..1.")
    return registry


def _is_random(name: str) -> bool:
    """Whether the v2 class draws random numbers (it has random parameters or applies with a probability)."""
    if name == TO_TENSOR:
        return False
    target = getattr(v2, name)
    bases = {base.__name__ for base in target.__mro__}
    return (target.make_params is not v2.Transform.make_params or "_RandomApplyTransform" in bases
            or "_AutoAugmentBase" in bases or name == "GaussianNoise")


def dtype_of(value: Any) -> torch.dtype | None:
    """A torch dtype from recipe text (``float32``, ``torch.uint8``), or None for anything else."""
    if isinstance(value, torch.dtype):
        return value
    if not isinstance(value, str):
        return None
    text = value.removeprefix("torch.")
    return FLOAT_DTYPES.get(text) or INTEGER_DTYPES.get(text)


@dataclass
class Step:
    """One pipeline item: a v2 class (or ``ToTensor``) and its keyword arguments as the recipe gave them.

    ``path`` locates the item (``data.transforms.train[2]``); ``preset`` is ``imagenet`` or
    ``dataset`` for a Normalize whose mean/std are not filled in yet; ``filled_from`` the preset a
    filled-in Normalize came from (recorded in the run's data.json)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    preset: str | None = None
    filled_from: str | None = None

    @property
    def random(self) -> bool:
        return _is_random(self.name)

    @property
    def converts_to_float(self) -> bool:
        """Whether this step turns uint8 images into floats (what Normalize needs)."""
        if self.name == TO_TENSOR:
            return True
        if self.name in ("ToDtype", "ConvertImageDtype"):
            dtype = dtype_of(self.arguments.get("dtype", torch.float32))
            return dtype is not None and dtype.is_floating_point
        return False

    def build(self) -> v2.Transform:
        """The torchvision transform (recipe text such as ``dtype: float32`` turned into torch values)."""
        if self.preset is not None:
            raise ValueError(f"{self.path}: Normalize: {self.preset} has no mean/std yet")
        target = transform_registry().get(self.name).target
        return target(**{key: _torch_value(key, value) for key, value in self.arguments.items()})

    def item(self) -> Any:
        """The item as the resolved recipe writes it: ``Name`` or ``{Name: {argument: value}}``."""
        if self.preset is not None:
            return {self.name: self.preset}
        return {self.name: dict(self.arguments)} if self.arguments else self.name

    def describe(self) -> str:
        """Stable text of the step (for cache keys and comparisons)."""
        return json.dumps([self.name, self.arguments, self.preset], sort_keys=True, default=str)


def _torch_value(key: str, value: Any) -> Any:
    if key == "dtype":
        return dtype_of(value) or value
    if key == "interpolation" and isinstance(value, str):
        return value.lower()
    return value


def _floats(value: Any) -> list[float]:
    """A Normalize mean or std (one number or one per channel) as a list of floats."""
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)]


def describe_steps(steps: Iterable[Step]) -> str:
    """Stable text of a list of steps: the same steps always give the same text (cache keys)."""
    return "[" + ", ".join(step.describe() for step in steps) + "]"


@dataclass
class Pipeline:
    """The parsed steps of one pipeline; ``key`` is its recipe path (``data.transforms.eval``)."""

    steps: list[Step]
    key: str

    def items(self) -> list[Any]:
        return [step.item() for step in self.steps]

    def prefix_length(self) -> int:
        """How many leading steps form the deterministic uint8 prefix."""
        count = 0
        for step in self.steps:
            if step.name not in PREFIX_STEPS:
                break
            count += 1
        return count

    def normalize_index(self) -> int | None:
        """Position of the first Normalize step, or None."""
        return next((index for index, step in enumerate(self.steps) if step.name == "Normalize"), None)

    @property
    def normalization(self) -> dict[str, Any] | None:
        """``{"mean": [...], "std": [...]}`` of the last Normalize step with values (and ``"preset"``
        when a preset filled them in), or None."""
        for step in reversed(self.steps):
            if step.name == "Normalize" and step.preset is None:
                values: dict[str, Any] = {"mean": _floats(step.arguments.get("mean")),
                                          "std": _floats(step.arguments.get("std"))}
                if step.filled_from:
                    values["preset"] = step.filled_from
                return values
        return None

    def presets(self) -> set[str]:
        return {step.preset for step in self.steps if step.preset is not None}


# ----------------------------------------------------------------------------------- parsing


def _positional_names(entry: Entry) -> list[str]:
    return [name for name, p in entry.parameters().items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


class _Parser:
    """One walk over a pipeline list; collects every problem."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.registry = transform_registry()

    def problem(self, path: str, message: str, received: Any = NOTHING, hint: str = "",
                argument: str | None = None) -> None:
        self.problems.append(Problem(path, message, received, hint=hint, argument=argument))

    def pipeline(self, items: Any, key: str, evaluation: bool) -> Pipeline:
        if not isinstance(items, list):
            self.problem(key, "expected a list of transforms", items, hint="For example [ToTensor].")
            return Pipeline([], key)
        count = len(self.problems)
        steps = [step for index, item in enumerate(items)
                 if (step := self.item(item, join_path(key, index))) is not None]
        if len(self.problems) == count:
            self.check_order(steps, key, evaluation)
        return Pipeline(steps, key)

    def item(self, item: Any, path: str) -> Step | None:
        if isinstance(item, str):
            name, value, key_path = item, None, path
        elif isinstance(item, dict) and len(item) == 1:
            ((name, value),) = item.items()
            name = str(name)
            key_path = join_path(path, name)
        else:
            self.problem(path, "expected a transform name such as ToTensor, or a one-key mapping such as "
                         "{Resize: [32, 32]}", item, hint="Write each transform as its own list item.")
            return None
        entry = self.lookup(name, path)
        if entry is None:
            return None
        if entry.name == "Normalize" and isinstance(value, str):
            if value.lower() not in NORMALIZE_PRESETS:
                self.problem(key_path, "expected imagenet, dataset or {mean: [...], std: [...]}", value,
                             hint="imagenet: the ImageNet mean/std; dataset: the training split's mean/std.")
                return None
            return Step("Normalize", {}, path, preset=value.lower())
        arguments = self.arguments(entry, value, key_path)
        if arguments is None:
            return None
        count = len(self.problems)
        self.problems += entry.argument_problems(arguments, key_path)
        if "dtype" in arguments and dtype_of(arguments["dtype"]) is None:
            self.problem(join_path(key_path, "dtype"), "expected a torch dtype", arguments["dtype"], argument="dtype",
                         hint="For example float32 (with scale: true to map 0..255 to 0..1) or uint8.")
        if len(self.problems) > count:
            return None
        absent = entry.missing_arguments(arguments)
        if absent:
            example = "{Normalize: imagenet}" if entry.name == "Normalize" else \
                f"{{{entry.name}: {{{absent[0]}: ...}}}}"
            self.problem(path, f"{entry.name} needs {' and '.join(absent)}", name if value is None else value,
                         hint=f"For example {example}.")
            return None
        step = Step(entry.name, arguments, path)
        try:
            step.build()
        except (TypeError, ValueError, RuntimeError, KeyError) as error:
            self.problem(key_path, f"{entry.name} refuses these arguments: {error}", value,
                         hint=f"Check them against torchvision's documentation of {entry.name}.")
            return None
        return step

    def lookup(self, name: str, path: str) -> Entry | None:
        refused = next((key for key in NOT_TRANSFORMS if normalize_name(key) == normalize_name(name)), None)
        if refused is not None:
            self.problem(path, f"{refused} cannot be a pipeline step: {NOT_TRANSFORMS[refused]}", name)
            return None
        try:
            return self.registry.get(name)
        except UnknownName as error:
            hint = f"Did you mean '{error.suggestions[0]}'?" if error.suggestions else \
                "Names are torchvision.transforms.v2 classes such as Resize, RandomCrop or Normalize, or ToTensor."
            self.problem(path, f"unknown transform '{name}'", name, hint=hint)
            return None

    def arguments(self, entry: Entry, value: Any, path: str) -> dict[str, Any] | None:
        """The recipe's value of an item as keyword arguments (positional values named)."""
        if value is None:
            return {}
        if isinstance(value, dict):
            return {str(key): argument for key, argument in value.items()}
        names = _positional_names(entry)
        if not names:
            self.problem(path, f"{entry.name} takes no arguments", value, hint=f"Write it as a name: {entry.name}.")
            return None
        numbers = isinstance(value, list) and value and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if not isinstance(value, list) or (numbers and names[0] in SEQUENCE_FIRST):
            return {names[0]: value}
        if len(value) > len(names):
            self.problem(path, f"{entry.name} takes at most {len(names)} positional values ({', '.join(names)})",
                         value, hint=f"Give keyword arguments as a mapping, e.g. {{{entry.name}: {{{names[0]}: ...}}}}.")
            return None
        return dict(zip(names, value))

    def check_order(self, steps: list[Step], key: str, evaluation: bool) -> None:
        """Normalize after a float conversion; the pipeline ends with floats; eval has no randomness."""
        floats = False
        for step in steps:
            if step.name == "Normalize" and not floats:
                self.problem(step.path, "Normalize needs float images, but the images are still uint8 here",
                             step.item(), hint="Put ToTensor before it, e.g. [ToTensor, {Normalize: imagenet}].")
            if evaluation and step.random:
                self.problem(step.path, f"{step.name} is random: evaluation would differ from run to run",
                             step.item(), hint="Move it to data.transforms.train (augmentation).")
            floats = floats or step.converts_to_float
        if not floats:
            self.problem(key, "the pipeline never turns the uint8 images into floats", [s.item() for s in steps],
                         hint="Add ToTensor (after the Resize/crop steps), e.g. [ToTensor].")


def parse_pipeline(items: Any, key: str, evaluation: bool = False) -> tuple[Pipeline, list[Problem]]:
    """One pipeline list and its problems (located at ``key[i]``); ``evaluation`` forbids random steps."""
    parser = _Parser()
    pipeline = parser.pipeline(items, key, evaluation)
    return pipeline, parser.problems


def parse_transforms(transforms: Any, key: str = "data.transforms") -> tuple[Pipeline, Pipeline]:
    """The (train, eval) pipelines of a :class:`~trainlab.recipe.schema.Transforms` section; a missing
    train list is the eval list. Raises one :class:`TrainlabError` with every problem of both."""
    parser = _Parser()
    evaluation = parser.pipeline(transforms.eval, f"{key}.eval", evaluation=True)
    if transforms.train is None:
        train = Pipeline(list(evaluation.steps), evaluation.key)
    else:
        train = parser.pipeline(transforms.train, f"{key}.train", evaluation=False)
    if parser.problems:
        raise TrainlabError(problems=parser.problems)
    return train, evaluation


def shared_prefix(*pipelines: Pipeline) -> list[Step]:
    """The longest run of leading uint8 steps that every pipeline has in common: what a source applies
    once when it caches images, so all of them can start from the cache."""
    lengths = [pipeline.prefix_length() for pipeline in pipelines]
    prefix: list[Step] = []
    for position in range(min(lengths)):
        texts = {pipeline.steps[position].describe() for pipeline in pipelines}
        if len(texts) != 1:
            break
        prefix.append(pipelines[0].steps[position])
    return prefix


def fixes_size(steps: list[Step]) -> bool:
    """Whether images of any size leave ``steps`` with one fixed height and width: a Resize to
    [height, width] or a CenterCrop (every prefix step after it maps one size to one size)."""
    for step in steps:
        size = step.arguments.get("size")
        if step.name == "CenterCrop" or (step.name == "Resize" and isinstance(size, list) and len(size) == 2):
            return True
    return False


# ----------------------------------------------------------------------------------- presets


def imagenet_statistics(channels: int) -> tuple[list[float], list[float]]:
    """The ImageNet mean/std for ``channels`` channels: 3 as published, 1 the mean of the three."""
    if channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    if channels == 1:
        return [round(sum(IMAGENET_MEAN) / 3, 6)], [round(sum(IMAGENET_STD) / 3, 6)]
    raise ValueError(f"Normalize: imagenet needs 1- or 3-channel images, these have {channels} channels")


def fill_normalize(pipeline: Pipeline, preset: str, mean: list[float], std: list[float]) -> None:
    """Replace every ``Normalize: <preset>`` step of ``pipeline`` by the given mean/std."""
    for step in pipeline.steps:
        if step.preset == preset:
            step.arguments = {"mean": list(mean), "std": list(std)}
            step.preset = None
            step.filled_from = preset


def resolve_imagenet(pipeline: Pipeline, sample: torch.Tensor) -> list[Problem]:
    """Fill ``Normalize: imagenet`` steps with the values for the channel count images have where the
    step stands (found by running ``sample``, a uint8 (C, H, W) image, through the steps before it)."""
    image = sample
    with preserved_rng(sample.device):
        for step in pipeline.steps:
            if step.preset == "imagenet":
                channels = image.shape[-3]
                if channels not in (1, 3):
                    return [Problem(step.path, f"Normalize: imagenet needs 1- or 3-channel images, these have "
                                    f"{channels} channels", step.item(),
                                    hint="Give {Normalize: {mean: [...], std: [...]}} or use data.mode RGB or L.")]
                mean, std = imagenet_statistics(channels)
                step.arguments, step.preset = {"mean": mean, "std": std}, None
            if step.preset is None:
                image, problem = run_steps([step], image, "a sample image")
                if problem is not None:
                    return [problem]
    return []


def channel_statistics(batches: Iterable[torch.Tensor]) -> tuple[list[float], list[float], int]:
    """Per-channel mean and (population) std of float batches (B, C, H, W), accumulated in float64;
    also the number of images seen. Values are rounded to 6 decimals, as the recipe records them; a
    constant channel gets std 1 (it is only centred)."""
    total = squares = None
    pixels = images = 0
    for batch in batches:
        values = batch.to(torch.float64)
        sums = values.sum(dim=(0, 2, 3))  # (C,)
        total = sums if total is None else total + sums
        square_sums = values.square().sum(dim=(0, 2, 3))
        squares = square_sums if squares is None else squares + square_sums
        pixels += values.shape[0] * values.shape[2] * values.shape[3]
        images += values.shape[0]
    if total is None or squares is None:
        raise ValueError("no training images to compute Normalize: dataset from")
    mean = total / pixels
    std = (squares / pixels - mean.square()).clamp_min(0.0).sqrt()
    std = torch.where(std < 1e-6, torch.ones_like(std), std)  # a constant channel is only centred
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std], images


def inverse_normalize(batch: torch.Tensor, normalization: dict[str, Any] | None) -> torch.Tensor:
    """Undo a Normalize for display: ``batch`` (N, C, H, W) back to [0, 1] (clamped)."""
    batch = batch.detach().float()
    if normalization:
        mean = torch.tensor(normalization["mean"], dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
        std = torch.tensor(normalization["std"], dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
        batch = batch * std + mean
    return batch.clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------- applying pipelines


@contextmanager
def preserved_rng(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block that seeds and draws from torch's global RNG, then put the RNG back as it was,
    so augmentation never shifts training's random stream (dropout, initialisation)."""
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        yield


def apply_steps(steps: list[Step] | v2.Transform, image: torch.Tensor) -> torch.Tensor:
    """Run ``steps`` (or a built transform) on a uint8 or float image (C, H, W) or batch (B, C, H, W);
    returns a plain tensor."""
    transform = v2.Compose([step.build() for step in steps] or [v2.Identity()]) if isinstance(steps, list) else steps
    output = transform(tv_tensors.Image(image))
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the pipeline returned a {type(output).__name__}, not an image tensor")
    return output.as_subclass(torch.Tensor)


def batch_seed(seed: int, epoch: int, position: int) -> int:
    """The generator seed of one batch's vectorised augmentation: distinct per (seed, epoch, batch
    position), so a resumed epoch draws the same augmentation for its remaining batches."""
    return (sample_seed(seed, epoch, position) * 6_364_136_223_846_793_005 + 1_442_695_040_888_963_407) % (2**63 - 1)


def _padding(value: Any) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) from torchvision's padding forms: p, [p], [lr, tb], [l, t, r, b]."""
    if value is None:
        return (0, 0, 0, 0)
    if isinstance(value, int):
        return (value, value, value, value)
    values = [int(v) for v in value]
    if len(values) == 1:
        return (values[0], values[0], values[0], values[0])
    if len(values) == 2:
        return (values[0], values[1], values[0], values[1])
    return (values[0], values[1], values[2], values[3])


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    values = [int(v) for v in value]
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _source_index(coordinates: torch.Tensor, length: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Map coordinates of a padded image (any integers) to rows/columns of the unpadded one, as
    torchvision's padding modes do; also whether each coordinate lies inside the image."""
    inside = (coordinates >= 0) & (coordinates < length)
    if mode == "reflect" and length > 1:  # ... 2 1 | 0 1 2 ... L-1 | L-2 ...
        period = 2 * (length - 1)
        folded = coordinates.remainder(period)
        index = torch.where(folded < length, folded, period - folded)
    elif mode == "symmetric":  # ... 1 0 | 0 1 2 ... L-1 | L-1 L-2 ...
        period = 2 * length
        folded = coordinates.remainder(period)
        index = torch.where(folded < length, folded, period - 1 - folded)
    else:  # edge (and constant, whose outside values are masked afterwards)
        index = coordinates.clamp(0, length - 1)
    return index, inside


def random_crop_batch(batch: torch.Tensor, step: Step, generator: torch.Generator) -> torch.Tensor:
    """RandomCrop (with padding) of every image of ``batch`` (B, C, H, W) at its own random place,
    by two gathers (rows, then columns) from the unpadded images: no padded copy is made."""
    count, channels, height, width = batch.shape
    crop_h, crop_w = _size(step.arguments.get("size"))
    left, top, right, bottom = _padding(step.arguments.get("padding"))
    padded_h, padded_w = height + top + bottom, width + left + right
    if padded_h < crop_h or padded_w < crop_w:
        raise ValueError(f"RandomCrop size ({crop_h}, {crop_w}) is larger than the padded image "
                         f"({padded_h}, {padded_w})")
    mode = step.arguments.get("padding_mode", "constant")
    y = torch.randint(0, padded_h - crop_h + 1, (count,), generator=generator)  # (B,) top in padded coordinates
    x = torch.randint(0, padded_w - crop_w + 1, (count,), generator=generator)  # (B,)
    rows, rows_inside = _source_index(y[:, None] + torch.arange(crop_h) - top, height, mode)  # (B, h)
    cols, cols_inside = _source_index(x[:, None] + torch.arange(crop_w) - left, width, mode)  # (B, w)
    device = batch.device
    rows_index = rows.to(device)[:, None, :, None].expand(count, channels, crop_h, width)
    picked = torch.gather(batch, 2, rows_index)  # (B, C, h, W)
    cols_index = cols.to(device)[:, None, None, :].expand(count, channels, crop_h, crop_w)
    crops = torch.gather(picked, 3, cols_index)  # (B, C, h, w)
    if mode == "constant" and (left or top or right or bottom):
        inside = (rows_inside[:, :, None] & cols_inside[:, None, :]).to(device)[:, None]  # (B, 1, h, w)
        fill = torch.tensor(step.arguments.get("fill", 0) or 0, dtype=batch.dtype, device=device)
        crops = torch.where(inside, crops, fill)
    return crops


def random_flip_batch(batch: torch.Tensor, step: Step, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal / vertical flip of each image of ``batch`` (B, C, H, W) with probability p."""
    flip = torch.rand(batch.shape[0], generator=generator) < float(step.arguments.get("p", 0.5))  # (B,)
    dimension = -1 if step.name == "RandomHorizontalFlip" else -2
    return torch.where(flip.to(batch.device).view(-1, 1, 1, 1), batch.flip(dimension), batch)


def _vectorisable(step: Step) -> bool:
    if step.name in BATCH_STEPS:
        return True
    if step.name == "RandomCrop":
        fill = step.arguments.get("fill", 0)
        return (not step.arguments.get("pad_if_needed", False) and (fill is None or isinstance(fill, (int, float)))
                and step.arguments.get("padding_mode", "constant") in ("constant", "edge", "reflect", "symmetric"))
    return step.name in VECTOR_RANDOM_STEPS


class BatchPipeline:
    """Steps applied to images served from a uint8 cache (or decoded one by one).

    - Vectorised on the whole batch (on whatever device it is) when every step is a batch-safe
      deterministic one (ToTensor, ToDtype, Normalize, Resize, ...) or one of RandomCrop,
      RandomHorizontalFlip, RandomVerticalFlip; the randomness comes from a ``torch.Generator``
      seeded with :func:`batch_seed`, so the global RNG is never touched.
    - Otherwise image by image with torchvision, each image's randomness seeded with
      :func:`~trainlab.data.loaders.sample_seed` (the same seed whichever worker, batch or resume
      point draws it) inside :func:`preserved_rng`.
    """

    def __init__(self, steps: list[Step]):
        self.steps = list(steps)
        self.random = any(step.random for step in self.steps)
        self.vectorised = all(_vectorisable(step) for step in self.steps)
        self.built = [step.build() for step in self.steps]
        self.transform = v2.Compose(self.built or [v2.Identity()])

    @property
    def normalization(self) -> dict[str, list[float]] | None:
        """Mean/std of the last Normalize step (what :func:`inverse_normalize` undoes), or None."""
        return Pipeline(self.steps, "").normalization

    def describe(self) -> str:
        """What runs and how, for notes: ``vectorised: RandomCrop, ToTensor`` or ``per image: ...``."""
        kind = "vectorised" if self.vectorised else "per image, seeded per sample"
        return f"{kind}: {', '.join(step.name for step in self.steps) or 'nothing'}"

    def __call__(self, images: torch.Tensor, indices: torch.Tensor, seed: int, epoch: int,
                 position: int) -> torch.Tensor:
        """``images`` (B, C, H, W) at dataset ``indices`` (B,), batch ``position`` of ``epoch`` -> (B, C', H', W')."""
        if self.vectorised:
            generator = torch.Generator().manual_seed(batch_seed(seed, epoch, position))
            batch = images
            for step, transform in zip(self.steps, self.built):
                if step.name == "RandomCrop":
                    batch = random_crop_batch(batch, step, generator)
                elif step.name in ("RandomHorizontalFlip", "RandomVerticalFlip"):
                    batch = random_flip_batch(batch, step, generator)
                else:
                    batch = apply_steps(transform, batch)
            return batch
        outputs = [self.sample(image, sample_seed(seed, epoch, int(index)))
                   for image, index in zip(images, indices.tolist())]
        return torch.stack(outputs)

    def sample(self, image: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """One image (C, H, W) through the steps; random steps seeded with ``seed`` (the global RNG
        is restored afterwards)."""
        if not self.random:
            return apply_steps(self.transform, image)
        with preserved_rng(image.device):
            torch.manual_seed(seed if seed is not None else 0)
            return apply_steps(self.transform, image)


def run_steps(steps: list[Step], image: torch.Tensor, what: str) -> tuple[torch.Tensor, Problem | None]:
    """Run ``steps`` one by one on ``image`` (C, H, W), seeded and with the global RNG restored; the first
    step that fails becomes a Problem at its path naming ``what`` the image is."""
    with preserved_rng(image.device):
        torch.manual_seed(0)
        for step in steps:
            try:
                image = apply_steps([step], image)
            except (TypeError, ValueError, RuntimeError, IndexError) as error:
                return image, Problem(step.path, f"{step.name} fails on {what}: {error}", step.item(),
                                      hint="Check the step's arguments and its place in the pipeline.")
    return image, None


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BatchPipeline",
    "Pipeline",
    "Step",
    "apply_steps",
    "batch_seed",
    "channel_statistics",
    "describe_steps",
    "fill_normalize",
    "fixes_size",
    "imagenet_statistics",
    "inverse_normalize",
    "parse_pipeline",
    "parse_transforms",
    "preserved_rng",
    "resolve_imagenet",
    "run_steps",
    "shared_prefix",
    "transform_registry",
]
