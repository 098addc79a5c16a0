"""The command line: exit codes, messages without tracebacks, nothing written for a bad recipe."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainlab.cli import main

from conftest import tiny_recipe


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def write(tmp_path: Path, recipe: dict, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_train_prints_the_run_folder_and_writes_the_layout(tmp_path, capsys):
    recipe = tiny_recipe(log={"tensorboard": True, "plots": True, "progress": "plain"})
    code, out, err = run_cli(["train", str(write(tmp_path, recipe)), "train.epochs=2", "--out", str(tmp_path / "run")], capsys)
    assert code == 0, err
    folder = Path(out.strip().splitlines()[-1])
    assert folder == tmp_path / "run"
    assert re.search(r"finished after 2 epochs, \d+ steps; .* [\d,]+ samples/s after a \d+\.\d\d s first step", err)
    for name in ("recipe.yaml", "env.json", "data.json", "status.json", "metrics.jsonl",
                 "checkpoints/last/model.safetensors", "checkpoints/last/state.pt", "checkpoints/last/meta.json",
                 "checkpoints/best/model.safetensors", "plots/curves.png", "plots/schedule.png",
                 "plots/valid_confusion.png", "eval/valid.json", "report.html"):
        assert (folder / name).is_file(), name
    assert any((folder / "tensorboard").iterdir())
    assert (folder / "plots/curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    resolved = yaml.safe_load((folder / "recipe.yaml").read_text())
    assert resolved["train"]["epochs"] == 2
    assert resolved["optimizer"]["momentum"] == 0  # torch's defaults filled in
    assert json.loads((folder / "status.json").read_text())["status"] == "finished"
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "epoch", "split", "loss", "accuracy", "time"} <= set(records[-1])
    assert {r["split"] for r in records} == {"train", "valid"}
    assert "lr" in [r for r in records if r["split"] == "train"][0]


def test_bad_recipe_exits_2_with_every_problem_and_no_run_folder(tmp_path, capsys):
    recipe = tiny_recipe(optimizer={"name": "SGD", "lr": 0.1, "momentun": 0.9}, loss={"name": "CrossEntropyLos"})
    recipe["train"]["epocs"] = 3
    path = write(tmp_path, recipe)
    code, out, err = run_cli(["train", str(path), "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 2
    assert "Traceback" not in err
    assert "train.epocs: unknown key" in err and "Did you mean 'epochs'?" in err
    assert not (tmp_path / "runs").exists()
    del recipe["train"]["epocs"]
    code, out, err = run_cli(["train", str(write(tmp_path, recipe)), "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 2
    assert "optimizer.momentun" in err and "Did you mean 'momentum'?" in err
    assert "loss.name" in err and "Did you mean 'CrossEntropyLoss'?" in err
    assert not (tmp_path / "runs").exists()


def test_bad_data_exits_2_naming_the_file_and_leaves_no_run_folder(tmp_path, capsys):
    from PIL import Image

    (tmp_path / "table.csv").write_text("size,colour,label\n1.5,red,a\n2.0,blue,b\n")
    folder = tmp_path / "images" / "cat"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(folder / "ok.png")
    (folder / "broken.png").write_bytes(b"not an image at all")
    cases = {
        "missing folder": ({"source": "images", "path": str(tmp_path / "nowhere")}, ["nowhere", "does not exist"]),
        "corrupt image": ({"source": "images", "path": str(tmp_path / "images"), "split": {"valid": 0.0}},
                          ["broken.png", "on_bad_file"]),
        "missing column": ({"source": "csv", "path": str(tmp_path / "table.csv"), "target": "labels",
                            "split": {"valid": 0.0}}, ["table.csv has no column 'labels'", "Did you mean 'label'?"]),
    }
    for name, (data, expected) in cases.items():
        recipe = {"name": "bad-data", "data": data, "model": {"name": "MLP"},
                  "train": {"monitor": "train/loss", "device": "cpu"}}
        code, out, err = run_cli(["train", str(write(tmp_path, recipe)), "--runs-dir", str(tmp_path / "runs")], capsys)
        assert code == 2, (name, err)
        assert "Traceback" not in err
        for text in expected:
            assert text in err, (name, text, err)
        assert not (tmp_path / "runs").exists(), name


def test_validate_reports_each_file(tmp_path, capsys):
    good = write(tmp_path, tiny_recipe(), "good.yaml")
    bad = write(tmp_path, tiny_recipe(train={"monitor": "valid/f1"}), "bad.yaml")
    code, out, err = run_cli(["validate", str(good)], capsys)
    assert code == 0 and "ok" in out
    code, out, err = run_cli(["validate", str(good), str(bad)], capsys)
    assert code == 2
    assert "train.monitor: this recipe does not produce that metric" in err
    assert "Received: valid/f1" in err and "valid/accuracy" in err


def test_usage_errors_exit_2(tmp_path, capsys):
    code, _, err = run_cli(["train"], capsys)
    assert code == 2
    code, _, err = run_cli(["train", str(tmp_path / "missing.yaml")], capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(["frobnicate"], capsys)
    assert code == 2


def test_resume_of_a_missing_folder_exits_2(tmp_path, capsys):
    code, _, err = run_cli(["resume", str(tmp_path / "nope")], capsys)
    assert code == 2 and "does not exist" in err and "Traceback" not in err


def test_a_command_defers_full_garbage_collections_and_puts_the_setting_back(monkeypatch):
    import gc

    from trainlab import cli

    seen = []
    monkeypatch.setattr(cli, "_run", lambda entry: seen.append(gc.get_threshold()) or 0)
    before = gc.get_threshold()
    with pytest.raises(SystemExit) as exit_:
        main(["schema"])
    assert exit_.value.code == 0
    assert seen == [(before[0], before[1], cli.FULL_COLLECTION_AFTER)]
    assert gc.get_threshold() == before


def test_schema_is_json(capsys):
    code, out, _ = run_cli(["schema"], capsys)
    assert code == 0
    assert json.loads(out)["title"] == "Recipe"


def test_show_model_table(tmp_path, capsys):
    code, out, err = run_cli(["show-model", str(write(tmp_path, tiny_recipe()))], capsys)
    assert code == 0, err
    assert "Linear" in out and "(12,)" in out
    assert "total parameters: 123" in out  # 6*12+12 + 12*3+3


def test_recipes_list_and_copy(tmp_path, capsys):
    code, out, _ = run_cli(["recipes"], capsys)
    assert code == 0 and "digits-lenet" in out
    code, out, _ = run_cli(["recipes", "copy", "digits-lenet", str(tmp_path)], capsys)
    assert code == 0 and (tmp_path / "digits-lenet.yaml").is_file()
    code, _, err = run_cli(["recipes", "copy", "digits-lenet", str(tmp_path)], capsys)
    assert code == 2 and "already exists" in err
    code, _, err = run_cli(["recipes", "copy", "digits-lenett", str(tmp_path)], capsys)
    assert code == 2 and "Did you mean 'digits-lenet'?" in err


def test_plugins_register_components(tmp_path, capsys, monkeypatch):
    package = tmp_path / "myplugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        "import torch\n"
        "from trainlab.models import MODELS\n"
        "@MODELS.register('TinyPluginNet')\n"
        "def tiny(spec, width: int = 4):\n"
        "    return torch.nn.Sequential(torch.nn.Linear(spec.input_shape[0], width), torch.nn.ReLU(),\n"
        "                               torch.nn.Linear(width, spec.num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = tiny_recipe()
    recipe["model"] = {"name": "TinyPluginNet", "width": 5}
    path = write(tmp_path, recipe)
    code, _, err = run_cli(["validate", str(path)], capsys)
    assert code == 2 and "model.name" in err  # not registered without the plugin
    code, out, err = run_cli(["--plugins", "myplugins.nets", "validate", str(path)], capsys)
    assert code == 0, err
    code, _, err = run_cli(["--plugins", "no_such_module", "validate", str(path)], capsys)
    assert code == 2 and "cannot import 'no_such_module'" in err


def test_module_entry_point(tmp_path):
    result = subprocess.run([sys.executable, "-m", "trainlab", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "resume" in result.stdout


def test_unexpected_failure_exits_1_with_traceback_only_under_debug(tmp_path, capsys, monkeypatch):
    import trainlab.pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(trainlab.pipeline, "train", broken)
    path = write(tmp_path, tiny_recipe())
    code, _, err = run_cli(["train", str(path)], capsys)
    assert code == 1
    assert "unexpected failure: RuntimeError: disk on fire (run with --debug for the traceback)" in err
    assert "Traceback" not in err
    code, _, err = run_cli(["--debug", "train", str(path)], capsys)
    assert code == 1 and "Traceback" in err and "disk on fire" in err


def test_out_folder_that_already_holds_files_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    code, _, err = run_cli(["train", str(write(tmp_path, tiny_recipe())), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "already exists and is not empty" in err and "trainlab resume" in err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["keep.txt"]
