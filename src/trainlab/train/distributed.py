"""Data-parallel training over several processes (``torchrun`` or ``trainlab train --devices N``).

Every process builds the same model from the same seed, wraps it in ``DistributedDataParallel``
and runs the same fit loop on its own shard of each batch:

- the epoch's order is one global permutation; process ``r`` of ``world`` serves ``order[r::world]``
  in batches of ``data.batch_size`` (the global batch is ``batch_size x world``). The training order
  is padded with its first samples up to a multiple of ``world`` so every process steps equally often;
  the validation order is not padded, so its metrics count every sample exactly once;
- gradients are averaged by DDP (``no_sync`` on the micro-batches of an accumulation window that
  do not step), loss and metric sums are all-reduced, so every process logs the same values and
  makes the same early-stopping and divergence decisions; a stop that one process asks for in the
  middle of an epoch (Ctrl-C, a callback's StopTraining) is posted to the process group's store and
  taken by every process one optimizer step later (:class:`StopPoint`); epoch ends follow rank 0;
- only rank 0 writes the run folder; the others train with no-op callbacks and no checkpointer.

Outside ``torchrun`` (no ``RANK`` / ``WORLD_SIZE`` in the environment) every function here is a
no-op and trainlab trains in one process.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from trainlab.recipe.errors import TrainlabError

T = TypeVar("T")

STATUSES = ("running", "finished", "early_stopped", "interrupted", "diverged", "stopped")


@dataclass(frozen=True)
class Environment:
    """Where this process sits in a ``torchrun`` launch."""

    rank: int
    world_size: int
    local_rank: int


def environment() -> Environment | None:
    """The torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or None outside one."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        return Environment(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                           int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError:
        raise TrainlabError("RANK, WORLD_SIZE and LOCAL_RANK must be integers; launch distributed runs with "
                            "`torchrun` or `trainlab train --devices N`") from None


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes files and prints: rank 0, or the only process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    found = environment()
    return found is None or found.rank == 0


@contextlib.contextmanager
def session() -> Iterator[Environment | None]:
    """Initialise the process group when launched by torchrun, and tear it down afterwards (also on
    errors). gloo serves CPU tensors, nccl CUDA ones (``cuda:LOCAL_RANK``). Nested or repeated use
    inside an already initialised group does nothing."""
    found = environment()
    if found is None or (dist.is_available() and dist.is_initialized()):
        yield found
        return
    if not dist.is_available():
        raise TrainlabError("this PyTorch build has no torch.distributed; train in one process (without "
                            "torchrun / --devices)")
    if torch.cuda.is_available():
        torch.cuda.set_device(found.local_rank % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    failed = False
    try:
        yield found
    except BaseException:
        failed = True
        raise
    finally:
        try:
            if not failed:
                dist.barrier()  # rank 0 finishes its files before the group goes away
        finally:
            dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` when training on CUDA, else ``device`` unchanged."""
    if active() and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def from_main(make: Callable[[], T]) -> T:
    """``make()`` on rank 0, its result sent to every process (a run folder's path, a found lr). An
    error on rank 0 is raised on every process, so none waits forever."""
    if not active():
        return make()
    payload: list[Any] = [None]
    if rank() == 0:
        try:
            payload[0] = ("ok", make())
        except Exception as error:
            payload[0] = ("error", str(error) if isinstance(error, TrainlabError) else f"{type(error).__name__}: {error}")
            dist.broadcast_object_list(payload, src=0)
            raise
    dist.broadcast_object_list(payload, src=0)
    kind, value = payload[0]
    if kind == "error":
        raise TrainlabError(value)
    return value


# ----------------------------------------------------------------------------------- model


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel (it must already be on ``device``); unchanged in one process."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP and torch.compile wrappers, in either order: evaluation runs on it
    (no collectives, no recompiles for eval mode) and checkpoints save its portable weight names."""
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def no_sync(model: torch.nn.Module, skip: bool) -> contextlib.AbstractContextManager[Any]:
    """DDP's ``no_sync()`` when ``skip`` (a micro-batch whose window does not step yet): gradients
    accumulate locally and are all-reduced once, with the window's last backward."""
    if skip and hasattr(model, "no_sync") and active():
        return model.no_sync()
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------- data


def shard_data(data: Any) -> None:
    """Give this process its shard of the training split (padded) and the validation split (not)."""
    if not active():
        return
    for loader in (data.train, data.valid):
        if loader is not None and not getattr(loader, "shardable", False):
            raise TrainlabError(
                f"this recipe's data are served by a {type(loader).__name__}, which cannot be split across "
                "processes yet; train it in one process (without torchrun / --devices), or use "
                "data.loader: dataloader where the data source offers it")
    data.train.shard(rank(), world_size(), pad=True)
    if data.valid is not None:
        data.valid.shard(rank(), world_size(), pad=False)


def unshard_data(data: Any) -> None:
    """Serve whole splits again (rank 0's evaluation after training)."""
    for loader in (data.train, data.valid):
        if loader is not None and hasattr(loader, "shard"):
            loader.shard(0, 1, pad=False)


# ----------------------------------------------------------------------------------- reductions


def reduce_sums(sums: torch.Tensor, count: int) -> tuple[torch.Tensor, int]:
    """Sums and sample count added over every process (each process passes its own part)."""
    if not active():
        return sums, count
    packed = torch.cat([sums.reshape(-1), sums.new_tensor([float(count)])])
    dist.all_reduce(packed)
    return packed[:-1], round(packed[-1].item())


def gather_outputs(outputs: torch.Tensor | None, targets: torch.Tensor | None,
                   device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Every process's outputs and targets of a split, concatenated rank by rank on every process
    (for metrics of the whole split such as F1 or ROC AUC, which do not depend on the order)."""
    if not active():
        return outputs, targets
    part = None if outputs is None else (outputs.cpu(), targets.cpu())  # type: ignore[union-attr]
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, part)
    held = [p for p in parts if p is not None]
    if not held:
        return None, None
    return torch.cat([o for o, _ in held]).to(device), torch.cat([t for _, t in held]).to(device)


def agree(status: str) -> str:
    """Rank 0's training status on every process (a collective: used once an epoch)."""
    if not active():
        return status
    code = torch.tensor([STATUSES.index(status)], dtype=torch.int64)
    dist.broadcast(code, src=0)
    return STATUSES[code.item()]


ASKED_STOPS = ("interrupted", "stopped")  # statuses one process may reach alone
_stop_points = itertools.count()  # fits in this process group: every process runs the same ones


class StopPoint:
    """Where every process of a data-parallel fit stops when one of them is asked to stop in the
    middle of an epoch (Ctrl-C, a callback raising StopTraining), without a collective per step.

    The first process asked posts "the step after this one" to the process group's store; every
    process reads the store after each optimizer step and stops at the posted step. That step is
    reachable by all: the gradient all-reduce of each step keeps the processes within one step of
    each other (no process finishes step N + 1 before every process has started it), so a post made
    at the end of step N is in the store before any process finishes step N + 1 and checks it. A
    check is one store request (~30 µs on a 2-core CPU); the broadcast of rank 0's status that it
    replaces cost 2-process CPU training ~6% (docs/benchmarks.md). Divergence needs neither: it is
    read off all-reduced losses, so every process reaches it at the same step by itself.
    """

    def __init__(self, store: Any = None, key: str | None = None) -> None:
        """``store``: the default process group's unless given; ``key``: one per fit and launch
        attempt unless given (every process constructs its fits' stop points in the same order, so
        the keys agree; a restarted torchrun attempt never reads the previous attempt's post)."""
        if store is None:
            from torch.distributed.distributed_c10d import _get_default_store

            store = _get_default_store()
        self._store = store
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self._key = key or f"trainlab/stop/{attempt}/{next(_stop_points)}"
        self._posted: tuple[int, str] | None = None

    def __call__(self, step: int, status: str) -> str:
        """The status every process has at the end of optimizer step ``step``, given this process's
        own: a stop it asks for is "running" until the posted step, then the stop of whoever posted first."""
        if self._posted is None:
            if status in ASKED_STOPS:
                posted = self._store.compare_set(self._key, "", f"{step + 1}:{status}")  # the first post wins
            elif self._store.check([self._key]):
                posted = self._store.get(self._key)
            else:
                return status
            at, _, reason = posted.decode().partition(":")
            self._posted = int(at), reason
        if status == "diverged":
            return status
        at, reason = self._posted
        return reason if step >= at else "running"


# ----------------------------------------------------------------------------------- launching


def launch(processes: int, arguments: list[str]) -> int:
    """Run ``python -m trainlab ARGUMENTS`` in ``processes`` processes on this machine through
    torch's elastic launcher (what ``torchrun --standalone`` does); returns the exit code."""
    if processes < 1:
        raise TrainlabError(f"--devices {processes}: give at least 1 process (e.g. --devices 2, one per GPU)")
    if not dist.is_available():
        raise TrainlabError("--devices needs torch.distributed, which this PyTorch build lacks; drop --devices")
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(["--standalone", "--nproc-per-node", str(processes), "-m", "trainlab", *arguments])
    except ChildFailedError as error:
        codes = [failure.exitcode for failure in error.failures.values()]
        return next((code for code in codes if code not in (0, None) and code > 0), 1)
    except SignalException as error:
        # Ctrl-C or SIGTERM reached the launcher: it passed the signal on to the processes, which stopped
        # at their next step and checkpointed (status.json says so), and waited for them.
        return 128 + int(error.sigval)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    sys.stdout.flush()
    return 0
