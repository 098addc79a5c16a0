"""Messages of user errors that other tests do not reach: each names the problem and the fix."""

from __future__ import annotations

import json

import pytest
import torch

import trainlab
from trainlab.cli import main
from trainlab.data import load_preprocessor
from trainlab.pipeline import collect_predictions, load_run
from trainlab.recipe import RecipeError, TrainlabError
from trainlab.train.loop import Meter
from trainlab.train.losses import build_loss

from conftest import tiny_recipe


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return trainlab.train(tiny_recipe(), out=tmp_path_factory.mktemp("errors") / "run").folder


def test_a_package_path_names_the_missing_package():
    recipe = {"name": "p", "data": {"source": "csv", "path": "package:no_such_package_here/x.csv", "target": "y"},
              "model": {"name": "MLP"}}
    with pytest.raises(RecipeError, match=r"data\.path: no installed Python package named 'no_such_package_here'"
                                          r".*pip install no_such_package_here"):
        trainlab.check(recipe)


def test_classes_that_match_no_row_list_the_classes_there_are(tmp_path):
    (tmp_path / "t.csv").write_text("x,label\n1,a\n2,b\n3,a\n4,b\n")
    recipe = {"name": "c", "data": {"source": "csv", "path": str(tmp_path / "t.csv"), "target": "label",
                                    "classes": ["x", "y"]}, "model": {"name": "MLP"}}
    with pytest.raises(RecipeError, match=r"data\.classes: no row of t\.csv has one of these classes.*"
                                          r"The target 'label' holds: a, b"):
        trainlab.check(recipe)


def test_preprocessing_folders_that_cannot_be_read(tmp_path, tiny_run):
    with pytest.raises(TrainlabError, match="holds no readable preprocessing.json"):
        load_preprocessor(tiny_run)  # a synthetic-data run saves no preprocessing
    (tmp_path / "preprocessing.json").write_text(json.dumps({"kind": "audio"}))
    with pytest.raises(TrainlabError, match="unknown preprocessing kind 'audio'"):
        load_preprocessor(tmp_path)


def test_evaluation_refuses_what_it_cannot_measure(tiny_run, tmp_path):
    with pytest.raises(TrainlabError, match="unknown checkpoint 'middle': expected best or last"):
        load_run(tiny_run, "middle")
    regression = tiny_recipe(data={**tiny_recipe()["data"], "task": "regression"}, loss={"name": "MSELoss"},
                             train={"epochs": 1, "device": "cpu", "monitor": "valid/loss"})
    regression["model"] = {"name": "MLP"}
    folder = trainlab.train(regression, out=tmp_path / "regression").folder
    with pytest.raises(TrainlabError, match="test-time augmentation averages class probabilities: it needs a "
                                            "classification run"):
        collect_predictions(load_run(folder), "valid", tta="hflip")
    run = load_run(tiny_run)
    run.checked.data.spec.task = "sequence"
    with pytest.raises(TrainlabError, match="evaluation covers classification and regression; this run's task is "
                                            "sequence"):
        collect_predictions(run, "valid")


def test_data_show_says_why_there_is_no_grid(tmp_path, capsys):
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe()))
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "show", str(path), "--plot", str(tmp_path / "grid.png")])
    assert exit_info.value.code == 0
    assert "no image grid: the inputs are not images" in capsys.readouterr().err
    assert not (tmp_path / "grid.png").exists()


def test_a_training_state_with_other_metrics_is_refused_by_the_loop():
    spec = trainlab.check(tiny_recipe()).spec
    criterion = build_loss(None, spec)
    lean = Meter(criterion, torch.device("cpu"), metrics=False).state_dict()
    with pytest.raises(TrainlabError, match=r"the checkpoint's training metrics \(loss\) differ from this run's "
                                            r"\(loss, accuracy\): train.train_metrics cannot change when resuming"):
        Meter(criterion, torch.device("cpu")).load_state_dict(lean)


def test_a_loader_that_cannot_be_sharded_is_refused_under_data_parallel_training(monkeypatch):
    from types import SimpleNamespace

    from trainlab.train import distributed

    class OwnLoader:  # a Python caller's loader: no shard()
        pass

    bundle = SimpleNamespace(train=OwnLoader(), valid=None)
    monkeypatch.setattr(distributed, "active", lambda: True)
    with pytest.raises(TrainlabError, match=r"served by a OwnLoader, which cannot be split across processes yet; "
                                            r"train it in one process \(without torchrun / --devices\)"):
        distributed.shard_data(bundle)
