"""Every shipped recipe validates and trains two steps; the count is pinned so none can go missing."""

from __future__ import annotations

import pytest

import trainlab
from trainlab.cli import SHIPPED

RECIPES = sorted(SHIPPED.glob("*.yaml"))

# digits: 1,797 images; valid 0.5 leaves 898 for training, i.e. two batches of 449
TWO_STEPS = [
    "train.epochs=1", "data.split.valid=0.5", "data.batch_size=449", "train.device=cpu",
    "log.tensorboard=false", "log.plots=false", "log.progress=none",
]


def test_the_shipped_recipes_are_found():
    assert [path.stem for path in RECIPES] == ["digits-custom-layers", "digits-lenet", "digits-mlp"]


@pytest.mark.parametrize("path", RECIPES, ids=[path.stem for path in RECIPES])
def test_shipped_recipe_validates_and_trains_two_steps(path, tmp_path):
    trainlab.check(trainlab.load_recipe(path))
    run = trainlab.train(trainlab.load_recipe(path, overrides=TWO_STEPS), out=tmp_path / "run")
    assert run.result.state.step == 2
    assert run.status == "finished"
    assert len(run.records("valid")) == 1
