"""Benchmark: checkpoint save and load time, trainlab's checkpoint writer against torch.save / torch.load, CPU.

Three models, each with the state of an AdamW optimizer that has taken one step (two moment
tensors per parameter, so a checkpoint holds about 3 x the weights):

- 1m:  MLP 64 -> 1024 -> ReLU -> 1024 -> ReLU -> 10 (1.1M parameters),
- 11m: torchvision's ResNet-18 with 10 classes (11.2M parameters, BatchNorm buffers included),
- 50m: MLP 2048 -> 4096 -> ReLU -> 4096 -> ReLU -> 4096 -> ReLU -> 2048 (50.3M parameters).

Contenders, in one process, alternating round by round after a warm-up round whose numbers are
dropped; each saves over its own previous checkpoint, as a training loop does every epoch:

- trainlab:     fit()'s own checkpointer, ``pipeline._Checkpointer``, called as fit() calls it at an
                epoch end (``checkpointer("last", model, training_state, info)``: the training state
                holds the loop position, the optimizer state and every RNG state). *Save* is what the
                training loop waits for: the part the checkpointer does in the loop's thread (building
                the state, and serialising the files or copying the tensors into a snapshot, as the
                version at hand does) until it hands the rest to its background thread. *Until
                durable* runs on to ``checkpointer.wait()``: the files written and fsynced, their
                SHA-256 in ``meta.json``, the folder swapped into place. *Load* is what ``trainlab
                resume`` does with the folder: ``find_checkpoint``, ``read_meta`` (which re-hashes
                both files), ``load_weights``, ``load_state``, then the optimizer's and the RNGs'
                ``load_state_dict``.
- hand-written: ``torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()},
                path)``; *until durable* adds an ``os.fsync`` of the file (which a hand-written loop
                usually does not do: its checkpoint is durable whenever the OS writes it back);
                *load* is ``torch.load(path, weights_only=True)`` and both ``load_state_dict``.
                It overwrites its file in place (a kill mid-save leaves no valid checkpoint), where
                trainlab writes new files and renames them into place: on some file systems (ext4
                on the reference VM) writing a new file takes 2-3x as long as overwriting one.

Loads read files written moments before, so they come from the page cache (a resume right after
a crash of the training process reads the same; after a reboot the disk's read speed adds to
both). Ratios are trainlab's seconds over the hand-written seconds of the same round (> 1: trainlab
takes longer), median of the per-round ratios. Once per model, after the rounds, trainlab's save is
also taken apart into the library calls its work consists of (building the state, copying the
tensors, safetensors' ``save_file``, ``torch.save`` of the state, fsync, SHA-256) to show where the
time goes. On a CPU the background part is not free: it shares the cores with training.
The LR range test's cost is measured by ``lr_find_cpu``, not here.

    .venv/bin/python benchmarks/checkpoint_cpu.py                       # the three models, ~1 minute
    .venv/bin/python benchmarks/checkpoint_cpu.py --sizes 11m --rounds 9 --json runs/bench/checkpoint_cpu.json
    .venv/bin/python benchmarks/checkpoint_cpu.py --quick               # seconds: checks it runs
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    BASELINE,
    Contender,
    add_round_options,
    alternate_rounds,
    machine,
    source_revision,
    write_json,
)

# fit()'s checkpointer (private): the very object the training loop calls at every checkpoint
from trainlab.pipeline import _Checkpointer
from trainlab.train import checkpoint as checkpoints
from trainlab.train.callbacks import MetricsFile
from trainlab.train.loop import TrainState

CASE = "checkpoint_cpu"
TRAINLAB = "trainlab"
SEED = 0
MEGABYTE = 1_000_000  # bytes; sizes on disk are reported in MB


def mlp(widths: list[int]) -> nn.Module:
    """Linear layers between consecutive ``widths``, ReLU between them."""
    modules: list[nn.Module] = []
    for index, (inputs, outputs) in enumerate(itertools.pairwise(widths)):
        if index:
            modules.append(nn.ReLU())
        modules.append(nn.Linear(inputs, outputs))
    return nn.Sequential(*modules)


def resnet18() -> nn.Module:
    from torchvision.models import resnet18 as build

    return build(num_classes=10)


@dataclass(frozen=True)
class Size:
    """One model of the case."""

    name: str
    description: str
    build: Callable[[], nn.Module]


SIZES = {
    "1m": Size("1m", "MLP 64 -> 1024 -> 1024 -> 10", lambda: mlp([64, 1024, 1024, 10])),
    "11m": Size("11m", "ResNet-18 (torchvision, 10 classes)", resnet18),
    "50m": Size("50m", "MLP 2048 -> 4096 -> 4096 -> 4096 -> 2048", lambda: mlp([2048, 4096, 4096, 4096, 2048])),
}


@dataclass
class CheckpointTiming:
    """One contender's numbers in one round, in seconds and bytes."""

    save_seconds: float  # what the training loop waits for
    durable_seconds: float  # from the save's start until the files are on disk (trainlab: hashed and swapped in too)
    load_seconds: float  # from the files to the model and optimizer restored
    verify_seconds: float  # of load_seconds: trainlab's SHA-256 check of both files (read_meta); 0 for hand-written
    bytes_on_disk: int
    others_cpu: float | None = None  # share of the machine other processes used meanwhile (CpuWatch)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", default="1m,11m,50m", help=f"models, comma separated, of {', '.join(SIZES)}")
    parser.add_argument("--dir", default=None,
                        help="folder to write the checkpoints in (default: the system's temporary folder); its file\n"
                             "system decides what fsync costs")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: the 1m and 11m models, 1 round, no warm-up round (measures nothing)")
    add_round_options(parser, rounds=7, attempts=3, budget_seconds=90.0, per="model")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.rounds, args.max_attempts = "1m,11m", 1, 1
    args.max_attempts = args.max_attempts or 3 * args.rounds
    args.sizes = [name.strip() for name in str(args.sizes).split(",") if name.strip()]
    unknown = [name for name in args.sizes if name not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {', '.join(unknown)}; known: {', '.join(SIZES)}")
    return args


def file_system(folder: Path) -> str:
    """The file system type and device ``folder`` lives on, from /proc/mounts ("?" elsewhere)."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "?"
    resolved = str(folder.resolve())
    best = max((entry for entry in mounts if len(entry) > 2 and (resolved == entry[1] or resolved.startswith(
        entry[1].rstrip("/") + "/"))), key=lambda entry: len(entry[1]), default=None)
    return "?" if best is None else f"{best[2]} ({best[0]} on {best[1]})"


def model_and_optimizer(size: Size) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The model and an AdamW that has taken one step (its exp_avg and exp_avg_sq exist)."""
    torch.manual_seed(SEED)
    model = size.build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter).mul_(1e-3)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def training_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """What fit() puts into state.pt at an epoch end (loop.fit's ``training_state``): the loop
    position, the optimizer, no schedule or scaler, an end-of-epoch meter (sums, nothing held),
    the loader position and every RNG state."""
    loop = TrainState(epoch=1, batch=0, step=100, samples=12_800, best_value=0.5, best_step=100)
    return {
        "loop": asdict(loop),
        "optimizer": optimizer.state_dict(),
        "schedule": None,
        "scaler": {},
        "meter": {"names": ["loss", "accuracy"], "sums": torch.zeros(2, dtype=torch.float64), "count": 0,
                  "marked_sums": torch.zeros(2, dtype=torch.float64), "marked_count": 0,
                  "held": {"losses": [], "counts": [], "outputs": [], "targets": []}},
        "loader": {"epoch": loop.epoch, "position": loop.batch},
        "rng": checkpoints.rng_state(),
    }


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


def fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


# ----------------------------------------------------------------------------------- contenders


def run_trainlab(root: Path, checkpointer: Any, model: nn.Module, optimizer: torch.optim.Optimizer) -> CheckpointTiming:
    """Save ``checkpoints/last`` through fit()'s checkpointer, then load it as ``trainlab resume`` does."""
    started = time.perf_counter()
    checkpointer("last", model, lambda: training_state(optimizer), {"step": 100, "epoch": 1, "batch": 0})
    saved = time.perf_counter()  # the training loop goes on from here
    checkpointer.wait()
    durable = time.perf_counter()
    target = root / "checkpoints" / "last"
    size = folder_bytes(target)

    load_started = time.perf_counter()
    found = checkpoints.find_checkpoint(root / "checkpoints", "last")
    assert found == target, f"the checkpoint found is {found}, not {target}"
    checkpoints.read_meta(found)  # verifies both files' SHA-256
    verified = time.perf_counter()
    checkpoints.load_weights(found, model)
    state = checkpoints.load_state(found)
    optimizer.load_state_dict(state["optimizer"])
    checkpoints.set_rng_state(state["rng"])
    loaded = time.perf_counter()
    return CheckpointTiming(saved - started, durable - started, loaded - load_started, verified - load_started, size)


def run_hand_written(root: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> CheckpointTiming:
    """torch.save of both state dicts (then an fsync, for the durable time); torch.load(weights_only=True)."""
    path = root / "checkpoint.pt"
    started = time.perf_counter()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
    saved = time.perf_counter()
    fsync(path)
    durable = time.perf_counter()
    size = path.stat().st_size

    load_started = time.perf_counter()
    checkpoint = torch.load(path, weights_only=True)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    loaded = time.perf_counter()
    return CheckpointTiming(saved - started, durable - started, loaded - load_started, 0.0, size)


def trainlab_breakdown(root: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The work of one trainlab checkpoint, one library call at a time, in seconds (one shot, so
    noisier than the rounds): what the checkpointer runs in the loop's thread or in the background
    depends on its version; the parts are the same."""
    from safetensors.torch import save_file

    from trainlab.train.checkpoint import _sha256  # the hash every checkpoint file gets

    folder = root / "breakdown"
    folder.mkdir(exist_ok=True)
    parts: dict[str, float] = {}
    started = time.perf_counter()
    state = training_state(optimizer)
    parts["training_state"] = time.perf_counter() - started
    started = time.perf_counter()
    taken = checkpoints.snapshot(model, state)  # what the loop waits for: every tensor copied
    parts["copy_tensors"] = time.perf_counter() - started
    weights = taken.weights
    started = time.perf_counter()
    save_file(weights, str(folder / checkpoints.MODEL_FILE), metadata=taken.metadata)
    parts["safetensors_save_file"] = time.perf_counter() - started
    started = time.perf_counter()
    torch.save(taken.state, folder / checkpoints.STATE_FILE)
    parts["torch_save_state"] = time.perf_counter() - started
    started = time.perf_counter()
    for name in (checkpoints.MODEL_FILE, checkpoints.STATE_FILE):
        fsync(folder / name)
    parts["fsync"] = time.perf_counter() - started
    started = time.perf_counter()
    for name in (checkpoints.MODEL_FILE, checkpoints.STATE_FILE):
        _sha256(folder / name)
    parts["sha256"] = time.perf_counter() - started
    started = time.perf_counter()
    torch.save(weights, folder / "weights.pt")
    parts["weights_torch_save"] = time.perf_counter() - started  # the same weights through torch.save, to compare
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    return parts


# ----------------------------------------------------------------------------------- one model


def median_ratio(mine: list[float], theirs: list[float]) -> tuple[list[float], float]:
    ratios = [a / b for a, b in zip(mine, theirs)]
    return ratios, statistics.median(ratios)


def run_size(size: Size, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    model, optimizer = model_and_optimizer(size)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    tensor_bytes = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values()) + sum(
        value.numel() * value.element_size() for state in optimizer.state.values() for value in state.values()
        if isinstance(value, torch.Tensor))
    root = folder / size.name
    (root / "trainlab").mkdir(parents=True)
    (root / "hand-written").mkdir()
    checkpointer = _Checkpointer(root / "trainlab", MetricsFile(root / "trainlab" / "metrics.jsonl"), "0" * 64,
                                 "bench-checkpoint")  # fit()'s checkpointer of this run folder
    contenders = [Contender(TRAINLAB), Contender(BASELINE)]
    print(f"--- {size.name}: {size.description}, {parameters:,} parameters, AdamW state; {tensor_bytes / MEGABYTE:,.0f} MB "
          f"of tensors per checkpoint; {args.rounds} round(s)" + ("" if args.quick else " + 1 warm-up"), flush=True)

    def one(name: str) -> CheckpointTiming:
        if name == TRAINLAB:
            timing = run_trainlab(root / "trainlab", checkpointer, model, optimizer)
        else:
            timing = run_hand_written(root / "hand-written", model, optimizer)
        gc.collect()  # the loaded copies go before the next contender runs
        if torch.get_num_threads() != args.threads:
            torch.set_num_threads(args.threads)
        return timing

    measured = alternate_rounds(contenders, one, args.rounds, args.max_others, args.max_attempts, args.budget_seconds,
                                lambda name, t: f"{name} save {t.save_seconds:.3f}s, durable {t.durable_seconds:.3f}s, "
                                                f"load {t.load_seconds:.3f}s", warmup=not args.quick)
    checkpointer.close()  # as a run does when it ends
    timings = {name: [round_[name] for round_ in measured.chosen] for name in (TRAINLAB, BASELINE)}
    breakdown = trainlab_breakdown(root, model, optimizer)

    rows = []
    for name in (TRAINLAB, BASELINE):
        mine = timings[name]
        row: dict[str, Any] = {
            "model": size.name, "contender": name, "parameters": parameters,
            "median_save_seconds": statistics.median(t.save_seconds for t in mine),
            "min_save_seconds": min(t.save_seconds for t in mine),
            "max_save_seconds": max(t.save_seconds for t in mine),
            "median_durable_seconds": statistics.median(t.durable_seconds for t in mine),
            "median_load_seconds": statistics.median(t.load_seconds for t in mine),
            "median_verify_seconds": statistics.median(t.verify_seconds for t in mine),
            "bytes_on_disk": mine[-1].bytes_on_disk,
        }
        if name == TRAINLAB:
            theirs = timings[BASELINE]
            for what in ("save", "durable", "load"):
                ratios, median = median_ratio([getattr(t, f"{what}_seconds") for t in mine],
                                              [getattr(t, f"{what}_seconds") for t in theirs])
                row[f"per_round_{what}_ratios_vs_hand_written"] = ratios
                row[f"median_{what}_ratio_vs_hand_written"] = median
        rows.append(row)
    rejected = measured.attempts - len(measured.chosen)
    print(f"{len(measured.chosen)} round(s) reported, {rejected} contended round(s) left out; trainlab's save taken "
          "apart once: " + ", ".join(f"{part} {seconds:.3f}s" for part, seconds in breakdown.items()), flush=True)
    return {
        "model": size.name, "description": size.description, "parameters": parameters,
        "tensor_bytes": tensor_bytes, "results": rows, "trainlab_breakdown_seconds": breakdown,
        "attempts": measured.attempts, "rejected_rounds": rejected, "quiet_rounds": measured.quiet,
        "rounds": {name: [asdict(t) for t in timings[name]] for name in timings},
    }


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of every model's rows (pastes straight into docs/benchmarks.md)."""
    header = ("| model | contender | save s (loop waits) | until durable s | load s | of which SHA-256 check s "
              "| MB on disk | save vs hand-written | durable vs hand-written+fsync | load vs hand-written |")
    lines = [header, "|" + "---|" * 10]
    for row in rows:
        ratios = [row.get(f"median_{what}_ratio_vs_hand_written") for what in ("save", "durable", "load")]
        shown = ["-" if ratio is None else f"{ratio:.2f}x" for ratio in ratios]
        lines.append(
            f"| {row['model']} ({row['parameters'] / 1e6:.1f}M) | {row['contender']} | {row['median_save_seconds']:.3f} "
            f"| {row['median_durable_seconds']:.3f} | {row['median_load_seconds']:.3f} "
            f"| {row['median_verify_seconds']:.3f} | {row['bytes_on_disk'] / MEGABYTE:,.1f} | {shown[0]} | {shown[1]} "
            f"| {shown[2]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    revision = source_revision()
    with tempfile.TemporaryDirectory(prefix="trainlab-bench-checkpoint-", dir=args.dir) as tmp:
        folder = Path(tmp)
        where = file_system(folder)
        print(f"{CASE}: machine {info['cpu']}, {info['cores']} cores, torch {info['torch']}, torch threads "
              f"{info['torch_threads']}; trainlab at {revision['commit']}"
              + (" + uncommitted changes in src/" if revision["src_changed_since_commit"] else "")
              + f"; checkpoints in {folder} on {where}" + ("  [--quick: measures nothing]" if args.quick else ""),
              flush=True)
        models = []
        for name in args.sizes:
            models.append(run_size(SIZES[name], args, folder))
            gc.collect()  # the model and optimizer of that size go before the next is built
    rows = [row for model in models for row in model["results"]]
    print()
    print(table(rows))
    for model in models:
        trainlab_row = model["results"][0]
        print(f"{model['model']}: trainlab / hand-written per round, save: "
              + ", ".join(f"{r:.2f}" for r in trainlab_row["per_round_save_ratios_vs_hand_written"])
              + "; load: " + ", ".join(f"{r:.2f}" for r in trainlab_row["per_round_load_ratios_vs_hand_written"]))
    result = {
        "case": CASE,
        "machine": info,
        "trainlab_source": revision,
        "config": {"sizes": args.sizes, "rounds": args.rounds, "warmup_rounds": 0 if args.quick else 1,
                   "optimizer": {"name": "AdamW", "lr": 1e-3, "steps_taken": 1}, "threads": args.threads,
                   "file_system": where, "max_others": args.max_others, "quick": args.quick,
                   "command": " ".join(["benchmarks/" + CASE + ".py", *(argv if argv is not None else sys.argv[1:])])},
        "models": models,
        "results": rows,
    }
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
