"""Built-in data: seeded stratified splits, loader order and resumable position."""

from __future__ import annotations

import pytest
import torch

from trainlab.data import build_data
from trainlab.data.loaders import SamplerLoader, TensorLoader, epoch_order
from trainlab.recipe import TrainlabError, recipe_from_data


def data_config(**data):
    return recipe_from_data({"name": "d", "data": data, "model": {"name": "MLP"}}).recipe.data


def test_digits_split_is_stratified_seeded_and_resized():
    config = data_config(source="sklearn-digits", resize=[16, 16], split={"valid": 0.2, "test": 0.1})
    first, second = build_data(config, seed=5), build_data(config, seed=5)
    assert first.spec.input_shape == (1, 16, 16) and first.spec.class_names == [str(d) for d in range(10)]
    assert first.spec.num_samples == {"test": 180, "valid": 360, "train": 1257}
    assert torch.equal(first.valid.targets, second.valid.targets)
    assert not torch.equal(first.valid.targets, build_data(config, seed=6).valid.targets)
    counts = torch.bincount(first.valid.targets, minlength=10).float()
    assert counts.min() >= 35 and counts.max() <= 37  # ~36 of each digit: stratified
    assert first.train.inputs.shape[1:] == (1, 16, 16)
    assert abs(first.train.inputs.mean().item()) < 1e-5  # standardised with the training statistics


def test_synthetic_regression_and_token_inputs():
    regression = build_data(data_config(source="synthetic", task="regression", num_targets=2, shape=[5]), seed=0)
    assert regression.spec.task == "regression" and regression.spec.output_size == 2
    assert regression.train.targets.dtype == torch.float32 and regression.train.targets.shape[1] == 2
    tokens = build_data(data_config(source="synthetic", vocab_size=50, shape=[7]), seed=0)
    assert tokens.spec.input_dtype == torch.int64 and tokens.train.inputs.max() < 50


def test_impossible_split_is_a_user_error():
    with pytest.raises(TrainlabError, match="data.split"):
        build_data(data_config(source="synthetic", num_samples=4, num_classes=3, split={"valid": 0.25}), seed=0)


def test_loader_position_resumes_mid_epoch_and_orders_are_per_epoch():
    inputs, targets = torch.arange(10).float().unsqueeze(1), torch.arange(10)
    loader = TensorLoader(inputs, targets, batch_size=3, shuffle=True, seed=7)
    loader.set_epoch(2)
    full = [y.tolist() for _, y in loader]
    assert sorted(sum(full, [])) == list(range(10)) and [len(b) for b in full] == [3, 3, 3, 1]
    loader.load_state_dict({"epoch": 2, "position": 2, "seed": 7})
    assert [y.tolist() for _, y in loader] == full[2:]
    assert not torch.equal(epoch_order(10, 7, 2, True), epoch_order(10, 7, 3, True))


def test_sampler_loader_serves_the_same_batches():
    inputs, targets = torch.randn(11, 2), torch.arange(11)
    memory = TensorLoader(inputs, targets, batch_size=4, shuffle=True, seed=1)
    dataset = torch.utils.data.TensorDataset(inputs, targets)
    sampled = SamplerLoader(dataset, batch_size=4, shuffle=True, seed=1)
    for loader in (memory, sampled):
        loader.load_state_dict({"epoch": 3, "position": 1, "seed": 1})
    assert [y.tolist() for _, y in memory] == [y.tolist() for _, y in sampled]
