"""What a run shows in TensorBoard beyond its scalars: histograms, the model graph, the first
batch of training images, the embedding projector and the hyperparameters.

Each function writes through the run's one ``SummaryWriter``, so everything lands in the same
``tensorboard/`` folder and TensorBoard shows a single run. :class:`~trainlab.train.callbacks.TensorBoardLogger`
decides when each is written; this module only knows how. Nothing here may fail training: what
cannot be written (a model that cannot be traced, features of an unusual model) is reported as a
text entry under ``warnings/<topic>`` instead.

TensorBoard itself is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from trainlab.data.spec import DataBundle, DataSpec, Loader

GRAPH_SAMPLES = 8  # the model is traced on at most this many samples of the first training batch
EMBEDDING_SAMPLES = 1_000  # the projector shows at most the first 1,000 validation samples
THUMBNAIL_SIZE = 32  # projector thumbnails are scaled down to at most 32 pixels a side


def warn(writer: Any, topic: str, message: str, step: int = 0) -> None:
    """Record that something could not be written, as text under ``warnings/<topic>``."""
    writer.add_text(f"warnings/{topic}", message, step)


def log_scalars(writer: Any, values: dict[str, float], step: int) -> None:
    """Scalars ``tag -> value`` at ``step``, all in one event: what ``add_scalar`` per tag writes, for
    a third of its cost (a log record is written every few optimizer steps, while training waits)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(value)) for tag, value in values.items()])
    writer.file_writer.add_summary(summary, step)


def _first_line(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:limit] if text else ''}"


# ----------------------------------------------------------------------------------- histograms


def log_histograms(writer: Any, prefix: str, tensors: Iterable[tuple[str, torch.Tensor | None]], step: int) -> None:
    """One histogram ``<prefix>/<name>`` per tensor, over its finite values (a skipped mixed-precision
    step leaves infinite gradients); tensors that are missing or have no finite value are left out."""
    for name, tensor in tensors:
        if tensor is None:
            continue
        values = tensor.detach().float().flatten().cpu()
        values = values[torch.isfinite(values)]
        if values.numel():
            writer.add_histogram(f"{prefix}/{name}", values, step)


def log_weights(writer: Any, model: nn.Module, step: int) -> None:
    """``weights/<parameter name>`` for every parameter."""
    log_histograms(writer, "weights", model.named_parameters(), step)


def log_gradients(writer: Any, model: nn.Module, step: int) -> None:
    """``gradients/<parameter name>`` for every parameter that has a gradient (call before zero_grad)."""
    log_histograms(writer, "gradients", ((name, p.grad) for name, p in model.named_parameters()), step)


# ----------------------------------------------------------------------------------- first batch
#
# The graph and the image grid are made from the first batch the loop itself draws (the
# ``on_first_batch`` hook) rather than from a separate pass over the training loader: drawing a
# batch early would create a DataLoader's persistent worker iterator outside training, and the
# global RNG draw that creation makes would then be missing from training's random stream.


def is_image_data(spec: DataSpec) -> bool:
    """Float inputs of three dimensions (channels, height, width)."""
    return len(spec.input_shape) == 3 and spec.input_dtype.is_floating_point


def cpu_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the CPU, made without a second copy on the model's device."""
    memo: dict[int, Any] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        clone = tensor.detach().to("cpu", copy=True)
        memo[id(tensor)] = nn.Parameter(clone, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else clone
    return copy.deepcopy(model, memo)


def log_graph(writer: Any, model: nn.Module, inputs: torch.Tensor) -> bool:
    """The model graph (``add_graph``), traced on a CPU copy of the model with the first GRAPH_SAMPLES
    of ``inputs``, so the model itself, its device and the RNG are untouched. A model that cannot be
    traced gets a ``warnings/graph`` text instead; returns whether the graph was written."""
    from trainlab.data.transforms import preserved_rng

    try:
        inputs = inputs[:GRAPH_SAMPLES].detach().cpu()
        with preserved_rng(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # tracer chatter
            writer.add_graph(cpu_copy(model), inputs)
    except Exception as error:  # noqa: BLE001 - any model may fail to trace; training goes on
        warn(writer, "graph", f"The model graph could not be traced, so TensorBoard shows none ({_first_line(error)}).")
        return False
    return True


def log_batch_images(writer: Any, inputs: torch.Tensor, data: DataBundle) -> bool:
    """``train/batch``: the first training batch ``inputs`` as served (augmented), mapped back to
    [0, 1] (undoing the training pipeline's Normalize), as one grid at step 0. Only for image data;
    returns whether it was written."""
    if not is_image_data(data.spec) or inputs.dim() != 4:
        return False
    try:
        from torchvision.utils import make_grid

        from trainlab.data.transforms import inverse_normalize

        images = inverse_normalize(inputs.detach().cpu(), _normalization(data.train, data.spec))
        writer.add_image("train/batch", make_grid(images, nrow=8), 0)
    except Exception as error:  # noqa: BLE001 - a picture of the data is never worth a failed run
        warn(writer, "images", f"The first training batch could not be shown ({_first_line(error)}).")
        return False
    return True


# ----------------------------------------------------------------------------------- embeddings


def penultimate_layer(model: nn.Module, inputs: torch.Tensor) -> nn.Module | None:
    """The module whose *input* is the model's penultimate-layer features.

    The rule: run ``inputs`` through the model and take the last-called module that has parameters
    of its own and whose output is the very tensor the model returns (the final ``Linear`` of a
    classifier, a torchvision model's ``fc`` or ``head``, whatever its name). ``None`` when no such
    module exists, e.g. when an output activation follows the last layer; then the features are the
    model's output itself.
    """
    outputs: dict[nn.Module, Any] = {}

    def remember(module: nn.Module, args: Any, output: Any) -> None:
        outputs.pop(module, None)  # re-insert: the dict keeps the order of the last calls
        outputs[module] = output

    handles = [module.register_forward_hook(remember) for module in model.modules()
               if next(module.parameters(recurse=False), None) is not None]
    try:
        result = model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    matches = [module for module, output in outputs.items() if output is result]
    return matches[-1] if matches else None


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _normalization(loader: Loader, spec: DataSpec) -> dict[str, Any] | None:
    """The Normalize a loader's image pipeline applied (the data's normalization otherwise)."""
    pipeline = getattr(loader, "transform", None) or getattr(getattr(loader, "dataset", None), "transform", None)
    return getattr(pipeline, "normalization", None) if pipeline is not None else spec.normalization


@torch.inference_mode()
def embedding_features(
    model: nn.Module, loader: Loader, limit: int = EMBEDDING_SAMPLES
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Penultimate-layer features (see :func:`penultimate_layer`) of the first ``limit`` samples of
    ``loader``, with their targets and inputs, all on the CPU: ``(features (N, D), targets, inputs)``."""
    was_training = model.training
    model.eval()
    device = _model_device(model)
    features: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    inputs_seen: list[torch.Tensor] = []
    captured: dict[str, torch.Tensor] = {}
    handle = None
    try:
        loader.set_epoch(0)
        for inputs, batch_targets in loader:
            inputs = inputs.to(device)
            if handle is None:
                layer = penultimate_layer(model, inputs)
                if layer is not None:
                    handle = layer.register_forward_pre_hook(lambda module, args: captured.__setitem__("x", args[0]))
            output = model(inputs)
            batch_features = captured.pop("x") if handle is not None else output
            features.append(batch_features.detach().float().flatten(1).cpu())
            targets.append(batch_targets.detach().cpu())
            inputs_seen.append(inputs.detach().cpu())
            if sum(len(batch) for batch in features) >= limit:
                break
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    return torch.cat(features)[:limit], torch.cat(targets)[:limit], torch.cat(inputs_seen)[:limit]


def label_names(targets: torch.Tensor, spec: DataSpec) -> list[str]:
    """One label per sample: its class name for classification, the value(s) for regression."""
    names = [" ".join(str(name).split()) for name in spec.class_names or []]  # one line, no tabs: a TSV cell
    if spec.task == "classification" and targets.dim() == 1:
        return [names[index] if 0 <= index < len(names) else str(index) for index in targets.long().tolist()]
    return [" ".join(f"{value:.4g}" for value in row) for row in targets.float().reshape(len(targets), -1).tolist()]


def thumbnails(images: torch.Tensor, normalization: dict[str, Any] | None) -> torch.Tensor:
    """Images (N, C, H, W) mapped back to [0, 1] and scaled down to at most THUMBNAIL_SIZE a side."""
    from trainlab.data.transforms import inverse_normalize

    images = inverse_normalize(images, normalization)
    height, width = images.shape[-2:]
    scale = THUMBNAIL_SIZE / max(height, width)
    if scale < 1:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        images = torch.nn.functional.interpolate(images, size=size, mode="bilinear", antialias=True).clamp(0.0, 1.0)
    return images


def log_embeddings(writer: Any, model: nn.Module, data: DataBundle, step: int, tag: str = "features") -> bool:
    """The embedding projector (``add_embedding``) for the penultimate-layer features of the first
    EMBEDDING_SAMPLES validation samples, labelled with their class names and, for image data,
    shown as thumbnails. Written into the run's folder (``projector_config.pbtxt`` and
    ``<step>/<tag>/``); sequence tasks (one label per token) and runs without a validation split
    are skipped. Returns whether it was written."""
    spec = data.spec
    if data.valid is None or spec.task == "sequence":
        return False
    try:
        from trainlab.data.transforms import preserved_rng

        with preserved_rng():
            features, targets, inputs = embedding_features(model, data.valid)
        if not torch.isfinite(features).all():
            raise ValueError("the features are not finite")
        images = thumbnails(inputs, _normalization(data.valid, spec)) if is_image_data(spec) else None
        with contextlib.redirect_stdout(io.StringIO()):  # "embedding dir exists": a resumed run ending at that step
            writer.add_embedding(features, metadata=label_names(targets, spec), label_img=images,
                                 global_step=step, tag=tag)
    except Exception as error:  # noqa: BLE001 - the run has finished; the projector is optional
        warn(writer, "embeddings", f"The embedding projector was not written ({_first_line(error)}).", step)
        return False
    return True


# ----------------------------------------------------------------------------------- hyperparameters


def flatten_hparams(values: dict[str, Any], prefix: str = "") -> dict[str, int | float | str | bool]:
    """A nested recipe as dotted keys (``optimizer.lr``); values other than int, float, str and bool
    (lists, None, empty sections) become their JSON text."""
    flat: dict[str, int | float | str | bool] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_hparams(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)) and not (isinstance(value, float) and not math.isfinite(value)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


def log_hparams(writer: Any, recipe: dict[str, Any], metrics: dict[str, float], step: int) -> None:
    """The hyperparameters (the flattened recipe) with ``metrics`` (tag -> value), in the writer's own
    run: the hparams plugin's summaries go through the writer's file writer (``add_hparams`` would
    make a separate sub-run), and each metric is also a scalar at ``step``."""
    from torch.utils.tensorboard.summary import hparams

    for summary in hparams(flatten_hparams(recipe), metrics):
        writer.file_writer.add_summary(summary, step)
    log_scalars(writer, metrics, step)
