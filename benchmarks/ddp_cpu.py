"""Benchmark: data-parallel training in two CPU processes (DDP over gloo), trainlab against a hand-written DDP loop.

The model and data are those of ``mlp_cpu`` made wider (a synthetic table, an MLP), so that the
arithmetic of a step outweighs gloo's all-reduce of its gradients: 16,384 samples x 64 features,
10 classes, MLP 64 -> 1024 -> ReLU -> 1024 -> ReLU -> 10 (1.1M parameters), SGD (lr 0.05,
momentum 0.9), global batch 512, 2 epochs = 64 optimizer steps per run.

Contenders, each run in processes of its own (launched per run, alternating round by round after
a warm-up round whose numbers are dropped), in three layouts on this 2-core machine:

- 2 processes x 1 torch thread (the case itself): DistributedDataParallel over gloo, each process
  serving ``order[rank::2]`` of the epoch's permutation in batches of 256 (global batch 512).
- 1 process x 1 thread and 1 process x 2 threads (the baselines of the scaling efficiency): the
  plain loop with the global batch of 512, no process group, no DDP.

- trainlab:     ``torchrun --standalone --nproc-per-node 2 -m trainlab train RECIPE --out DIR
                data.batch_size=256`` (``--trainlab-launch devices`` runs ``trainlab train RECIPE
                --devices 2`` instead: the same launcher called from trainlab's CLI); one process is
                ``trainlab train RECIPE --out DIR data.batch_size=512``. Throughput is fit()'s own
                timing on rank 0, read from the run's ``status.json`` (``seconds``: the training loop
                with its per-step status broadcast, metric all-reduces, log records and the
                end-of-epoch checkpoints); setup is the rest of the launch's wall time.
- hand-written: this file run as a worker by the same launcher (``torchrun --standalone
                --nproc-per-node 2 benchmarks/ddp_cpu.py --worker ...``; one process: ``python
                benchmarks/ddp_cpu.py --worker ...``): ``init_process_group("gloo")``,
                ``DistributedDataParallel``, a seeded ``torch.randperm`` per epoch sharded as
                ``order[rank::world]``, index slicing, forward, loss, backward, step,
                ``zero_grad(set_to_none=True)``; nothing else. It loads the very tensors trainlab
                trains on (``trainlab.data.build_data`` of the recipe, saved once by the driver) and
                imports no trainlab. Timed on rank 0 from the first step to the last.

Threads: every process runs with ``OMP_NUM_THREADS`` set for both contenders alike (1 per process
for 2 processes on 2 cores, so the processes do not oversubscribe the cores; 1 and 2 for the
single-process baselines), checked from each run (trainlab's ``env.json``, the worker's
``torch.get_num_threads()``).

Same architecture (trainlab's saved parameter shapes checked every run), same data, same global
batch, same SGD, same number of optimizer steps and samples (asserted every run). Reported:
trainlab's samples/s as a ratio of the hand-written DDP loop's (median of per-round ratios; target
>= 0.97), and the scaling efficiency of each contender, (2-process samples/s) / (2 x its own
1-process, 1-thread samples/s), median of per-round values; also 2 processes against 1 process
using both cores (2 threads).

    .venv/bin/python benchmarks/ddp_cpu.py                        # ~3 minutes on the 2-core VM
    .venv/bin/python benchmarks/ddp_cpu.py --rounds 8 --no-both-cores --budget-seconds 420 --json runs/bench/ddp_cpu.json
                                                                  # ~5 minutes: a steadier ratio
    .venv/bin/python benchmarks/ddp_cpu.py --quick                # ~30 s: checks it runs, measures nothing
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Contender,
    Measurement,
    add_round_options,
    alternate_rounds,
    cpu_training,
    machine,
    mlp,
    mlp_layers,
    source_revision,
    synthetic_classification,
    verified,
    write_json,
)

# trainlab itself is imported inside the driver's functions only: the hand-written worker (this
# file run with --worker) is the code a user writes, and pays no trainlab import.

CASE = "ddp_cpu"
SEED = 0
WORLD = 2  # processes of the data-parallel layout (one per core of the reference machine)
TRAINLAB = "trainlab"
HAND_WRITTEN = "hand-written"
TARGET_VS_HAND = 0.97  # trainlab's 2-process samples/s over the hand-written DDP loop's
LAUNCH_TIMEOUT_SECONDS = 600  # one launch at most; a hung rendezvous fails the case instead of waiting forever
THIS_FILE = Path(__file__).resolve()


@dataclass(frozen=True)
class Layout:
    """How one run is laid out: its processes, and the torch threads of each."""

    processes: int
    threads: int

    @property
    def label(self) -> str:
        return (f"{self.processes} process{'es' if self.processes > 1 else ''} x "
                f"{self.threads} thread{'s' if self.threads > 1 else ''}")


DDP = Layout(WORLD, 1)  # the case: DDP, one thread per process
SINGLE = Layout(1, 1)  # the scaling efficiency's baseline
SINGLE_BOTH_CORES = Layout(1, 2)  # one process using both cores instead of two processes


def contender_name(who: str, layout: Layout) -> str:
    return f"{who}, {layout.label}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--samples", type=int, default=16384, help="synthetic training samples (a multiple of --batch-size)")
    parser.add_argument("--features", type=int, default=64, help="input features per sample")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=512,
                        help=f"the global batch: {WORLD} processes take batch-size / {WORLD} each, one process all of it")
    parser.add_argument("--hidden", type=str, default="1024,1024", help="hidden layer widths, comma separated")
    parser.add_argument("--trainlab-launch", choices=("torchrun", "devices"), default="torchrun",
                        help="torchrun: `torchrun --standalone --nproc-per-node 2 -m trainlab train` (the launcher the\n"
                             "hand-written loop gets); devices: `trainlab train --devices 2`")
    parser.add_argument("--no-both-cores", action="store_true",
                        help="skip the 1 process x 2 threads baseline (fewer launches per round)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: tiny sizes, 1 round, no warm-up round, no retries, no 2-thread baseline")
    add_round_options(parser, rounds=3, attempts=2, budget_seconds=210.0, threads=False,
                      budget_help="start no new round after this long, warm-up included (a round launches 6 runs:\n"
                                  "~40-50 s; the 3 default rounds take ~3 minutes)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.max_attempts, args.samples, args.epochs = 1, 1, 2048, 1
        args.hidden, args.no_both_cores = "256,256", True
    args.max_attempts = args.max_attempts or 2 * args.rounds
    args.hidden = [int(width) for width in str(args.hidden).split(",") if width.strip()]
    if args.batch_size % WORLD or args.samples % args.batch_size:
        parser.error(f"--batch-size must be a multiple of {WORLD} and --samples a multiple of --batch-size "
                     f"(every step takes a full global batch, no process pads its shard)")
    return args


def make_recipe(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe, with the global batch; a 2-process launch overrides data.batch_size per process."""
    return {
        "name": "bench-ddp-cpu",
        "seed": SEED,
        "data": synthetic_classification([args.features], args.samples, args.classes, args.batch_size),
        "model": {"layers": mlp_layers(args.hidden)},
        "loss": {"name": "CrossEntropyLoss"},
        "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9},
        **cpu_training(args.epochs),
    }


# ----------------------------------------------------------------------------------- the hand-written worker


def worker_main(argv: list[str]) -> None:
    """The hand-written data-parallel loop, run in each process of a torchrun launch (or alone,
    without torchrun, as the plain one-process loop). Each process writes its timing, steps,
    samples and threads to ``RESULT.<rank>``."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--config", required=True, help="the worker's JSON settings (written by the driver)")
    parser.add_argument("--result", required=True, help="each process writes its JSON result to RESULT.<rank>")
    options = parser.parse_args(argv)
    config = json.loads(Path(options.config).read_text(encoding="utf-8"))

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0
    data = torch.load(config["data"], weights_only=True)
    inputs, targets = data["inputs"], data["targets"]  # (N, F) float32, (N,) int64
    torch.manual_seed(config["seed"])
    model: nn.Module = mlp(config["features"], config["hidden"], config["classes"])
    if world > 1:
        model = DistributedDataParallel(model)  # broadcasts rank 0's initial weights
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    batch_size = config["global_batch"] // world  # per process
    model.train()
    steps = samples = 0
    started = time.perf_counter()
    for epoch in range(config["epochs"]):
        generator = torch.Generator().manual_seed(config["seed"] * 1000 + epoch)
        order = torch.randperm(len(inputs), generator=generator)[rank::world]  # this process's shard, (N / world,)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            loss = F.cross_entropy(model(inputs[index]), targets[index])
            loss.backward()  # DDP all-reduces (averages) the gradients here
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            samples += len(index)
    seconds = time.perf_counter() - started

    # After the timed loop, each process writes its own numbers (a collective here, such as
    # all_gather_object, made ~1 in 20 launches abort at interpreter exit in gloo's threads).
    result = {"seconds": seconds, "steps": steps, "samples": samples, "threads": torch.get_num_threads(),
              "rank": rank, "world": world}
    Path(f"{options.result}.{rank}").write_text(json.dumps(result), encoding="utf-8")
    if world > 1:
        dist.barrier()  # as trainlab's session does before it tears the group down
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------- launching runs


def child_environment(threads: int) -> dict[str, str]:
    """This environment for a launched run: torch threads fixed by OMP_NUM_THREADS (torchrun keeps
    a set value), and no leftover torchrun variables of an outer launch."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for name in list(env):
        if name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                    "MASTER_ADDR", "MASTER_PORT") or name.startswith("TORCHELASTIC_"):
            del env[name]
    return env


def torchrun_prefix(processes: int) -> list[str]:
    """``torchrun --standalone --nproc-per-node N`` through this interpreter (a free port is picked)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]


def launch(command: list[str], layout: Layout, folder: Path, retries: list[str]) -> float:
    """Run one launch to its end; returns its wall seconds. A failed launch is retried once (and
    noted in ``retries``: gloo can abort a process at interpreter exit); a second failure raises
    with the output's tail."""
    for attempt in (1, 2):
        started = time.perf_counter()
        done = subprocess.run(command, cwd=folder, env=child_environment(layout.threads), capture_output=True,
                              text=True, check=False, timeout=LAUNCH_TIMEOUT_SECONDS)
        wall = time.perf_counter() - started
        if done.returncode == 0:
            return wall
        tail = f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        if attempt == 2:
            raise RuntimeError(f"`{' '.join(command)}` exited with {done.returncode} twice; the second time:\n{tail}")
        retries.append(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
        print(f"  note: a launch exited with {done.returncode}; retrying it once (see 'launch_retries' in the JSON)",
              flush=True)
    raise AssertionError("unreachable")


@dataclass
class Workspace:
    """The case's files: the recipe, the saved tensors and the worker's settings, in one temporary folder."""

    folder: Path
    recipe: Path  # recipe.yaml (global batch)
    worker_config: Path  # the hand-written worker's JSON settings
    reference_shapes: list[tuple[int, ...]]  # the hand-built model's parameter shapes, sorted
    runs: int = 0  # launches so far (names each run's folder)
    retries: list[str] = field(default_factory=list)  # launches that failed once and were run again

    def next_path(self, stem: str) -> Path:
        self.runs += 1
        return self.folder / f"{stem}-{self.runs}"


def saved_shapes(checkpoint: Path) -> list[tuple[int, ...]]:
    """The parameter shapes in a trainlab checkpoint's model.safetensors, sorted (names differ)."""
    from safetensors import safe_open

    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as handle:
        return sorted(tuple(handle.get_slice(name).get_shape()) for name in handle.keys())  # noqa: SIM118 - safe_open is no dict


@dataclass
class Observed:
    """What the 2-process trainlab runs' status.json said besides fit()'s seconds, kept for the report."""

    status_samples_per_second: list[float]  # status.json's samples_per_second per run
    global_samples_per_second: list[float]  # the same runs' global samples / fit()'s seconds


def run_trainlab(args: argparse.Namespace, space: Workspace, layout: Layout, observed: Observed) -> Measurement:
    """One trainlab launch. Throughput: the global samples over fit()'s own seconds on rank 0
    (status.json ``seconds``: the whole loop, first step included, as the hand-written loop is timed)."""
    out = space.next_path("trainlab")
    per_process_batch = args.batch_size // layout.processes
    arguments = ["train", str(space.recipe), "--out", str(out), f"data.batch_size={per_process_batch}"]
    if layout.processes == 1:
        command = [sys.executable, "-m", "trainlab", *arguments]
    elif args.trainlab_launch == "torchrun":
        command = [*torchrun_prefix(layout.processes), "-m", "trainlab", *arguments]
    else:
        command = [sys.executable, "-m", "trainlab", *arguments, "--devices", str(layout.processes)]
    try:
        wall = launch(command, layout, space.folder, space.retries)
        status = json.loads((out / "status.json").read_text(encoding="utf-8"))
        environment = json.loads((out / "env.json").read_text(encoding="utf-8"))
        shapes = saved_shapes(out / "checkpoints" / "last")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    assert status["status"] == "finished", f"trainlab's run ended {status['status']}"
    assert environment["threads"] == layout.threads, f"trainlab trained with {environment['threads']} threads"
    assert shapes == space.reference_shapes, f"architectures differ: {shapes} vs {space.reference_shapes}"
    steps, seconds = int(status["step"]), float(status["seconds"])  # fit()'s timing on rank 0 (rounded to 1 ms)
    samples = steps * args.batch_size  # every step takes one full global batch (samples % batch == 0)
    # status.json's own samples_per_second leaves the first step out, and the hand-written loop is
    # timed with it, so both use whole-loop seconds; the status figure is kept for the report.
    if layout.processes > 1:
        observed.status_samples_per_second.append(float(status["samples_per_second"]))
        observed.global_samples_per_second.append(samples / seconds)
    return Measurement(samples / seconds, seconds, wall - seconds, samples, steps)


def run_hand_written(args: argparse.Namespace, space: Workspace, layout: Layout) -> Measurement:
    """One launch of the hand-written worker; throughput is its timed loop on rank 0 over every
    process's samples."""
    result_path = space.next_path("hand-written")
    arguments = [str(THIS_FILE), "--worker", "--config", str(space.worker_config), "--result", str(result_path)]
    if layout.processes == 1:
        command = [sys.executable, *arguments]
    else:
        command = [*torchrun_prefix(layout.processes), *arguments]
    paths = [Path(f"{result_path}.{rank}") for rank in range(layout.processes)]
    try:
        wall = launch(command, layout, space.folder, space.retries)
        parts = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    finally:
        for path in paths:
            path.unlink(missing_ok=True)
    assert all(part["world"] == layout.processes for part in parts), "the hand-written loop ran in other processes"
    threads = [part["threads"] for part in parts]
    assert threads == [layout.threads] * layout.processes, f"hand-written threads {threads}"
    steps = [part["steps"] for part in parts]
    assert len(set(steps)) == 1, f"processes stepped unequally: {steps}"
    seconds = float(parts[0]["seconds"])  # rank 0's loop, as trainlab's fit() is timed on rank 0
    samples = sum(part["samples"] for part in parts)
    return Measurement(samples / seconds, seconds, wall - seconds, samples, steps[0])


def prepare(args: argparse.Namespace, folder: Path) -> Workspace:
    """Write the recipe, the tensors trainlab trains on and the worker's settings into ``folder``."""
    import yaml

    from trainlab.data import build_data
    from trainlab.recipe import Recipe

    recipe = make_recipe(args)
    recipe_path = folder / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    # The tensors trainlab trains on: the same source, config and seed that trainlab.train uses.
    config = Recipe.model_validate(recipe)
    data = build_data(config.data, config.seed)
    inputs, targets = data.train.inputs, data.train.targets  # (N, F) float32, (N,) int64
    assert len(inputs) == args.samples, f"trainlab's training split holds {len(inputs)} samples, not {args.samples}"
    data_path = folder / "data.pt"
    torch.save({"inputs": inputs.contiguous(), "targets": targets.contiguous()}, data_path)
    worker_config = folder / "worker.json"
    worker_config.write_text(json.dumps({
        "data": str(data_path), "seed": SEED, "features": args.features, "hidden": args.hidden,
        "classes": args.classes, "global_batch": args.batch_size, "epochs": args.epochs, "lr": 0.05, "momentum": 0.9,
    }), encoding="utf-8")
    reference = mlp(args.features, args.hidden, args.classes)
    shapes = sorted(tuple(parameter.shape) for parameter in reference.parameters())
    return Workspace(folder, recipe_path, worker_config, shapes)


# ----------------------------------------------------------------------------------- the report


def per_round(mine: Contender, other: Contender) -> list[float]:
    """Per-round throughput ratios mine / other."""
    return [a / b for a, b in zip(mine.throughputs(), other.throughputs())]


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the throughput rows (pastes straight into docs/benchmarks.md)."""
    header = ("| layout | contender | median samples/s | min | max | trainlab / hand-written "
              "(median of per-round) | setup s (median) |")
    lines = [header, "|" + "---|" * 7]
    for row in rows:
        ratio = row.get("median_ratio_vs_hand_written")
        lines.append(
            f"| {row['layout']} | {row['contender']} | {row['median_samples_per_second']:,.0f} "
            f"| {row['min_samples_per_second']:,.0f} | {row['max_samples_per_second']:,.0f} "
            f"| {'-' if ratio is None else f'{ratio:.3f}'} | {row['median_setup_seconds']:.2f} |")
    return "\n".join(lines)


def scaling_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the scaling rows."""
    header = (f"| contender | {DDP.label} samples/s | {SINGLE.label} | scaling efficiency = {WORLD}p / ({WORLD} x 1p,1t) "
              f"| {SINGLE_BOTH_CORES.label} | speed-up {WORLD}p / (1p,2t) |")
    lines = [header, "|" + "---|" * 6]
    for row in rows:
        both = row.get("median_both_cores_samples_per_second")
        speedup = row.get("median_speedup_vs_both_cores")
        lines.append(
            f"| {row['contender']} | {row['median_ddp_samples_per_second']:,.0f} "
            f"| {row['median_single_samples_per_second']:,.0f} | {row['median_scaling_efficiency']:.3f} "
            f"| {'-' if both is None else f'{both:,.0f}'} | {'-' if speedup is None else f'{speedup:.3f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    layouts = [DDP, SINGLE] + ([] if args.no_both_cores else [SINGLE_BOTH_CORES])
    contenders = {(who, layout): Contender(contender_name(who, layout))
                  for layout in layouts for who in (TRAINLAB, HAND_WRITTEN)}  # A, B per layout: adjacent in a round
    by_name = {contender.name: key for key, contender in contenders.items()}
    steps_per_epoch = args.samples // args.batch_size
    expected_steps = args.epochs * steps_per_epoch
    expected_samples = args.epochs * args.samples
    parameters = sum(p.numel() for p in mlp(args.features, args.hidden, args.classes).parameters())
    info = machine()
    launcher = ("torchrun -m trainlab train" if args.trainlab_launch == "torchrun" else "trainlab train --devices")
    print(f"{CASE}: {args.samples} samples x {args.features} features, {args.classes} classes, MLP hidden {args.hidden} "
          f"({parameters:,} parameters), SGD, global batch {args.batch_size} ({args.batch_size // WORLD} per process "
          f"in {WORLD} processes), {args.epochs} epoch(s) x {steps_per_epoch} steps, layouts: "
          + ", ".join(layout.label for layout in layouts)
          + f"; trainlab via {launcher}; {args.rounds} round(s)" + ("" if args.quick else " + 1 warm-up")
          + ("  [--quick: measures nothing]" if args.quick else ""), flush=True)
    revision = source_revision()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}; torch threads per process set by "
          f"OMP_NUM_THREADS for both contenders; trainlab at {revision['commit']}"
          + (" + uncommitted changes in src/" if revision["src_changed_since_commit"] else ""), flush=True)
    observed = Observed([], [])

    with tempfile.TemporaryDirectory(prefix="trainlab-bench-ddp-") as tmp:
        space = prepare(args, Path(tmp))

        def one(name: str) -> Measurement:
            who, layout = by_name[name]
            if who == TRAINLAB:
                measurement = run_trainlab(args, space, layout, observed)
            else:
                measurement = run_hand_written(args, space, layout)
            return verified(name, measurement, expected_steps, expected_samples, torch.get_num_threads())

        measured_rounds = alternate_rounds(
            list(contenders.values()), one, args.rounds, args.max_others, args.max_attempts, args.budget_seconds,
            lambda name, m: f"{name} {m.samples_per_second:,.0f}/s (setup {m.setup_seconds:.1f}s)",
            warmup=not args.quick)

    chosen, clean, attempts = measured_rounds.chosen, measured_rounds.quiet, measured_rounds.attempts
    rows: list[dict[str, Any]] = []
    for layout in layouts:
        hand = contenders[(HAND_WRITTEN, layout)]
        for who in (TRAINLAB, HAND_WRITTEN):
            contender = contenders[(who, layout)]
            values = contender.throughputs()
            row: dict[str, Any] = {
                "layout": layout.label, "contender": who, "processes": layout.processes,
                "threads_per_process": layout.threads,
                "median_samples_per_second": statistics.median(values),
                "min_samples_per_second": min(values), "max_samples_per_second": max(values),
                "median_train_seconds": statistics.median(m.train_seconds for m in contender.rounds),
                "median_setup_seconds": statistics.median(m.setup_seconds for m in contender.rounds),
                "steps_per_run": expected_steps, "samples_per_run": expected_samples,
            }
            if who == TRAINLAB:
                ratios = per_round(contender, hand)
                row["per_round_ratios_vs_hand_written"] = ratios
                row["median_ratio_vs_hand_written"] = statistics.median(ratios)
            rows.append(row)

    scaling: list[dict[str, Any]] = []
    for who in (TRAINLAB, HAND_WRITTEN):
        ddp, single = contenders[(who, DDP)], contenders[(who, SINGLE)]
        efficiency = [a / (WORLD * b) for a, b in zip(ddp.throughputs(), single.throughputs())]
        row = {"contender": who,
               "median_ddp_samples_per_second": statistics.median(ddp.throughputs()),
               "median_single_samples_per_second": statistics.median(single.throughputs()),
               "per_round_scaling_efficiency": efficiency,
               "median_scaling_efficiency": statistics.median(efficiency)}
        if SINGLE_BOTH_CORES in layouts:
            both = contenders[(who, SINGLE_BOTH_CORES)]
            speedup = per_round(ddp, both)
            row.update(median_both_cores_samples_per_second=statistics.median(both.throughputs()),
                       per_round_speedup_vs_both_cores=speedup, median_speedup_vs_both_cores=statistics.median(speedup))
        scaling.append(row)

    headline_ratios = rows[0]["per_round_ratios_vs_hand_written"]
    headline = {
        "trainlab_vs_hand_written_ddp": statistics.median(headline_ratios),
        "target": TARGET_VS_HAND,
        "trainlab_scaling_efficiency": scaling[0]["median_scaling_efficiency"],
        "hand_written_scaling_efficiency": scaling[1]["median_scaling_efficiency"],
    }
    rejected = attempts - len(chosen)
    print()
    print(f"{len(chosen)} round(s) reported, {rejected} contended round(s) left out "
          f"(contended: other processes used > {args.max_others:.0%} of the CPUs)")
    print(table(rows))
    print()
    print(scaling_table(scaling))
    print()
    print(f"trainlab / {HAND_WRITTEN}, {DDP.label}, per round: " + ", ".join(f"{r:.3f}" for r in headline_ratios)
          + f"  -> median {headline['trainlab_vs_hand_written_ddp']:.3f} (target >= {TARGET_VS_HAND})")
    for row in scaling:
        print(f"{row['contender']} scaling efficiency per round: "
              + ", ".join(f"{e:.3f}" for e in row["per_round_scaling_efficiency"]))
    if observed.status_samples_per_second:
        share = statistics.median(reported / total for reported, total in
                                  zip(observed.status_samples_per_second, observed.global_samples_per_second))
        meaning = ("it counts rank 0's shard only" if abs(share * WORLD - 1) < 0.15 else
                   "it counts every process's samples" if abs(share - 1) < 0.15 else "another count")
        print(f"note: trainlab's status.json samples_per_second of a {WORLD}-process run is {share:.3f} of the global "
              f"samples over fit()'s seconds (median; {meaning}); the table uses the latter")
    if space.retries:
        print(f"note: {len(space.retries)} launch(es) failed once and were run again: " + "; ".join(space.retries))
    result = {
        "case": CASE,
        "machine": info,
        "trainlab_source": revision,
        "config": {
            "samples": args.samples, "features": args.features, "classes": args.classes, "hidden": args.hidden,
            "parameters": parameters, "epochs": args.epochs, "global_batch": args.batch_size,
            "per_process_batch": args.batch_size // WORLD, "steps_per_run": expected_steps,
            "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9}, "recipe": make_recipe(args),
            "layouts": [asdict(layout) for layout in layouts], "trainlab_launch": args.trainlab_launch,
            "threads": "OMP_NUM_THREADS per process, both contenders", "rounds": args.rounds,
            "warmup_rounds": 0 if args.quick else 1, "attempts": attempts, "rejected_rounds": rejected,
            "quiet_rounds": clean, "max_others": args.max_others, "quick": args.quick,
            "command": " ".join(["benchmarks/" + CASE + ".py", *(argv if argv is not None else sys.argv[1:])]),
        },
        "results": rows,
        "scaling": scaling,
        "headline": headline,
        "status_json_samples_per_second": {"reported": observed.status_samples_per_second,
                                           "global_over_fit_seconds": observed.global_samples_per_second},
        "launch_retries": space.retries,
        "rounds": {contender.name: [asdict(m) for m in contender.rounds] for contender in contenders.values()},
    }
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:
        worker_main(sys.argv[1:])
    else:
        main()
