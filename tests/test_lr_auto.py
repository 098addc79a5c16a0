"""lr: auto and `trainlab lr-find`: the range test through the pipeline and the CLI."""

from __future__ import annotations

import json

import pytest
import yaml

import trainlab
from trainlab.cli import main
from trainlab.recipe import RecipeError, recipe_from_data

from conftest import tiny_recipe, without_time


def auto_recipe(**optimizer):
    return tiny_recipe(optimizer={"name": "SGD", "lr": "auto", "momentum": 0.9,
                                  "lr_find": {"num_iter": 30, "start_lr": 1.0e-4, "end_lr": 10.0}, **optimizer})


def test_lr_auto_trains_with_the_suggestion_and_records_it(tmp_path):
    run = trainlab.train(auto_recipe(), out=tmp_path / "auto")
    chosen = run.recipe.optimizer.lr
    assert isinstance(chosen, float) and 1e-4 < chosen < 10
    result = json.loads((run.folder / "plots/lr_find.json").read_text())
    assert result["suggestions"]["valley"] == pytest.approx(chosen)
    assert (run.folder / "plots/lr_find.png").read_bytes()[:4] == b"\x89PNG"
    assert yaml.safe_load((run.folder / "recipe.yaml").read_text())["optimizer"]["lr"] == pytest.approx(chosen)
    # the range test left everything as it was: the resolved recipe re-runs to the same metrics
    again = trainlab.train(run.folder / "recipe.yaml", out=tmp_path / "again")
    assert without_time(again.metrics) == without_time(run.metrics)


def test_lr_auto_with_an_optimizer_where_the_test_means_nothing():
    recipe = tiny_recipe(optimizer={"name": "LBFGS", "lr": "auto"})
    with pytest.raises(RecipeError) as caught:
        trainlab.check(recipe_from_data(recipe))
    message = str(caught.value)
    assert "optimizer.lr: lr: auto runs the LR range test, which means nothing for LBFGS" in message
    assert "Received: auto" in message and "Give optimizer.lr a number" in message


def test_lr_find_command(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(optimizer={"name": "SGD", "lr": 0.1, "momentum": 0.9})))
    with pytest.raises(SystemExit) as exit_info:
        main(["lr-find", str(path), "--num-iter", "25", "--start-lr", "1e-4", "--out", str(tmp_path / "find")])
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    assert "valley (default)" in captured.out and "steep" in captured.out
    assert sorted(p.name for p in (tmp_path / "find").iterdir()) == ["lr_find.json", "lr_find.png"]
    assert not (tmp_path / "runs").exists()

    with pytest.raises(SystemExit) as exit_info:
        main(["lr-find", str(path), "--num-iter", "25", "--json", "--accuracy-every", "5",
              "--out", str(tmp_path / "find2")])
    captured = capsys.readouterr()
    assert exit_info.value.code == 0
    result = json.loads(captured.out)
    assert len(result["lrs"]) <= 25 and len(result["accuracy"]) >= 4  # accuracy at steps 5, 10, ...

    with pytest.raises(SystemExit) as exit_info:
        main(["lr-find", str(path), "--start-lr", "1", "--end-lr", "0.1"])
    assert exit_info.value.code == 2 and "end_lr" in capsys.readouterr().err
