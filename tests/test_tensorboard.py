"""TensorBoard: scalars, histograms, graph, image grid, embedding projector and hparams, all in the
run's one tensorboard/ folder, read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import trainlab
from trainlab import pipeline
from trainlab.train.callbacks import CallbackList, Progress, TensorBoardLogger
from trainlab.train.tensorboard import embedding_features, flatten_hparams, penultimate_layer

from conftest import same_weights, tiny_recipe, without_time

STEPS_PER_EPOCH = 9  # tiny_recipe: 72 training samples, batches of 8
PARAMETERS = ["0.weight", "0.bias", "2.weight", "2.bias"]  # the tiny layer stack's parameters


def events(run_folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_folder / "tensorboard"),
                                   size_guidance={"histograms": 0, "images": 0, "tensors": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def steps(accumulator, kind, tag):
    return [event.step for event in getattr(accumulator, kind)(tag)]


def hparams_data(accumulator):
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = accumulator.PluginTagToContent("hparams")
    return {tag.rsplit("/", 1)[-1]: plugin_data_pb2.HParamsPluginData.FromString(data) for tag, data in content.items()}


def digits_recipe(**log):
    recipe = tiny_recipe(train={"epochs": 2, "device": "cpu", "precision": "32"}, log={"tensorboard": True, **log},
                         evaluate={"metrics": ["accuracy"]})  # validation records: the loss's own metrics only
    recipe["data"] = {"source": "sklearn-digits", "resize": [16, 16], "batch_size": 64}
    recipe["model"] = {"name": "LeNet"}
    return recipe


def test_histograms_graph_embeddings_and_hparams_in_one_run(tmp_path):
    recipe = tiny_recipe(log={"tensorboard": True, "histograms": 2, "embeddings": True},
                         evaluate={"metrics": ["accuracy"]})  # validation records: the loss's own metrics only
    run = trainlab.train(recipe, out=tmp_path / "run")
    board = events(run.folder)
    tags = board.Tags()
    last = 3 * STEPS_PER_EPOCH

    assert {"train/loss", "train/accuracy", "valid/loss", "valid/accuracy", "lr"} <= set(tags["scalars"])
    # every 2nd epoch: epoch 2 of 3, at its last optimizer step; gradients read before zero_grad
    assert set(tags["histograms"]) == {f"{kind}/{name}" for kind in ("weights", "gradients") for name in PARAMETERS}
    for name in PARAMETERS:
        assert steps(board, "Histograms", f"weights/{name}") == [2 * STEPS_PER_EPOCH]
        assert steps(board, "Histograms", f"gradients/{name}") == [2 * STEPS_PER_EPOCH]
    assert board.Histograms("weights/0.weight")[0].histogram_value.num == 12 * 6  # every value of the tensor
    assert board.Histograms("gradients/0.weight")[0].histogram_value.max > 0
    assert len(board.Graph().node) > 0
    assert tags["images"] == []  # not image data

    # hparams: the flattened resolved recipe and the final metrics, in this run (no sub-run folder)
    data = hparams_data(board)
    assert set(data) == {"experiment", "session_start_info", "session_end_info"}
    values = data["session_start_info"].session_start_info.hparams
    assert values["optimizer.lr"].number_value == pytest.approx(0.1)
    assert values["train.epochs"].number_value == 3
    assert values["train.monitor"].string_value == "valid/loss"
    assert json.loads(values["model.layers"].string_value)[0] == {"Linear": {"out_features": 12}}
    metric_tags = {info.name.tag for info in data["experiment"].experiment.metric_infos}
    assert metric_tags == {"final/valid/loss", "final/valid/accuracy", "final/best/valid/loss"}
    valid_losses = [event.value for event in board.Scalars("valid/loss")]
    assert board.Scalars("final/best/valid/loss")[0].value == pytest.approx(min(valid_losses))
    assert board.Scalars("final/valid/accuracy")[0].value == pytest.approx(board.Scalars("valid/accuracy")[-1].value)
    assert steps(board, "Scalars", "final/valid/loss") == [last]
    assert [path.name for path in (run.folder / "tensorboard").iterdir() if path.is_dir()] == [f"{last:05d}"]

    # the projector: the 24 validation samples' 12 hidden features, labelled by class name
    assert (run.folder / "tensorboard/projector_config.pbtxt").is_file()
    embedding = run.folder / "tensorboard" / f"{last:05d}" / "features"
    rows = (embedding / "tensors.tsv").read_text().splitlines()
    assert len(rows) == 24 and all(len(row.split("\t")) == 12 for row in rows)
    valid_targets = trainlab.check(recipe).data.valid.targets
    assert (embedding / "metadata.tsv").read_text().splitlines() == [f"class_{t}" for t in valid_targets.tolist()]
    assert not (embedding / "sprite.png").exists()


def test_image_run_logs_the_first_batch_and_projector_thumbnails(tmp_path):
    run = trainlab.train(digits_recipe(embeddings=True), out=tmp_path / "run")
    board = events(run.folder)
    [grid] = board.Images("train/batch")
    assert grid.step == 0 and (grid.width, grid.height) == (8 * 18 + 2, 8 * 18 + 2)  # 64 images of 16x16, 8 a row
    assert len(board.Graph().node) > 0
    last = 2 * 23  # 1437 training samples in batches of 64
    embedding = run.folder / "tensorboard" / f"{last:05d}" / "features"
    rows = (embedding / "tensors.tsv").read_text().splitlines()
    assert len(rows) == 360 and len(rows[0].split("\t")) == 84  # LeNet's last Linear takes 84 features
    assert set((embedding / "metadata.tsv").read_text().splitlines()) <= {str(digit) for digit in range(10)}
    from PIL import Image

    assert Image.open(embedding / "sprite.png").size == (19 * 16, 19 * 16)  # 360 thumbnails, 19 a row
    config = (run.folder / "tensorboard/projector_config.pbtxt").read_text()
    assert f'{last:05d}/features/sprite.png' in config and f'{last:05d}/features/metadata.tsv' in config


def test_options_off_leave_only_scalars_and_ask_for_no_gradients(tmp_path, monkeypatch):
    def refuse(self, step, model):
        raise AssertionError("gradients were read although nobody asked for them")

    monkeypatch.setattr(CallbackList, "on_gradients", refuse)
    recipe = digits_recipe(graph=False, images=False, hparams=False, embeddings=False)
    recipe["train"]["epochs"] = 1
    run = trainlab.train(recipe, out=tmp_path / "run")
    board = events(run.folder)
    tags = board.Tags()
    assert set(tags["scalars"]) == {"train/loss", "train/accuracy", "valid/loss", "valid/accuracy", "lr"}
    assert tags["images"] == [] and tags["histograms"] == [] and tags["tensors"] == []
    assert tags["graph"] is False
    with pytest.raises(KeyError):
        board.PluginTagToContent("hparams")
    assert not (run.folder / "tensorboard/projector_config.pbtxt").exists()


def test_gradient_hook_runs_only_in_the_epochs_that_want_it(tmp_path, monkeypatch):
    asked, read = [], []
    wants, reads = CallbackList.wants_gradients, TensorBoardLogger.on_gradients
    monkeypatch.setattr(CallbackList, "wants_gradients", lambda self, epoch: asked.append(epoch) or wants(self, epoch))
    monkeypatch.setattr(TensorBoardLogger, "on_gradients",
                        lambda self, step, model: read.append(step) or reads(self, step, model))

    trainlab.train(tiny_recipe(log={"tensorboard": True}), out=tmp_path / "none")  # histograms: None
    assert asked == [1, 2, 3] and read == []  # asked once an epoch, never called
    asked.clear()
    trainlab.train(tiny_recipe(log={"tensorboard": True, "histograms": 2}), out=tmp_path / "every-2")
    assert asked == [1, 2, 3] and read == [2 * STEPS_PER_EPOCH]


def test_an_untraceable_model_trains_and_logs_a_warning(tmp_path, monkeypatch):
    class RefusesTracing(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            if torch.jit.is_tracing():
                raise RuntimeError("this model cannot be traced")
            return self.inner(inputs)

    build = pipeline.build_model
    monkeypatch.setattr(pipeline, "build_model", lambda config, spec: RefusesTracing(build(config, spec)))
    run = trainlab.train(tiny_recipe(log={"tensorboard": True}), out=tmp_path / "run")
    assert run.status == "finished"
    board = events(run.folder)
    assert board.Tags()["graph"] is False
    [warning] = board.Tensors("warnings/graph/text_summary")
    text = warning.tensor_proto.string_val[0].decode()
    assert "could not be traced" in text and "this model cannot be traced" in text
    assert steps(board, "Scalars", "valid/loss") == [9, 18, 27]


def test_extending_a_finished_run_continues_without_duplicates(tmp_path):
    recipe = tiny_recipe(train={"epochs": 2, "log_every": 2, "device": "cpu", "precision": "32"},
                         log={"tensorboard": True, "histograms": 1})
    trainlab.train(recipe, out=tmp_path / "run")
    trainlab.resume(tmp_path / "run", ["train.epochs=3"])
    board = events(tmp_path / "run")
    assert steps(board, "Scalars", "valid/loss") == [9, 18, 27]  # the checkpoint's own step is kept
    train_steps = steps(board, "Scalars", "train/loss")
    assert train_steps == sorted(set(train_steps)) and {9, 18, 27} <= set(train_steps)
    assert steps(board, "Histograms", "weights/0.weight") == [9, 18, 27]
    assert steps(board, "Histograms", "gradients/2.bias") == [9, 18, 27]
    assert len(board.Graph().node) > 0
    assert steps(board, "Scalars", "final/valid/loss") == [18, 27]  # each session that ended, at its end


def test_resume_after_a_crash_purges_what_came_after_the_checkpoint(tmp_path, monkeypatch):
    class Crash(Exception):
        pass

    original = Progress.on_step

    def on_step(self, step, samples):
        original(self, step, samples)
        if step == 14:
            raise Crash

    recipe = tiny_recipe(train={"epochs": 3, "log_every": 2, "checkpoint_every": 3, "device": "cpu",
                                "precision": "32"}, log={"tensorboard": True, "histograms": 1})
    with monkeypatch.context() as patch:
        patch.setattr(Progress, "on_step", on_step)
        with pytest.raises(Crash):
            trainlab.train(recipe, out=tmp_path / "run")
    resumed = trainlab.resume(tmp_path / "run")  # from the checkpoint of step 12
    assert resumed.status == "finished"
    board = events(tmp_path / "run")
    assert steps(board, "Histograms", "weights/0.weight") == [9, 18, 27]
    assert steps(board, "Histograms", "gradients/0.weight") == [9, 18, 27]
    assert steps(board, "Scalars", "valid/loss") == [9, 18, 27]
    train_steps = steps(board, "Scalars", "train/loss")
    assert train_steps == sorted(set(train_steps)) and {14, 16, 18, 27} <= set(train_steps)


def test_penultimate_layer_is_the_last_parameter_layer_that_returns_the_output():
    torch.manual_seed(0)
    inputs = torch.randn(5, 4)
    stack = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    assert penultimate_layer(stack, inputs) is stack[2]

    class Named(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 6), nn.ReLU())
            self.head = nn.Linear(6, 2)

        def forward(self, x):
            return self.head(self.body(x))

    named = Named()
    assert penultimate_layer(named, inputs) is named.head
    # an output activation after the last layer: no layer returns the output; the output is the feature
    activated = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3), nn.LogSoftmax(dim=1))
    assert penultimate_layer(activated, inputs) is None

    class Loader:
        def set_epoch(self, epoch):
            pass

        def __iter__(self):
            return iter([(inputs[:3], torch.tensor([0, 1, 2])), (inputs[3:], torch.tensor([1, 0]))])

    features, targets, _ = embedding_features(stack, Loader(), limit=4)
    assert features.shape == (4, 6) and targets.tolist() == [0, 1, 2, 1]
    assert torch.allclose(features, stack[1](stack[0](inputs[:4])))
    assert embedding_features(activated, Loader())[0].shape == (5, 3)
    assert stack.training  # left as it was


def test_flatten_hparams():
    recipe = {"optimizer": {"name": "SGD", "lr": 0.1, "nesterov": False}, "schedule": None,
              "data": {"resize": [16, 16], "split": {"valid": 0.2}}, "model": {"blocks": {}}}
    assert flatten_hparams(recipe) == {
        "optimizer.name": "SGD", "optimizer.lr": 0.1, "optimizer.nesterov": False, "schedule": "null",
        "data.resize": "[16, 16]", "data.split.valid": 0.2, "model.blocks": "{}",
    }


@pytest.mark.parametrize("loader", ["memory", "dataloader"])
def test_logging_everything_leaves_training_unchanged(tmp_path, loader):
    data = {**tiny_recipe()["data"], "loader": loader}
    model = {"layers": [{"Linear": {"out_features": 12}}, "ReLU", {"Dropout": 0.3},
                        {"Linear": {"out_features": "num_classes"}}]}  # dropout draws from the RNG
    quiet = trainlab.train(tiny_recipe(data=data, model=model), out=tmp_path / "quiet")
    logged = trainlab.train(tiny_recipe(data=data, model=model, log={"tensorboard": True, "histograms": 1,
                                                                     "embeddings": True}), out=tmp_path / "logged")
    assert same_weights(quiet.model, logged.model)
    assert without_time(quiet.metrics) == without_time(logged.metrics)
