"""Benchmark: an MLP on synthetic tabular tensors, on the CPU.

Contenders, run in one process and alternating round by round after a warm-up round:

- trainlab:     ``trainlab.train(recipe_dict, out=tmp)``; throughput is fit()'s own timing
                (``run.result.samples_per_second``: the training loop including its logging,
                metric sums and end-of-epoch checkpoint writes); setup is the rest of the wall
                time of ``trainlab.train`` (validation, data generation, run folder, status files).
                One train record per epoch, no TensorBoard.
- trainlab (default logging): the same recipe with trainlab's logging defaults: a train record
                every ``train.log_every`` steps into metrics.jsonl and TensorBoard scalars.
- hand-written: the loop a PyTorch user writes (randperm per epoch, index slicing, forward, loss,
                backward, step, zero_grad(set_to_none=True)) on the very tensors trainlab trains on,
                with the optimizer as torch builds it by default.
- hand-written (fused): the same loop with ``fused=True``, the optimizer implementation trainlab
                picks: what trainlab's loop costs beside its choice of kernels.
- hand-written+bookkeeping: the fused loop plus what trainlab's fit does besides (see below).
- lightning:    a LightningModule and a TensorDataset DataLoader (no logger, no checkpointing, no
                progress bar), when ``lightning`` is importable; timed from on_train_start to
                on_train_end.

Same architecture, same data, same batch size, same optimizer, same number of optimizer steps.

    .venv/bin/python benchmarks/mlp_cpu.py                 # the default case
    .venv/bin/python benchmarks/mlp_cpu.py --rounds 7 --json runs/bench/mlp_cpu.json
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import tempfile
import time
import warnings
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
    add_round_options,
    alternate_rounds,
    cpu_training,
    machine,
    mlp,
    mlp_layers,
    report,
    synthetic_classification,
    table,
    train_in_process,
    verified,
    write_json,
)

from trainlab.data import build_data
from trainlab.recipe import Recipe

CASE = "mlp_cpu"
BOOKKEEPING = "hand-written+bookkeeping"
FUSED = "hand-written (fused)"
DEFAULT_LOGGING = "trainlab (default logging)"
SEED = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--samples", type=int, default=32768, help="synthetic training samples")
    parser.add_argument("--features", type=int, default=64, help="input features per sample")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=str, default="256,256", help="hidden layer widths, comma separated")
    parser.add_argument("--optimizer", choices=("SGD", "AdamW"), default="SGD",
                        help="SGD uses momentum 0.9, lr 0.05; AdamW uses lr 1e-3")
    parser.add_argument("--no-lightning", action="store_true", help="skip PyTorch Lightning even if installed")
    add_round_options(parser, rounds=10, attempts=4, budget_seconds=170.0)
    args = parser.parse_args(argv)
    args.max_attempts = args.max_attempts or 4 * args.rounds
    args.hidden = [int(width) for width in str(args.hidden).split(",") if width.strip()]
    return args


def optimizer_arguments(args: argparse.Namespace) -> dict[str, Any]:
    if args.optimizer == "SGD":
        return {"lr": 0.05, "momentum": 0.9}
    return {"lr": 1e-3}


def make_recipe(args: argparse.Namespace, default_logging: bool = False) -> dict[str, Any]:
    """The case's recipe: one train record per epoch and no TensorBoard, or with ``default_logging``
    trainlab's logging defaults (log_every, TensorBoard scalars)."""
    layers = mlp_layers(args.hidden)
    recipe = {
        "name": "bench-mlp-cpu",
        "seed": SEED,
        "data": synthetic_classification([args.features], args.samples, args.classes, args.batch_size),
        "model": {"layers": layers},
        "loss": {"name": "CrossEntropyLoss"},
        "optimizer": {"name": args.optimizer, **optimizer_arguments(args)},
        **cpu_training(args.epochs),
    }
    if default_logging:
        del recipe["train"]["log_every"]
        recipe["log"] = {"plots": False, "progress": "none"}  # plots are drawn after fit(), outside its timing
    return recipe


def make_mlp(args: argparse.Namespace) -> nn.Module:
    """The same architecture trainlab builds from the recipe's ``layers:``."""
    return mlp(args.features, args.hidden, args.classes)


def make_optimizer(args: argparse.Namespace, model: nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer as torch builds it by default, or with ``fused`` as trainlab builds it."""
    implementation = {"fused": True} if fused else {}
    return getattr(torch.optim, args.optimizer)(model.parameters(), **optimizer_arguments(args), **implementation)


# ----------------------------------------------------------------------------------- contenders


def run_trainlab(args: argparse.Namespace, recipe: dict[str, Any]) -> tuple[Measurement, nn.Module]:
    measurement, run = train_in_process(recipe)
    return measurement, run.model


def run_hand_written(args: argparse.Namespace, inputs: torch.Tensor, targets: torch.Tensor,
                     bookkeeping: bool = False, fused: bool = False) -> Measurement:
    """The bare loop (``fused``: with torch's fused optimizer step); with ``bookkeeping`` also what
    trainlab's fit does besides: loss and accuracy summed on the device every step and read once an
    epoch, and a checkpoint (model + optimizer state, torch.save) at the end of every epoch."""
    started = time.perf_counter()
    torch.manual_seed(SEED)
    model = make_mlp(args)
    optimizer = make_optimizer(args, model, fused=fused)
    generator = torch.Generator().manual_seed(SEED)
    count, batch_size = len(inputs), args.batch_size
    model.train()
    steps = 0
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.float64)
    loop_started = time.perf_counter()
    for _epoch in range(args.epochs):
        order = torch.randperm(count, generator=generator)
        for start in range(0, count, batch_size):
            index = order[start:start + batch_size]
            x, y = inputs[index], targets[index]
            output = model(x)
            loss = F.cross_entropy(output, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            if bookkeeping:
                loss_sum.add_(loss.detach(), alpha=len(index))
                correct.add_((output.detach().argmax(1) == y).sum())
        if bookkeeping:
            _epoch_loss = (loss_sum / count).item(), (correct / count).item()  # the once-an-epoch read
            loss_sum.zero_(), correct.zero_()
            with tempfile.TemporaryDirectory() as folder:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()},
                           Path(folder) / "checkpoint.pt")
    seconds = time.perf_counter() - loop_started
    samples = count * args.epochs
    return Measurement(samples / seconds, seconds, loop_started - started, samples, steps)


def lightning_available() -> tuple[bool, str]:
    try:
        import lightning
    except ImportError as error:
        return False, f"lightning is not importable ({error})"
    return True, f"lightning {lightning.__version__}"


def run_lightning(args: argparse.Namespace, inputs: torch.Tensor, targets: torch.Tensor) -> Measurement:
    import lightning as L

    class MLPModule(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = make_mlp(args)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self.model(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return make_optimizer(args, self.model)

    class Timer(L.Callback):
        def on_train_start(self, trainer: Any, module: Any) -> None:
            self.started = time.perf_counter()

        def on_train_end(self, trainer: Any, module: Any) -> None:
            self.seconds = time.perf_counter() - self.started

    started = time.perf_counter()
    torch.manual_seed(SEED)
    module = MLPModule()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(inputs, targets), batch_size=args.batch_size, shuffle=True
    )
    timer = Timer()
    trainer = L.Trainer(
        max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )
    trainer.fit(module, loader)
    wall = time.perf_counter() - started
    samples = len(inputs) * args.epochs
    return Measurement(samples / timer.seconds, timer.seconds, wall - timer.seconds, samples, trainer.global_step)


# ----------------------------------------------------------------------------------- the case


def quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LitLogger.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning vs newer torch, harmless
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = make_recipe(args)
    logging_recipe = make_recipe(args, default_logging=True)

    # The tensors trainlab trains on: the same source, config and seed that trainlab.train uses.
    config = Recipe.model_validate(recipe)
    data = build_data(config.data, config.seed)
    inputs, targets = data.train.inputs, data.train.targets  # (N, F) float32, (N,) int64
    expected_steps = args.epochs * math.ceil(len(inputs) / args.batch_size)

    contenders = [Contender("trainlab", note="fit() timing: includes logging, metric sums, end-of-epoch checkpoints"),
                  Contender(DEFAULT_LOGGING, note="the same with train.log_every and TensorBoard at their defaults"),
                  Contender(BASELINE, note="torch's default optimizer implementation"),
                  Contender(FUSED, note="hand-written with fused=True, the implementation trainlab picks"),
                  Contender(BOOKKEEPING, note="hand-written (fused) + on-device loss/accuracy sums + a checkpoint per epoch")]
    skipped: dict[str, str] = {}
    use_lightning, why = lightning_available()
    if args.no_lightning:
        use_lightning, why = False, "--no-lightning"
    if use_lightning:
        quiet_lightning()
        contenders.append(Contender("lightning", note=why + "; TensorDataset DataLoader, shuffle=True"))
    else:
        skipped["lightning"] = why
        print(f"lightning skipped: {why}")

    info = machine()
    print(f"{CASE}: {args.samples} samples x {args.features} features, {args.classes} classes, MLP hidden "
          f"{args.hidden}, batch {args.batch_size}, {args.epochs} epochs ({expected_steps} steps), {args.optimizer}, "
          f"{args.rounds} rounds + 1 warm-up")
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
          f"torch threads {info['torch_threads']}")

    def one(name: str) -> Measurement:
        if name in ("trainlab", DEFAULT_LOGGING):
            measurement, model = run_trainlab(args, recipe if name == "trainlab" else logging_recipe)
            reference = make_mlp(args)
            shapes = [tuple(p.shape) for p in model.parameters()]
            assert shapes == [tuple(p.shape) for p in reference.parameters()], f"architectures differ: {shapes}"
        elif name == BASELINE:
            measurement = run_hand_written(args, inputs, targets)
        elif name == FUSED:
            measurement = run_hand_written(args, inputs, targets, fused=True)
        elif name == BOOKKEEPING:
            measurement = run_hand_written(args, inputs, targets, bookkeeping=True, fused=True)
        else:
            measurement = run_lightning(args, inputs, targets)
        return verified(name, measurement, expected_steps, args.epochs * len(inputs), args.threads)

    measured_rounds = alternate_rounds(contenders, one, args.rounds, args.max_others,
                                       args.max_attempts, args.budget_seconds,
                                       lambda name, m: f"{name} {m.samples_per_second:,.0f}/s (setup {m.setup_seconds:.2f}s)")
    chosen, clean = measured_rounds.chosen, measured_rounds.quiet
    attempts = measured_rounds.attempts
    rejected = attempts - len(chosen)

    config_out = {
        "samples": args.samples, "features": args.features, "classes": args.classes, "epochs": args.epochs,
        "batch_size": args.batch_size, "hidden": args.hidden, "optimizer": args.optimizer,
        "optimizer_arguments": optimizer_arguments(args), "rounds": args.rounds, "warmup_rounds": 1,
        "threads": args.threads, "steps_per_run": expected_steps, "max_others": args.max_others,
        "attempts": attempts, "rejected_rounds": rejected, "quiet_rounds": clean, "reported_rounds_all_quiet": clean > 0,
        "command": " ".join(["benchmarks/" + CASE + ".py", *(argv if argv is not None else sys.argv[1:])]),
    }
    result = report(CASE, config_out, contenders, skipped)
    print()
    print(f"{len(chosen)} rounds reported, {rejected} contended rounds left out "
          f"(a round is contended when other processes used > {args.max_others:.0%} of the CPUs during it)")
    print(table(result["results"]))
    for row in result["results"]:
        if "per_round_ratios" in row:
            print(f"{row['contender']} / {BASELINE} per round: " + ", ".join(f"{r:.3f}" for r in row["per_round_ratios"]))
    mine = next(c for c in contenders if c.name == "trainlab").throughputs()
    for other, key in ((FUSED, "trainlab_vs_same_implementation"), (BOOKKEEPING, "trainlab_vs_same_bookkeeping")):
        theirs = next(c for c in contenders if c.name == other).throughputs()
        ratios = [a / b for a, b in zip(mine, theirs)]
        result[key] = {"per_round_ratios": ratios, "median_ratio": statistics.median(ratios)}
        print(f"trainlab / {other} per round: " + ", ".join(f"{r:.3f}" for r in ratios)
              + f"  (median {statistics.median(ratios):.3f})")
    for name, why in skipped.items():
        print(f"{name}: skipped ({why})")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
