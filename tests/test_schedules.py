"""Schedules: trainlab's lr sequence equals torch's own scheduler stepped by hand in the same unit."""

from __future__ import annotations


import pytest
import torch
from torch.optim import lr_scheduler as L

import trainlab
from trainlab.recipe import RecipeError, recipe_from_data
from trainlab.train.callbacks import Progress, read_records

from conftest import tiny_recipe, without_time

EPOCHS = 4
STEPS = 9  # 72 training samples / batch 8


def train_lrs(tmp_path, schedule, optimizer=None, train=None, name="run"):
    """The lr used at every optimizer step (and the momentum, when cycled) of a trainlab run."""
    recipe = tiny_recipe(
        optimizer=optimizer or {"name": "SGD", "lr": 0.1, "momentum": 0.9},
        schedule=schedule,
        train={"epochs": EPOCHS, "log_every": 1, "device": "cpu", "precision": "32", **(train or {})},
    )
    run = trainlab.train(recipe, out=tmp_path / name)
    records = [r for r in run.records("train") if "lr" in r]
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    return [r["lr"] for r in records], [r.get("momentum") for r in records], run


def torch_lrs(make, unit, epochs=EPOCHS, steps=STEPS, lr=0.1, momentum=0.9):
    """Step torch's scheduler by hand: per optimizer step or per epoch."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=lr, momentum=momentum)
    scheduler = make(optimizer)
    lrs = []
    for _ in range(epochs):
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if unit == "step":
                scheduler.step()
        if unit == "epoch":
            scheduler.step()
    return lrs


TOTAL = EPOCHS * STEPS
CASES = {
    "StepLR": ({"name": "StepLR", "step_size": 2, "gamma": 0.5}, lambda o: L.StepLR(o, 2, 0.5), "epoch"),
    "MultiStepLR": ({"name": "MultiStepLR", "milestones": [1, 3]}, lambda o: L.MultiStepLR(o, [1, 3]), "epoch"),
    "ConstantLR": ({"name": "ConstantLR", "factor": 0.5, "total_iters": 2},
                   lambda o: L.ConstantLR(o, 0.5, 2), "epoch"),
    "LinearLR": ({"name": "LinearLR", "start_factor": 0.25, "total_iters": 3},
                 lambda o: L.LinearLR(o, 0.25, 1.0, 3), "epoch"),
    "ExponentialLR": ({"name": "ExponentialLR", "gamma": 0.7}, lambda o: L.ExponentialLR(o, 0.7), "epoch"),
    "PolynomialLR": ({"name": "PolynomialLR", "power": 2.0}, lambda o: L.PolynomialLR(o, EPOCHS, 2.0), "epoch"),
    "CosineAnnealingLR": ({"name": "CosineAnnealingLR", "eta_min": 0.001},
                          lambda o: L.CosineAnnealingLR(o, EPOCHS, 0.001), "epoch"),
    "CosineAnnealingLR-per-step": ({"name": "CosineAnnealingLR", "interval": "step"},
                                   lambda o: L.CosineAnnealingLR(o, TOTAL), "step"),
    "SGDR": ({"name": "CosineAnnealingWarmRestarts", "T_0": 1, "T_mult": 2},
             lambda o: L.CosineAnnealingWarmRestarts(o, 1, 2), "epoch"),
    "SGDR-per-step-from-epochs": ({"name": "CosineAnnealingWarmRestarts", "interval": "step", "T_0_epochs": 1},
                                  lambda o: L.CosineAnnealingWarmRestarts(o, STEPS), "step"),
    "CyclicLR-triangular": ({"name": "CyclicLR", "base_lr": 0.01, "max_lr": 0.1, "step_size_up_epochs": 0.5},
                            lambda o: L.CyclicLR(o, 0.01, 0.1, step_size_up=4), "step"),
    "CyclicLR-triangular2": ({"name": "CyclicLR", "base_lr": 0.01, "max_lr": 0.1, "step_size_up": 3,
                              "mode": "triangular2"},
                             lambda o: L.CyclicLR(o, 0.01, 0.1, step_size_up=3, mode="triangular2"), "step"),
    "CyclicLR-exp_range": ({"name": "CyclicLR", "base_lr": 0.01, "max_lr": 0.1, "step_size_up": 3,
                            "mode": "exp_range", "gamma": 0.9},
                           lambda o: L.CyclicLR(o, 0.01, 0.1, step_size_up=3, mode="exp_range", gamma=0.9), "step"),
    "OneCycleLR": ({"name": "OneCycleLR"}, lambda o: L.OneCycleLR(o, max_lr=0.1, total_steps=TOTAL), "step"),
    "warmup-then-cosine": (
        {"name": "CosineAnnealingLR", "warmup": {"epochs": 1, "start_factor": 0.1}},
        lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.1, 1.0, STEPS), L.CosineAnnealingLR(o, TOTAL - STEPS)], [STEPS]),
        "step",
    ),
    "warmup-then-step-decay": (
        {"name": "StepLR", "step_size": 2, "gamma": 0.5, "warmup": {"steps": 5}},
        lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.01, 1.0, 5), L.StepLR(o, 2 * STEPS, 0.5)], [5]),
        "step",
    ),
    "SequentialLR": (
        {"name": "SequentialLR", "milestones": [2],
         "schedules": [{"name": "LinearLR", "start_factor": 0.5, "total_iters": 2}, {"name": "ExponentialLR", "gamma": 0.5}]},
        lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.5, 1.0, 2), L.ExponentialLR(o, 0.5)], [2]),
        "epoch",
    ),
    "ChainedScheduler": (
        {"name": "ChainedScheduler",
         "schedules": [{"name": "ConstantLR", "factor": 0.5, "total_iters": 1}, {"name": "ExponentialLR", "gamma": 0.8}]},
        lambda o: L.ChainedScheduler([L.ConstantLR(o, 0.5, 1), L.ExponentialLR(o, 0.8)], optimizer=o),
        "epoch",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_lr_sequence_equals_torch_stepped_by_hand(case, tmp_path):
    schedule, make, unit = CASES[case]
    trained, _, _ = train_lrs(tmp_path, schedule)
    expected = torch_lrs(make, unit)
    assert len(trained) == len(expected) == TOTAL
    for step, (got, want) in enumerate(zip(trained, expected), start=1):
        assert abs(got - want) <= 1e-12, f"step {step}: {got} != {want}"


def test_accumulation_counts_optimizer_steps(tmp_path):
    """With accumulate 4, 9 batches make 3 optimizer steps per epoch (the last window is short)."""
    trained, _, run = train_lrs(tmp_path, {"name": "OneCycleLR"}, train={"accumulate": 4})
    assert run.recipe.schedule.arguments()["total_steps"] == EPOCHS * 3
    assert trained == torch_lrs(lambda o: L.OneCycleLR(o, max_lr=0.1, total_steps=EPOCHS * 3), "step", steps=3)


def test_triangular2_halves_the_amplitude_each_cycle(tmp_path):
    trained, _, _ = train_lrs(tmp_path, CASES["CyclicLR-triangular2"][0])
    peaks = [trained[index] for index in (3, 9, 15, 21, 27, 33)]  # every 2*step_size_up steps from step 4
    amplitudes = [peak - 0.01 for peak in peaks]
    for first, second in zip(amplitudes, amplitudes[1:]):
        assert second == pytest.approx(first / 2, rel=1e-9)


def test_exp_range_decays_by_gamma_per_iteration(tmp_path):
    trained, _, _ = train_lrs(tmp_path, CASES["CyclicLR-exp_range"][0])
    for iteration in (3, 9, 15):  # the peaks of the first cycles
        assert trained[iteration] == pytest.approx(0.01 + 0.09 * 0.9**iteration, rel=1e-9)


def test_cyclic_momentum_is_cycled_and_logged_inversely(tmp_path):
    trained, momentum, _ = train_lrs(tmp_path, CASES["CyclicLR-triangular"][0])
    assert momentum[0] == pytest.approx(0.9) and momentum[4] == pytest.approx(0.8)  # lr low <-> momentum high
    assert trained[4] == pytest.approx(0.1)


def test_sgdr_restarts_at_t0_then_t0_times_one_plus_t_mult(tmp_path):
    recipe_epochs = 7
    trained, _, _ = train_lrs(tmp_path, {"name": "CosineAnnealingWarmRestarts", "T_0": 2, "T_mult": 2},
                              train={"epochs": recipe_epochs})
    per_epoch = trained[::STEPS]
    restarts = [epoch for epoch in range(1, recipe_epochs) if per_epoch[epoch] > per_epoch[epoch - 1]]
    assert restarts == [2, 6]  # T_0 = 2, then T_0 * (1 + T_mult) = 6
    assert per_epoch[0] == per_epoch[2] == per_epoch[6] == pytest.approx(0.1)


def test_reduce_on_plateau_reacts_to_the_monitored_metric(tmp_path):
    schedule = {"name": "ReduceLROnPlateau", "monitor": "valid/loss", "factor": 0.5, "patience": 0,
                "threshold": 100.0, "threshold_mode": "abs"}  # no later validation counts as an improvement
    trained, _, run = train_lrs(tmp_path, schedule)
    per_epoch = trained[::STEPS]
    assert per_epoch == pytest.approx([0.1, 0.1, 0.05, 0.025])  # the first validation sets the best
    assert run.recipe.schedule.arguments()["mode"] == "min"
    improving = {**schedule, "threshold": 0.0}
    trained, _, _ = train_lrs(tmp_path, {**improving, "monitor": "train/loss"}, name="improving")
    assert trained[::STEPS] == pytest.approx([0.1] * EPOCHS)  # the training loss keeps falling here


@pytest.mark.parametrize("schedule", [CASES["CyclicLR-triangular"][0], {"name": "OneCycleLR"}],
                         ids=["CyclicLR", "OneCycleLR"])
def test_resume_mid_cycle_reproduces_the_lr_sequence(schedule, tmp_path, monkeypatch):
    recipe = tiny_recipe(optimizer={"name": "SGD", "lr": 0.1, "momentum": 0.9}, schedule=schedule,
                         train={"epochs": EPOCHS, "log_every": 1, "checkpoint_every": 5, "device": "cpu",
                                "precision": "32"})
    whole = trainlab.train(recipe, out=tmp_path / "whole")
    original = Progress.on_step

    def crash(self, step, samples):
        original(self, step, samples)
        if step == 13:
            raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(Progress, "on_step", crash)
        with pytest.raises(RuntimeError):
            trainlab.train(recipe, out=tmp_path / "broken")
    trainlab.resume(tmp_path / "broken")
    assert without_time(read_records(tmp_path / "broken/metrics.jsonl")) == without_time(whole.metrics)


def test_resolution_is_explicit_and_idempotent(tmp_path):
    recipe = tiny_recipe(schedule={"name": "cosine_annealing_lr", "warmup": {"epochs": 1}})
    run = trainlab.train(recipe, out=tmp_path / "run")
    schedule = run.recipe.schedule
    assert schedule.name == "CosineAnnealingLR" and schedule.interval == "step"
    assert schedule.warmup.steps == STEPS and schedule.arguments()["T_max"] == 3 * STEPS - STEPS
    again = trainlab.train(run.folder / "recipe.yaml", out=tmp_path / "again")
    assert again.recipe.schedule == schedule
    assert without_time(again.metrics) == without_time(run.metrics)


def problems(schedule, optimizer=None, **train):
    recipe = tiny_recipe(schedule=schedule, optimizer=optimizer or {"name": "SGD", "lr": 0.1, "momentum": 0.9},
                         train={"epochs": 3, "device": "cpu", **train})
    with pytest.raises(RecipeError) as caught:
        trainlab.check(recipe_from_data(recipe))
    return {problem.path: problem.render() for problem in caught.value.problems}


def test_unknown_schedule_and_argument():
    found = problems({"name": "CosineAnealingLR", "T_max": 3})
    assert "Did you mean 'CosineAnnealingLR'?" in found["schedule.name"]
    found = problems({"name": "StepLR", "step_sise": 3})
    assert "unknown argument of StepLR" in found["schedule.step_sise"]
    assert "Received: step_sise=3" in found["schedule.step_sise"] and "Did you mean 'step_size'?" in found["schedule.step_sise"]
    found = problems({"name": "StepLR"})
    assert "StepLR needs 'step_size'" in found["schedule.step_size"]


def test_cyclic_bounds_that_look_swapped():
    found = problems({"name": "CyclicLR", "base_lr": 0.1, "max_lr": 0.01})
    assert "look swapped" in found["schedule"] and "Use base_lr: 0.01 and max_lr: 0.1" in found["schedule"]


def test_one_cycle_with_too_few_steps():
    found = problems({"name": "OneCycleLR", "pct_start": 0.05}, epochs=1)
    assert "OneCycleLR needs more steps" in found["schedule.total_steps"]
    found = problems({"name": "OneCycleLR", "total_steps": 10})
    assert "the run takes 27 optimizer steps" in found["schedule.total_steps"]


def test_momentum_cycling_needs_momentum():
    found = problems({"name": "OneCycleLR", "cycle_momentum": True}, optimizer={"name": "Adagrad", "lr": 0.1})
    assert "can only cycle momentum" in found["schedule.cycle_momentum"]


def test_plateau_monitor_must_be_logged():
    found = problems({"name": "ReduceLROnPlateau", "monitor": "valid/f1"})
    assert "never logs that metric" in found["schedule.monitor"] and "valid/accuracy" in found["schedule.monitor"]


def test_composite_and_warmup_mistakes():
    found = problems({"name": "SequentialLR", "milestones": [1, 2], "schedules": [{"name": "ExponentialLR", "gamma": 0.5}]})
    assert "needs 0 milestone(s)" in found["schedule.milestones"]
    found = problems({"name": "StepLR", "step_size": 1, "warmup": {"epochs": 5}})
    assert "as long as the whole run" in found["schedule.warmup"]
    found = problems({"name": "LambdaLR"})
    assert "cannot be used from a recipe" in found["schedule.name"]


def test_schedule_command_prints_and_plots(tmp_path, capsys):
    import yaml

    from trainlab.cli import main

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(schedule={"name": "OneCycleLR"},
                                               optimizer={"name": "SGD", "lr": 0.1, "momentum": 0.9})))
    with pytest.raises(SystemExit) as exit_info:
        main(["schedule", str(path), "--plot", str(tmp_path / "lr.png")])
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    assert "stepped every optimizer step; 3 epochs x 9 optimizer steps = 27 steps" in captured.out
    assert "total_steps: 27" in captured.out and "max_lr: 0.1" in captured.out
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob("**/metrics.jsonl"))  # nothing was trained
