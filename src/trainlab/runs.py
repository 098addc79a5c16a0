"""Run folders: ``runs/<name>/<timestamp>/`` with the resolved recipe, environment and status.

A run folder is created only after the recipe passed validation, so a bad recipe leaves nothing
behind. ``status.json`` says whether the run is running, finished, early_stopped, interrupted,
diverged or failed; it is rewritten atomically at each change.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from trainlab.recipe.errors import TrainlabError
from trainlab.train.checkpoint import write_json_atomic

RECIPE_FILE = "recipe.yaml"
ENV_FILE = "env.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
DATA_FILE = "data.json"


def timestamp() -> str:
    return datetime.now().strftime("%Y-%m-%dT%H-%M-%S")


def new_run_folder(name: str, out: str | Path | None = None, root: str | Path = "runs") -> Path:
    """Create the run folder: ``out`` exactly, or ``<root>/<name>/<timestamp>`` (made unique)."""
    if out is not None:
        folder = Path(out)
        if folder.exists() and any(folder.iterdir()):
            raise TrainlabError(
                f"--out '{folder}' already exists and is not empty. Choose a new folder, or continue that run "
                f"with `trainlab resume {folder}`"
            )
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    base = Path(root) / name / timestamp()
    folder, suffix = base, 1
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=False)
            return folder
        except FileExistsError:
            suffix += 1
            folder = base.with_name(f"{base.name}-{suffix}")


def write_recipe(folder: Path, resolved: dict[str, Any]) -> None:
    temporary = folder / (RECIPE_FILE + ".tmp")
    temporary.write_text(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(temporary, folder / RECIPE_FILE)


def _git_sha() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def environment(device: Any, precision: str) -> dict[str, Any]:
    """Versions and hardware: what a reader needs to reproduce or compare a run."""
    import torch

    from trainlab import __version__

    info: dict[str, Any] = {
        "trainlab": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if getattr(device, "type", "") == "cuda" else platform.processor() or platform.machine(),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "git_sha": _git_sha(),
        "command": sys.argv,
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return info


def write_status(folder: Path, status: str, **details: Any) -> None:
    path = folder / STATUS_FILE
    current: dict[str, Any] = {}
    if path.exists():
        try:
            current = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            current = {}
    current.update(details)
    current["status"] = status
    current["updated"] = time.time()
    write_json_atomic(path, current)


def read_status(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(folder) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
