"""Benchmark: epoch time of in-memory data, trainlab against two hand-written loops, on the CPU.

Two cases, each a recipe with ``source: synthetic`` (the data lives in memory):

- mlp: 100,000 rows x 32 features, 10 classes; MLP 32 -> 128 -> 128 -> 10; batch 256.
- cnn: 20,000 single-channel 28x28 images, 10 classes; conv(6, 5x5)-ReLU-maxpool(2),
       conv(16, 5x5)-ReLU-maxpool(2), flatten, linear(256 -> 10); batch 128.

Contenders, run in one process and alternating round by round after a warm-up round:

- trainlab:     ``trainlab.train(recipe_dict, out=tmp)``, the path ``trainlab train`` takes; the data
                is served by the loader trainlab builds from the recipe (``loader: auto``, i.e. its
                index-slicing TensorLoader). Epoch time is fit()'s own timing divided by the epochs
                (the training loop including its metric sums, log records and end-of-epoch
                checkpoints); setup is the rest of the wall time of ``trainlab.train``.
- hand-written: the index-slicing loop (``torch.randperm`` per epoch, slice the tensors, forward,
                loss, backward, step, ``zero_grad(set_to_none=True)``), nothing else.
- DataLoader:   the tutorial loop over ``DataLoader(TensorDataset(x, y), batch_size, shuffle=True)``
                (``num_workers=0``): samples indexed one by one and collated per batch.

Same architecture (parameter shapes checked every round; the initial weights checked once to be
identical), the very same tensors (``trainlab.data.build_data`` of the recipe), same batch size,
same SGD (lr 0.05, momentum 0.9 for the MLP; lr 0.01, momentum 0.9 for the CNN), same seed, same
number of optimizer steps and samples (asserted every round). Ratios are throughput ratios taken
per round (trainlab's speed over the other's, i.e. the other's epoch time over trainlab's) and the
median of those is reported. Targets: trainlab >= 0.97 of hand-written, >= 3x DataLoader.

    .venv/bin/python benchmarks/data_cpu.py                         # both cases
    .venv/bin/python benchmarks/data_cpu.py --case mlp --rounds 15 --json runs/bench/data_cpu.json
    .venv/bin/python benchmarks/data_cpu.py --quick                 # seconds: checks it runs
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    BASELINE,
    Contender,
    Measurement,
    add_round_options,
    alternate_rounds,
    cpu_training,
    machine,
    mlp_layers,
    synthetic_classification,
    train_in_process,
    verified,
    write_json,
)

import trainlab
from trainlab.data import build_data
from trainlab.data.loaders import TensorLoader
from trainlab.recipe import Recipe

CASE = "data_cpu"
SEED = 0
TRAINLAB = "trainlab"
TRAINLAB_LEAN = "trainlab (loss only)"
DATALOADER = "DataLoader"
TARGET_VS_HAND = 0.97  # trainlab's throughput over the hand-written slicing loop's
TARGET_VS_DATALOADER = 3.0  # trainlab's throughput over the per-sample DataLoader loop's


@dataclass
class Shape:
    """One case: the data, the model and the optimizer."""

    name: str
    samples: int
    quick_samples: int
    sample_shape: list[int]
    classes: int
    batch_size: int
    lr: float
    momentum: float
    layers: list[Any]  # the recipe's model.layers
    build: Callable[[], nn.Module]  # the same architecture by hand

    def describe(self, samples: int) -> str:
        if self.name == "mlp":
            return (f"MLP {self.sample_shape[0]} -> 128 -> 128 -> {self.classes} on a synthetic table of "
                    f"{samples:,} rows")
        return (f"CNN conv(6,5x5)-ReLU-pool, conv(16,5x5)-ReLU-pool, linear -> {self.classes} on "
                f"{samples:,} in-memory {'x'.join(map(str, self.sample_shape))} images")


def mlp_model() -> nn.Module:
    return nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def cnn_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),  # (6, 24, 24) -> (6, 12, 12)
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),  # (16, 8, 8) -> (16, 4, 4)
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    )


CNN_LAYERS: list[Any] = [
    {"Conv2d": {"out_channels": 6, "kernel_size": 5}}, "ReLU", {"MaxPool2d": 2},
    {"Conv2d": {"out_channels": 16, "kernel_size": 5}}, "ReLU", {"MaxPool2d": 2},
    "Flatten", {"Linear": {"out_features": "num_classes"}},
]

SHAPES = {
    "mlp": Shape("mlp", 100_000, 4096, [32], 10, 256, 0.05, 0.9, mlp_layers([128, 128]), mlp_model),
    "cnn": Shape("cnn", 20_000, 1024, [1, 28, 28], 10, 128, 0.01, 0.9, CNN_LAYERS, cnn_model),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--case", choices=("mlp", "cnn", "all"), default="all")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (epoch time = loop seconds / epochs)")
    parser.add_argument("--samples", type=int, default=None,
                        help="training samples of the chosen case(s) (default: 100000 mlp, 20000 cnn)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: few samples, 1 epoch, warm-up + 1 round, no retries (measures nothing)")
    add_round_options(parser, rounds=10, attempts=4, budget_seconds=240.0, per="case")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.epochs, args.max_attempts = 1, 1, 1
    args.max_attempts = args.max_attempts or 4 * args.rounds
    return args


def make_recipe(shape: Shape, samples: int, epochs: int) -> dict[str, Any]:
    return {
        "name": f"bench-data-{shape.name}",
        "seed": SEED,
        "data": synthetic_classification(list(shape.sample_shape), samples, shape.classes, shape.batch_size),
        "model": {"layers": shape.layers},
        "loss": {"name": "CrossEntropyLoss"},
        "optimizer": {"name": "SGD", "lr": shape.lr, "momentum": shape.momentum},
        **cpu_training(epochs),
    }


# ----------------------------------------------------------------------------------- contenders


def run_trainlab(recipe: dict[str, Any]) -> tuple[Measurement, nn.Module]:
    measurement, run = train_in_process(recipe)
    return measurement, run.model


def _model_and_optimizer(shape: Shape) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(SEED)
    model = shape.build()
    return model, torch.optim.SGD(model.parameters(), lr=shape.lr, momentum=shape.momentum)


def run_hand_written(shape: Shape, epochs: int, inputs: torch.Tensor, targets: torch.Tensor) -> Measurement:
    """randperm per epoch, index slicing, forward, loss, backward, step; nothing else."""
    started = time.perf_counter()
    model, optimizer = _model_and_optimizer(shape)
    generator = torch.Generator().manual_seed(SEED)
    count, batch_size = len(inputs), shape.batch_size
    model.train()
    steps = 0
    loop_started = time.perf_counter()
    for _epoch in range(epochs):
        order = torch.randperm(count, generator=generator)
        for start in range(0, count, batch_size):
            index = order[start:start + batch_size]
            x, y = inputs[index], targets[index]
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
    seconds = time.perf_counter() - loop_started
    samples = count * epochs
    return Measurement(samples / seconds, seconds, loop_started - started, samples, steps)


def run_dataloader(shape: Shape, epochs: int, inputs: torch.Tensor, targets: torch.Tensor) -> Measurement:
    """The tutorial loop: DataLoader(TensorDataset(x, y), batch_size, shuffle=True), num_workers=0."""
    started = time.perf_counter()
    model, optimizer = _model_and_optimizer(shape)
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=shape.batch_size, shuffle=True,
                        num_workers=0, generator=torch.Generator().manual_seed(SEED))
    model.train()
    steps = 0
    loop_started = time.perf_counter()
    for _epoch in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
    seconds = time.perf_counter() - loop_started
    samples = len(inputs) * epochs
    return Measurement(samples / seconds, seconds, loop_started - started, samples, steps)


# ----------------------------------------------------------------------------------- one case


def ratios(mine: Contender, other: Contender) -> list[float]:
    """Per-round throughput ratios mine / other (= other's epoch time / mine)."""
    return [a / b for a, b in zip(mine.throughputs(), other.throughputs())]


def run_case(shape: Shape, args: argparse.Namespace) -> dict[str, Any]:
    samples = args.samples or (shape.quick_samples if args.quick else shape.samples)
    recipe = make_recipe(shape, samples, args.epochs)

    # The tensors trainlab trains on: the same source, config and seed that trainlab.train uses.
    checked = trainlab.check(recipe)
    loader = checked.data.train
    assert isinstance(loader, TensorLoader), f"trainlab served this data with {type(loader).__name__}"
    config = Recipe.model_validate(recipe)
    data = build_data(config.data, config.seed)
    inputs, targets = data.train.inputs, data.train.targets
    assert torch.equal(inputs, loader.inputs) and torch.equal(targets, loader.targets)
    steps_per_epoch = math.ceil(len(inputs) / shape.batch_size)
    expected_steps = args.epochs * steps_per_epoch

    # Same seed, same initial weights: the model trainlab builds equals the hand-built one.
    reference, _ = _model_and_optimizer(shape)
    ours, theirs = checked.model.state_dict(), reference.state_dict()
    same_init = list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    shapes = [tuple(p.shape) for p in reference.parameters()]

    lean_recipe = {**recipe, "train": {**recipe["train"], "train_metrics": False}}
    contenders = [
        Contender(TRAINLAB, note=f"trainlab.train(); loader: {type(loader).__name__}; fit() timing incl. "
                                 "metric sums, log records, end-of-epoch checkpoints"),
        Contender(TRAINLAB_LEAN, note="the same with train.train_metrics: false (train records carry the loss only; "
                                      "the hand-written loops compute no metric at all)"),
        Contender(BASELINE, note="randperm + index slicing"),
        Contender(DATALOADER, note="DataLoader(TensorDataset, shuffle=True), num_workers=0"),
    ]
    print(f"--- case {shape.name}: {shape.describe(len(inputs))} {tuple(inputs.shape)}, batch {shape.batch_size}, "
          f"SGD lr {shape.lr} momentum {shape.momentum}, {args.epochs} epoch(s) x {steps_per_epoch} steps, "
          f"{args.rounds} round(s) + 1 warm-up; trainlab's loader: {type(loader).__name__}; "
          f"initial weights identical: {'yes' if same_init else 'NO'}", flush=True)

    def one(name: str) -> Measurement:
        if name in (TRAINLAB, TRAINLAB_LEAN):
            measurement, model = run_trainlab(recipe if name == TRAINLAB else lean_recipe)
            got = [tuple(p.shape) for p in model.parameters()]
            assert got == shapes, f"architectures differ: {got} vs {shapes}"
        elif name == BASELINE:
            measurement = run_hand_written(shape, args.epochs, inputs, targets)
        else:
            measurement = run_dataloader(shape, args.epochs, inputs, targets)
        return verified(name, measurement, expected_steps, args.epochs * len(inputs), args.threads)

    measured_rounds = alternate_rounds(contenders, one, args.rounds, args.max_others,
                                       args.max_attempts, args.budget_seconds,
                                       lambda name, m: f"{name} {m.train_seconds / args.epochs:.3f} s/epoch")
    chosen, clean = measured_rounds.chosen, measured_rounds.quiet
    attempts = measured_rounds.attempts
    by_name = {c.name: c for c in contenders}
    vs_hand = {c.name: ratios(c, by_name[BASELINE]) for c in contenders}
    vs_loader = {c.name: ratios(c, by_name[DATALOADER]) for c in contenders}

    rows = []
    for contender in contenders:
        epoch_seconds = [m.train_seconds / args.epochs for m in contender.rounds]
        rows.append({
            "contender": contender.name,
            "median_epoch_seconds": statistics.median(epoch_seconds),
            "min_epoch_seconds": min(epoch_seconds),
            "max_epoch_seconds": max(epoch_seconds),
            "median_samples_per_second": statistics.median(contender.throughputs()),
            "median_setup_seconds": statistics.median(m.setup_seconds for m in contender.rounds),
            "per_round_ratios_vs_hand_written": vs_hand[contender.name],
            "median_ratio_vs_hand_written": statistics.median(vs_hand[contender.name]),
            "per_round_ratios_vs_dataloader": vs_loader[contender.name],
            "median_ratio_vs_dataloader": statistics.median(vs_loader[contender.name]),
            "steps_per_run": expected_steps,
            "samples_per_run": args.epochs * len(inputs),
            "note": contender.note,
        })
    headline = {
        "trainlab_vs_hand_written": rows[0]["median_ratio_vs_hand_written"],
        "trainlab_vs_hand_written_target": TARGET_VS_HAND,
        "trainlab_vs_dataloader": rows[0]["median_ratio_vs_dataloader"],
        "trainlab_loss_only_vs_hand_written": rows[1]["median_ratio_vs_hand_written"],
        "trainlab_loss_only_vs_dataloader": rows[1]["median_ratio_vs_dataloader"],
        "trainlab_vs_dataloader_target": TARGET_VS_DATALOADER,
    }
    rejected = attempts - len(chosen)
    print(f"{len(chosen)} round(s) reported, {rejected} contended round(s) left out "
          f"(contended: other processes used > {args.max_others:.0%} of the CPUs)")
    print(table(shape, rows))
    print(f"trainlab / {BASELINE} per round: " + ", ".join(f"{r:.3f}" for r in vs_hand[TRAINLAB])
          + f"  -> median {headline['trainlab_vs_hand_written']:.3f} (target >= {TARGET_VS_HAND})")
    print(f"trainlab / {DATALOADER} per round: " + ", ".join(f"{r:.2f}" for r in vs_loader[TRAINLAB])
          + f"  -> median {headline['trainlab_vs_dataloader']:.2f}x (target >= {TARGET_VS_DATALOADER:g}x)")
    print(f"{TRAINLAB_LEAN} / {BASELINE} per round: " + ", ".join(f"{r:.3f}" for r in vs_hand[TRAINLAB_LEAN])
          + f"  -> median {headline['trainlab_loss_only_vs_hand_written']:.3f}")
    print(flush=True)
    return {
        "config": {
            "samples": len(inputs), "sample_shape": shape.sample_shape, "classes": shape.classes,
            "batch_size": shape.batch_size, "epochs": args.epochs, "steps_per_run": expected_steps,
            "optimizer": {"name": "SGD", "lr": shape.lr, "momentum": shape.momentum},
            "model": shape.describe(len(inputs)), "recipe": recipe, "initial_weights_identical": same_init,
            "rounds": args.rounds, "warmup_rounds": 1, "attempts": attempts,
            "rejected_rounds": rejected, "quiet_rounds": clean, "max_others": args.max_others,
        },
        "results": rows,
        "headline": headline,
        "rounds": {c.name: [asdict(m) for m in c.rounds] for c in contenders},
    }


def table(shape: Shape, rows: list[dict[str, Any]]) -> str:
    """A Markdown table of one case (pastes straight into docs/benchmarks.md)."""
    header = (f"| {shape.name}: contender | median s/epoch | min | max | samples/s (median) "
              f"| throughput vs hand-written | vs DataLoader | setup s (median) |")
    lines = [header, "|" + "---|" * 8]
    for row in rows:
        lines.append(
            f"| {row['contender']} | {row['median_epoch_seconds']:.3f} | {row['min_epoch_seconds']:.3f} "
            f"| {row['max_epoch_seconds']:.3f} | {row['median_samples_per_second']:,.0f} "
            f"| {row['median_ratio_vs_hand_written']:.3f} | {row['median_ratio_vs_dataloader']:.2f}x "
            f"| {row['median_setup_seconds']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    print(f"{CASE}: machine {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
          f"torch threads {info['torch_threads']}" + ("  [--quick: measures nothing]" if args.quick else ""))
    names = ["mlp", "cnn"] if args.case == "all" else [args.case]
    cases = {name: run_case(SHAPES[name], args) for name in names}
    result = {
        "case": CASE,
        "machine": info,
        "threads": args.threads,
        "quick": args.quick,
        "cases": cases,
        "command": " ".join(["benchmarks/" + CASE + ".py", *(argv if argv is not None else sys.argv[1:])]),
    }
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
