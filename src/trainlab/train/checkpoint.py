"""Checkpoints that survive a kill at any moment and never unpickle code.

A checkpoint is a folder (``checkpoints/last``, ``checkpoints/best``) holding

- ``model.safetensors``: the weights (safetensors; shared weights stored once, by safetensors' own rule),
- ``state.pt``: optimizer, scheduler, GradScaler, loop position, meters and every RNG state,
  as plain tensors and numbers, read back with ``torch.load(weights_only=True)``,
- ``meta.json``: what it is (format, step, epoch, monitor value) and the SHA-256 of both files.

Writing is atomic: everything goes to ``<kind>.partial/`` (each file fsynced), the old folder is
renamed to ``<kind>.previous/``, the new one renamed into place, then the old one removed. A kill
between any two of those leaves a complete checkpoint under ``<kind>/`` or ``<kind>.previous/``,
and :func:`find_checkpoint` picks it up.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import random
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import _remove_duplicate_names, load_model, save_file

from trainlab.recipe.errors import TrainlabError
from trainlab.train.distributed import unwrap

FORMAT = "trainlab-checkpoint"
VERSION = 1
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a fsynced temporary file and a rename."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


# ----------------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """Every RNG trainlab or a model may draw from, as tensors and plain values."""
    numpy_state = np.random.get_state()
    python_state = random.getstate()  # (version, 625 words, gauss): a fresh tuple each call
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # python's Mersenne Twister state: 625 words as one tensor (pickling 625 ints one by one is slow)
        "python": {"version": python_state[0], "words": torch.tensor(python_state[1], dtype=torch.int64),
                   "gauss": python_state[2]},
        "numpy": {
            "name": numpy_state[0],
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    python = state["python"]
    random.setstate((python["version"], tuple(python["words"].tolist()), python["gauss"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------- save / load


def save_checkpoint(folder: Path, model: torch.nn.Module, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Atomically replace the checkpoint folder ``folder`` with a new one."""
    return finish_checkpoint(write_snapshot(folder, snapshot(model, state)), folder, meta)


@dataclass
class Snapshot:
    """A checkpoint's tensors copied off the live model and optimizer onto the CPU: taking it is
    the only part of a checkpoint training waits for (a device-to-host copy on a GPU); the files
    are written from it while training goes on."""

    weights: dict[str, torch.Tensor]  # safetensors' own de-duplicated names (as save_model writes them)
    metadata: dict[str, str] | None  # dropped duplicate name -> the kept name
    state: dict[str, Any]


class HostCopier:
    """Copies tensors onto the CPU for a snapshot, into buffers kept and reused by the next snapshot
    (one snapshot is written at a time): no fresh memory to fault in at every checkpoint. Buffers
    for accelerator tensors are page-locked and filled by asynchronous copies with one
    synchronisation at the end, several times faster than copies into ordinary memory."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        self._pending = False

    def copy(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach()
        if tensor.device.type not in ("cpu", "cuda"):  # mps, xpu, ...: a plain copy
            return tensor.to("cpu", memory_format=torch.contiguous_format, copy=True)
        on_gpu = tensor.device.type == "cuda"
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
            buffer = self._buffers[key] = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=on_gpu)
        buffer.copy_(tensor, non_blocking=on_gpu)
        self._pending = self._pending or on_gpu
        return buffer

    def tree(self, value: Any, key: str = "") -> Any:
        """``value`` with every tensor replaced by its CPU copy (dicts, lists and tuples followed)."""
        if isinstance(value, torch.Tensor):
            return self.copy(key, value)
        if isinstance(value, dict):
            return {name: self.tree(item, f"{key}/{name}") for name, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.tree(item, f"{key}/{index}") for index, item in enumerate(value))
        return value

    def finish(self) -> None:
        """Wait for the asynchronous copies: the buffers hold the values once this returns."""
        if self._pending:
            torch.cuda.synchronize()
            self._pending = False


def snapshot(model: torch.nn.Module, state: dict[str, Any], copier: HostCopier | None = None) -> Snapshot:
    """Copy the weights (shared tensors once, contiguous) and the training state onto the CPU.
    Give the same ``copier`` to successive snapshots to reuse its page-locked buffers; a snapshot
    must then be written before the next one is taken."""
    copier = copier or HostCopier()
    weights = unwrap(model).state_dict()
    metadata: dict[str, str] | None = None
    for kept, duplicates in _remove_duplicate_names(weights).items():  # the rule save_model/load_model use
        for name in duplicates:
            metadata = metadata or {}
            metadata.setdefault(name, kept)
            del weights[name]
    taken = Snapshot(copier.tree(weights, "model"), metadata, copier.tree(state, "state"))
    copier.finish()
    return taken


def write_snapshot(folder: Path, taken: Snapshot) -> Path:
    """Serialise a snapshot into ``<kind>.partial/``; returns the partial folder."""
    partial = _partial_folder(Path(folder))
    save_file(taken.weights, str(partial / MODEL_FILE), metadata=taken.metadata)
    torch.save(taken.state, partial / STATE_FILE)
    return partial


def finish_checkpoint(partial: Path, folder: Path, meta: dict[str, Any]) -> Path:
    """Make the written files durable (fsync), record their SHA-256 in meta.json and swap the
    folder into place. Touches no live tensor, so it may run while training goes on."""
    for name in (MODEL_FILE, STATE_FILE):
        _fsync_file(partial / name)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        **meta,
        "files": {name: _sha256(partial / name) for name in (MODEL_FILE, STATE_FILE)},
    }
    write_json_atomic(partial / META_FILE, meta)
    return _swap_into_place(partial, Path(folder))


class BackgroundWriter:
    """One worker thread that finishes checkpoints (fsync, hash, swap) in order while training
    goes on. ``wait()`` blocks until every job is done and re-raises a job's error; ``close()``
    lets the jobs finish and ends the thread (one run's writer must not outlive the run: a Python
    caller may train hundreds of runs in one process).

    A kill while a job runs is a kill during a checkpoint write: the atomic swap protocol leaves
    a complete checkpoint either way.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="trainlab-checkpoints", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:  # close()
                self._jobs.task_done()
                return
            try:
                if self._error is None:
                    job()
            except BaseException as error:  # kept for the training thread to raise
                self._error = error
            finally:
                self._jobs.task_done()

    def submit(self, job: Any, check: bool = True) -> None:
        """Queue ``job``; ``check``: first raise the error of an earlier job (the queue runs no job after one)."""
        if check:
            self._raise()
        self._jobs.put(job)

    def wait(self) -> None:
        self._jobs.join()
        self._raise()

    def close(self) -> None:
        """Finish the queued jobs and end the thread (an error they raise stays for ``wait()``)."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _partial_folder(folder: Path) -> Path:
    """A fresh ``<kind>.partial/`` beside ``folder`` to build the next checkpoint in."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.parent / f"{folder.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    return partial


def _swap_into_place(partial: Path, folder: Path) -> Path:
    """Replace ``folder`` by the complete ``partial``: at every moment one complete checkpoint exists."""
    previous = folder.parent / f"{folder.name}.previous"
    _fsync_dir(partial)
    if folder.exists():
        if previous.exists():
            shutil.rmtree(previous)
        os.replace(folder, previous)
    os.replace(partial, folder)
    _fsync_dir(folder.parent)
    if previous.exists():
        shutil.rmtree(previous)
    return folder


def copy_checkpoint(source: Path, folder: Path, meta_update: dict[str, Any]) -> Path:
    """Atomically make ``folder`` a copy of the checkpoint ``source`` (hard links where the file
    system allows; the files are never modified in place), with ``meta_update`` in its meta.json."""
    partial = _partial_folder(Path(folder))
    for name in (MODEL_FILE, STATE_FILE):
        try:
            os.link(source / name, partial / name)
        except OSError:
            shutil.copy2(source / name, partial / name)
            _fsync_file(partial / name)
    meta = json.loads((source / META_FILE).read_text(encoding="utf-8"))
    meta.update(meta_update)
    write_json_atomic(partial / META_FILE, meta)
    return _swap_into_place(partial, Path(folder))


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (MODEL_FILE, STATE_FILE, META_FILE))


def find_checkpoint(checkpoints: Path, kind: str = "last") -> Path | None:
    """The complete checkpoint folder of ``kind``, recovering from an interrupted write."""
    for candidate in (checkpoints / kind, checkpoints / f"{kind}.previous"):
        if candidate.is_dir() and _complete(candidate):
            return candidate
    return None


def read_meta(folder: Path) -> dict[str, Any]:
    """The checkpoint's meta.json, verified to be a trainlab checkpoint with intact files."""
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise TrainlabError(
            f"checkpoint '{folder}' has no readable {META_FILE} ({error}); it is not a trainlab checkpoint or it is "
            "damaged. Resume from another run, or start again with `trainlab train`"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TrainlabError(
            f"'{folder}' is not a trainlab checkpoint (its {META_FILE} has no format '{FORMAT}'). "
            "Point at a run folder that trainlab wrote"
        )
    if meta.get("version", 0) > VERSION:
        raise TrainlabError(
            f"checkpoint '{folder}' was written by a newer trainlab (format version {meta.get('version')}). "
            "Upgrade trainlab to read it"
        )
    for name, expected in (meta.get("files") or {}).items():
        path = folder / name
        if not path.is_file() or _sha256(path) != expected:
            raise TrainlabError(
                f"checkpoint file '{path}' is missing or corrupt (its SHA-256 does not match {META_FILE}). "
                "The checkpoint cannot be trusted; resume from an earlier run or train again"
            )
    return meta


def load_weights(folder: Path, model: torch.nn.Module) -> None:
    """Load ``model.safetensors`` into ``model``; a foreign set of weights is a clear error."""
    try:
        missing, unexpected = load_model(unwrap(model), str(folder / MODEL_FILE), strict=False)
    except Exception as error:  # safetensors raises plain Exceptions for shape/format problems
        raise TrainlabError(
            f"the weights in '{folder / MODEL_FILE}' do not fit this recipe's model ({error}). "
            "Was the model section changed since the checkpoint was written?"
        ) from None
    if missing or unexpected:
        raise TrainlabError(
            f"the weights in '{folder / MODEL_FILE}' do not fit this recipe's model: missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]}. Was the model section changed since the checkpoint was written?"
        )


def load_state(folder: Path) -> dict[str, Any]:
    """``state.pt`` through ``torch.load(weights_only=True)``: tensors and plain values only."""
    try:
        return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as error:  # an UnpicklingError names the refused global; anything else is damage
        raise TrainlabError(
            f"cannot load '{folder / STATE_FILE}' safely ({type(error).__name__}: {str(error)[:200]}). "
            "trainlab only reads plain tensors and numbers from checkpoints"
        ) from None
