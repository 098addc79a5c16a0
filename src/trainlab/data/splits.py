"""Seeded, stratified train / valid / test splits of in-memory tensors."""

from __future__ import annotations

from typing import Any

import torch

from trainlab.recipe.errors import TrainlabError

SplitTensors = dict[str, tuple[torch.Tensor, torch.Tensor]]  # split name -> (inputs, targets)


def split_indices(
    targets: torch.Tensor, valid: float, test: float, seed: int, stratify: bool
) -> dict[str, torch.Tensor]:
    """Index tensors of each split. Stratified by class when ``stratify`` (scikit-learn's
    ``train_test_split``), deterministic for a seed; splits with fraction 0 are absent."""
    if valid <= 0 and test <= 0:  # nothing to split: scikit-learn (about 1 s to import) is not needed
        return {"train": torch.arange(len(targets))}
    from sklearn.model_selection import train_test_split

    indices = torch.arange(len(targets)).numpy()
    labels = targets.numpy() if stratify else None
    result: dict[str, torch.Tensor] = {}
    try:
        if test > 0:
            indices, test_indices = train_test_split(indices, test_size=test, random_state=seed, stratify=labels)
            result["test"] = torch.from_numpy(test_indices).sort().values
            labels = targets[torch.from_numpy(indices)].numpy() if stratify else None
        if valid > 0:
            share = valid / (1.0 - test)
            indices, valid_indices = train_test_split(indices, test_size=share, random_state=seed, stratify=labels)
            result["valid"] = torch.from_numpy(valid_indices).sort().values
    except ValueError as error:
        raise TrainlabError(
            f"data.split: cannot split {len(targets)} samples into valid={valid}, test={test}: {error}. "
            "Use smaller fractions or more data"
        ) from None
    result["train"] = torch.from_numpy(indices).sort().values
    return result


def split_tensors(
    inputs: torch.Tensor, targets: torch.Tensor, valid: float, test: float, seed: int, stratify: bool
) -> SplitTensors:
    """``{"train": (x, y), "valid": (x, y), ...}`` by :func:`split_indices`; with nothing held out,
    the training split is the tensors themselves (no copy of the whole dataset)."""
    indices = split_indices(targets, valid, test, seed, stratify)
    if len(indices) == 1:
        return {"train": (inputs, targets)}
    return {name: (inputs[index], targets[index]) for name, index in indices.items()}


def held_valid(config: Any, notes: list[str] | None = None, what: str = "samples") -> float:
    """The validation fraction to hold out of the training data: ``split.valid``, or none with
    ``data.merge_valid`` (the test split, drawn first, stays the same rows), said in ``notes``."""
    if not getattr(config, "merge_valid", False):
        return config.split.valid
    if notes is not None and config.split.valid > 0:
        notes.append(f"data.merge_valid: the split.valid fraction ({config.split.valid}) is not held out: those "
                     f"{what} train too, and there is no validation split")
    return 0.0
