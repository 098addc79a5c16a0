"""trainlab: a declarative PyTorch training lab.

    import trainlab
    recipe = trainlab.load_recipe("recipes/digits-lenet.yaml", overrides=["train.epochs=2"])
    run = trainlab.train(recipe, out="runs/try")
    run.folder, run.metrics, run.model

The heavy parts (torch, the training stack) load on first use, so ``import trainlab`` is quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from trainlab.pipeline import Run, check, resume, train
    from trainlab.recipe import LoadedRecipe, Recipe, RecipeError, TrainlabError, load_recipe

_LAZY = {
    "load_recipe": "trainlab.recipe",
    "LoadedRecipe": "trainlab.recipe",
    "Recipe": "trainlab.recipe",
    "RecipeError": "trainlab.recipe",
    "TrainlabError": "trainlab.recipe",
    "resume": "trainlab.pipeline",
    "check": "trainlab.pipeline",
    "Run": "trainlab.pipeline",
}

__all__ = ["LoadedRecipe", "Recipe", "RecipeError", "Run", "TrainlabError", "__version__", "check", "load_recipe",
           "resume", "train"]


def __getattr__(name: str) -> Any:
    if name == "train":  # the package trainlab.train, callable as trainlab.train(recipe, out=...)
        import importlib

        return importlib.import_module("trainlab.train")
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trainlab' has no attribute '{name}'")
