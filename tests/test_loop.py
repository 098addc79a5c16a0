"""Loop behaviour: divergence, Ctrl-C, early stopping, best checkpoint, logging cadence, TensorBoard."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

import trainlab
from trainlab.recipe import TrainlabError
from trainlab.train import checkpoint as checkpoints
from trainlab.train.callbacks import Progress

from conftest import same_weights, tiny_recipe, without_time


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    recipe = tiny_recipe(
        data={**tiny_recipe()["data"], "task": "regression"},
        loss={"name": "MSELoss"},
        model={"layers": [{"Linear": {"out_features": 8}}, "ReLU", {"Linear": {"out_features": "num_classes"}}]},
        optimizer={"name": "SGD", "lr": 1.0e-3},
        schedule={"name": "ExponentialLR", "gamma": 1.0e4, "interval": "step"},
        train={"epochs": 3, "log_every": 1, "checkpoint_every": 1, "device": "cpu", "precision": "32",
               "monitor": "valid/loss"},
    )
    with pytest.raises(TrainlabError, match="NaN or infinite at step (\\d+).*Lower optimizer.lr"):
        trainlab.train(recipe, out=tmp_path / "run")
    status = json.loads((tmp_path / "run/status.json").read_text())
    assert status["status"] == "diverged"
    last = checkpoints.find_checkpoint(tmp_path / "run/checkpoints")
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    diverged_step = records[-1]["step"]
    assert not torch.isfinite(torch.tensor(records[-1]["loss"]))
    assert checkpoints.read_meta(last)["step"] < diverged_step
    from safetensors.torch import load_file

    weights = load_file(last / "model.safetensors")
    assert weights and all(torch.isfinite(value).all() for value in weights.values())


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_writes_a_resumable_checkpoint(stop, tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM (what kill, schedulers and torchrun send first) stops at the next step and
    writes a checkpoint there; the handlers in place before training are back afterwards."""
    recipe = tiny_recipe(optimizer={"name": "SGD", "lr": 0.1, "momentum": 0.9})
    whole = trainlab.train(recipe, out=tmp_path / "whole")
    original = Progress.on_step

    def on_step(self, step, samples):
        original(self, step, samples)
        if step == 5:
            os.kill(os.getpid(), stop)

    def elsewhere(signum, frame):  # in place around training: a signal trainlab missed lands here, not in pytest
        missed.append(signum)

    missed: list[int] = []
    previous = signal.signal(stop, elsewhere)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(Progress, "on_step", on_step)
            stopped = trainlab.train(recipe, out=tmp_path / "stopped")
        assert signal.getsignal(stop) is elsewhere
    finally:
        signal.signal(stop, previous)
    assert not missed
    assert stopped.status == "interrupted"
    assert stopped.result.state.step == 5 and stopped.result.stopped_by == stop.name
    status = json.loads((tmp_path / "stopped/status.json").read_text())
    assert status["status"] == "interrupted" and status["stopped_by"] == stop.name
    assert checkpoints.read_meta(checkpoints.find_checkpoint(tmp_path / "stopped/checkpoints"))["step"] == 5
    resumed = trainlab.resume(tmp_path / "stopped")
    assert same_weights(whole.model, resumed.model)
    assert without_time(whole.metrics) == without_time(resumed.metrics)


def test_early_stopping_and_the_best_checkpoint(tmp_path):
    recipe = tiny_recipe(train={"epochs": 10, "device": "cpu", "precision": "32", "monitor": "valid/loss",
                                "early_stopping": {"patience": 2, "min_delta": 100.0}})
    run = trainlab.train(recipe, out=tmp_path / "run")
    assert run.status == "early_stopped"
    assert run.result.state.epoch == 3  # improved once, then two stale validations
    best = run.best
    assert best["step"] == 9 and best["monitor"] == "valid/loss"
    assert best["value"] == run.records("valid")[0]["loss"]


def test_best_checkpoint_follows_a_max_monitor(tmp_path):
    recipe = tiny_recipe(train={"epochs": 4, "device": "cpu", "precision": "32", "monitor": "valid/accuracy"})
    run = trainlab.train(recipe, out=tmp_path / "run")
    accuracies = [r["accuracy"] for r in run.records("valid")]
    assert run.best["value"] == max(accuracies)
    assert run.best["step"] == run.records("valid")[accuracies.index(max(accuracies))]["step"]


def test_log_every_and_record_contents(tmp_path):
    run = trainlab.train(tiny_recipe(train={"epochs": 2, "log_every": 4, "device": "cpu", "precision": "32"}),
                         out=tmp_path / "run")
    train_steps = [r["step"] for r in run.records("train")]
    assert train_steps == [4, 8, 9, 12, 16, 18]  # every 4 steps, plus the end of each 9-step epoch
    for record in run.records("train"):
        assert set(record) == {"step", "epoch", "split", "loss", "accuracy", "lr", "time"}
    assert [r["epoch"] for r in run.records("valid")] == [1, 2]


def test_train_metrics_off_keeps_the_loss_and_the_same_training(tmp_path):
    train = {"epochs": 2, "log_every": 4, "device": "cpu", "precision": "32"}
    full = trainlab.train(tiny_recipe(train=train), out=tmp_path / "full")
    lean = trainlab.train(tiny_recipe(train={**train, "train_metrics": False}), out=tmp_path / "lean")
    assert same_weights(full.model, lean.model)  # metrics never touch training
    assert all("accuracy" not in record for record in lean.records("train"))
    assert [r["loss"] for r in lean.records("train")] == [r["loss"] for r in full.records("train")]
    assert all("accuracy" in record for record in lean.records("valid"))
    with pytest.raises(TrainlabError, match="does not produce that metric.*train/loss, valid/loss, valid/accuracy"):
        trainlab.check(tiny_recipe(train={**train, "train_metrics": False, "monitor": "train/accuracy"}))
    before = {path.name: path.read_bytes() for path in (tmp_path / "lean").iterdir() if path.is_file()}
    with pytest.raises(TrainlabError, match="train_metrics cannot change when resuming"):
        trainlab.resume(tmp_path / "lean", ["train.train_metrics=true", "train.epochs=3"])
    assert {path.name: path.read_bytes() for path in (tmp_path / "lean").iterdir() if path.is_file()} == before


def test_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = trainlab.train(tiny_recipe(log={"tensorboard": True, "plots": False, "progress": "none"}),
                         out=tmp_path / "run")
    events = EventAccumulator(str(run.folder / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/accuracy", "valid/loss", "valid/accuracy", "lr"} <= tags
    assert [e.step for e in events.Scalars("valid/loss")] == [9, 18, 27]


def test_dataloader_and_memory_loaders_train_identically(tmp_path):
    memory = trainlab.train(tiny_recipe(), out=tmp_path / "a")
    loader = trainlab.train(tiny_recipe(data={**tiny_recipe()["data"], "loader": "dataloader"}), out=tmp_path / "b")
    assert same_weights(memory.model, loader.model)


def test_resume_refuses_overrides_outside_train_and_log(tmp_path):
    run = trainlab.train(tiny_recipe(), out=tmp_path / "run")
    with pytest.raises(TrainlabError, match="only train.\\* and log.\\* keys"):
        trainlab.resume(run.folder, ["optimizer.lr=0.5"])


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_on_the_cpu(precision, tmp_path):
    run = trainlab.train(tiny_recipe(train={"epochs": 3, "device": "cpu", "precision": precision, "log_every": 3}),
                         out=tmp_path / "run")
    losses = [r["loss"] for r in run.records("valid")]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    state = checkpoints.load_state(run.folder / "checkpoints/last")
    assert bool(state["scaler"]) == (precision == "16-mixed")  # GradScaler only for float16
    assert json.loads((run.folder / "status.json").read_text())["precision"] == precision


def test_validate_every_and_the_last_epoch(tmp_path):
    run = trainlab.train(tiny_recipe(train={"epochs": 5, "validate_every": 2, "device": "cpu", "precision": "32"}),
                         out=tmp_path / "run")
    assert [r["epoch"] for r in run.records("valid")] == [2, 4, 5]


def test_progress_bar_mode_runs(tmp_path):
    run = trainlab.train(tiny_recipe(log={"tensorboard": False, "plots": False, "progress": "bar"}),
                         out=tmp_path / "run")
    assert run.status == "finished"


@pytest.mark.gpu
def test_cuda_bf16_training(tmp_path):
    run = trainlab.train(tiny_recipe(train={"epochs": 2, "device": "cuda", "precision": "bf16-mixed"}),
                         out=tmp_path / "run")
    assert run.status == "finished" and next(run.model.parameters()).is_cuda


# ----------------------------------------------------------------------------------- the meter


def _meter_batches(shapes: list[tuple[int, ...]], classes: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(*shape, classes, generator=generator),
             torch.randint(0, classes, shape, generator=generator)) for shape in shapes]


def _criterion(reduction: str = "mean"):
    from trainlab.data.spec import DataSpec
    from trainlab.recipe.schema import LossConfig
    from trainlab.train.losses import build_loss

    spec = DataSpec(task="classification", input_shape=(4,), num_classes=5)
    return build_loss(LossConfig(name="CrossEntropyLoss", reduction=reduction), spec)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_meter_sums_batches_of_any_size_like_a_direct_computation(reduction):
    """Uneven batch sizes (counts weigh mean losses) and more batches than one flush holds: the
    averages equal the plain per-sample computation."""
    from trainlab.train.loop import Meter

    criterion = _criterion(reduction)
    meter = Meter(criterion, torch.device("cpu"))
    losses, correct, samples = 0.0, 0, 0
    for outputs, targets in _meter_batches([(7,), (3,), (7,)] * 15):  # 45 batches
        loss = criterion(outputs, targets)
        meter.add(loss, outputs, targets)
        losses += float(loss) * (outputs.shape[0] if reduction == "mean" else 1)
        correct += int((outputs.argmax(1) == targets).sum())
        samples += outputs.shape[0]
    averages = meter.epoch()
    assert averages["loss"] == pytest.approx(losses / samples, rel=1e-6)
    assert averages["accuracy"] == pytest.approx(correct / samples, rel=1e-12)
    assert meter.count == 0 and meter.epoch() == {}


class _SummingCriterion:
    """The part of a criterion the meter uses; its metric takes outputs of any shape."""

    reduction = "mean"
    metric_names = ("total",)

    def batch_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"total": outputs.reshape(outputs.shape[0], -1).sum(1).sum()}


def test_meter_reduces_held_outputs_before_one_of_another_shape():
    """Outputs whose shape past the batch dimension changes (a sequence model on bucketed text)
    cannot be concatenated with the held ones: the meter reduces those first and keeps every sum."""
    from trainlab.train.loop import Meter

    meter = Meter(_SummingCriterion(), torch.device("cpu"))
    total, samples = 0.0, 0
    for length in (6, 6, 3, 3, 3, 9, 6):
        outputs = torch.full((4, length), 0.5)
        meter.add(torch.tensor(1.0), outputs, torch.zeros(4))
        total, samples = total + float(outputs.sum()), samples + 4
    assert meter.epoch() == {"loss": 1.0, "total": pytest.approx(total / samples)}


def test_meter_resumed_from_its_state_mid_flush_continues_exactly():
    """A checkpoint taken while batches are held (not yet reduced) restores them as they were: the
    resumed meter's windows and epoch equal the uninterrupted meter's, bit for bit."""
    from trainlab.train.loop import Meter

    criterion = _criterion()
    batches = _meter_batches([(6,), (6,), (2,)] * 13)
    whole = Meter(criterion, torch.device("cpu"))
    first = Meter(criterion, torch.device("cpu"))
    windows_whole, windows_resumed = [], []
    for index, (outputs, targets) in enumerate(batches[:20]):
        for meter in (whole, first):
            meter.add(criterion(outputs, targets), outputs, targets)
        if index == 9:
            windows_whole.append(whole.window())
            windows_resumed.append(first.window())
    state = first.state_dict()
    assert len(state["held"]["losses"]) == 10 and len(state["held"]["outputs"]) == 10  # held, not reduced
    resumed = Meter(criterion, torch.device("cpu"))
    resumed.load_state_dict(state)
    for outputs, targets in batches[20:]:
        for meter in (whole, resumed):
            meter.add(criterion(outputs, targets), outputs, targets)
    windows_whole.append(whole.window())
    windows_resumed.append(resumed.window())
    assert windows_resumed == windows_whole
    assert resumed.epoch() == whole.epoch()


def test_meter_without_metrics_holds_only_losses():
    from trainlab.train.loop import Meter

    criterion = _criterion()
    meter = Meter(criterion, torch.device("cpu"), metrics=False)
    outputs, targets = _meter_batches([(8,)])[0]
    meter.add(criterion(outputs, targets), outputs, targets)
    state = meter.state_dict()
    assert state["held"]["outputs"] == [] and state["held"]["targets"] == [] and len(state["held"]["losses"]) == 1
    restored = Meter(criterion, torch.device("cpu"), metrics=False)
    restored.load_state_dict(state)
    assert restored.epoch() == meter.epoch() == {"loss": pytest.approx(float(criterion(outputs, targets)))}
