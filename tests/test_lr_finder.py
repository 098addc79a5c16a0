"""The LR range test: suggestions where training is actually good, the state left exactly as it was,
divergence, accumulation, mixed precision, refused optimizers, the suggestion algorithms on
hand-made curves, the plot and the JSON form."""

from __future__ import annotations

import copy
import json
import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from trainlab import pipeline
from trainlab.recipe import TrainlabError, recipe_from_data
from trainlab.train import lr_finder
from trainlab.train.callbacks import BaseCallback
from trainlab.train.loop import evaluate_loader, fit
from trainlab.train.losses import build_loss
from trainlab.train.lr_finder import LRFinderResult, lr_at, lr_range_test, suggest
from trainlab.train.optimizers import build_optimizer
from trainlab.train.precision import choose_precision
from trainlab.train.schedules import Schedule

from conftest import tiny_recipe

MLP = [{"Linear": {"out_features": 16}}, "Tanh", {"Linear": {"out_features": "num_classes"}}]
BN_DROPOUT = [{"Linear": {"out_features": 16}}, "BatchNorm1d", "ReLU", {"Dropout": 0.3},
              {"Linear": {"out_features": "num_classes"}}]


@dataclass
class Setup:
    model: torch.nn.Module
    criterion: Any
    optimizer: torch.optim.Optimizer
    data: Any
    train: Any
    precision: Any
    recipe: Any


def build(precision: str = "32", layers: list | None = None, optimizer: dict | None = None,
          data: dict | None = None, train: dict | None = None, seed: int = 3) -> Setup:
    """The range test's inputs, built the way the pipeline builds them."""
    sections: dict[str, Any] = {"seed": seed, "model": {"layers": layers or MLP}}
    if optimizer is not None:
        sections["optimizer"] = optimizer
    if data is not None:
        sections["data"] = data
    sections["train"] = {"device": "cpu", "precision": precision, **(train or {})}
    checked = pipeline.check(recipe_from_data(tiny_recipe(**sections)))
    criterion = build_loss(checked.recipe.loss, checked.spec)
    return Setup(checked.model, criterion, build_optimizer(checked.recipe.optimizer, checked.model), checked.data,
                 checked.recipe.train, choose_precision(precision, torch.device("cpu")), checked.recipe)


def run_test(setup: Setup, **settings: Any) -> LRFinderResult:
    return lr_range_test(setup.model, setup.criterion, setup.optimizer, setup.data, setup.train, setup.precision,
                         **settings)


# ----------------------------------------------------------------------------------- a known good range


def test_valley_lies_in_the_lr_range_where_training_is_good():
    """Ground truth by brute force: train the same initial model for 3 epochs at each lr of a grid;
    the good range holds the lrs that achieve at least half of the best loss reduction. The range
    test with fastai's defaults (1e-7 .. 10, 100 steps) must put valley inside it. (Checked on
    seeds 0-9 of this problem when written: valley was inside for all of them.)"""
    setup = build(optimizer={"name": "SGD", "lr": 0.1, "momentum": 0.9}, layers=MLP, seed=1,
                  data={"num_samples": 512, "batch_size": 32, "shape": [8], "split": {"valid": 0.0}},
                  train={"monitor": "train/loss"})
    initial = {key: value.clone() for key, value in setup.model.state_dict().items()}
    cpu = torch.device("cpu")
    start_loss = evaluate_loader(setup.model, setup.criterion, setup.data.train, setup.precision, cpu)["loss"]
    grid = [10 ** (exponent / 4) for exponent in range(-16, 5)]  # 1e-4 .. 10
    final = {}
    for lr in grid:
        setup.model.load_state_dict(initial)
        optimizer = build_optimizer(setup.recipe.optimizer.model_copy(update={"lr": lr}), setup.model)
        try:
            fit(setup.model, setup.criterion, optimizer, setup.data,
                setup.train.model_copy(update={"epochs": 3, "log_every": 1000}), setup.precision)
            loss = evaluate_loader(setup.model, setup.criterion, setup.data.train, setup.precision, cpu)["loss"]
        except TrainlabError:  # diverged
            loss = math.inf
        final[lr] = loss if math.isfinite(loss) else math.inf
    best = min(final.values())
    good = [lr for lr, loss in final.items() if loss <= start_loss - 0.5 * (start_loss - best)]
    low, high = min(good), max(good)
    assert 1e-3 < low < high < 10  # a real interval, bounded on both sides by the grid
    assert all(final[lr] <= start_loss - 0.5 * (start_loss - best) for lr in grid if low <= lr <= high)

    setup.model.load_state_dict(initial)
    result = run_test(setup)  # fastai's defaults
    assert low <= result.suggestions["valley"] <= high, (result.suggestions, (low, high))
    assert result.lr == result.suggestions["valley"] == result.suggestions["one_cycle_max_lr"]
    assert low <= result.suggestions["cyclic_base_lr"] <= high
    assert result.suggestions["cyclic_base_lr"] == pytest.approx(result.suggestions["cyclic_max_lr"] / 4)


# ----------------------------------------------------------------------------------- the state


def _equal(left: Any, right: Any) -> bool:
    """Bitwise equality through nested dicts, lists and tuples of tensors, arrays and plain values."""
    if isinstance(left, torch.Tensor) or isinstance(right, torch.Tensor):
        return (isinstance(left, torch.Tensor) and isinstance(right, torch.Tensor) and left.dtype == right.dtype
                and left.shape == right.shape and torch.equal(left, right))
    if isinstance(left, np.ndarray) or isinstance(right, np.ndarray):
        return np.array_equal(left, right)
    if isinstance(left, dict) and isinstance(right, dict):
        return list(left) == list(right) and all(_equal(left[key], right[key]) for key in left)
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return type(left) is type(right) and len(left) == len(right) and all(map(_equal, left, right))
    return left == right


def _state(setup: Setup, scheduler: Any) -> dict[str, Any]:
    model = setup.model
    return {
        "parameters": {name: value.detach().clone() for name, value in model.named_parameters()},
        "buffers": {name: value.clone() for name, value in model.named_buffers()},  # BatchNorm statistics
        "gradients": {name: None if value.grad is None else value.grad.clone()
                      for name, value in model.named_parameters()},
        "training": [module.training for module in model.modules()],
        "optimizer": copy.deepcopy(setup.optimizer.state_dict()),
        "optimizer_attributes": sorted(vars(setup.optimizer)),
        "scheduler": copy.deepcopy(scheduler.state_dict()),
        "loader": dict(setup.data.train.state_dict()),
        "valid_loader": dict(setup.data.valid.state_dict()),
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
    }


def _differences(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {key for key in before if not _equal(before[key], after[key])}


def _trained_state(optimizer: dict[str, Any]) -> tuple[Setup, Any]:
    """BatchNorm + Dropout model after one real epoch: optimizer state and a step schedule exist;
    the loaders sit mid-epoch, the model in eval mode, gradients present, RNGs advanced."""
    setup = build(layers=BN_DROPOUT, optimizer=optimizer)
    scheduler = torch.optim.lr_scheduler.StepLR(setup.optimizer, step_size=3, gamma=0.5)
    fit(setup.model, setup.criterion, setup.optimizer, setup.data, setup.train.model_copy(update={"epochs": 1}),
        setup.precision, Schedule(scheduler, "step"))
    setup.data.valid.set_epoch(0)
    inputs, targets = next(iter(setup.data.valid))
    setup.criterion(setup.model(inputs), targets).backward()  # leave gradients behind
    setup.model.eval()
    setup.data.train.load_state_dict({"epoch": 2, "position": 3, "seed": setup.data.train.seed})
    setup.data.valid.load_state_dict({"epoch": 5, "position": 0, "seed": setup.data.valid.seed})
    random.random(), np.random.rand()
    return setup, scheduler


OPTIMIZERS_WITH_STATE = [{"name": "SGD", "lr": 0.05, "momentum": 0.9}, {"name": "AdamW", "lr": 0.01}]


@pytest.mark.parametrize("optimizer", OPTIMIZERS_WITH_STATE, ids=["SGD-momentum", "AdamW"])
def test_the_test_leaves_model_optimizer_scheduler_loaders_and_rng_bitwise_as_they_were(optimizer):
    setup, scheduler = _trained_state(optimizer)
    assert "initial_lr" in setup.optimizer.param_groups[0]  # put there by the StepLR: must survive
    before = _state(setup, scheduler)
    result = run_test(setup, num_iter=30, end_lr=1.0, accuracy_every=10)
    assert len(result.lrs) == 30 and len(result.accuracy) == 3
    assert _differences(before, _state(setup, scheduler)) == set()


def test_the_state_check_catches_a_test_that_does_not_restore(monkeypatch):
    """The comparison above can fail: without restoring, every part of the state differs."""
    setup, scheduler = _trained_state(OPTIMIZERS_WITH_STATE[0])
    before = _state(setup, scheduler)
    monkeypatch.setattr(lr_finder._Snapshot, "restore", lambda self: None)
    run_test(setup, num_iter=30, end_lr=1.0, accuracy_every=10)
    differences = _differences(before, _state(setup, scheduler))
    assert {"parameters", "buffers", "gradients", "training", "optimizer", "loader", "valid_loader",
            "torch_rng"} <= differences
    assert differences <= {"parameters", "buffers", "gradients", "training", "optimizer", "loader", "valid_loader",
                           "torch_rng", "python_rng", "numpy_rng"}  # the test itself never steps the scheduler


def test_training_after_the_test_is_identical_to_training_without_it():
    def scenario(with_test: bool) -> list[torch.Tensor]:
        setup, scheduler = _trained_state(OPTIMIZERS_WITH_STATE[0])
        if with_test:
            run_test(setup, num_iter=40)
        fit(setup.model, setup.criterion, setup.optimizer, setup.data, setup.train.model_copy(update={"epochs": 2}),
            setup.precision, Schedule(scheduler, "step"))
        return [value.clone() for value in setup.model.state_dict().values()] + [torch.get_rng_state()]

    torch.manual_seed(0)
    plain = scenario(False)
    torch.manual_seed(0)
    tested = scenario(True)
    assert all(torch.equal(left, right) for left, right in zip(plain, tested))


def test_state_is_restored_when_the_test_fails(monkeypatch):
    setup, scheduler = _trained_state(OPTIMIZERS_WITH_STATE[0])
    before = _state(setup, scheduler)

    class Boom(BaseCallback):
        def on_step(self, step: int, samples: int) -> None:
            if step == 7:
                raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_test(setup, num_iter=30, callbacks=Boom())
    assert _differences(before, _state(setup, scheduler)) == set()


# ----------------------------------------------------------------------------------- the sweep


def test_divergence_stops_the_test_early():
    setup = build(optimizer={"name": "SGD", "lr": 0.1})
    result = run_test(setup, start_lr=1e-3, end_lr=1e7, num_iter=100)
    assert result.stopped_early
    assert len(result.lrs) < 100
    assert result.smoothed[-1] > 4 * min(result.smoothed)  # stopped by the rule, at the first point breaking it
    assert all(value <= 4 * min(result.smoothed[: index + 1]) for index, value in enumerate(result.smoothed[:-1]))
    assert all(math.isfinite(value) for value in result.losses + result.smoothed)
    assert result.lrs[-1] < 1e7
    assert set(result.suggestions) == set(lr_finder.SUGGESTIONS)


def test_a_run_without_divergence_records_every_step_on_the_documented_formula():
    setup = build(optimizer={"name": "SGD", "lr": 0.1})
    result = run_test(setup, start_lr=1e-6, end_lr=1e-2, num_iter=25, divergence=None)
    assert not result.stopped_early
    expected = [lr_at(step, 1e-6, 1e-2, 25) for step in range(25)]
    assert result.lrs == pytest.approx(expected, rel=1e-9)
    assert result.lrs[0] == pytest.approx(1e-6) and result.lrs[-1] == pytest.approx(1e-2)
    assert result.smoothed == pytest.approx(lr_finder.smooth(result.losses, 0.98))

    linear = run_test(setup, start_lr=0.001, end_lr=0.1, num_iter=12, mode="linear")
    assert linear.lrs == pytest.approx(list(np.linspace(0.001, 0.1, 12)), rel=1e-9)


def test_the_recorder_keeps_num_iter_points_when_fit_stops_a_step_late():
    """Under data parallelism every process stops one step after the first asks (the store-posted
    stop): the step after the recorder's stop is trained but not recorded."""
    from trainlab.train.loop import StopTraining

    recorder = lr_finder._RangeTestRecorder(num_iter=2, beta=0.98, divergence=None, accuracy_every=None,
                                            evaluate=None, extra=None)
    for step in (1, 2, 3):
        recorder.on_record({"split": "train", "step": step, "loss": 1.0 / step, "lr": 0.1 * step})
        if step == 1:
            recorder.on_step(step, 8)
        else:
            with pytest.raises(StopTraining):
                recorder.on_step(step, 8)
    assert recorder.lrs == pytest.approx([0.1, 0.2]) and recorder.losses == pytest.approx([1.0, 0.5])


def test_num_iter_counts_optimizer_steps_with_accumulation():
    setup = build(optimizer={"name": "SGD", "lr": 0.1}, train={"accumulate": 3})
    batches = []
    handle = setup.model.register_forward_hook(lambda module, inputs, output: batches.append(inputs[0].shape[0]))
    result = run_test(setup, start_lr=1e-4, end_lr=1.0, num_iter=10)
    handle.remove()
    assert len(result.lrs) == 10
    # 9 batches an epoch (72 samples / 8) = 3 windows of 3: 10 steps are 30 batches
    assert len(batches) == 30
    assert result.settings["accumulate"] == 3 and result.settings["steps"] == 10
    assert result.lrs == pytest.approx([lr_at(step, 1e-4, 1.0, 10) for step in range(10)])


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_on_the_cpu(precision):
    setup = build(precision=precision, optimizer={"name": "AdamW", "lr": 0.01}, layers=BN_DROPOUT)
    before = {key: value.clone() for key, value in setup.model.state_dict().items()}
    scaler = setup.precision.state_dict()  # a GradScaler's for 16-mixed, nothing for bf16-mixed
    result = run_test(setup, num_iter=30, start_lr=1e-5, end_lr=1.0)
    assert len(result.lrs) == 30 and all(math.isfinite(value) for value in result.losses)
    assert result.settings["precision"] == precision
    assert all(torch.equal(before[key], value) for key, value in setup.model.state_dict().items())
    assert setup.precision.state_dict() == scaler


def test_param_groups_keep_their_ratio_and_their_lrs_afterwards():
    setup = build(optimizer={"name": "SGD", "lr": 0.01, "momentum": 0.9, "groups": [{"params": ["2"], "lr": 0.1}]})
    configured = [group["lr"] for group in setup.optimizer.param_groups]
    assert len(configured) == 2 and configured[1] == 10 * configured[0]
    seen = []

    class Watch(BaseCallback):
        def on_step(self, step: int, samples: int) -> None:
            seen.append([group["lr"] for group in setup.optimizer.param_groups])

    result = run_test(setup, start_lr=1e-5, end_lr=1e-1, num_iter=15, callbacks=Watch())
    assert result.settings["group_lr_ratios"] == pytest.approx([1.0, 10.0])
    assert all(second == pytest.approx(10 * first) for first, second in seen)
    assert [group["lr"] for group in setup.optimizer.param_groups] == configured
    assert all("initial_lr" not in group for group in setup.optimizer.param_groups)
    assert "step" not in vars(setup.optimizer)  # LambdaLR's patched optimizer.step is gone again


@pytest.mark.parametrize("name", ["LBFGS", "Rprop"])
def test_optimizers_without_a_meaningful_range_test_are_refused(name):
    setup = build(optimizer={"name": name, "lr": 0.1})
    before = {key: value.clone() for key, value in setup.model.state_dict().items()}
    with pytest.raises(TrainlabError, match=f"cannot be used with {name}: .+Set optimizer.lr yourself.+SGD or AdamW"):
        run_test(setup)
    assert all(torch.equal(before[key], value) for key, value in setup.model.state_dict().items())


@pytest.mark.parametrize("settings, message", [
    ({"end_lr": 1e-8}, "end_lr must be larger"),
    ({"num_iter": 1}, "num_iter must be"),
    ({"mode": "cosine"}, "mode must be one of exp, linear"),
    ({"suggestion": "best"}, "suggestion must be one of"),
    ({"divergence": 1.0}, "divergence must be above 1"),
])
def test_invalid_settings_are_clear_errors(settings, message):
    with pytest.raises(TrainlabError, match=message):
        run_test(build(), **settings)


def test_accuracy_needs_a_validation_split():
    setup = build(data={"split": {"valid": 0.0}}, train={"monitor": "train/loss"})
    with pytest.raises(TrainlabError, match="accuracy_every needs a validation split"):
        run_test(setup, accuracy_every=5)


# ----------------------------------------------------------------------------------- the suggestion algorithms


def fastai_valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's ``valley`` as fastai writes it (fastai/callback/schedule.py), the oracle."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx])


def test_valley_on_a_known_curve():
    # flat (10 points), strictly decreasing (20 points), rising (10 points)
    losses = [5.0] * 10 + [4.9 - 0.1 * k for k in range(20)] + [3.5 + 0.2 * k for k in range(10)]
    # longest strictly decreasing subsequence: one 5.0 then the 20 falling points, ending at 29:
    # lds = 21, start = 29 - 21 = 8, L = 21, index = 8 + 7 + 3 = 18
    assert lr_finder.valley_index(losses) == 18
    lrs = [10 ** (-6 + k / 8) for k in range(len(losses))]
    assert lrs[18] == fastai_valley(lrs, losses)
    # an early spike moves it by one point only (fastai's start estimate end - lds[end] grows by one)
    spiked = list(losses)
    spiked[2] = 50.0
    assert lr_finder.valley_index(spiked) == 17
    assert lrs[17] == fastai_valley(lrs, spiked)


def test_valley_equals_fastai_on_random_curves():
    generator = np.random.default_rng(0)
    for _ in range(200):
        count = int(generator.integers(3, 60))
        losses = list(np.cumsum(generator.normal(0, 1, count)))
        lrs = list(np.logspace(-6, 1, count))
        expected = fastai_valley(lrs, losses)
        # fastai's index is -1 (the last lr) for a two-point valley at the very start; ours is clipped to 0
        assert lrs[lr_finder.valley_index(losses)] in (expected, lrs[0])


def test_steep_takes_the_slope_against_log_lr():
    lrs = [1e-3, 1e-2, 1e-1, 1.0, 2.0]
    losses = [5.0, 4.0, 1.0, 0.9, 0.5]
    # slopes per decade: -1, -3, -0.1, -1.33 -> segment 1; against linear lr segment 0 would win
    assert lr_finder.steep_index(lrs, losses) == 1
    assert suggest(lrs, losses, num_iter=5)["steep"] == 1e-2


def test_minimum_is_the_lowest_point_over_ten_and_the_ends_are_trimmed():
    lrs = list(np.logspace(-7, 1, 100))
    losses = [3.0 - 0.02 * k for k in range(90)] + [0.5] * 5 + [0.1] * 5  # lowest in the last 5: trimmed away
    suggestions = suggest(lrs, losses, num_iter=100)
    assert suggestions["minimum"] == pytest.approx(lrs[90] / 10)
    assert lr_finder.trim(100, 100) == (10, 95)
    assert lr_finder.trim(12, 100) == (0, 12)  # too few points left: the whole curve


def test_cyclic_bounds_follow_the_steep_part_and_are_never_swapped():
    # flat (0-5), a steep fall of 0.5 a point (6-11), a slower one of 0.1 (12-16), the minimum (17), a rise
    losses = [4.0] * 6 + [4.0 - 0.5 * k for k in range(1, 7)] + [1.0 - 0.1 * k for k in range(1, 6)] + [0.45] + \
             [0.6 + 0.5 * k for k in range(6)]
    lrs = list(np.logspace(-5, 1, len(losses)))
    assert lr_finder.minimum_index(losses) == 17
    # segments 5-10 fall at the steepest rate; from 11 on at a fifth of it: max_lr is where 10 -> 11 starts
    assert lr_finder.cyclic_max_index(lrs, losses) == 10
    suggestions = suggest(lrs, losses, num_iter=len(lrs))
    assert suggestions["cyclic_max_lr"] == lrs[10]
    assert suggestions["cyclic_base_lr"] == pytest.approx(lrs[10] / 4)
    assert suggestions["steep"] == lrs[5]
    assert lr_finder.cyclic_max_index(lrs, [1.0, 1.1, 1.2]) == 0  # never falls: the smallest lr


def test_slide_and_smoothing():
    losses = [1.0] * 40
    assert lr_finder.slide_index(losses) == 40 - 1 - 15  # flat: the window never slides
    smoothed = lr_finder.smooth([2.0, 4.0, 4.0], 0.98)
    assert smoothed[0] == 2.0  # bias correction: the first point is the first loss
    assert smoothed[1] == pytest.approx((0.98 * 0.02 * 2 + 0.02 * 4) / (1 - 0.98**2))
    assert lr_finder.smooth([3.0] * 10) == pytest.approx([3.0] * 10)


# ----------------------------------------------------------------------------------- outputs


@pytest.fixture(scope="module")
def result_with_accuracy() -> LRFinderResult:
    return run_test(build(optimizer={"name": "SGD", "lr": 0.1, "momentum": 0.9}), num_iter=60, accuracy_every=6)


def test_plot_is_a_real_png(tmp_path, result_with_accuracy):
    from matplotlib.image import imread

    from trainlab.evaluate.plots import plot_lr_find

    path = plot_lr_find(result_with_accuracy, tmp_path / "plots" / "lr_find.png", title="tiny")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(pixels[..., :3].std()) > 0.05  # not blank
    assert not list(tmp_path.glob("plots/*.tmp.png"))


def test_json_round_trip(result_with_accuracy):
    data = result_with_accuracy.to_json()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    again = LRFinderResult.from_json(json.loads(text))
    assert again.to_json() == data
    assert data["lr"] == result_with_accuracy.lr == data["suggestions"]["valley"]
    assert len(data["accuracy"]) == 10 and all(0.0 <= value <= 1.0 for _, value in data["accuracy"])
    assert data["settings"]["num_iter"] == 60 and data["settings"]["mode"] == "exp"
