"""Shared helpers: tiny recipes on synthetic data that train in well under a second."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch


def tiny_recipe(**sections: Any) -> dict[str, Any]:
    """A classification recipe on 96 synthetic samples and a ~200-parameter MLP; sections override."""
    recipe: dict[str, Any] = {
        "name": "tiny",
        "seed": 3,
        "data": {
            "source": "synthetic",
            "task": "classification",
            "shape": [6],
            "num_samples": 96,
            "num_classes": 3,
            "batch_size": 8,
            "split": {"valid": 0.25},
        },
        "model": {"layers": [{"Linear": {"out_features": 12}}, "Tanh", {"Linear": {"out_features": "num_classes"}}]},
        "loss": {"name": "CrossEntropyLoss"},
        "optimizer": {"name": "SGD", "lr": 0.1},
        "train": {"epochs": 3, "log_every": 2, "device": "cpu", "precision": "32"},
        "log": {"tensorboard": False, "plots": False, "progress": "none"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict):
            merged = copy.deepcopy(recipe[key])
            merged.update(value)
            recipe[key] = merged
        else:
            recipe[key] = value
    return recipe


def same_weights(left: torch.nn.Module, right: torch.nn.Module) -> bool:
    """Bitwise equality of two models' state dicts, entry by entry in order (names may differ:
    a trainlab layer stack nests its layers, a hand-written nn.Sequential does not)."""
    a, b = list(left.state_dict().values()), list(right.state_dict().values())
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x.cpu(), y.cpu()) for x, y in zip(a, b))


def without_time(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in record.items() if k != "time"} for record in records]


@pytest.fixture
def recipe_file(tmp_path):
    """Write a recipe (YAML text) to a file and return its path."""

    def write(text: str, name: str = "recipe.yaml"):
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where CUDA is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
