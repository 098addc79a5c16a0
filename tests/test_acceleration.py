"""Speed paths: channels-last, torch.compile, the CUDA kernel switches and the warm-up report."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import trainlab
from trainlab.recipe import RecipeError, TrainlabError
from trainlab.recipe.schema import TrainConfig
from trainlab.train import acceleration, distributed
from trainlab.train import checkpoint as checkpoints

from conftest import same_weights, tiny_recipe

CONV_LAYERS = [
    {"Conv2d": {"out_channels": 4, "kernel_size": 3, "padding": 1}}, "BatchNorm2d", "ReLU",
    {"MaxPool2d": 2}, "Flatten", {"Linear": {"out_features": "num_classes"}},
]


def image_recipe(**train):
    """A tiny CNN on 3x8x8 synthetic images."""
    return tiny_recipe(data={"shape": [3, 8, 8]}, model={"layers": CONV_LAYERS},
                       train={"epochs": 2, "device": "cpu", "precision": "32", **train})


def rendered(error: RecipeError) -> str:
    return "\n".join(problem.render() for problem in error.problems)


def test_channels_last_trains_the_same_model_and_saves_portable_weights(tmp_path):
    plain = trainlab.train(image_recipe(), out=tmp_path / "plain")
    fast = trainlab.train(image_recipe(channels_last=True), out=tmp_path / "fast")
    conv = next(module.weight for module in fast.model.modules() if isinstance(module, torch.nn.Conv2d))
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    for left, right in zip(plain.model.state_dict().values(), fast.model.state_dict().values()):
        torch.testing.assert_close(left, right, rtol=1e-4, atol=1e-5)  # other kernels, same arithmetic
    assert [r["loss"] for r in plain.records("valid")] == pytest.approx(
        [r["loss"] for r in fast.records("valid")], rel=1e-4)
    saved = load_file(checkpoints.find_checkpoint(tmp_path / "fast/checkpoints") / "model.safetensors")
    assert all(tensor.is_contiguous() for tensor in saved.values())
    resumed = trainlab.resume(tmp_path / "fast", ["train.epochs=3"])
    assert resumed.status == "finished" and resumed.result.state.epoch == 3


def test_batches_go_to_the_device_in_the_asked_layout():
    batch = torch.randn(2, 3, 4, 5)
    moved = acceleration.to_device(batch, torch.device("cpu"), torch.channels_last)
    assert moved.is_contiguous(memory_format=torch.channels_last) and torch.equal(moved, batch)
    rows = torch.randn(2, 3)
    assert acceleration.to_device(rows, torch.device("cpu"), torch.channels_last) is rows  # not 4-D: unchanged
    assert acceleration.to_device(batch, torch.device("cpu"), torch.preserve_format) is batch


def test_channels_last_on_table_data_is_a_recipe_problem():
    with pytest.raises(RecipeError) as caught:
        trainlab.check(tiny_recipe(train={"channels_last": True}))
    assert "train.channels_last: channels-last applies to image batches (B, C, H, W); this data gives " \
           "samples of shape (6)" in rendered(caught.value)


def test_compile_option_values_are_checked():
    assert TrainConfig(compile=True).compile is True
    assert TrainConfig(compile="max-autotune").compile == "max-autotune"
    with pytest.raises(RecipeError) as caught:
        trainlab.check(tiny_recipe(train={"compile": "fastest"}))
    assert "train.compile" in rendered(caught.value)


def test_compile_without_a_cpp_compiler_is_a_recipe_problem(monkeypatch):
    monkeypatch.setattr(acceleration, "_cpp_compiler", lambda: None)
    with pytest.raises(RecipeError) as caught:
        trainlab.check(tiny_recipe(train={"compile": True}))
    assert "torch.compile on the CPU generates C++ and needs a C++ compiler" in rendered(caught.value)
    assert "train.compile: false" in rendered(caught.value)


def test_compile_failures_become_a_clear_error():
    class BackendCompilerFailed(RuntimeError):  # torch._dynamo.exc's name; only the name is read
        pass

    error = acceleration.compile_failure(BackendCompilerFailed("backend='inductor' raised:\nCalledProcessError"))
    assert isinstance(error, TrainlabError)
    assert "torch.compile could not compile this model" in str(error) and "train.compile: false" in str(error)
    assert acceleration.compile_failure(ValueError("something else")) is None


@pytest.mark.slow
def test_compiled_training_matches_eager_and_checkpoints_plain_names(tmp_path):
    recipe = tiny_recipe(train={"epochs": 2, "device": "cpu", "precision": "32"})
    eager = trainlab.train(recipe, out=tmp_path / "eager")
    compiled = trainlab.train(tiny_recipe(train={**recipe["train"], "compile": True}), out=tmp_path / "compiled")
    for left, right in zip(eager.model.state_dict().values(), compiled.model.state_dict().values()):
        torch.testing.assert_close(left, right, rtol=1e-5, atol=1e-6)
    saved = load_file(checkpoints.find_checkpoint(tmp_path / "compiled/checkpoints") / "model.safetensors")
    assert set(saved) == set(eager.model.state_dict())  # no "_orig_mod." prefixes
    status = json.loads((tmp_path / "compiled/status.json").read_text())
    assert status["warmup_seconds"] > 0 and status["samples_per_second"] > 0
    resumed = trainlab.resume(tmp_path / "compiled", ["train.epochs=3"])
    assert resumed.status == "finished"


def test_a_checkpoint_snapshot_is_a_copy_that_training_can_run_past():
    model = torch.nn.Linear(3, 2)
    state = {"momentum": [torch.ones(2)], "position": (1, 2)}
    taken = checkpoints.snapshot(torch.compile(model), state)
    with torch.no_grad():
        model.weight.add_(1.0)
    state["momentum"][0].add_(1.0)
    assert set(taken.weights) == {"weight", "bias"}
    assert torch.equal(taken.weights["weight"] + 1.0, model.weight.detach())
    assert torch.equal(taken.state["momentum"][0], torch.ones(2)) and taken.state["position"] == (1, 2)


def test_a_run_leaves_no_checkpoint_thread_behind(tmp_path):
    import threading

    def writers() -> int:
        return sum(thread.name == "trainlab-checkpoints" for thread in threading.enumerate())

    before = writers()
    for index in range(3):
        trainlab.train(tiny_recipe(train={"epochs": 1, "device": "cpu", "precision": "32"}),
                       out=tmp_path / f"run{index}")
    assert writers() == before


def test_unwrap_strips_torch_compile():
    model = torch.nn.Linear(2, 2)
    assert distributed.unwrap(torch.compile(model)) is model  # nothing compiles until a call
    assert distributed.unwrap(model) is model


def test_warmup_is_reported_apart_from_the_throughput(tmp_path):
    run = trainlab.train(tiny_recipe(), out=tmp_path / "run")
    result = run.result
    assert 0 < result.warmup_seconds < result.seconds
    steady = (result.state.samples - 8) / (result.seconds - result.warmup_seconds)  # first step: one batch of 8
    assert result.samples_per_second == pytest.approx(steady)
    status = json.loads((tmp_path / "run/status.json").read_text())
    assert status["warmup_seconds"] == round(result.warmup_seconds, 3)


def test_cuda_kernel_switches_are_set_for_the_run_and_restored():
    cudnn = torch.backends.cudnn
    before = (cudnn.benchmark, cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32,
              torch.are_deterministic_algorithms_enabled(), cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    cuda = torch.device("cuda")  # the switches are plain flags: settable without a GPU
    with acceleration.kernel_settings(TrainConfig(), "bf16-mixed", cuda, fixed_shapes=True):
        assert cudnn.benchmark and not cudnn.deterministic and torch.backends.cuda.matmul.allow_tf32
    with acceleration.kernel_settings(TrainConfig(), "32", cuda, fixed_shapes=False):  # PyTorch's defaults stay
        assert not cudnn.benchmark and (cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before[4:]
    with acceleration.kernel_settings(TrainConfig(tf32=False), "bf16-mixed", cuda, fixed_shapes=True):
        assert not torch.backends.cuda.matmul.allow_tf32 and not cudnn.allow_tf32
    with acceleration.kernel_settings(TrainConfig(deterministic=True, tf32=True), "32", cuda, fixed_shapes=True):
        assert not cudnn.benchmark and cudnn.deterministic and torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cuda.matmul.allow_tf32
    assert (cudnn.benchmark, cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32,
            torch.are_deterministic_algorithms_enabled(), cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32) == before
    with acceleration.kernel_settings(TrainConfig(deterministic=True), "32", torch.device("cpu"), True):
        assert not torch.are_deterministic_algorithms_enabled()  # the CPU needs none of it


# ------------------------------------------------------------------------------------ on a GPU


@pytest.mark.gpu
def test_cuda_channels_last_bf16_compiled_training(tmp_path):
    run = trainlab.train(image_recipe(device="cuda", precision="bf16-mixed", channels_last=True, compile=True),
                         out=tmp_path / "run")
    assert run.status == "finished" and next(run.model.parameters()).is_cuda
    assert run.result.warmup_seconds > 0


@pytest.mark.gpu
def test_cuda_deterministic_runs_repeat_bit_for_bit(tmp_path):
    recipe = image_recipe(device="cuda", precision="bf16-mixed", channels_last=True, deterministic=True)
    first = trainlab.train(recipe, out=tmp_path / "first")
    second = trainlab.train(recipe, out=tmp_path / "second")
    assert same_weights(first.model, second.model)


@pytest.mark.gpu
def test_cuda_training_matches_the_cpu_in_float32(tmp_path):
    """Device-resident data, the same batches in the same order: only rounding differs."""
    cpu = trainlab.train(image_recipe(), out=tmp_path / "cpu")
    gpu = trainlab.train(image_recipe(device="cuda", deterministic=True), out=tmp_path / "gpu")
    for left, right in zip(cpu.model.state_dict().values(), gpu.model.state_dict().values()):
        torch.testing.assert_close(left, right.cpu(), rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
def test_images_resident_on_the_gpu_are_augmented_there_exactly_as_on_the_cpu(tmp_path):
    from test_data_images import AUGMENT, data_config, make_folder

    from trainlab.data import build_data

    root = make_folder(tmp_path / "pets", count=6)
    config = data_config(tmp_path, path=str(root), transforms={"train": AUGMENT, "eval": ["ToTensor"]})
    on_cpu, on_gpu = build_data(config, 4), build_data(config, 4)
    on_gpu.train.to("cuda")
    assert on_gpu.train.transform.vectorised
    for epoch in (0, 1):
        on_cpu.train.set_epoch(epoch)
        on_gpu.train.set_epoch(epoch)
        served = list(on_gpu.train)
        assert all(images.is_cuda for images, _ in served)
        for (cpu_images, cpu_targets), (gpu_images, gpu_targets) in zip(on_cpu.train, served, strict=True):
            torch.testing.assert_close(gpu_images.cpu(), cpu_images)  # the same crops and flips, drawn on the CPU
            assert torch.equal(gpu_targets.cpu(), cpu_targets)


@pytest.mark.gpu
def test_snapshots_of_cuda_tensors_reuse_pinned_buffers_and_hold_the_values():
    model = torch.nn.Conv2d(3, 4, 3).cuda().to(memory_format=torch.channels_last)
    copier = checkpoints.HostCopier()
    first = checkpoints.snapshot(model, {"momentum": [torch.ones(3, device="cuda")], "step": 1}, copier)
    assert first.weights["weight"].is_pinned() and first.weights["weight"].is_contiguous()
    assert torch.equal(first.weights["weight"], model.weight.detach().cpu())
    assert torch.equal(first.state["momentum"][0], torch.ones(3)) and first.state["step"] == 1
    with torch.no_grad():
        model.weight.add_(1.0)
    second = checkpoints.snapshot(model, {"momentum": [torch.zeros(3, device="cuda")], "step": 2}, copier)
    assert second.weights["weight"].data_ptr() == first.weights["weight"].data_ptr()  # the buffer is reused
    assert torch.equal(second.weights["weight"], model.weight.detach().cpu())
    assert torch.equal(second.state["momentum"][0], torch.zeros(3))


@pytest.mark.gpu
def test_host_resident_tensors_reach_the_gpu_through_pinned_buffers(tmp_path, monkeypatch):
    import functools

    from trainlab import pipeline
    from trainlab.data.loaders import TensorLoader
    from trainlab.pipeline import _place_data

    inputs, targets = torch.randn(50, 3), torch.arange(50)
    staged = TensorLoader(inputs, targets, batch_size=8, shuffle=True, seed=4)
    plain = TensorLoader(inputs, targets, batch_size=8, shuffle=True, seed=4)
    bundle = type("Bundle", (), {"train": staged, "valid": None, "test": None})()
    _place_data(bundle, torch.device("cuda"), limit_bytes=0)  # too large to keep on the GPU
    assert staged.staged_to == torch.device("cuda") and not staged.inputs.is_cuda
    for epoch in (0, 1):
        staged.set_epoch(epoch)
        plain.set_epoch(epoch)
        served = list(staged)  # every batch kept: reusing the two buffers must not overwrite them
        assert all(x.is_cuda and y.is_cuda for x, y in served)
        for (x, y), (x_cpu, y_cpu) in zip(served, plain, strict=True):
            assert torch.equal(x.cpu(), x_cpu) and torch.equal(y.cpu(), y_cpu)
    ordered = TensorLoader(inputs, targets, batch_size=16).stage_to(torch.device("cuda"))
    assert torch.equal(torch.cat([x for x, _ in ordered]).cpu(), inputs)
    recipe = image_recipe(device="cuda", precision="32", deterministic=True)
    resident = trainlab.train(recipe, out=tmp_path / "resident")
    monkeypatch.setattr(pipeline, "_place_data", functools.partial(_place_data, limit_bytes=0))
    streamed = trainlab.train(recipe, out=tmp_path / "staged")  # every split through the pinned buffers
    assert same_weights(resident.model, streamed.model)
