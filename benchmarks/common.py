"""Shared helpers of the benchmark cases: machine description, statistics, table and JSON output.

A case runs its contenders in one process, alternating (A, B, C, A, B, C, ...), after a warm-up
round whose numbers are dropped. Each contender reports, per round, its steady-state training
throughput (samples/s of the training loop itself) and its setup seconds (everything else the
contender's entry point spent). Ratios are taken per round against the hand-written loop of the
same round, and the median of those per-round ratios is the headline number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

BASELINE = "hand-written"


def add_round_options(parser: argparse.ArgumentParser, *, rounds: int, attempts: int, budget_seconds: float,
                      per: str = "", budget_help: str | None = None, threads: bool = True) -> None:
    """The options of the measuring rules the CPU cases share (docs/benchmarks.md, "How a case
    measures"): rounds, torch threads, the contended-round rule and its retry budget, the JSON
    output. ``per`` names what attempts and budget count per ("model", "case"); ``attempts`` is the
    default of ``--max-attempts`` as a multiple of ``--rounds`` (the case applies it after parsing)."""
    scope = f" per {per}" if per else ""
    parser.add_argument("--rounds", type=int, default=rounds, help="measured rounds per contender, after one warm-up round")
    if threads:
        parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                            help="torch.set_num_threads for every contender (default: torch's default)")
    parser.add_argument("--max-others", type=float, default=0.10,
                        help="a round counts only if other processes used at most this share of the CPUs meanwhile")
    parser.add_argument("--max-attempts", type=int, default=None,
                        help=f"rounds tried at most{scope} (default {attempts} x rounds)")
    parser.add_argument("--budget-seconds", type=float, default=budget_seconds,
                        help=budget_help or f"{scope.strip() + ': ' if per else ''}stop retrying contended rounds after this long")
    parser.add_argument("--json", type=str, default=None, metavar="PATH", help="also write the results as JSON")


def synthetic_classification(shape: list[int], samples: int, classes: int, batch_size: int) -> dict[str, Any]:
    """A recipe's data section: ``source: synthetic`` classification, all of it for training."""
    return {"source": "synthetic", "task": "classification", "shape": list(shape), "num_samples": samples,
            "num_classes": classes, "batch_size": batch_size, "split": {"valid": 0.0, "test": 0.0}}


def cpu_training(epochs: int) -> dict[str, Any]:
    """A recipe's train and log sections for a CPU case measured by fit()'s own timing: float32, one
    train record per epoch (the end-of-epoch flush), no validation split, no TensorBoard, plots or bar."""
    return {
        "train": {"epochs": epochs, "device": "cpu", "precision": "32", "log_every": 1_000_000,
                  "monitor": "train/loss"},
        "log": {"tensorboard": False, "plots": False, "progress": "none"},
    }


def mlp(features: int, hidden: list[int], classes: int) -> torch.nn.Sequential:
    """By hand, the architecture trainlab builds from :func:`mlp_layers`."""
    modules: list[torch.nn.Module] = []
    width = features
    for size in hidden:
        modules += [torch.nn.Linear(width, size), torch.nn.ReLU()]
        width = size
    return torch.nn.Sequential(*modules, torch.nn.Linear(width, classes))


def mlp_layers(hidden: list[int]) -> list[Any]:
    """A recipe `layers:` MLP: Linear + ReLU per hidden width, then a Linear to the classes."""
    layers: list[Any] = []
    for width in hidden:
        layers += [{"Linear": {"out_features": width}}, "ReLU"]
    return layers + [{"Linear": {"out_features": "num_classes"}}]


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo reports it (or platform's guess elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def source_revision() -> dict[str, Any]:
    """The commit the measured trainlab comes from and whether ``src/`` differs from it (read-only
    git queries; None where git or the repository is missing): numbers of a working tree that is
    being edited are not numbers of the commit."""
    root = Path(__file__).resolve().parents[1]

    def git(*arguments: str) -> str | None:
        try:
            done = subprocess.run(["git", *arguments], cwd=root, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    changed = git("status", "--porcelain", "--", "src")
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "src_changed_since_commit": None if changed is None else bool(changed)}


class CpuWatch:
    """How much of the machine's CPU *other* processes used while a block ran.

    Reads the machine's busy time from /proc/stat and this process's own CPU time before and
    after; the difference, over wall time x cores, is the share of the machine that others took
    (0.0 on a quiet machine; steal time of a VM counts as taken). On a shared 2-core machine a
    neighbour's test run slows a 2-thread PyTorch loop several-fold, so rounds measured under
    contention are flagged and retried rather than averaged in. None where /proc/stat is missing.
    """

    def __init__(self) -> None:
        self.others: float | None = None

    @staticmethod
    def _machine_busy() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        values = [int(value) for value in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        guest = sum(values[8:10]) if len(values) > 9 else 0  # already counted in user/nice
        return (sum(values) - idle - guest) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        times = os.times()
        return times.user + times.system + times.children_user + times.children_system

    def __enter__(self) -> CpuWatch:  # noqa: PYI034
        self._busy, self._own_start, self._wall = self._machine_busy(), self._own(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy = self._machine_busy()
        wall = time.perf_counter() - self._wall
        if busy is None or self._busy is None or wall <= 0:
            return
        others = (busy - self._busy) - (self._own() - self._own_start)
        self.others = max(0.0, others / (wall * (os.cpu_count() or 1)))


@dataclass
class Measurement:
    """One contender's numbers in one round."""

    samples_per_second: float  # steady-state training throughput
    train_seconds: float  # the timed training loop
    setup_seconds: float  # the rest of the contender's wall time
    samples: int
    steps: int
    others_cpu: float | None = None  # share of the machine other processes used meanwhile (CpuWatch)


@dataclass
class Contender:
    name: str
    rounds: list[Measurement] = field(default_factory=list)
    note: str = ""

    def throughputs(self) -> list[float]:
        return [m.samples_per_second for m in self.rounds]

    def summary(self, baseline: Contender | None) -> dict[str, Any]:
        values = self.throughputs()
        row: dict[str, Any] = {
            "contender": self.name,
            "median_samples_per_second": statistics.median(values),
            "min_samples_per_second": min(values),
            "max_samples_per_second": max(values),
            "median_setup_seconds": statistics.median(m.setup_seconds for m in self.rounds),
            "median_train_seconds": statistics.median(m.train_seconds for m in self.rounds),
            "steps_per_run": self.rounds[0].steps,
            "samples_per_run": self.rounds[0].samples,
        }
        if baseline is not None:
            ratios = [mine / base for mine, base in zip(values, baseline.throughputs())]
            row["per_round_ratios"] = ratios
            row["median_ratio_vs_hand_written"] = statistics.median(ratios)
        if self.note:
            row["note"] = self.note
        return row


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the summary rows (pastes straight into docs/benchmarks.md)."""
    header = "| contender | median samples/s | min | max | ratio vs hand-written (median of per-round) | setup s (median) |"
    lines = [header, "|" + "---|" * 6]
    for row in rows:
        ratio = row.get("median_ratio_vs_hand_written")
        shown = "-" if ratio is None else f"{ratio:.3f}"
        lines.append(
            f"| {row['contender']} | {row['median_samples_per_second']:,.0f} | {row['min_samples_per_second']:,.0f} "
            f"| {row['max_samples_per_second']:,.0f} | {shown} "
            f"| {row['median_setup_seconds']:.3f} |"
        )
    return "\n".join(lines)


def report(case: str, config: dict[str, Any], contenders: list[Contender], skipped: dict[str, str]) -> dict[str, Any]:
    by_name = {contender.name: contender for contender in contenders}
    baseline = by_name.get(BASELINE)
    rows = [c.summary(baseline if c.name != BASELINE else None) for c in contenders]
    return {
        "case": case,
        "machine": machine(),
        "config": config,
        "results": rows,
        "skipped": skipped,
        "rounds": {c.name: [asdict(m) for m in c.rounds] for c in contenders},
    }


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


@dataclass
class Rounds:
    """What :func:`alternate_rounds` measured: the reported rounds (contender -> Measurement each),
    how many rounds ran after the warm-up, and how many of those were quiet."""

    chosen: list[dict[str, Measurement]]
    attempts: int
    quiet: int


def train_in_process(recipe: dict[str, Any]) -> tuple[Measurement, Any]:
    """``trainlab.train(recipe)`` into a temporary run folder, the path ``trainlab train`` takes.
    Returns fit()'s own figures as a Measurement (setup = the rest of the wall time) and the Run."""
    import trainlab

    with tempfile.TemporaryDirectory(prefix="trainlab-bench-") as tmp:
        started = time.perf_counter()
        run = trainlab.train(recipe, out=Path(tmp) / "run")
        wall = time.perf_counter() - started
    result = run.result
    return Measurement(
        samples_per_second=result.samples_per_second,
        train_seconds=result.seconds,
        setup_seconds=wall - result.seconds,
        samples=result.state.samples,
        steps=result.state.step,
    ), run


def verified(name: str, measurement: Measurement, steps: int, samples: int, threads: int) -> Measurement:
    """``measurement`` after checking that the contender did the same work as the others (steps and
    samples), with torch's thread count put back if the contender changed it."""
    assert measurement.steps == steps, f"{name} took {measurement.steps} steps, expected {steps}"
    assert measurement.samples == samples, f"{name} saw {measurement.samples} samples, expected {samples}"
    if torch.get_num_threads() != threads:  # keep every contender on the same thread count
        print(f"note: {name} changed torch threads to {torch.get_num_threads()}; restoring {threads}")
        torch.set_num_threads(threads)
    return measurement


def alternate_rounds(contenders: list[Contender], one: Any, rounds: int, max_others: float, max_attempts: int,
                     budget_seconds: float, describe: Any, warmup: bool = True) -> Rounds:
    """A warm-up round (unless ``warmup`` is False: a --quick smoke run whose launches cost
    seconds each), then rounds that run every contender once, in turn (each round starts one
    contender later than the round before, so no contender always runs first or always follows
    the same one), until ``rounds`` of them
    ran on a quiet machine (other processes used at most ``max_others`` of the CPUs, see
    :class:`CpuWatch`), or ``max_attempts`` / ``budget_seconds`` ran out. ``one(name)`` measures a
    contender (a :class:`Measurement`, or any record with an ``others_cpu`` field, which is set
    here); ``describe(name, measurement)`` is its text in the progress line. Only quiet rounds
    are reported (each contender's ``rounds`` is set to them); with none at all, the least contended
    ones (and a warning)."""
    def contention(measured: dict[str, Measurement]) -> float:
        return max((m.others_cpu or 0.0) for m in measured.values())

    names = [contender.name for contender in contenders]
    attempts: list[dict[str, Measurement]] = []
    deadline = time.perf_counter() + budget_seconds
    clean = 0
    attempt = -1 if warmup else 0  # attempt 0 is the warm-up round
    while True:
        attempt += 1
        measured: dict[str, Measurement] = {}
        start = max(attempt - 1, 0) % len(names)
        for name in names[start:] + names[:start]:
            with CpuWatch() as watch:
                measurement = one(name)
            measurement.others_cpu = watch.others
            measured[name] = measurement
        worst = contention(measured)
        quiet = worst <= max_others
        label = "warm-up" if attempt == 0 else f"round {attempt}"
        flag = "" if quiet or attempt == 0 else f"  [contended: others used {worst:.0%} of the CPUs]"
        parts = [describe(name, measurement) for name, measurement in measured.items()]
        print(f"  {label}: " + ", ".join(parts) + f"; others {worst:.0%}{flag}", flush=True)
        if attempt == 0:
            continue
        attempts.append(measured)
        clean += quiet
        if clean >= rounds:
            break
        if len(attempts) >= max_attempts or time.perf_counter() > deadline:
            what = "only those are reported" if clean else "the least contended rounds are reported"
            print(f"WARNING: only {clean} of {rounds} rounds ran on a quiet machine ({len(attempts)} attempts); "
                  f"{what}", flush=True)
            break

    chosen = [m for m in attempts if contention(m) <= max_others]
    if not chosen:
        least = sorted(attempts, key=contention)[:rounds]
        chosen = [m for m in attempts if any(m is c for c in least)]  # keep the running order
    for contender in contenders:
        contender.rounds = [measured[contender.name] for measured in chosen]
    return Rounds(chosen, len(attempts), clean)
