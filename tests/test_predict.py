"""trainlab.inference.predict: new inputs through a run's saved preprocessing and checkpoint give the
predictions evaluation gives for the same samples; ids, columns and probabilities as asked; clear
errors for inputs that do not fit the run."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import trainlab
from trainlab.data.images import scan_folder, split_positions
from trainlab.data.tables import load_tables
from trainlab.inference import predict
from trainlab.pipeline import collect_predictions, load_run
from trainlab.recipe.errors import TrainlabError

from conftest import tiny_recipe

QUIET = {
    "train": {"epochs": 2, "device": "cpu", "precision": "32"},
    "log": {"tensorboard": False, "plots": False, "progress": "none"},
    "optimizer": {"name": "SGD", "lr": 0.1},
}


def write_table(path, rows=48, seed=1):
    """A table of an id, a numeric, a categorical and a sometimes-missing column, a class label and a
    numeric target."""
    generator = np.random.default_rng(seed)
    size = generator.normal(5, 2, rows)
    frame = pd.DataFrame({
        "key": [f"row{index}" for index in range(rows)],
        "size": size.round(3),
        "colour": [["red", "green", "blue"][index % 3] for index in range(rows)],
        "income": [np.nan if index % 7 == 0 else round(float(value), 2)
                   for index, value in enumerate(generator.lognormal(3, 1, rows))],
        "label": np.where(size > 5, "big", "small"),
        "price": (3 * size + generator.normal(0, 0.5, rows) + 20).round(3),
    })
    frame.to_csv(path, index=False)
    return path


def csv_recipe(path, **data):
    return {"name": "table", "seed": 2, "model": {"name": "MLP", "hidden": [8]}, **QUIET,
            "data": {"source": "csv", "path": str(path), "batch_size": 8, "split": {"valid": 0.25, "test": 0.25},
                     **data}}


def split_rows(run, split):
    """The rows of a run's split, re-read as the run read them."""
    config = run.recipe.data
    return load_tables(config, run.recipe.seed, stratify=run.checked.spec.task == "classification",
                       columns={"features": config.features}).frames[split]


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("classification")
    recipe = csv_recipe(write_table(root / "table.csv"), target="label", id="key",
                        features=["size", "colour", "income"])
    trainlab.train(recipe, out=root / "run")
    return root


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("regression")
    recipe = csv_recipe(write_table(root / "table.csv"), target="price", features=["size", "colour"],
                        task="regression", target_transform="standard")
    trainlab.train(recipe, out=root / "run")
    return root


def test_table_predictions_equal_evaluation_on_the_same_rows(classification_run, tmp_path):
    run = load_run(classification_run / "run")
    rows = split_rows(run, "test").drop(columns=["label"])  # new data has no target
    rows.to_csv(tmp_path / "new.csv", index=False)
    written = predict(classification_run / "run", tmp_path / "new.csv", tmp_path / "out.csv", probabilities=True)
    table = pd.read_csv(written)
    expected = collect_predictions(run, "test")
    assert list(table.columns) == ["id", "label", "p_big", "p_small"]
    assert table["id"].tolist() == rows["key"].tolist()
    assert table["label"].tolist() == [expected.class_names[i] for i in expected.predicted.tolist()]
    assert np.allclose(table[["p_big", "p_small"]].to_numpy(), expected.probabilities.numpy(), atol=1e-6)


def test_regression_predictions_are_in_target_units_with_row_numbers(regression_run, tmp_path):
    run = load_run(regression_run / "run")
    split_rows(run, "test").drop(columns=["price"]).to_csv(tmp_path / "new.csv", index=False)
    table = pd.read_csv(predict(regression_run / "run", tmp_path / "new.csv", tmp_path / "out.csv"))
    expected = collect_predictions(run, "test")  # inverse-transformed: original units
    assert list(table.columns) == ["id", "prediction"]
    assert table["id"].tolist() == list(range(len(table)))
    assert np.allclose(table["prediction"].to_numpy(), expected.predicted[:, 0].numpy(), rtol=1e-5)
    assert table["prediction"].mean() > 10  # not the standardised scale the model trains on


def test_columns_choose_order_and_rename(classification_run, tmp_path):
    source = classification_run / "table.csv"
    written = predict(classification_run / "run", source, tmp_path / "out.csv",
                      columns="Survived=label, PassengerId=id, p_big")
    table = pd.read_csv(written)
    assert list(table.columns) == ["Survived", "PassengerId", "p_big"]
    assert table["PassengerId"].tolist() == pd.read_csv(source)["key"].tolist()
    with pytest.raises(TrainlabError, match="no prediction column 'score'.*id, label"):
        predict(classification_run / "run", source, tmp_path / "bad.csv", columns="id,score")
    assert not (tmp_path / "bad.csv").exists()


def test_table_without_a_feature_column_names_it(classification_run, tmp_path):
    pd.read_csv(classification_run / "table.csv").drop(columns=["income"]).to_csv(tmp_path / "new.csv", index=False)
    with pytest.raises(TrainlabError, match=r"new.csv has no column 'income' \(feature\)"):
        predict(classification_run / "run", tmp_path / "new.csv", tmp_path / "out.csv")


def test_builtin_source_and_missing_checkpoints_are_errors(tmp_path):
    trainlab.train(tiny_recipe(), out=tmp_path / "run")
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(TrainlabError, match="synthetic source.*no files"):
        predict(tmp_path / "run", tmp_path / "x.csv", tmp_path / "out.csv")
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    with pytest.raises(TrainlabError, match="no complete checkpoints/best"):
        predict(tmp_path / "run", tmp_path / "x.csv", tmp_path / "out.csv")


# ----------------------------------------------------------------------------------- images


def image_folder(root, size=10):
    generator = np.random.default_rng(0)
    for label, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for index in range(8):
            pixels = generator.integers(0, 256, (size, size, 3), dtype=np.uint8)
            pixels[..., label] = 255
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    recipe = {"name": "images", "seed": 4, **QUIET,
              "data": {"source": "images", "path": str(image_folder(root / "images")), "batch_size": 4,
                       "split": {"valid": 0.25, "test": 0.25},
                       "transforms": {"eval": ["ToTensor", {"Normalize": "dataset"}]}},
              "model": {"layers": ["Flatten", {"Linear": {"out_features": "num_classes"}}]}}
    trainlab.train(recipe, out=root / "run")
    return root


def test_image_list_predictions_equal_evaluation(image_run, tmp_path):
    run = load_run(image_run / "run")
    scan = scan_folder(image_run / "images", run.recipe.data.extensions)
    split = run.recipe.data.split
    test = split_positions(scan.folders, torch.tensor(scan.labels), split.valid, split.test, run.recipe.seed)["test"]
    names = [scan.relative(scan.files[i]) for i in test.tolist()]
    listing = image_run / "images" / "test-list.txt"
    listing.write_text("\n".join(names) + "\n\n")  # relative to the list's folder; blank lines skipped
    table = pd.read_csv(predict(image_run / "run", listing, tmp_path / "out.csv", probabilities=True))
    expected = collect_predictions(run, "test")
    assert table["id"].tolist() == names
    assert table["label"].tolist() == [expected.class_names[i] for i in expected.predicted.tolist()]
    assert np.allclose(table[["p_cat", "p_dog"]].to_numpy(), expected.probabilities.numpy(), atol=1e-5)


def test_image_folder_is_searched_recursively(image_run, tmp_path):
    (tmp_path / "new" / "deep").mkdir(parents=True)
    shutil.copy(image_run / "images" / "cat" / "0.png", tmp_path / "new" / "a.png")
    shutil.copy(image_run / "images" / "dog" / "1.png", tmp_path / "new" / "deep" / "b.PNG")
    (tmp_path / "new" / "notes.md").write_text("not an image")
    table = pd.read_csv(predict(image_run / "run", tmp_path / "new", tmp_path / "out.csv"))
    assert table["id"].tolist() == ["a.png", "deep/b.PNG"]
    assert set(table["label"]) <= {"cat", "dog"}


def test_image_input_errors_name_the_file(image_run, tmp_path):
    run, out = image_run / "run", tmp_path / "out.csv"
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainlabError, match="holds no image files"):
        predict(run, tmp_path / "empty", out)
    (tmp_path / "big").mkdir()
    Image.fromarray(np.zeros((14, 12, 3), dtype=np.uint8)).save(tmp_path / "big" / "large.png")
    with pytest.raises(TrainlabError, match=r"large.png becomes a \(3, 14, 12\) input.*\(3, 10, 10\).*Resize"):
        predict(run, tmp_path / "big", out)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(TrainlabError, match="cannot read .*bad.png as an image"):
        predict(run, tmp_path / "broken", out)
    (tmp_path / "list.txt").write_text("missing.png\n")
    with pytest.raises(TrainlabError, match="'missing.png' \\(line 1\\)"):
        predict(run, tmp_path / "list.txt", out)
    assert not out.exists()


# ----------------------------------------------------------------------------------- text


def test_text_predictions_equal_evaluation(tmp_path):
    words = {"good": ["great", "lovely", "fine"], "bad": ["awful", "dull", "poor"]}
    generator = np.random.default_rng(2)
    rows = ["id\ttext\tlabel"]
    for index in range(40):
        label = "good" if index % 2 else "bad"
        text = " ".join(generator.choice(words[label] + ["the", "film"], int(generator.integers(2, 6))))
        rows.append(f"r{index}\t{text}\t{label}")
    (tmp_path / "reviews.tsv").write_text("\n".join(rows) + "\n")
    recipe = {"name": "text", "seed": 5, **QUIET,
              "data": {"source": "text", "path": str(tmp_path / "reviews.tsv"), "target": "label", "id": "id",
                       "min_frequency": 1, "max_length": 8, "batch_size": 4, "split": {"valid": 0.25, "test": 0.25}},
              "model": {"name": "EmbeddingBagClassifier", "embed_dim": 8}}
    trainlab.train(recipe, out=tmp_path / "run")
    run = load_run(tmp_path / "run")
    rows = load_tables(run.recipe.data, run.recipe.seed, stratify=True, columns={"text": "text"}).frames["test"]
    rows[["id", "text"]].to_csv(tmp_path / "new.tsv", sep="\t", index=False)
    table = pd.read_csv(predict(tmp_path / "run", tmp_path / "new.tsv", tmp_path / "out.csv"))
    expected = collect_predictions(run, "test")
    assert table["id"].tolist() == rows["id"].tolist()
    assert table["label"].tolist() == [expected.class_names[i] for i in expected.predicted.tolist()]
    rows[["id"]].to_csv(tmp_path / "no-text.csv", index=False)
    with pytest.raises(TrainlabError, match=r"no-text.csv has no column 'text' \(text\)"):
        predict(tmp_path / "run", tmp_path / "no-text.csv", tmp_path / "out2.csv")
