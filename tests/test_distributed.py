"""Data-parallel training (distributed: two CPU processes over gloo, launched like torchrun).

A 2-process run with per-process batch B equals a 1-process run with batch 2B; only rank 0 writes
the run folder; an interrupted 2-process run resumes to the uninterrupted one's weights.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_recipe
from safetensors.torch import load_file

import trainlab
from trainlab.cli import main
from trainlab.data.loaders import TensorLoader
from trainlab.train.callbacks import read_records
from trainlab.train.distributed import StopPoint

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="distributed: needs torch.distributed")

ROOT = Path(__file__).resolve().parents[1]
PER_PROCESS_BATCH = 4


def _recipe(**train) -> dict:
    """97 samples: 72 training (9 global batches of 8), 25 validation (not divisible by 2)."""
    return tiny_recipe(
        data={**tiny_recipe()["data"], "num_samples": 97, "batch_size": 2 * PER_PROCESS_BATCH},
        optimizer={"name": "SGD", "lr": 0.1, "momentum": 0.9},
        train={"epochs": 3, "log_every": 2, "checkpoint_every": 4, "device": "cpu", "precision": "32", **train},
    )


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def _environment(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(tmp_path), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def torchrun(tmp_path: Path, *arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 -m trainlab ARGUMENTS`` in ``tmp_path``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "trainlab", *arguments]
    done = subprocess.run(command, cwd=tmp_path, env=_environment(tmp_path), capture_output=True, text=True,
                          check=False, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr[-4000:]
    return done


def _write(tmp_path: Path, recipe: dict, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "checkpoints" / "last" / "model.safetensors"))


def _assert_same_run(expected: Path, folder: Path) -> None:
    """``folder``'s last weights equal ``expected``'s bit for bit, and its records have the same steps."""
    want, got = _weights(expected), _weights(folder)
    for name in want:
        assert torch.equal(want[name], got[name]), name
    steps = [r["step"] for r in read_records(folder / "metrics.jsonl")]
    assert steps == [r["step"] for r in read_records(expected / "metrics.jsonl")]


TWO_EPOCHS_QUIETLY = {"train": {"epochs": 2, "device": "cpu", "precision": "32"},
                      "log": {"tensorboard": False, "plots": False, "progress": "none"}}


def _one_and_two_processes(tmp_path: Path, recipe: dict) -> tuple[Path, Path]:
    """Run folders of ``recipe`` trained in one process (its batch size) and in two (half of it each)."""
    single = trainlab.train(recipe, out=tmp_path / "single").folder
    torchrun(tmp_path, "train", str(_write(tmp_path, recipe)), "--out", str(tmp_path / "parallel"),
             f"data.batch_size={recipe['data']['batch_size'] // 2}")
    return single, tmp_path / "parallel"


def _close_records(left: list[dict], right: list[dict]) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], str):
                assert a[key] == b[key]
            elif key != "time":
                assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), (key, a, b)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One single-process run with batch 8 and one 2-process run (--devices 2) with batch 4 each."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    single = trainlab.train(_recipe(), out=tmp_path / "single")
    recipe = _write(tmp_path, _recipe())
    done = subprocess.run([sys.executable, "-m", "trainlab", "train", str(recipe), "--devices", "2",
                           "--runs-dir", "runs", f"data.batch_size={PER_PROCESS_BATCH}"],
                          check=False, cwd=tmp_path, env=_environment(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    return tmp_path, single, done


def test_two_processes_equal_one_process_with_the_global_batch(runs):
    tmp_path, single, done = runs
    folders = [path for path in (tmp_path / "runs").rglob("*") if (path / "recipe.yaml").is_file()]
    assert len(folders) == 1  # rank 0 alone made the run folder
    parallel = folders[0]
    assert done.stdout.split() == [str(Path("runs") / parallel.relative_to(tmp_path / "runs"))]  # printed once
    expected, got = _weights(single.folder), _weights(parallel)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-6), name
    # valid metrics over 25 samples (13 + 12 per process), train loss over the global batches, lr: all equal
    _close_records(read_records(single.folder / "metrics.jsonl"), read_records(parallel / "metrics.jsonl"))
    assert [r["split"] for r in read_records(parallel / "metrics.jsonl")].count("valid") == 3


def test_only_rank_zero_writes(runs):
    tmp_path, single, _ = runs
    parallel = next(path for path in (tmp_path / "runs").rglob("recipe.yaml")).parent
    names = {path.name for path in parallel.iterdir()}
    assert {"recipe.yaml", "env.json", "data.json", "metrics.jsonl", "checkpoints", "status.json"} <= names
    assert not any(name.endswith((".partial", ".tmp", ".previous")) for name in names)
    lines = (parallel / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)) == len((single.folder / "metrics.jsonl").read_text().splitlines())
    assert json.loads((parallel / "status.json").read_text())["status"] == "finished"


CRASH_PLUGIN = '''
"""Kills rank 0 after optimizer step 6, the way a dying process would."""
from trainlab.train.callbacks import Progress

original = Progress.on_step


def on_step(self, current, samples):
    original(self, current, samples)
    if current == 6:
        raise SystemExit(3)


Progress.on_step = on_step
'''


def test_interrupted_run_resumes_to_the_same_weights(runs):
    """Crash mid-epoch 1 (after the step-4 checkpoint), resume with 2 processes, then extend it."""
    tmp_path, _, _ = runs
    whole = next(path for path in (tmp_path / "runs").rglob("recipe.yaml")).parent
    (tmp_path / "crash_after_six.py").write_text(CRASH_PLUGIN)
    recipe = _write(tmp_path, _recipe(epochs=2), "short.yaml")
    broken = tmp_path / "broken"
    crashed = torchrun(tmp_path, "--plugins", "crash_after_six", "train", str(recipe), "--out", str(broken),
                       f"data.batch_size={PER_PROCESS_BATCH}", check=False)
    assert crashed.returncode != 0
    assert json.loads((broken / "checkpoints/last/meta.json").read_text())["step"] == 4

    torchrun(tmp_path, "resume", str(broken))  # mid-epoch resume to the end of epoch 2
    torchrun(tmp_path, "resume", str(broken), "train.epochs=3")  # then extended to 3 epochs
    _assert_same_run(whole, broken)


def _after_step_plugin(doc: str, action: str) -> str:
    """A plugin module that runs ``action`` after each of a process's optimizer steps, where
    ``steps`` counts them (``os``, ``signal`` and ``time`` imported)."""
    body = "\n".join("    " + line for line in action.strip().splitlines())
    return f'''"""{doc}"""
import os
import signal
import time

from trainlab.train.precision import Precision

original = Precision.step
steps = 0


def step(self, optimizer):
    global steps
    stepped = original(self, optimizer)
    steps += 1
{body}
    return stepped


Precision.step = step
'''


INTERRUPT_PLUGIN = _after_step_plugin("Ctrl-C reaches rank 1 alone, right after its optimizer step 5.", """
if steps == 5 and os.environ.get("RANK") == "1":
    os.kill(os.getpid(), signal.SIGINT)
""")


def test_ctrl_c_on_one_process_stops_every_process_at_the_next_step(runs):
    """The interrupted process posts the stop, both stop after step 6 (mid-epoch, not at a
    checkpoint), rank 0 checkpoints there, and resuming reaches the uninterrupted run's weights."""
    tmp_path, _, _ = runs
    whole = next(path for path in (tmp_path / "runs").rglob("recipe.yaml")).parent
    (tmp_path / "interrupt_rank_one.py").write_text(INTERRUPT_PLUGIN)
    recipe = _write(tmp_path, _recipe(), "interrupted.yaml")
    stopped = tmp_path / "stopped"
    done = torchrun(tmp_path, "--plugins", "interrupt_rank_one", "train", str(recipe), "--out", str(stopped),
                    f"data.batch_size={PER_PROCESS_BATCH}", check=False)
    assert done.returncode != 0  # both processes exit 130
    assert json.loads((stopped / "status.json").read_text())["status"] == "interrupted"
    assert json.loads((stopped / "checkpoints/last/meta.json").read_text())["step"] == 6
    assert [r["step"] for r in read_records(stopped / "metrics.jsonl")] == [2, 4, 6]

    torchrun(tmp_path, "resume", str(stopped))
    _assert_same_run(whole, stopped)


def test_stop_point_takes_the_first_post_one_step_later():
    """What each process sees: the asking one holds its stop until the posted step, the others
    stop there too, a second post changes nothing, and divergence is never held."""
    store = torch.distributed.HashStore()
    asking, other, third = (StopPoint(store, key="stop") for _ in range(3))
    assert other(3, "running") == "running"  # nothing posted yet
    assert asking(3, "interrupted") == "running"  # posts step 4
    assert other(3, "running") == "running"
    assert third(4, "stopped") == "interrupted"  # a later ask takes the first post
    assert other(4, "running") == asking(4, "interrupted") == "interrupted"
    assert other(4, "diverged") == "diverged"
    assert StopPoint(store, key="another fit")(9, "diverged") == "diverged"


def test_devices_below_one_is_a_usage_error(tmp_path, capsys):
    recipe = _write(tmp_path, _recipe())
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(recipe), "--devices", "0", "--out", str(tmp_path / "run")])
    assert exit_.value.code == 2
    assert "--devices 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_shards_cover_the_epoch_once():
    """Each process serves order[rank::world]; training pads to a multiple of world, validation does not."""
    inputs = torch.arange(7).float().unsqueeze(1)
    served = {}
    for pad in (True, False):
        parts = []
        for rank in range(2):
            loader = TensorLoader(inputs, torch.arange(7), batch_size=2, shuffle=True, seed=5)
            loader.shard(rank, 2, pad=pad)
            loader.set_epoch(1)
            parts.append(torch.cat([x.squeeze(1) for x, _ in loader]).long().tolist())
        served[pad] = parts
    assert len(served[True][0]) == len(served[True][1]) == 4
    assert set(served[True][0] + served[True][1]) == set(range(7))
    assert sorted(served[False][0] + served[False][1]) == list(range(7))
    assert [len(part) for part in served[False]] == [4, 3]


def test_a_decoded_image_folder_trains_in_two_processes_like_one(tmp_path):
    """The uint8 image cache is sharded too: without random augmentation, 2 processes x batch 4 give
    the weights of 1 process x batch 8."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / "images" / name).mkdir(parents=True)
        for index in range(13):
            pixels = torch.randint(0, 256, (10, 10, 3), generator=generator, dtype=torch.uint8)
            pixels[..., label] = 255
            Image.fromarray(pixels.numpy()).save(tmp_path / "images" / name / f"{index}.png")
    recipe = {
        "name": "folder", "seed": 2,
        "data": {"source": "images", "path": str(tmp_path / "images"), "batch_size": 2 * PER_PROCESS_BATCH,
                 "cache": "memory", "split": {"valid": 0.25},
                 "transforms": {"eval": ["ToTensor", {"Normalize": "dataset"}]}},
        "model": {"layers": ["Flatten", {"Linear": {"out_features": "num_classes"}}]},
        "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9},
        **TWO_EPOCHS_QUIETLY,
    }
    single, parallel = _one_and_two_processes(tmp_path, recipe)
    expected, got = _weights(single), _weights(parallel)
    for name in expected:  # 300 inputs per output: float sums in another order differ by ~1e-5
        assert (expected[name] - got[name]).abs().max() < 5e-5, name


def test_bucketed_text_trains_in_two_processes_like_one(tmp_path):
    """Length-bucketed text batches are sharded per global batch: 2 processes x batch 4 give the
    weights of 1 process x batch 8 (the padding of each part never changes an EmbeddingBag's output)."""
    generator = torch.Generator().manual_seed(3)
    rows = []
    for index in range(48):  # 36 training rows (divisible by 2), 12 validation rows
        length = int(torch.randint(1, 12, (1,), generator=generator))
        ids = torch.randint(0, 30, (length,), generator=generator).tolist()
        rows.append({"ids": " ".join(map(str, ids)), "label": "odd" if sum(ids) % 2 else "even"})
    import pandas as pd

    pd.DataFrame(rows[:36]).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(rows[36:]).to_csv(tmp_path / "valid.csv", index=False)
    recipe = {
        "name": "buckets", "seed": 1,
        "data": {"source": "text", "train": str(tmp_path / "train.csv"), "valid": str(tmp_path / "valid.csv"),
                 "text": "ids", "target": "label", "tokenizer": "ids", "bucket": True,
                 "batch_size": 2 * PER_PROCESS_BATCH},
        "model": {"name": "EmbeddingBagClassifier", "embed_dim": 8},
        "optimizer": {"name": "SGD", "lr": 0.5, "momentum": 0.9},
        **TWO_EPOCHS_QUIETLY,
    }
    single, parallel = _one_and_two_processes(tmp_path, recipe)
    expected, got = _weights(single), _weights(parallel)
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-6), name
    _close_records(read_records(single / "metrics.jsonl"), read_records(parallel / "metrics.jsonl"))


SIGTERM_PLUGIN = _after_step_plugin(
    "After optimizer step 5 rank 0 sends SIGTERM to the launcher (as a scheduler would); later steps "
    "sleep, so the launcher passes the signal on before training ends.", """
if steps == 5 and os.environ.get("RANK") == "0":
    os.kill(os.getppid(), signal.SIGTERM)
if steps > 5:
    time.sleep(0.2)
""")


def test_sigterm_to_the_launcher_stops_every_process_with_a_checkpoint(runs):
    """`trainlab train --devices 2` passes SIGTERM on; the processes stop at one step, rank 0 writes
    its checkpoints there (epoch ends held in memory included), the launcher exits 143, and resuming
    reaches the uninterrupted run's weights."""
    tmp_path, _, _ = runs
    whole = next(path for path in (tmp_path / "runs").rglob("recipe.yaml")).parent
    (tmp_path / "terminate_launcher.py").write_text(SIGTERM_PLUGIN)
    recipe = _write(tmp_path, _recipe(checkpoint_every=None), "terminated.yaml")
    stopped = tmp_path / "terminated"
    done = subprocess.run([sys.executable, "-m", "trainlab", "--plugins", "terminate_launcher", "train", str(recipe),
                           "--devices", "2", "--out", str(stopped), f"data.batch_size={PER_PROCESS_BATCH}"],
                          check=False, cwd=tmp_path, env=_environment(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 143, done.stderr[-4000:]
    status = json.loads((stopped / "status.json").read_text())
    assert status["status"] == "interrupted" and status["stopped_by"] == "SIGTERM"
    assert 5 < status["step"] < 27
    assert json.loads((stopped / "checkpoints/last/meta.json").read_text())["step"] == status["step"]
    assert "Interrupted by SIGTERM; continue with: trainlab resume" in done.stderr

    torchrun(tmp_path, "resume", str(stopped))
    _assert_same_run(whole, stopped)
