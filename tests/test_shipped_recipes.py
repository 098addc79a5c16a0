"""Every shipped recipe on the embedded digits validates and trains two steps; the list is pinned so
none can go missing. The recipes on real data are trained to their accuracy in test_data_recipes.py."""

from __future__ import annotations

import pytest

import trainlab
from trainlab.cli import SHIPPED

RECIPES = sorted(path for path in SHIPPED.glob("*.yaml") if path.stem.startswith("digits-"))

# digits: 1,797 images; valid 0.5 leaves 898 for training, i.e. two batches of 449
TWO_STEPS = [
    "train.epochs=1", "data.split.valid=0.5", "data.batch_size=449", "train.device=cpu",
    "log.tensorboard=false", "log.plots=false", "log.progress=none",
]


def test_the_shipped_recipes_are_found():
    assert sorted(path.stem for path in SHIPPED.glob("*.yaml")) == [
        "digits-custom-layers", "digits-lenet", "digits-mlp", "fashion-mnist-lenet", "penguins-mlp",
        "rotten-tomatoes-embeddingbag",
    ]


@pytest.mark.parametrize("path", RECIPES, ids=[path.stem for path in RECIPES])
def test_shipped_recipe_validates_and_trains_two_steps(path, tmp_path):
    trainlab.check(trainlab.load_recipe(path))
    run = trainlab.train(trainlab.load_recipe(path, overrides=TWO_STEPS), out=tmp_path / "run")
    assert run.result.state.step == 2
    assert run.status == "finished"
    assert len(run.records("valid")) == 1
