"""What evaluation works on: a split's predictions next to its targets, in the data's own units."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Predictions:
    """Predictions of a model on one split.

    Classification: ``targets`` and ``predicted`` are class indices (N,), ``probabilities`` (N, C)
    rows summing to 1 (ordered as the predicted class is chosen), ``class_names`` C names.
    Regression: ``targets`` and ``predicted`` are (N, k) floats in the original target units (a
    ``target_transform`` undone). ``ids`` are the id column's values (tables and text) or file
    paths (images), when the data have them; ``images`` (N, C, H, W) in [0, 1] for image data,
    for pictures of the mistakes.
    """

    task: str
    targets: torch.Tensor
    predicted: torch.Tensor
    probabilities: torch.Tensor | None = None
    class_names: list[str] | None = None
    ids: list[Any] | None = None
    images: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.targets)
