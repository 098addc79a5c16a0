"""The commands that work on finished runs, end to end through the CLI: runs, runs compare, predict,
baseline and refit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from trainlab.cli import main

from conftest import tiny_recipe


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def table_recipe(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(60)], "size": rng.normal(0, 1, 60),
                          "colour": rng.choice(["red", "blue"], 60)})
    frame["label"] = np.where(frame["size"] > 0, "big", "small")
    frame.to_csv(tmp_path / "table.csv", index=False)
    frame.drop(columns=["label"]).head(5).to_csv(tmp_path / "new.csv", index=False)
    recipe = {"name": "table", "data": {"source": "csv", "path": str(tmp_path / "table.csv"), "target": "label",
                                        "id": "id", "split": {"valid": 0.25, "test": 0.25}, "batch_size": 8},
              "model": {"name": "MLP", "hidden": [8]}, "optimizer": {"name": "AdamW", "lr": 0.02},
              "train": {"epochs": 3, "device": "cpu", "monitor": "valid/accuracy"},
              "log": {"tensorboard": False, "plots": False, "progress": "none"}}
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_runs_lists_and_compares(tmp_path, capsys):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe()))
    folders = []
    for lr in ("0.1", "0.3"):
        code, out, err = run_cli(["train", recipe, f"optimizer.lr={lr}", "--runs-dir", tmp_path / "runs"], capsys)
        assert code == 0, err
        folders.append(Path(out.strip().splitlines()[-1]))
    assert (tmp_path / "runs" / "index.sqlite").is_file()
    code, out, err = run_cli(["runs", tmp_path / "runs"], capsys)
    assert code == 0, err
    assert out.count("finished") == 2 and "tiny" in out
    code, out, err = run_cli(["runs", "compare", *folders, "--plot", tmp_path / "compare.png"], capsys)
    assert code == 0, err
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, err = run_cli(["runs", "compare", tmp_path / "nothing-here"], capsys)
    assert code == 2 and "Traceback" not in err


def test_predict_baseline_and_refit_on_a_table(tmp_path, capsys):
    code, out, err = run_cli(["train", table_recipe(tmp_path), "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["predict", tmp_path / "run", tmp_path / "new.csv", "--out", tmp_path / "p.csv",
                              "--columns", "Id=id,Class=label", "--probabilities"], capsys)
    assert code == 0, err
    predictions = pd.read_csv(tmp_path / "p.csv")
    assert list(predictions.columns) == ["Id", "Class"]
    assert predictions["Id"].tolist() == [f"r{i}" for i in range(5)]
    assert set(predictions["Class"]) <= {"big", "small"}
    code, out, err = run_cli(["predict", tmp_path / "run", tmp_path / "missing.csv", "--out", tmp_path / "q.csv"],
                             capsys)
    assert code == 2 and "missing.csv" in err and not (tmp_path / "q.csv").exists()

    code, out, err = run_cli(["baseline", tmp_path / "run"], capsys)
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "baseline.json").read_text())
    assert saved["split"] == "test" and "LogisticRegression" in saved["models"]
    assert "LogisticRegression" in (tmp_path / "run" / "report.html").read_text()

    code, out, err = run_cli(["refit", tmp_path / "run", "--out", tmp_path / "refit"], capsys)
    assert code == 0, err
    refitted = yaml.safe_load((tmp_path / "refit" / "recipe.yaml").read_text())
    assert refitted["data"]["merge_valid"] is True and refitted["name"] == "table-refit"
