"""Run every benchmark case (``make bench``); see docs/benchmarks.md.

    .venv/bin/python benchmarks/run.py                      # all cases, default sizes
    .venv/bin/python benchmarks/run.py --json-dir runs/bench  # also write <case>.json there
    .venv/bin/python benchmarks/run.py --quick              # a seconds-long smoke run of each case
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import checkpoint_cpu
import data_cpu
import ddp_cpu
import gpu
import lr_find_cpu
import mlp_cpu

# case name -> (main function, extra arguments of a --quick run)
CASES = {
    "mlp_cpu": (mlp_cpu.main, ["--rounds", "1", "--max-attempts", "1", "--samples", "2048", "--epochs", "1"]),
    "lr_find_cpu": (lr_find_cpu.main, ["--rounds", "1", "--num-iter", "20", "--samples", "2048"]),
    "data_cpu": (data_cpu.main, ["--quick"]),
    "ddp_cpu": (ddp_cpu.main, ["--quick"]),
    "checkpoint_cpu": (checkpoint_cpu.main, ["--quick"]),
    "gpu": (gpu.main, ["--quick"]),  # says it skipped where there is no CUDA GPU
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every trainlab benchmark case.")
    parser.add_argument("--json-dir", default=None, help="write each case's results to DIR/<case>.json")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the cases run, measures nothing")
    parser.add_argument("cases", nargs="*", help=f"cases to run (default: all of {', '.join(CASES)})")
    args = parser.parse_args(argv)
    unknown = [name for name in args.cases if name not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    for name in args.cases or list(CASES):
        case_main, quick = CASES[name]
        case_argv = list(quick) if args.quick else []
        if args.json_dir:
            case_argv += ["--json", str(Path(args.json_dir) / f"{name}.json")]
        print(f"=== {name} ===", flush=True)
        case_main(case_argv)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
