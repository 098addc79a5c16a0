"""How the device runs the model fast: memory format, torch.compile and the CUDA kernel switches.

- ``train.channels_last``: the model's 4-D weights and every 4-D batch in channels-last order, the
  layout tensor-core convolutions read directly (no transposes around each cuDNN call).
- ``train.compile``: ``torch.compile`` of the model (``true`` = mode ``default``). Compilation
  happens inside the first steps; fit() reports that warm-up apart from the steady-state throughput.
  Checkpoints, histograms and evaluation always see the plain module (:func:`distributed.unwrap`).
- ``train.deterministic`` / ``train.tf32``: the process-wide CUDA switches (cuDNN autotuning,
  deterministic algorithms, TF32 tensor cores) are set for the length of a training run and put
  back afterwards, so a Python caller's own settings survive ``trainlab.train``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

import torch

from trainlab.recipe.errors import Problem, TrainlabError
from trainlab.recipe.schema import Recipe, TrainConfig

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUBLAS_DETERMINISTIC = ":4096:8"  # cuBLAS workspace setting that makes its reductions repeatable


def memory_format(config: TrainConfig) -> torch.memory_format:
    """The memory format 4-D batches are moved to the device in."""
    return torch.channels_last if config.channels_last else torch.preserve_format


def to_device(batch: torch.Tensor, device: torch.device, layout: torch.memory_format) -> torch.Tensor:
    """One batch on the device, without blocking on a pinned host tensor; 4-D image batches in
    ``layout`` (channels-last when asked for; a no-op for batches already there)."""
    if layout is torch.channels_last and batch.dim() == 4:
        return batch.to(device, non_blocking=True, memory_format=layout)
    return batch.to(device, non_blocking=True)


def compile_mode(config: TrainConfig) -> str | None:
    """The torch.compile mode a recipe asks for, or None for eager execution."""
    if config.compile is False:
        return None
    return "default" if config.compile is True else str(config.compile)


def prepare_model(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.nn.Module:
    """``model`` on ``device`` in the recipe's memory format (in place: the same module object)."""
    if config.channels_last:
        return model.to(device, memory_format=torch.channels_last)
    return model.to(device)


def compiled(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    """``torch.compile(model, mode=...)`` when the recipe asks for it, else ``model`` itself. The
    compiled wrapper shares the module's parameters; nothing is compiled until the first call."""
    mode = compile_mode(config)
    if mode is None:
        return model
    return torch.compile(model, mode=mode)


def problems(recipe: Recipe, input_shape: tuple[int, ...], device: torch.device | None) -> list[Problem]:
    """Speed options that cannot work with this data or on this machine, as recipe problems."""
    found: list[Problem] = []
    train = recipe.train
    if train.channels_last and len(input_shape) != 3:
        shape = "x".join(str(size) for size in input_shape)
        found.append(Problem(
            "train.channels_last", f"channels-last applies to image batches (B, C, H, W); this data gives samples "
            f"of shape ({shape})", train.channels_last, hint="Remove train.channels_last for this data."))
    if compile_mode(train) is not None and device is not None and device.type == "cpu" and _cpp_compiler() is None:
        found.append(Problem(
            "train.compile", "torch.compile on the CPU generates C++ and needs a C++ compiler, and none was found "
            "(looked for $CXX, g++, c++, clang++)", train.compile,
            hint="Install one (e.g. `apt-get install g++`), or set train.compile: false."))
    return found


def _cpp_compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


@contextlib.contextmanager
def kernel_settings(config: TrainConfig, precision: str, device: torch.device, fixed_shapes: bool) -> Iterator[None]:
    """The CUDA kernel switches for one training run, restored on exit.

    - cuDNN autotuning (``cudnn.benchmark``) when batches have fixed shapes and determinism is not
      asked for: the fastest convolution algorithm is measured once per shape, in the first steps.
    - ``deterministic``: deterministic algorithms only (an op without one warns), no autotuning, and
      cuBLAS's repeatable workspace, so a GPU run repeats bit for bit.
    - TF32 tensor cores for float32 matrix products and convolutions: ``true`` both, ``false``
      neither (full float32); ``auto`` both under mixed precision (the float32 work left outside
      autocast), and PyTorch's own defaults under precision 32 (TF32 convolutions, full-precision
      matrix products), so a recipe never runs slower kernels than a plain PyTorch loop.
    CPU runs are deterministic already and need none of this; there it changes nothing.
    """
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    saved = (cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if config.tf32 == "auto":
        tf32 = (True, True) if precision != "32" else saved[2:4]
    else:
        tf32 = (bool(config.tf32), bool(config.tf32))
    try:
        cudnn.benchmark = fixed_shapes and not config.deterministic
        cudnn.deterministic = config.deterministic
        cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        if config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
            torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[:4]
        torch.use_deterministic_algorithms(saved[4], warn_only=saved[5])


def compile_failure(error: BaseException) -> TrainlabError | None:
    """A clear error for a torch.compile failure (missing toolchain, unsupported model), else None."""
    names = {klass.__name__ for klass in type(error).__mro__}
    if not names & {"BackendCompilerFailed", "InternalTorchDynamoError", "Unsupported", "TorchRuntimeError"}:
        return None
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return TrainlabError(
        f"train.compile: torch.compile could not compile this model ({type(error).__name__}: {first_line[:300]}). "
        "Set train.compile: false to train it eagerly")

