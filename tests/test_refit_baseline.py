"""data.merge_valid (validation rows join training, the test split stays the same rows), refit (the
run's recipe on train + valid for its best epoch count) and scikit-learn baselines (the same numbers
as scikit-learn computes directly on the same rows)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error

import trainlab
from trainlab.data.idx import write_idx
from trainlab.data.tables import load_tables
from trainlab.inference import baseline, refit, loader_tensors
from trainlab.recipe.errors import TrainlabError
from trainlab.train.callbacks import read_records

from conftest import tiny_recipe

QUIET = {
    "train": {"epochs": 3, "device": "cpu", "precision": "32"},
    "log": {"tensorboard": False, "plots": False, "progress": "none"},
    "optimizer": {"name": "SGD", "lr": 0.1},
}


def write_table(path, rows=60, seed=1):
    generator = np.random.default_rng(seed)
    size = generator.normal(5, 2, rows)
    pd.DataFrame({
        "key": range(rows),
        "size": size.round(3),
        "colour": [["red", "green", "blue"][index % 3] for index in range(rows)],
        "label": np.where(size + generator.normal(0, 1, rows) > 5, "big", "small"),
        "price": (3 * size + generator.normal(0, 0.5, rows) + 20).round(3),
    }).to_csv(path, index=False)
    return path


def csv_recipe(data, **sections):
    return {"name": "table", "seed": 2, "model": {"name": "MLP", "hidden": [8]}, **QUIET,
            "data": {"source": "csv", "target": "label", "id": "key", "features": ["size", "colour"], "batch_size": 8,
                     **data}, **sections}


def merged(recipe):
    data = dict(recipe["data"], merge_valid=True)
    return {**recipe, "data": data, "train": {**recipe["train"], "monitor": "train/loss"}}


def rows(recipe, split):
    config = trainlab.check(recipe).recipe.data
    return load_tables(config, 2, stratify=True, columns={"features": ["size", "colour"]}).frames.get(split)


# ----------------------------------------------------------------------------------- merge_valid


def test_one_table_keeps_its_test_rows_and_trains_on_the_valid_fraction(tmp_path):
    recipe = csv_recipe({"path": str(write_table(tmp_path / "t.csv")), "split": {"valid": 0.25, "test": 0.25}})
    before, after = trainlab.check(recipe).data, trainlab.check(merged(recipe)).data
    assert after.valid is None
    assert after.spec.num_samples == {"train": before.spec.num_samples["train"] + before.spec.num_samples["valid"],
                                      "test": before.spec.num_samples["test"]}
    assert rows(merged(recipe), "test")["key"].tolist() == rows(recipe, "test")["key"].tolist()
    assert sorted(rows(merged(recipe), "train")["key"]) == sorted(
        rows(recipe, "train")["key"].tolist() + rows(recipe, "valid")["key"].tolist())


def test_a_valid_file_joins_training_after_the_test_rows_are_drawn(tmp_path):
    table = pd.read_csv(write_table(tmp_path / "all.csv"))
    table[:45].to_csv(tmp_path / "train.csv", index=False)
    table[45:].to_csv(tmp_path / "valid.csv", index=False)
    recipe = csv_recipe({"train": str(tmp_path / "train.csv"), "valid": str(tmp_path / "valid.csv"),
                         "split": {"test": 0.2}})
    assert rows(merged(recipe), "test")["key"].tolist() == rows(recipe, "test")["key"].tolist()
    train = rows(merged(recipe), "train")["key"].tolist()
    assert train == rows(recipe, "train")["key"].tolist() + list(range(45, 60))
    checked = trainlab.check(merged(recipe))
    assert checked.data.valid is None and checked.spec.num_samples["train"] == len(train)
    # the scaler is fitted on train + valid rows
    scaler = checked.data.preprocessor.steps["numeric"]["scale"]
    assert scaler["mean"][0] == pytest.approx(table.set_index("key").loc[train, "size"].mean())


def reviews(path, rows=40):
    words = {"good": ["great", "lovely", "fine"], "bad": ["awful", "dull", "poor"]}
    generator = np.random.default_rng(2)
    lines = ["text,label"]
    for index in range(rows):
        label = "good" if index % 2 else "bad"
        lines.append(" ".join(generator.choice(words[label] + ["the", "film"], int(generator.integers(2, 6))))
                     + f",{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def text_recipe(path, split):
    return {"name": "text", "seed": 5, **QUIET, "model": {"name": "EmbeddingBagClassifier", "embed_dim": 8},
            "data": {"source": "text", "path": str(path), "target": "label", "min_frequency": 1, "max_length": 8,
                     "split": split}}


def test_text_keeps_its_test_rows_and_tokenizes_the_valid_rows_too(tmp_path):
    recipe = text_recipe(reviews(tmp_path / "reviews.csv"), {"valid": 0.25, "test": 0.25})
    before, after = trainlab.check(recipe).data, trainlab.check(merged(recipe)).data
    assert after.valid is None and after.spec.num_samples["train"] == 30
    assert before.spec.num_samples == {"train": 20, "valid": 10, "test": 10}
    frames = [load_tables(trainlab.check(r).recipe.data, 5, stratify=True, columns={"text": "text"}).frames
              for r in (recipe, merged(recipe))]
    assert frames[1]["test"].equals(frames[0]["test"])
    assert any(note.startswith("data.merge_valid: the split.valid fraction") for note in after.notes)


def test_in_memory_sources_keep_the_same_test_tensors():
    recipe = tiny_recipe(data={"split": {"valid": 0.25, "test": 0.25}})
    before, after = trainlab.check(recipe).data, trainlab.check(merged(recipe)).data
    assert torch.equal(after.test.inputs, before.test.inputs)
    assert len(after.train.inputs) == len(before.train.inputs) + len(before.valid.inputs)
    joined = torch.cat([before.train.inputs, before.valid.inputs])

    def rows(tensor):  # the same samples, whatever their order
        return sorted(map(tuple, tensor.tolist()))

    assert rows(after.train.inputs) == rows(joined)


def image_folders(root):
    generator = np.random.default_rng(0)
    for split, count in (("train", 6), ("valid", 3), ("test", 2)):
        for label, name in enumerate(["cat", "dog"]):
            (root / split / name).mkdir(parents=True)
            for index in range(count):
                pixels = generator.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                pixels[..., label] = 255
                Image.fromarray(pixels).save(root / split / name / f"{index}.png")
    return root


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_a_valid_folder_joins_training_and_normalize_dataset_sees_it(tmp_path, cache):
    recipe = {"name": "images", "seed": 1, **QUIET, "model": {"layers": ["Flatten", {"Linear": {"out_features": 2}}]},
              "data": {"source": "images", "path": str(image_folders(tmp_path / "images")), "cache": cache,
                       "num_workers": 0, "transforms": {"eval": ["ToTensor", {"Normalize": "dataset"}]}}}
    before, after = trainlab.check(recipe).data, trainlab.check(merged(recipe)).data
    assert before.spec.num_samples == {"train": 12, "valid": 6, "test": 4}
    assert after.spec.num_samples == {"train": 18, "test": 4} and after.valid is None
    assert after.spec.normalization != before.spec.normalization


def test_idx_validation_images_join_training(tmp_path):
    generator = np.random.default_rng(3)
    write_idx(tmp_path / "images.idx", generator.integers(0, 256, (40, 6, 6), dtype=np.uint8))
    write_idx(tmp_path / "labels.idx", np.arange(40, dtype=np.uint8) % 2)
    recipe = {"name": "idx", "seed": 1, **QUIET, "model": {"layers": ["Flatten", {"Linear": {"out_features": 2}}]},
              "data": {"source": "idx", "path": str(tmp_path), "train_images": "images.idx",
                       "train_labels": "labels.idx", "split": {"valid": 0.25, "test": 0.25}}}
    before, after = trainlab.check(recipe).data, trainlab.check(merged(recipe)).data
    assert after.spec.num_samples == {"train": 30, "test": 10} and before.spec.num_samples["valid"] == 10
    assert torch.equal(after.test.inputs, before.test.inputs)


# ----------------------------------------------------------------------------------- refit


def test_refit_trains_the_best_epoch_count_on_train_and_valid(tmp_path):
    # mode max on valid/loss: the best epoch is the one with the highest validation loss, the first
    recipe = csv_recipe({"path": str(write_table(tmp_path / "t.csv")), "split": {"valid": 0.25, "test": 0.25}},
                        train={**QUIET["train"], "monitor": "valid/loss", "mode": "max"})
    original = trainlab.train(recipe, out=tmp_path / "run")
    best_epoch = original.best["epoch"]
    assert best_epoch < 3
    run = refit(tmp_path / "run", out=tmp_path / "refit")
    assert run.recipe.name == "table-refit" and run.recipe.data.merge_valid
    assert run.recipe.train.epochs == best_epoch and run.recipe.train.monitor == "train/loss"
    records = read_records(tmp_path / "refit" / "metrics.jsonl")
    assert max(record["epoch"] for record in records) == best_epoch
    assert not [record for record in records if record["split"] == "valid"]
    counts = {name: json.loads((tmp_path / name / "data.json").read_text())["num_samples"] for name in ("run", "refit")}
    assert counts["refit"] == {"train": counts["run"]["train"] + counts["run"]["valid"], "test": counts["run"]["test"]}
    assert rows(run.recipe.model_dump(), "test")["key"].tolist() == rows(recipe, "test")["key"].tolist()
    assert json.loads((tmp_path / "refit" / "refit.json").read_text())["epochs"] == best_epoch


def test_refit_stretches_a_step_schedule_over_the_longer_epochs(tmp_path):
    recipe = tiny_recipe(schedule={"name": "OneCycleLR"},
                         train={**tiny_recipe()["train"], "monitor": "train/loss"})
    trainlab.train(recipe, out=tmp_path / "run")  # 72 training samples: 9 steps an epoch, 27 in all
    run = refit(tmp_path / "run", out=tmp_path / "refit")  # 96: 12 steps an epoch
    assert run.status == "finished" and run.recipe.train.epochs == 3
    assert run.recipe.schedule.arguments()["total_steps"] == 36
    assert run.records("train")[-1]["step"] == 36


def test_refit_needs_a_run_folder(tmp_path):
    with pytest.raises(TrainlabError, match="does not exist"):
        refit(tmp_path / "nothing")


# ----------------------------------------------------------------------------------- baselines


def test_table_baselines_equal_scikit_learn_on_the_same_rows(tmp_path):
    recipe = csv_recipe({"path": str(write_table(tmp_path / "t.csv")), "split": {"valid": 0.25, "test": 0.25}})
    trainlab.train(recipe, out=tmp_path / "run")
    result = baseline(tmp_path / "run")
    data = trainlab.check(recipe).data
    (train_x, train_y), (test_x, test_y) = loader_tensors(data.train), loader_tensors(data.test)
    boosted = HistGradientBoostingClassifier(random_state=2).fit(train_x.numpy(), train_y.numpy())
    linear = LogisticRegression(max_iter=2000).fit(train_x.numpy(), train_y.numpy())
    scores = {name: result.models[name].scalars for name in result.models}
    assert result.split == "test" and result.note is None
    assert scores["HistGradientBoostingClassifier"]["accuracy"] == pytest.approx(
        accuracy_score(test_y.numpy(), boosted.predict(test_x.numpy())))
    assert scores["LogisticRegression"]["f1_macro"] == pytest.approx(
        f1_score(test_y.numpy(), linear.predict(test_x.numpy()), average="macro"))
    written = json.loads((tmp_path / "run" / "baseline.json").read_text())
    assert written["split"] == "test"
    assert written["models"]["LogisticRegression"]["scalars"]["accuracy"] == pytest.approx(
        scores["LogisticRegression"]["accuracy"])


def test_regression_baselines_are_measured_in_target_units(tmp_path):
    recipe = csv_recipe({"path": str(write_table(tmp_path / "t.csv")), "split": {"valid": 0.2, "test": 0.2},
                         "target": "price", "task": "regression", "target_transform": "standard"})
    result = baseline(recipe)
    data = trainlab.check(recipe).data
    (train_x, train_y), (test_x, _) = loader_tensors(data.train), loader_tensors(data.test)
    prices = load_tables(trainlab.check(recipe).recipe.data, 2, stratify=False, columns={}).frames["test"]["price"]
    transform = data.preprocessor.target_transform
    guess = Ridge().fit(train_x.numpy(), train_y.numpy().ravel()).predict(test_x.numpy())
    guess = guess * transform["std"] + transform["mean"]
    rmse = math.sqrt(mean_squared_error(prices.to_numpy(), guess))
    assert result.models["Ridge"].scalars["rmse"] == pytest.approx(rmse, rel=1e-4)
    assert set(result.models) == {"HistGradientBoostingRegressor", "Ridge"}


def test_text_baselines_fall_back_to_valid_and_equal_scikit_learn(tmp_path):
    recipe = text_recipe(reviews(tmp_path / "reviews.csv"), {"valid": 0.3})
    result = baseline(recipe)
    assert result.split == "valid" and "no test split" in result.note
    tables = load_tables(trainlab.check(recipe).recipe.data, 5, stratify=True, columns={"text": "text"}).frames
    model = LogisticRegression(max_iter=2000).fit(
        TfidfVectorizer(ngram_range=(1, 2)).fit(tables["train"]["text"]).transform(tables["train"]["text"]),
        tables["train"]["label"])
    vectors = TfidfVectorizer(ngram_range=(1, 2)).fit(tables["train"]["text"]).transform(tables["valid"]["text"])
    expected = accuracy_score(tables["valid"]["label"], model.predict(vectors))
    assert result.models["TfidfVectorizer(1,2)+LogisticRegression"].scalars["accuracy"] == pytest.approx(expected)


def test_baselines_cover_tables_and_text_only():
    with pytest.raises(TrainlabError, match="csv and text.*synthetic"):
        baseline(tiny_recipe())
