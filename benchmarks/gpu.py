"""Benchmark: training throughput on a CUDA GPU, trainlab against a hand-written loop and Lightning.

Two cases, each a recipe with ``source: synthetic`` (in memory; trainlab keeps splits up to 1 GiB
resident on the GPU, and so do the other contenders):

- cnn:      60,000 single-channel 28x28 images, 10 classes; conv(6, 5x5)-ReLU-maxpool(2),
            conv(16, 5x5)-ReLU-maxpool(2), flatten, linear(256 -> 10); batch 128; float32; SGD.
- resnet18: 50,000 CIFAR-shaped 3x32x32 images, 10 classes; torchvision ResNet-18 with the 32x32
            stem (conv1 3x3 stride 1, no max pooling); batch 512; bf16-mixed; channels_last;
            SGD lr 0.1, momentum 0.9, nesterov, weight decay 5e-4.

Contenders, in one process, alternating round by round after a dropped warm-up round:

- trainlab:           ``trainlab.train(recipe, out=tmp)``; throughput is fit()'s own steady-state
                      figure (``samples_per_second``: everything after the first optimizer step, the
                      loop's metric sums, log records and end-of-epoch checkpoints included); the
                      first step (cuDNN autotuning, compilation) is ``warmup_seconds``.
- trainlab (compile): the same with ``train.compile: true`` (``--compile``); its warm-up is reported.
- hand-written:       the loop an expert writes: data on the GPU, ``randperm`` per epoch, index
                      slicing, autocast, channels_last, ``cudnn.benchmark = True``, forward, loss,
                      backward, step, ``zero_grad(set_to_none=True)``; timed from the end of its
                      first step to a final ``cuda.synchronize()``.
- Lightning:          a LightningModule with the same model and optimizer, ``Trainer(precision=...)``,
                      fed by the same slicing iterator over GPU tensors (a DataLoader over CUDA tensors
                      indexes sample by sample, which would only slow Lightning down); timed from the
                      end of its first training batch to ``on_train_end``.

Same architecture (parameter shapes checked every round), the same tensors (``build_data`` of the
recipe), same batch size, optimizer and arguments, same steps and samples (asserted every round).
Peak GPU memory (``torch.cuda.max_memory_allocated`` during the contender's run, each contender
holding its own copy of the data on the GPU) is reported beside the throughput.
Targets: cnn >= 0.97 of hand-written; resnet18 >= 0.98 of hand-written, >= 1.2x Lightning, peak
memory at most 2% above hand-written.

    python benchmarks/gpu.py                       # both cases
    python benchmarks/gpu.py --case resnet18 --compile --json runs/bench/gpu.json
    python benchmarks/gpu.py --quick               # seconds: checks it runs
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    BASELINE,
    Contender,
    Measurement,
    alternate_rounds,
    machine,
    train_in_process,
    verified,
    write_json,
)
from data_cpu import CNN_LAYERS, cnn_model
from mlp_cpu import lightning_available, quiet_lightning

from trainlab.data import build_data
from trainlab.recipe import Recipe

CASE = "gpu"
SEED = 0
TRAINLAB = "trainlab"
TRAINLAB_COMPILE = "trainlab (compile)"
LIGHTNING = "Lightning"


@dataclass
class GpuMeasurement(Measurement):
    peak_memory_bytes: int = 0  # torch.cuda.max_memory_allocated during the run, less what was allocated before
    warmup_seconds: float = 0.0  # the first optimizer step (autotuning, compilation)


@dataclass
class Case:
    """One case: data, model, optimizer and the speed settings every contender uses."""

    name: str
    samples: int
    quick_samples: int
    sample_shape: list[int]
    batch_size: int
    epochs: int
    precision: str  # "32" or "bf16-mixed"
    channels_last: bool
    optimizer: dict[str, Any]  # torch.optim.SGD keyword arguments
    model: dict[str, Any]  # the recipe's model section
    build: Callable[[], nn.Module]  # the same architecture by hand
    target_vs_hand: float
    describe: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16-mixed" else None


def resnet18_small() -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem, as a user writes it by hand."""
    import torchvision

    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


CASES = {
    "cnn": Case("cnn", 60_000, 2048, [1, 28, 28], 128, 3, "32", False, {"lr": 0.01, "momentum": 0.9},
                {"layers": CNN_LAYERS}, cnn_model, 0.97,
                "LeNet-style CNN on 60,000 in-memory 1x28x28 images, float32"),
    "resnet18": Case("resnet18", 50_000, 2048, [3, 32, 32], 512, 3, "bf16-mixed", True,
                     {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
                     {"name": "resnet18", "small_input": True}, resnet18_small, 0.98,
                     "ResNet-18 (32x32 stem) on 50,000 in-memory 3x32x32 images, bf16-mixed, channels_last"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds after the warm-up round")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the case's)")
    parser.add_argument("--samples", type=int, default=None, help="samples (default: the case's)")
    parser.add_argument("--compile", action="store_true", help="also run trainlab with train.compile: true")
    parser.add_argument("--no-lightning", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round: checks it runs")
    parser.add_argument("--max-others", type=float, default=0.5,
                        help="a round is contended when other processes used more than this share of the CPUs")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    return parser.parse_args(argv)


def make_recipe(case: Case, samples: int, epochs: int, compile: bool = False) -> dict[str, Any]:
    return {
        "name": f"bench-gpu-{case.name}",
        "seed": SEED,
        "data": {"source": "synthetic", "task": "classification", "shape": case.sample_shape,
                 "num_samples": samples, "num_classes": 10, "batch_size": case.batch_size,
                 "split": {"valid": 0.0, "test": 0.0}},
        "model": case.model,
        "loss": {"name": "CrossEntropyLoss"},
        "optimizer": {"name": "SGD", **case.optimizer},
        "train": {"epochs": epochs, "device": "cuda", "precision": case.precision, "channels_last": case.channels_last,
                  "compile": compile, "log_every": 50, "monitor": "train/loss"},
        "log": {"progress": "none", "plots": False},
    }


def layout(case: Case) -> torch.memory_format:
    return torch.channels_last if case.channels_last else torch.contiguous_format


def fresh_memory() -> int:
    """Free what earlier contenders left, reset the peak counter; the bytes still allocated (the
    contender's peak is counted above them, so nothing left over is charged to the next one)."""
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def batches(inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, epochs: int,
            case: Case) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """randperm per epoch and index slicing over GPU tensors, batches in the case's memory format."""
    generator = torch.Generator().manual_seed(SEED)
    for _epoch in range(epochs):
        order = torch.randperm(len(inputs), generator=generator).to(inputs.device)
        for start in range(0, len(inputs), batch_size):
            index = order[start:start + batch_size]
            yield inputs[index].contiguous(memory_format=layout(case)), targets[index]


# ----------------------------------------------------------------------------------- contenders


def run_trainlab(recipe: dict[str, Any]) -> tuple[GpuMeasurement, list[tuple[int, ...]]]:
    before = fresh_memory()
    measurement, run = train_in_process(recipe)
    warmup = run.result.warmup_seconds
    shapes = [tuple(p.shape) for p in run.model.parameters()]
    peak = torch.cuda.max_memory_allocated() - before
    del run
    return GpuMeasurement(measurement.samples_per_second, measurement.train_seconds - warmup,
                          measurement.setup_seconds, measurement.samples, measurement.steps,
                          peak_memory_bytes=peak, warmup_seconds=warmup), shapes


def _model_and_optimizer(case: Case, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(SEED)
    model = case.build().to(device, memory_format=layout(case))
    return model, torch.optim.SGD(model.parameters(), **case.optimizer)


def run_hand_written(case: Case, epochs: int, inputs: torch.Tensor, targets: torch.Tensor) -> GpuMeasurement:
    """The loop an expert writes (see the module docstring)."""
    before = fresh_memory()
    started = time.perf_counter()
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    inputs, targets = inputs.to(device), targets.to(device)  # this contender's own copy on the GPU
    model, optimizer = _model_and_optimizer(case, device)
    model.train()
    steps = 0
    loop_started = time.perf_counter()
    first_step_done = loop_started
    autocast = (lambda: torch.autocast("cuda", dtype=case.autocast_dtype)) if case.autocast_dtype else nullcontext
    for x, y in batches(inputs, targets, case.batch_size, epochs, case):
        with autocast():
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
        if steps == 1:
            torch.cuda.synchronize()
            first_step_done = time.perf_counter()
    torch.cuda.synchronize()
    ended = time.perf_counter()
    samples = len(inputs) * epochs
    first = min(case.batch_size, len(inputs))
    seconds = ended - first_step_done
    peak = torch.cuda.max_memory_allocated() - before
    return GpuMeasurement((samples - first) / seconds, seconds, loop_started - started, samples, steps,
                          peak_memory_bytes=peak, warmup_seconds=first_step_done - loop_started)


def run_lightning(case: Case, epochs: int, inputs: torch.Tensor,
                  targets: torch.Tensor) -> tuple[GpuMeasurement, list[tuple[int, ...]]]:
    import lightning as L

    before = fresh_memory()
    started = time.perf_counter()
    device = torch.device("cuda")
    inputs, targets = inputs.to(device), targets.to(device)

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(SEED)
            self.model = case.build().to(memory_format=layout(case))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self.model(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.model.parameters(), **case.optimizer)

    class Batches:
        """One epoch of the slicing iterator, re-drawn every epoch; Lightning takes any iterable."""

        def __init__(self) -> None:
            self.epoch = 0

        def __len__(self) -> int:
            return math.ceil(len(inputs) / case.batch_size)

        def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            generator = torch.Generator().manual_seed(SEED + self.epoch)
            self.epoch += 1
            order = torch.randperm(len(inputs), generator=generator).to(device)
            for start in range(0, len(inputs), case.batch_size):
                index = order[start:start + case.batch_size]
                yield inputs[index].contiguous(memory_format=layout(case)), targets[index]

    class Timer(L.Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if trainer.global_step == 1 and not hasattr(self, "started"):
                torch.cuda.synchronize()
                self.started = time.perf_counter()

        def on_train_end(self, trainer: Any, module: Any) -> None:
            torch.cuda.synchronize()
            self.seconds = time.perf_counter() - self.started

    timer = Timer()
    precision = "bf16-mixed" if case.precision == "bf16-mixed" else "32-true"
    trainer = L.Trainer(max_epochs=epochs, accelerator="gpu", devices=1, precision=precision, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        benchmark=True, callbacks=[timer])
    module = Module()
    loop_started = time.perf_counter()
    trainer.fit(module, Batches())
    samples = len(inputs) * epochs
    first = min(case.batch_size, len(inputs))
    peak = torch.cuda.max_memory_allocated() - before
    wall = time.perf_counter() - started
    measurement = GpuMeasurement((samples - first) / timer.seconds, timer.seconds, wall - timer.seconds, samples,
                                 trainer.global_step, peak_memory_bytes=peak,
                                 warmup_seconds=timer.started - loop_started)
    return measurement, [tuple(p.shape) for p in module.model.parameters()]


# ----------------------------------------------------------------------------------- one case


def run_case(case: Case, args: argparse.Namespace, lightning: bool) -> dict[str, Any]:
    samples = args.samples or (case.quick_samples if args.quick else case.samples)
    epochs = args.epochs or (1 if args.quick else case.epochs)
    recipe = make_recipe(case, samples, epochs)
    config = Recipe.model_validate(recipe)
    data = build_data(config.data, config.seed)
    inputs, targets = data.train.inputs.cpu(), data.train.targets.cpu()  # every contender copies them to the GPU
    del data
    steps = epochs * math.ceil(len(inputs) / case.batch_size)
    shapes = [tuple(p.shape) for p in case.build().parameters()]

    contenders = [Contender(TRAINLAB, note="trainlab.train(); fit()'s steady-state samples/s")]
    if args.compile:
        contenders.append(Contender(TRAINLAB_COMPILE, note="train.compile: true"))
    contenders.append(Contender(BASELINE, note="slicing loop on GPU tensors, autocast, cudnn.benchmark"))
    if lightning:
        contenders.append(Contender(LIGHTNING, note="LightningModule + Trainer(precision, benchmark=True), "
                                                    "the same slicing iterator"))
    print(f"--- case {case.name}: {case.describe.replace(f'{case.samples:,}', f'{len(inputs):,}')}; batch "
          f"{case.batch_size}, SGD {case.optimizer}, {epochs} epoch(s) = {steps} steps; {args.rounds} round(s) "
          f"+ 1 warm-up", flush=True)

    def one(name: str) -> Measurement:
        if name in (TRAINLAB, TRAINLAB_COMPILE):
            measurement, got = run_trainlab(make_recipe(case, samples, epochs, compile=name == TRAINLAB_COMPILE))
        elif name == BASELINE:
            measurement, got = run_hand_written(case, epochs, inputs, targets), shapes
        else:
            measurement, got = run_lightning(case, epochs, inputs, targets)
        assert got == shapes, f"{name}: architectures differ"
        return verified(name, measurement, steps, epochs * len(inputs), torch.get_num_threads())

    def describe(name: str, m: Measurement) -> str:
        return f"{name} {m.samples_per_second:,.0f}/s"

    measured = alternate_rounds(contenders, one, args.rounds, args.max_others, 4 * args.rounds, 900.0, describe)
    by_name = {c.name: c for c in contenders}
    rows = []
    for contender in contenders:
        rounds: list[GpuMeasurement] = contender.rounds  # type: ignore[assignment]
        row: dict[str, Any] = {
            "contender": contender.name,
            "median_samples_per_second": statistics.median(contender.throughputs()),
            "median_peak_memory_mib": statistics.median(m.peak_memory_bytes for m in rounds) / 2**20,
            "median_warmup_seconds": statistics.median(m.warmup_seconds for m in rounds),
            "median_setup_seconds": statistics.median(m.setup_seconds for m in rounds),
            "note": contender.note,
        }
        for other in (BASELINE, LIGHTNING):
            if other in by_name and other != contender.name:
                ratios = [a / b for a, b in zip(contender.throughputs(), by_name[other].throughputs())]
                row[f"per_round_ratios_vs_{other}"] = ratios
                row[f"median_ratio_vs_{other}"] = statistics.median(ratios)
        rows.append(row)
    hand = next(row for row in rows if row["contender"] == BASELINE)
    for row in rows:
        row["peak_memory_vs_hand_written"] = row["median_peak_memory_mib"] / hand["median_peak_memory_mib"]
    print(table(rows))
    ours = rows[0]
    print(f"trainlab / {BASELINE}: median {ours[f'median_ratio_vs_{BASELINE}']:.3f} (target >= {case.target_vs_hand})"
          + (f"; trainlab / {LIGHTNING}: {ours[f'median_ratio_vs_{LIGHTNING}']:.2f}x" if lightning else "")
          + f"; peak memory {ours['peak_memory_vs_hand_written']:.3f} of hand-written", flush=True)
    return {
        "config": {"case": case.name, "describe": case.describe, "samples": len(inputs), "epochs": epochs,
                   "steps_per_run": steps, "batch_size": case.batch_size, "precision": case.precision,
                   "channels_last": case.channels_last, "optimizer": case.optimizer, "recipe": recipe,
                   "rounds": args.rounds, "attempts": measured.attempts},
        "results": rows,
        "rounds": {c.name: [asdict(m) for m in c.rounds] for c in contenders},
    }


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of one case (pastes straight into docs/benchmarks.md)."""
    header = ("| contender | median samples/s | vs hand-written | vs Lightning | peak memory MiB (vs hand) "
              "| warm-up s | setup s |")
    lines = [header, "|" + "---|" * 7]
    for row in rows:
        vs_hand = row.get(f"median_ratio_vs_{BASELINE}")
        vs_lightning = row.get(f"median_ratio_vs_{LIGHTNING}")
        lines.append(
            f"| {row['contender']} | {row['median_samples_per_second']:,.0f} | "
            f"{'-' if vs_hand is None else f'{vs_hand:.3f}'} | {'-' if vs_lightning is None else f'{vs_lightning:.2f}x'} "
            f"| {row['median_peak_memory_mib']:,.0f} ({row['peak_memory_vs_hand_written']:.3f}) "
            f"| {row['median_warmup_seconds']:.2f} | {row['median_setup_seconds']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.quick:
        args.rounds = 1
    if not torch.cuda.is_available():
        print("skipped: no CUDA GPU (this case measures GPU training)")
        return {"case": CASE, "skipped": "no CUDA GPU"}
    lightning, lightning_note = lightning_available()
    lightning = lightning and not args.no_lightning
    if lightning:
        quiet_lightning()
    properties = torch.cuda.get_device_properties(0)
    print(f"GPU: {properties.name}, {properties.total_memory / 2**30:.0f} GiB; torch {torch.__version__}; "
          f"cuda {torch.version.cuda}; cudnn {torch.backends.cudnn.version()}; {lightning_note}", flush=True)
    names = list(CASES) if args.case == "all" else [args.case]
    results = {name: run_case(CASES[name], args, lightning) for name in names}
    output = {"case": CASE, "machine": {**machine(), "gpu": properties.name, "cuda": torch.version.cuda,
                                        "cudnn": torch.backends.cudnn.version(), "lightning": lightning_note},
              "cases": results}
    if args.json:
        write_json(args.json, output)
    return output


if __name__ == "__main__":
    main()
