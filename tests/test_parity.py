"""trainlab.train reproduces a hand-written PyTorch loop bit for bit on CPU fp32."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import trainlab
from trainlab.data import build_data
from trainlab.recipe import recipe_from_data

from conftest import same_weights, tiny_recipe
from reference_loop import reference_fit


def _reference(recipe: dict, **options) -> nn.Module:
    config = recipe_from_data(recipe).recipe
    data = build_data(config.data, config.seed)
    torch.manual_seed(config.seed)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))
    return reference_fit(
        model, data.train.inputs, data.train.targets, seed=config.seed, epochs=config.train.epochs,
        batch_size=config.data.batch_size, lr=config.optimizer.lr, **options,
    )


CASES = {
    "plain-sgd": ({}, {}, {}),
    "momentum-weight-decay-no-decay": (
        {"momentum": 0.9, "weight_decay": 0.01, "no_decay": ["bias"]},
        {},
        {"momentum": 0.9, "weight_decay": 0.01, "no_decay_bias": True},
    ),
    "accumulate-4-partial-window": ({}, {"accumulate": 4}, {"accumulate": 4}),
    "clip-grad-norm": ({}, {"clip_grad_norm": 0.05}, {"clip_grad_norm": 0.05}),
    "clip-grad-value": ({}, {"clip_grad_value": 0.01}, {"clip_grad_value": 0.01}),
    # a recipe that names an implementation switch gets torch's own choice, not the fused default
    "torch-default-implementation": (
        {"momentum": 0.9, "weight_decay": 0.01, "fused": False},
        {},
        {"momentum": 0.9, "weight_decay": 0.01, "fused": False},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fit_matches_hand_written_loop(case, tmp_path):
    optimizer, train, reference = CASES[case]
    recipe = tiny_recipe(optimizer={"name": "SGD", "lr": 0.1, **optimizer}, train=train)
    # 72 training samples in batches of 8: 9 batches; with accumulate 4 the last window holds one batch.
    run = trainlab.train(recipe, out=tmp_path / "run")
    expected = _reference(recipe, **reference)
    assert same_weights(run.model, expected)


def test_parity_detects_a_different_update(tmp_path):
    """The comparison is sharp: one extra momentum term breaks bitwise equality."""
    recipe = tiny_recipe(optimizer={"name": "SGD", "lr": 0.1, "momentum": 0.5})
    run = trainlab.train(recipe, out=tmp_path / "run")
    assert not same_weights(run.model, _reference(recipe))


def test_fused_and_default_implementations_differ_here(tmp_path):
    """The case above is not vacuous: on this data torch's fused and default SGD are not bitwise
    equal, so each parity case pins which one trainlab ran."""
    recipe = tiny_recipe(optimizer={"name": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01})
    run = trainlab.train(recipe, out=tmp_path / "run")
    assert not same_weights(run.model, _reference(recipe, momentum=0.9, weight_decay=0.01, fused=False))
    assert json.loads((run.folder / "status.json").read_text())["fused_optimizer"] is True
    opted_out = tiny_recipe(optimizer={**recipe["optimizer"], "foreach": False})
    run = trainlab.train(opted_out, out=tmp_path / "opted-out")
    assert json.loads((run.folder / "status.json").read_text())["fused_optimizer"] is False


def test_accumulation_equals_the_larger_batch(tmp_path):
    """batch 8 x accumulate 1 and batch 2 x accumulate 4 give the same updates, partial last window included."""
    data = {"num_samples": 40, "split": {"valid": 0.25}}  # 30 training samples: windows of 8, 8, 8, 6
    big = trainlab.train(tiny_recipe(data={**tiny_recipe()["data"], **data, "batch_size": 8}), out=tmp_path / "a")
    small = trainlab.train(
        tiny_recipe(data={**tiny_recipe()["data"], **data, "batch_size": 2}, train={"accumulate": 4}),
        out=tmp_path / "b",
    )
    for (name, a), b in zip(big.model.state_dict().items(), small.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    steps = [r["step"] for r in big.records("valid")]
    assert steps == [r["step"] for r in small.records("valid")] == [4, 8, 12]
