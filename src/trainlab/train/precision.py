"""Devices and numeric precision, chosen by plain strings.

``32`` trains in float32; ``16-mixed`` runs the forward pass under float16 autocast and always
uses a GradScaler; ``bf16-mixed`` uses bfloat16 autocast and never a scaler; ``auto`` picks
``bf16-mixed`` on a CUDA GPU that supports it and ``32`` everywhere else.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, ContextManager

import torch

from trainlab.recipe.errors import TrainlabError

AUTOCAST_DTYPES = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def choose_device(name: str) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainlabError(f"train.device: '{name}' was asked for but no CUDA GPU is available. Use device: auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise TrainlabError(
            f"train.device: '{name}' does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise TrainlabError("train.device: 'mps' was asked for but Apple's MPS backend is not available. Use auto or cpu")
    return device


@dataclass
class Precision:
    """How the forward pass is cast and how gradients are scaled."""

    name: str  # "32", "16-mixed" or "bf16-mixed"
    device: torch.device
    scaler: Any = field(default=None, repr=False)  # torch.amp.GradScaler for 16-mixed

    @property
    def dtype(self) -> torch.dtype | None:
        return AUTOCAST_DTYPES.get(self.name)

    def autocast(self) -> ContextManager[Any]:
        """The forward pass's context; the object can be entered again and again (not nested)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients to their true scale before clipping."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Step the optimizer; False when the scaler skipped the step (inf/NaN gradients).

        Only ``16-mixed`` needs to know, and reading the scale is its one host sync per step.
        """
        if self.scaler is None:
            optimizer.step()
            return True
        scale_before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= scale_before

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def choose_precision(name: str, device: torch.device) -> Precision:
    if name == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        name = "bf16-mixed" if bf16 else "32"
    if name == "bf16-mixed" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise TrainlabError("train.precision: this GPU does not support bfloat16. Use precision: 16-mixed or 32")
    scaler = torch.amp.GradScaler(device.type) if name == "16-mixed" else None
    return Precision(name, device, scaler)
