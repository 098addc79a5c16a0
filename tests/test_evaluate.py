"""trainlab evaluate: metrics of a checkpoint on a split, TTA averaging, regression in original units,
and the errors a user can make."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import trainlab
from trainlab.cli import main
from trainlab.pipeline import collect_predictions, evaluate_run, load_run
from trainlab.recipe import RecipeError, TrainlabError

from conftest import tiny_recipe

DIGITS = {
    "name": "digits", "seed": 0,
    "data": {"source": "sklearn-digits", "resize": [12, 12], "batch_size": 64, "split": {"valid": 0.2, "test": 0.2}},
    "model": {"layers": [{"Conv2d": {"out_channels": 4, "kernel_size": 3}}, "ReLU", "Flatten",
                         {"Linear": {"out_features": "num_classes"}}]},
    "optimizer": {"name": "AdamW", "lr": 0.01},
    "train": {"epochs": 2, "device": "cpu", "precision": "32", "monitor": "valid/accuracy"},
    "log": {"tensorboard": False, "plots": False, "progress": "none"},
}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return trainlab.train(DIGITS, out=tmp_path_factory.mktemp("evaluate") / "run").folder


def test_evaluate_writes_metrics_plots_and_the_report(digits_run):
    evaluation = evaluate_run(digits_run, split="valid")
    saved = json.loads((digits_run / "eval" / "valid.json").read_text())
    best = json.loads((digits_run / "checkpoints" / "best" / "meta.json").read_text())
    # the best checkpoint was chosen on valid/accuracy: evaluation of it measures the same number
    assert saved["scalars"]["accuracy"] == pytest.approx(best["value"], abs=1e-6)
    assert saved["checkpoint"] == "best" and saved["samples"] == 360
    assert set(evaluation.figures) >= {"confusion", "confusion_normalized", "roc", "pr", "f1", "wrong"}
    for relative in saved["figures"].values():
        assert (digits_run / relative).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (digits_run / "report.html").read_text()
    assert "valid_confusion.png" in report or "data:image/png;base64" in report


def test_validation_records_carry_the_evaluate_metrics(digits_run):
    from trainlab.train.callbacks import read_records

    valid = [record for record in read_records(digits_run / "metrics.jsonl") if record["split"] == "valid"]
    assert len(valid) == 2
    for record in valid:
        assert {"loss", "accuracy", "f1_macro", "roc_auc_macro", "top_5_accuracy"} <= set(record)
        assert 0.0 <= record["f1_macro"] <= 1.0


def test_tta_averages_the_probabilities_of_the_views(digits_run):
    run = load_run(digits_run)
    plain = collect_predictions(run, "test")
    flipped = collect_predictions(run, "test", tta="hflip")
    run.checked.data.test.set_epoch(0)
    inputs = torch.cat([inputs for inputs, _ in run.checked.data.test])
    with torch.no_grad():
        by_hand = (run.model(inputs).softmax(1) + run.model(inputs.flip(-1)).softmax(1)) / 2
    assert torch.allclose(flipped.probabilities, by_hand, atol=1e-6)
    assert torch.equal(flipped.predicted, by_hand.argmax(1))
    assert torch.equal(flipped.targets, plain.targets)
    assert not torch.allclose(flipped.probabilities, plain.probabilities)


def test_regression_is_evaluated_in_the_original_units(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(0, 1, 80), "z": rng.normal(0, 1, 80)})
    frame["price"] = 1000 + 300 * frame["x"] + rng.normal(0, 10, 80)
    path = tmp_path / "prices.csv"
    frame.to_csv(path, index=False)
    recipe = {"name": "prices", "data": {"source": "csv", "path": str(path), "target": "price", "task": "regression",
                                         "target_transform": "standard", "batch_size": 16},
              "model": {"name": "MLP", "hidden": [8]}, "optimizer": {"name": "AdamW", "lr": 0.01},
              "train": {"epochs": 3, "device": "cpu"}, "log": {"tensorboard": False, "progress": "none"}}
    folder = trainlab.train(recipe, out=tmp_path / "run").folder
    predictions = collect_predictions(load_run(folder), "valid")
    gaps = np.abs(predictions.targets.numpy() - frame["price"].to_numpy()[None, :]).min(1)  # (N,)
    assert gaps.max() < 1e-2  # each target is one of the table's prices
    saved = json.loads((folder / "eval" / "valid.json").read_text())  # written at the end of training
    errors = (predictions.predicted - predictions.targets).squeeze(1).double()
    assert saved["scalars"]["rmse"] == pytest.approx(errors.pow(2).mean().sqrt().item(), rel=1e-5)
    assert saved["scalars"]["rmse"] > 10  # in dollars, not in standardised units


def test_unknown_metric_is_a_recipe_problem():
    with pytest.raises(RecipeError, match=r"evaluate\.metrics\[1\].*Did you mean 'accuracy'"):
        trainlab.check(tiny_recipe(evaluate={"metrics": ["f1", "acuracy"]}))


def test_evaluate_errors_exit_2(tmp_path, capsys, digits_run):
    cases = [
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(digits_run), "--split", "tests"], "expected train, valid or test"),
        ([str(digits_run), "--tta", "sixcrop"], "unknown test-time augmentation"),
    ]
    no_checkpoint = tmp_path / "fresh"
    no_checkpoint.mkdir()
    (no_checkpoint / "recipe.yaml").write_text((digits_run / "recipe.yaml").read_text())
    cases.append(([str(no_checkpoint)], "no complete checkpoints/best"))
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["evaluate", *args])
        assert exit_info.value.code == 2, args
        assert message in capsys.readouterr().err, args
    with pytest.raises(TrainlabError, match="no test split"):
        evaluate_run(trainlab.train(tiny_recipe(), out=tmp_path / "tiny").folder, split="test")
