"""Resume continues exactly: same metrics.jsonl and bitwise-identical weights as an uninterrupted run."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from safetensors.torch import load_file

import trainlab
from trainlab.pipeline import _Checkpointer
from trainlab.recipe import TrainlabError
from trainlab.train import checkpoint as checkpoints
from trainlab.train.callbacks import MetricsFile, Progress, read_records

from conftest import same_weights, tiny_recipe, without_time


class Crash(Exception):
    """Stands in for a process dying: nothing after it runs, files stay as they were."""


def crash_after_step(monkeypatch, step: int) -> None:
    original = Progress.on_step

    def on_step(self, current, samples):
        original(self, current, samples)
        if current == step:
            raise Crash(f"killed after step {current}")

    monkeypatch.setattr(Progress, "on_step", on_step)


def recipe_with_state():
    """Dropout (RNG), momentum (optimizer state) and a step schedule (scheduler state)."""
    return tiny_recipe(
        model={"layers": [{"Linear": {"out_features": 12}}, "ReLU", {"Dropout": 0.3},
                          {"Linear": {"out_features": "num_classes"}}]},
        optimizer={"name": "SGD", "lr": 0.1, "momentum": 0.9},
        schedule={"name": "StepLR", "step_size": 1, "gamma": 0.7},
        train={"epochs": 4, "log_every": 2, "checkpoint_every": 3, "device": "cpu", "precision": "32"},
    )


@pytest.mark.parametrize("crash_step", [10, 14], ids=["epoch-boundary", "mid-epoch"])
def test_resume_equals_uninterrupted(crash_step, tmp_path, monkeypatch):
    # 72 training samples / batch 8 = 9 steps an epoch: the crash after step 10 finds the end-of-epoch-1
    # checkpoint (step 9), the one after step 14 the mid-epoch checkpoint of step 12
    recipe = recipe_with_state()
    whole = trainlab.train(recipe, out=tmp_path / "whole")

    with monkeypatch.context() as patch:
        crash_after_step(patch, crash_step)
        with pytest.raises(Crash):
            trainlab.train(recipe, out=tmp_path / "broken")
    meta = json.loads((tmp_path / "broken/checkpoints/last/meta.json").read_text())
    assert meta["step"] == (9 if crash_step == 10 else 12)  # the last checkpoint before the crash
    resumed = trainlab.resume(tmp_path / "broken")

    assert same_weights(whole.model, resumed.model)
    assert without_time(read_records(tmp_path / "whole/metrics.jsonl")) == without_time(
        read_records(tmp_path / "broken/metrics.jsonl")
    )
    assert resumed.status == "finished"


def test_extend_a_finished_run(tmp_path):
    recipe = tiny_recipe(train={"epochs": 2, "device": "cpu", "precision": "32", "log_every": 2})
    longer = trainlab.train(tiny_recipe(train={**recipe["train"], "epochs": 4}), out=tmp_path / "long")
    trainlab.train(recipe, out=tmp_path / "short")
    extended = trainlab.resume(tmp_path / "short", ["train.epochs=4"])
    assert same_weights(longer.model, extended.model)
    assert yaml.safe_load((tmp_path / "short/recipe.yaml").read_text())["train"]["epochs"] == 4


def train_in_a_process(recipe: dict, tmp_path, name: str, until) -> tuple[subprocess.Popen, Path]:
    """`trainlab train` of ``recipe`` in a new process (stderr piped), returned with its run folder
    once ``until(run folder)`` holds or the process has ended (at most 2 minutes)."""
    recipe_path = tmp_path / f"{name}.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    run_dir = tmp_path / name
    process = subprocess.Popen(
        [sys.executable, "-m", "trainlab", "train", str(recipe_path), "--out", str(run_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and not until(run_dir):
        time.sleep(0.01)
    return process, run_dir


def test_kill_9_during_training_then_resume(tmp_path):
    """A real process killed with SIGKILL at an arbitrary moment (possibly mid-checkpoint) resumes exactly."""
    recipe = tiny_recipe(
        data={**tiny_recipe()["data"], "num_samples": 6000, "batch_size": 4},
        train={"epochs": 3, "log_every": 25, "checkpoint_every": 50, "device": "cpu", "precision": "32"},
    )
    whole = trainlab.train(recipe, out=tmp_path / "whole")

    process, run_dir = train_in_a_process(recipe, tmp_path, "killed",
                                          until=lambda run: (run / "checkpoints/last/meta.json").exists())
    time.sleep(0.05)  # into the next stretch of training, or the next checkpoint write
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert json.loads((run_dir / "status.json").read_text())["status"] == "running"  # it really died mid-run
    assert checkpoints.find_checkpoint(run_dir / "checkpoints") is not None

    resumed = trainlab.resume(run_dir)
    assert same_weights(whole.model, resumed.model)
    assert without_time(whole.metrics) == without_time(read_records(run_dir / "metrics.jsonl"))


def test_sigterm_writes_the_checkpoints_held_in_memory_then_resume(tmp_path):
    """`kill` (SIGTERM) of `trainlab train` between epoch-end writes: the epochs held in memory
    (train.checkpoint_seconds) are not lost; it stops at the next step, writes last/ and best/, exits
    130, and resumes to the uninterrupted run."""
    recipe = tiny_recipe(
        data={**tiny_recipe()["data"], "num_samples": 2000, "batch_size": 4},
        train={"epochs": 12, "log_every": 25, "device": "cpu", "precision": "32", "checkpoint_seconds": 3600},
    )
    whole = trainlab.train(recipe, out=tmp_path / "whole")

    def third_epoch(run):  # two epoch ends held, none written
        records = read_records(run / "metrics.jsonl") if (run / "metrics.jsonl").exists() else []
        return any(record["epoch"] > 2 for record in records)

    process, run_dir = train_in_a_process(recipe, tmp_path, "terminated", until=third_epoch)
    assert not (run_dir / "checkpoints").exists()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert f"Interrupted by SIGTERM; continue with: trainlab resume {run_dir}" in " ".join(stderr.split())
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted" and status["stopped_by"] == "SIGTERM"
    assert checkpoints.read_meta(run_dir / "checkpoints/last")["step"] == status["step"]
    assert checkpoints.read_meta(run_dir / "checkpoints/best")["step"] == status["best_step"]

    resumed = trainlab.resume(run_dir)
    assert same_weights(whole.model, resumed.model)
    assert without_time(whole.metrics) == without_time(read_records(run_dir / "metrics.jsonl"))


def checkpoint_writes(monkeypatch) -> list[tuple[str, int]]:
    """(folder name, step) of every checkpoint serialised from here on (hard-linked copies not counted)."""
    written: list[tuple[str, int]] = []
    original = checkpoints.finish_checkpoint

    def finish(partial, folder, meta):
        written.append((folder.name, meta["step"]))
        return original(partial, folder, meta)

    monkeypatch.setattr(checkpoints, "finish_checkpoint", finish)
    return written


@pytest.mark.parametrize("seconds", [0, 3600])
def test_epoch_end_checkpoints_are_spaced_by_checkpoint_seconds(seconds, tmp_path, monkeypatch):
    written = checkpoint_writes(monkeypatch)
    recipe = tiny_recipe(train={**tiny_recipe()["train"], "checkpoint_seconds": seconds},
                         optimizer={"name": "SGD", "lr": 2.0, "momentum": 0.9})
    run = trainlab.train(recipe, out=tmp_path / "run")
    assert run.result.state.best_step == 9  # too high an lr: valid/loss is best after the first of 3 epochs
    if seconds == 0:  # every epoch end: last/ serialised, best/ hard-linked to it
        assert written == [("last", 9), ("last", 18), ("last", 27)]
    else:  # all within the hour: held in memory, written at the end; best/ from its own snapshot
        assert written == [("last", 27), ("best", 9)]
    last = checkpoints.find_checkpoint(run.folder / "checkpoints")
    assert checkpoints.read_meta(last)["step"] == 27
    reloaded = copy.deepcopy(run.model)
    checkpoints.load_weights(last, reloaded)
    assert same_weights(reloaded, run.model)
    best = checkpoints.read_meta(run.folder / "checkpoints/best")
    assert best["step"] == run.result.state.best_step and best["value"] == run.result.state.best_value
    assert checkpoints.load_state(run.folder / "checkpoints/best")["loop"]["step"] == 9
    first_epoch = trainlab.train(tiny_recipe(train={**recipe["train"], "epochs": 1}, optimizer=recipe["optimizer"]),
                                 out=tmp_path / "one-epoch")
    checkpoints.load_weights(run.folder / "checkpoints/best", reloaded)
    assert same_weights(reloaded, first_epoch.model)  # best/ holds the weights of step 9, not later ones


def test_held_checkpoints_keep_their_own_state_until_written(tmp_path):
    """An epoch end held in memory is written as it was, even after the model and newer held
    checkpoints moved on; best at last's position is a hard link to last's files."""
    model = torch.nn.Linear(3, 2)
    writer = _Checkpointer(tmp_path, MetricsFile(tmp_path / "metrics.jsonl"), "0" * 64, "held")

    def save(kind: str, value: float, step: int, hold: bool) -> None:
        with torch.no_grad():
            model.weight.fill_(value)
        writer(kind, model, lambda: {"value": torch.tensor(value)}, {"step": step, "epoch": step, "batch": 0},
               hold=hold)

    save("last", 1.0, 1, hold=True)
    save("best", 1.0, 1, hold=True)  # shares last's snapshot while both are held
    save("last", 2.0, 2, hold=True)  # takes new buffers: best's snapshot must keep the values of step 1
    with torch.no_grad():
        model.weight.fill_(9.0)  # the live model moves on; held snapshots are copies
    assert not (tmp_path / "checkpoints").exists()  # nothing is written while held
    writer.wait()

    def stored(kind: str) -> tuple[int, float, float]:
        folder = tmp_path / "checkpoints" / kind
        weights = load_file(folder / checkpoints.MODEL_FILE)["weight"]
        return (checkpoints.read_meta(folder)["step"], weights.unique().item(),
                checkpoints.load_state(folder)["value"].item())

    assert stored("last") == (2, 2.0, 2.0)
    assert stored("best") == (1, 1.0, 1.0)

    save("last", 3.0, 3, hold=True)
    save("best", 3.0, 3, hold=True)
    writer.close()  # as a run that ends with an error: held checkpoints are written, best/ as a link
    assert stored("last") == stored("best") == (3, 3.0, 3.0)
    files = [tmp_path / "checkpoints" / kind / checkpoints.MODEL_FILE for kind in ("last", "best")]
    assert files[0].stat().st_ino == files[1].stat().st_ino


def test_interrupted_checkpoint_write_leaves_a_complete_checkpoint(tmp_path):
    model = torch.nn.Linear(2, 2)
    folder = tmp_path / "checkpoints" / "last"
    checkpoints.save_checkpoint(folder, model, {"x": torch.ones(1)}, {"step": 1})
    # a kill after renaming last -> last.previous but before renaming the new one into place:
    os.replace(folder, tmp_path / "checkpoints" / "last.previous")
    (tmp_path / "checkpoints" / "last.partial").mkdir()
    found = checkpoints.find_checkpoint(tmp_path / "checkpoints")
    assert found == tmp_path / "checkpoints" / "last.previous"
    assert checkpoints.read_meta(found)["step"] == 1
    # the next save cleans up and replaces atomically
    checkpoints.save_checkpoint(folder, model, {"x": torch.ones(1)}, {"step": 2})
    assert checkpoints.read_meta(checkpoints.find_checkpoint(tmp_path / "checkpoints"))["step"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last"]


def test_resume_errors_leave_the_run_untouched(tmp_path):
    with pytest.raises(TrainlabError, match="does not exist"):
        trainlab.resume(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainlabError, match="not a trainlab run folder"):
        trainlab.resume(tmp_path / "empty")

    run = trainlab.train(tiny_recipe(), out=tmp_path / "run")
    metrics_before = (run.folder / "metrics.jsonl").read_bytes()
    weights = run.folder / "checkpoints/last/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(TrainlabError, match="corrupt"):
        trainlab.resume(run.folder)
    assert (run.folder / "metrics.jsonl").read_bytes() == metrics_before

    meta = run.folder / "checkpoints/last/meta.json"
    meta.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(TrainlabError, match="not a trainlab checkpoint"):
        trainlab.resume(run.folder)

    shutil.rmtree(run.folder / "checkpoints")  # as a run killed before its first checkpoint leaves it
    with pytest.raises(TrainlabError, match="no complete checkpoint to resume from .*train.checkpoint_seconds"):
        trainlab.resume(run.folder)
    assert (run.folder / "metrics.jsonl").read_bytes() == metrics_before


def test_foreign_weights_are_refused(tmp_path):
    run = trainlab.train(tiny_recipe(), out=tmp_path / "run")
    other = trainlab.train(
        tiny_recipe(model={"layers": [{"Linear": {"out_features": 5}}, "Tanh", {"Linear": {"out_features": "num_classes"}}]}),
        out=tmp_path / "other",
    )
    for name in ("model.safetensors", "state.pt", "meta.json"):
        (run.folder / "checkpoints/last" / name).write_bytes((other.folder / "checkpoints/last" / name).read_bytes())
    with pytest.raises(TrainlabError, match="do not fit"):
        trainlab.resume(run.folder)


def test_state_is_loaded_without_unpickling_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    folder = tmp_path / "ckpt"
    checkpoints.save_checkpoint(folder, torch.nn.Linear(1, 1), {"evil": Evil()}, {})
    with pytest.raises(TrainlabError, match="safely"):
        checkpoints.load_state(folder)
