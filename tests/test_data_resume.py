"""Resume == uninterrupted on every file-backed data source: augmented images (decoded cache and
streaming), a preprocessed table and tokenized, bucketed text. The text run is resumed in a new
process, so the tokenizer it retrains must come out the same there too."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import trainlab
from trainlab.train.callbacks import read_records

from conftest import same_weights, without_time
from test_resume import Crash, crash_after_step

COMMON = {
    "train": {"epochs": 3, "log_every": 2, "checkpoint_every": 2, "device": "cpu", "precision": "32"},
    "log": {"tensorboard": False, "plots": False, "progress": "none"},
    "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9},
}


def image_folder(root):
    generator = np.random.default_rng(0)
    for label, name in enumerate(["cat", "dog", "fox"]):
        (root / name).mkdir(parents=True)
        for index in range(10):
            pixels = generator.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            pixels[..., label] = 255  # a class signal in one channel
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    return root


def images_recipe(tmp_path, cache):
    return {
        "name": "images", "seed": 4,
        "data": {"source": "images", "path": str(image_folder(tmp_path / "images")), "batch_size": 6,
                 "cache": cache, "num_workers": 0, "split": {"valid": 0.2},
                 "transforms": {"train": [{"RandomCrop": {"size": 12, "padding": 2}}, "RandomHorizontalFlip",
                                          {"RandomRotation": 10}, "ToTensor", {"Normalize": "dataset"}],
                                "eval": ["ToTensor", {"Normalize": "dataset"}]}},
        "model": {"layers": [{"Conv2d": {"out_channels": 4, "kernel_size": 3}}, "ReLU", {"Dropout": 0.2},
                             "Flatten", {"Linear": {"out_features": "num_classes"}}]},
        **COMMON,
    }


def csv_recipe(tmp_path):
    generator = np.random.default_rng(1)
    rows = ["id,size,colour,income,label"]
    for index in range(40):
        size = generator.normal(5, 2)
        colour = ["red", "green", "blue"][index % 3]
        income = "" if index % 7 == 0 else f"{generator.lognormal(3, 1):.2f}"
        rows.append(f"{index},{size:.3f},{colour},{income},{'big' if size > 5 else 'small'}")
    path = tmp_path / "table.csv"
    path.write_text("\n".join(rows) + "\n")
    return {
        "name": "table", "seed": 2,
        "data": {"source": "csv", "path": str(path), "target": "label", "id": "id", "log1p": ["income"],
                 "batch_size": 8, "split": {"valid": 0.25}},
        "model": {"name": "MLP", "hidden": [8], "dropout": 0.2},
        **COMMON,
    }


def text_recipe(tmp_path):
    words = {"good": ["great", "lovely", "fine", "superb", "bright"], "bad": ["awful", "dull", "poor", "grim", "weak"]}
    generator = np.random.default_rng(2)
    rows = ["text\tlabel"]
    for index in range(48):
        label = "good" if index % 2 else "bad"
        count = int(generator.integers(2, 9))
        rows.append(" ".join(generator.choice(words[label] + ["the", "film", "was"], count)) + f"\t{label}")
    path = tmp_path / "reviews.tsv"
    path.write_text("\n".join(rows) + "\n")
    return {
        "name": "text", "seed": 5,
        "data": {"source": "text", "path": str(path), "target": "label", "tokenizer": "bpe", "vocab_size": 60,
                 "min_frequency": 1, "max_length": 8, "bucket": True, "batch_size": 6, "split": {"valid": 0.25}},
        "model": {"name": "GRUClassifier", "embed_dim": 8, "hidden_size": 8},
        **COMMON,
    }


RECIPES = {
    "images-memory": lambda tmp_path: images_recipe(tmp_path, "memory"),
    "images-streamed": lambda tmp_path: images_recipe(tmp_path, "none"),
    "csv": csv_recipe,
}


@pytest.mark.parametrize("kind", list(RECIPES))
def test_resume_mid_epoch_equals_uninterrupted(kind, tmp_path, monkeypatch):
    recipe = RECIPES[kind](tmp_path)
    whole = trainlab.train(recipe, out=tmp_path / "whole")
    with monkeypatch.context() as patch:
        crash_after_step(patch, 5)  # 4 steps an epoch: the checkpoint of step 4 is the last before the crash
        with pytest.raises(Crash):
            trainlab.train(recipe, out=tmp_path / "broken")
    resumed = trainlab.resume(tmp_path / "broken")
    assert same_weights(whole.model, resumed.model)
    assert without_time(read_records(tmp_path / "whole/metrics.jsonl")) == without_time(
        read_records(tmp_path / "broken/metrics.jsonl"))


def test_text_run_resumed_in_a_new_process_equals_uninterrupted(tmp_path, monkeypatch):
    recipe = text_recipe(tmp_path)
    whole = trainlab.train(recipe, out=tmp_path / "whole")
    with monkeypatch.context() as patch:
        crash_after_step(patch, 9)
        with pytest.raises(Crash):
            trainlab.train(recipe, out=tmp_path / "broken")
    code = "import sys, trainlab; trainlab.resume(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "broken")], check=True)
    assert without_time(read_records(tmp_path / "whole/metrics.jsonl")) == without_time(
        read_records(tmp_path / "broken/metrics.jsonl"))
    assert (tmp_path / "whole/preprocessing/tokenizer.json").read_text() == \
        (tmp_path / "broken/preprocessing/tokenizer.json").read_text()
    assert whole.status == "finished"
    assert json.loads((tmp_path / "broken/status.json").read_text())["status"] == "finished"
