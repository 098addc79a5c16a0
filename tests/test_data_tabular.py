"""The csv source: preprocessing fitted on the training split, exported to JSON and applied with
numpy exactly as scikit-learn would; targets, splits and messages for bad tables."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import torch

import trainlab
from trainlab.data import build_data, load_preprocessor
from trainlab.data.tabular import (
    TabularPreprocessor,
    category_text,
    column_transformer,
    load_csv,
    prepare_features,
)
from trainlab.recipe import RecipeError, TrainlabError, recipe_from_data

needs_penguins = pytest.mark.skipif(importlib.util.find_spec("palmerpenguins") is None,
                                    reason="palmerpenguins is not installed: pip install palmerpenguins")


def data_config(**data):
    return recipe_from_data({"name": "t", "data": {"source": "csv", **data}, "model": {"name": "MLP"}}).recipe.data


def table(rows: int = 40, seed: int = 0, target: str = "species") -> pd.DataFrame:
    """Numeric, long-tailed, categorical and boolean columns with missing values, an id and ``target``:
    ``species`` (three classes) or ``price`` (a number)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "id": [f"row{i}" for i in range(rows)],
        "age": rng.normal(40, 12, rows).round(1),
        "income": rng.lognormal(9, 1.2, rows).round(0),
        "colour": rng.choice(["red", "green", "blue"], rows),
        "member": rng.choice([True, False], rows),
        "species": np.array(["adelie", "gentoo", "chinstrap"])[np.arange(rows) % 3],
    })
    frame["price"] = (3 * frame["age"] + frame["income"] / 1000 + rng.normal(0, 1, rows)).round(2) + 50
    frame.loc[[2, 7], "age"] = np.nan
    frame.loc[[4, 11], "colour"] = np.nan
    return frame.drop(columns=["price" if target == "species" else "species"])


def write(tmp_path, frame: pd.DataFrame, name: str = "train.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def new_rows() -> pd.DataFrame:
    """Rows for prediction: no target, an unseen category, missing values, a whole float category."""
    return pd.DataFrame({"id": ["n1", "n2", "n3"], "age": [np.nan, 30.0, 55.5], "income": [1200.0, np.nan, 9.0],
                         "colour": ["purple", np.nan, "red"], "member": [True, np.nan, False]})


def problem_text(error: pytest.ExceptionInfo) -> str:
    return str(error.value)


# ----------------------------------------------------------------------------------- the preprocessing


@pytest.mark.parametrize("options", [
    {"impute": {"indicator": True}, "log1p": ["income"]},
    {"impute": {"numeric": "median", "categorical": "constant"}, "scale": "minmax", "encode": "ordinal"},
    {"impute": {"numeric": "constant", "fill_value": 0.5, "indicator": True}, "scale": "none"},
])
def test_numpy_transform_equals_the_fitted_column_transformer(tmp_path, options):
    frame = table()
    config = data_config(train=str(write(tmp_path, frame)), target="species", id="id", split={"valid": 0}, **options)
    bundle = load_csv(config, seed=0)
    pre = bundle.preprocessor
    features, categorical = pre.features, pre.categorical
    assert features == ["age", "income", "colour", "member"] and categorical == ["colour", "member"]
    fitted = column_transformer(features, categorical, config.log1p, config).fit(pre.prepare(frame))
    assert pre.feature_names == fitted.get_feature_names_out().tolist()
    expected_train = fitted.transform(pre.prepare(frame))
    assert np.allclose(pre.transform(frame).numpy(), expected_train, atol=1e-6)
    assert np.allclose(bundle.train.inputs.numpy(), expected_train, atol=1e-6)  # training used the same numbers
    unseen = new_rows()
    expected_new = fitted.transform(pre.prepare(unseen))
    produced = pre.transform(unseen)
    assert produced.dtype == torch.float32 and produced.shape == (3, len(pre.feature_names))
    assert np.allclose(produced.numpy(), expected_new, atol=1e-6)
    assert not np.isnan(produced.numpy()).any()


def test_preprocessing_is_fitted_on_the_training_rows_only(tmp_path):
    train = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "c": ["a", "b", "a", "b"], "y": [0.5, 1.5, 2.5, 3.5]})
    valid = pd.DataFrame({"x": [100.0, 200.0], "c": ["z", "a"], "y": [1.0, 2.0]})
    config = data_config(train=str(write(tmp_path, train)), valid=str(write(tmp_path, valid, "valid.csv")),
                         target="y", task="regression")
    bundle = load_csv(config, seed=0)
    scale = bundle.preprocessor.steps["numeric"]["scale"]
    assert scale["mean"] == [2.5]  # the valid rows (100, 200) would move it
    assert bundle.preprocessor.steps["categorical"]["categories"] == [["a", "b"]]
    assert bundle.train.inputs[:, 0].mean().abs() < 1e-6
    assert bundle.valid.inputs[0].tolist() == pytest.approx([(100 - 2.5) / np.std([1, 2, 3, 4]), 0.0, 0.0])


def test_categories_are_compared_as_text():
    assert [category_text(v) for v in (3, 3.0, "3", 2.5, True, None, np.nan, " ")] == ["3", "3", "3", "2.5", "True",
                                                                                       None, None, None]
    pre = TabularPreprocessor(["code"], ["code"], "y", "classification", class_names=["a", "b"], steps={
        "numeric": None, "missing": [], "feature_names": ["cat__code_3", "cat__code_7"],
        "categorical": {"columns": ["code"], "impute": ["3"], "encode": "onehot", "categories": [["3", "7"]]}})
    codes = pd.DataFrame({"code": [3.0, np.nan, 7, 9]})
    assert pre.transform(codes).tolist() == [[1, 0], [1, 0], [0, 1], [0, 0]]


def test_blank_cells_are_missing_values():
    frame = pd.DataFrame({"x": ["1.5", " ", "2"], "c": ["a", "  ", "b"]})
    prepared = prepare_features(frame, ["x", "c"], ["c"], [])
    assert np.isnan(prepared["x"][1]) and prepared["x"][2] == 2.0
    assert prepared["c"].isna().tolist() == [False, True, False]


# ----------------------------------------------------------------------------------- splits, targets, spec


def test_classification_bundle_is_stratified_resolved_and_noted(tmp_path):
    path = write(tmp_path, table(rows=60))
    config = data_config(path=str(path), target="species", id="id", split={"valid": 0.2, "test": 0.2})
    bundle = build_data(config, seed=4)
    spec = bundle.spec
    assert spec.task == "classification" and spec.class_names == ["adelie", "chinstrap", "gentoo"]
    assert spec.input_shape == (7,) and spec.num_samples == {"train": 36, "valid": 12, "test": 12}
    for split in ("valid", "test"):  # 4 of each species: stratified
        assert torch.bincount(bundle.loader(split).targets, minlength=3).tolist() == [4, 4, 4]
    assert bundle.notes[0].startswith("task: classification (inferred: the target holds text")
    assert "set data.task to override" in bundle.notes[0]
    assert "7 features from 4 columns: 2 numeric, 2 categorical (one-hot)" in bundle.notes
    assert bundle.config.task == "classification" and bundle.config.categorical == ["colour", "member"]
    assert bundle.config.features == ["age", "income", "colour", "member"]
    again = build_data(config, seed=4)
    assert torch.equal(again.valid.inputs, bundle.valid.inputs)


def test_relative_paths_are_made_absolute(tmp_path, monkeypatch):
    write(tmp_path, table())
    monkeypatch.chdir(tmp_path)
    bundle = load_csv(data_config(path="train.csv", target="species"), seed=0)
    assert bundle.config.path == str(tmp_path / "train.csv")


@pytest.mark.parametrize("kind", ["none", "standard", "log"])
def test_regression_targets_and_their_inverse(tmp_path, kind):
    frame = table(target="price")
    config = data_config(path=str(write(tmp_path, frame)), target="price", id="id", target_transform=kind,
                         split={"valid": 0.25})
    bundle = load_csv(config, seed=1)
    assert bundle.spec.task == "regression" and bundle.spec.target_shape == (1,) and bundle.spec.output_size == 1
    targets = bundle.train.targets
    assert targets.dtype == torch.float32 and targets.shape == (30, 1)
    pre = bundle.preprocessor
    restored = pre.inverse_target(pre.encode_target(frame["price"])).squeeze(1).numpy()
    assert np.allclose(restored, frame["price"], rtol=1e-5)
    for price in pre.inverse_target(targets).squeeze(1).tolist():  # the training rows' own prices
        assert np.isclose(frame["price"], price, rtol=1e-5).any()
    if kind == "standard":
        assert abs(targets.mean().item()) < 1e-5 and abs(targets.std(unbiased=False).item() - 1) < 1e-4
    if kind == "log":
        assert torch.allclose(targets, torch.log(pre.inverse_target(targets)))
    assert torch.allclose(pre.encode_target(frame["price"]), pre.encode_target(frame["price"].astype(str)))


def test_save_and_load_give_the_same_transform_without_pickle(tmp_path):
    frame = table(target="price")
    config = data_config(path=str(write(tmp_path, frame)), target="price", id="id", target_transform="standard",
                         log1p=["income"], impute={"indicator": True})
    pre = load_csv(config, seed=0).preprocessor
    pre.save(tmp_path / "preprocessing")
    saved = json.loads((tmp_path / "preprocessing" / "preprocessing.json").read_text())
    assert saved["kind"] == "tabular" and saved["target_transform"]["kind"] == "standard"
    assert saved["steps"]["numeric"]["log1p"] == ["income"]
    assert [path.name for path in (tmp_path / "preprocessing").iterdir()] == ["preprocessing.json"]
    loaded = load_preprocessor(tmp_path / "preprocessing")
    assert isinstance(loaded, TabularPreprocessor) and loaded == pre
    rows = new_rows()
    assert torch.equal(loaded.transform(rows), pre.transform(rows))
    assert loaded.ids(rows) == ["n1", "n2", "n3"]
    assert torch.equal(loaded.inverse_target(torch.tensor([[0.0]])), torch.tensor([[saved["target_transform"]["mean"]]]))
    without_id = TabularPreprocessor.load(tmp_path / "preprocessing")
    without_id.id = None
    assert without_id.ids(rows) == [0, 1, 2]
    (tmp_path / "preprocessing" / "preprocessing.json").write_text('{"kind": "tabular"}')
    with pytest.raises(TrainlabError, match="not a readable tabular preprocessing file"):
        TabularPreprocessor.load(tmp_path / "preprocessing")


def test_prediction_rows_are_checked(tmp_path):
    pre = load_csv(data_config(path=str(write(tmp_path, table())), target="species", id="id"), seed=0).preprocessor
    with pytest.raises(TrainlabError) as error:
        pre.transform(new_rows().drop(columns=["income"]), source="new.csv")
    assert "new.csv has no column 'income'" in problem_text(error)
    bad = new_rows().astype({"age": object})
    bad.loc[2, "age"] = "n/a"
    with pytest.raises(TrainlabError) as error:
        pre.transform(bad, source="new.csv")
    assert "numeric column 'age' holds text" in problem_text(error) and "Received: n/a from new.csv line 4" in \
        problem_text(error)
    with pytest.raises(TrainlabError, match="no id column 'id'"):
        pre.ids(new_rows().drop(columns=["id"]))
    with pytest.raises(TrainlabError, match="classes the model was not trained on"):
        pre.encode_target(pd.Series(["adelie", "emperor"]))


# ----------------------------------------------------------------------------------- bad tables


BAD_TABLES = {
    "missing target": ({"target": "specis"}, None, ["data.target", "train.csv has no column 'specis'",
                                                     "Did you mean 'species'?"]),
    "missing feature": ({"features": ["age", "colour", "weight"]}, None, ["data.features",
                                                                          "has no column 'weight'"]),
    "empty target": ({}, lambda f: f.assign(species=f["species"].where(f.index != 5)), [
        "empty target 'species'", "line 7"]),
    "text in a valid file": ({"valid": "valid.csv"}, None, ["numeric column 'age' holds text",
                                                            "Received: old from valid.csv line 3"]),
    "log1p of text": ({"log1p": ["colour"]}, None, ["data.log1p[0]", "column 'colour' holds text"]),
    "log1p below -1": ({"log1p": ["age"]}, lambda f: f.assign(age=f["age"].where(f.index != 9, -3.0)), [
        "log1p column 'age' holds values of -1 or less", "Received: -3.0 from train.csv line 11"]),
    "feature twice": ({"features": ["age", "colour", "age"]}, None, ["data.features[2]", "listed twice"]),
    "feature is the target": ({"features": ["age", "species"]}, None, ["data.features[1]", "target column"]),
    "feature is the id": ({"features": ["id", "age"]}, None, ["data.features[0]", "id column is never a feature"]),
    "no features": ({}, lambda f: f[["id", "species"]], ["has no feature columns", "'species' and 'id'"]),
    "empty categorical": ({"categorical": ["colour", "blank"]}, lambda f: f.assign(blank=np.nan),
                          ["data.categorical[1]", "column 'blank' has no values in the training split"]),
    "text regression target": ({"task": "regression"}, None, ["regression target 'species' must hold numbers",
                                                             "Received: adelie from train.csv line 2"]),
    "transform of classes": ({"target_transform": "log"}, None, ["data.target_transform", "regression only"]),
}


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_bad_tables_are_user_errors_naming_what_to_fix(tmp_path, case):
    options, edit, expected = BAD_TABLES[case]
    frame = table()
    if edit is not None:
        frame = edit(frame)
    write(tmp_path, frame)
    valid = table(rows=12, seed=1).astype({"age": object})
    valid.loc[1, "age"] = "old"
    write(tmp_path, valid, "valid.csv")
    options = {**options, **({"valid": str(tmp_path / "valid.csv")} if "valid" in options else {})}
    config = data_config(train=str(tmp_path / "train.csv"), **{"target": "species", "id": "id", **options})
    with pytest.raises(TrainlabError) as error:
        load_csv(config, seed=0)
    for text in expected:
        assert text in problem_text(error), problem_text(error)


# ----------------------------------------------------------------------------------- end to end


def csv_recipe(path, **data):
    return {
        "name": "table", "seed": 0,
        "data": {"source": "csv", "path": str(path), "id": "id", "log1p": ["income"], "batch_size": 8,
                 "split": {"valid": 0.25}, **data},
        "model": {"name": "MLP", "hidden": [8]},
        "optimizer": {"name": "Adam", "lr": 0.01},
        "train": {"epochs": 2, "log_every": 2, "device": "cpu", "precision": "32"},
        "log": {"tensorboard": False, "plots": False, "progress": "none"},
    }


@pytest.mark.parametrize("target, metric", [("species", "accuracy"), ("price", "loss")])
def test_a_csv_recipe_trains_and_saves_its_preprocessing(tmp_path, target, metric):
    path = write(tmp_path, table(rows=48, target=target))
    run = trainlab.train(csv_recipe(path, target=target, impute={"indicator": True}), out=tmp_path / "run")
    assert run.status == "finished"
    valid = run.records("valid")
    assert len(valid) == 2 and all(np.isfinite(record[metric]) for record in valid)
    expected_task = "classification" if target == "species" else "regression"
    assert run.recipe.data.task == expected_task and run.recipe.data.categorical == ["colour", "member"]
    if expected_task == "regression":
        assert run.recipe.loss.name == "MSELoss"
    saved = load_preprocessor(run.folder / "preprocessing")
    assert saved.task == expected_task and saved.id == "id"


def test_check_names_a_missing_target_column_and_its_file(tmp_path):
    path = write(tmp_path, table(), "animals.csv")
    with pytest.raises(RecipeError) as error:
        trainlab.check(csv_recipe(path, target="specie"))
    assert "data.target: animals.csv has no column 'specie'" in problem_text(error)
    assert "Did you mean 'species'?" in problem_text(error)


@needs_penguins
def test_the_penguins_table_loads():
    config = data_config(path="package:palmerpenguins/data/penguins.csv", target="species",
                         split={"valid": 0.2, "test": 0.2})
    bundle = load_csv(config, seed=0)
    assert sum(bundle.spec.num_samples.values()) == 344
    assert bundle.spec.class_names == ["Adelie", "Chinstrap", "Gentoo"]
    assert bundle.config.categorical == ["island", "sex"]
    assert bundle.config.path == "package:palmerpenguins/data/penguins.csv"
    for split in ("train", "valid", "test"):
        assert torch.isfinite(bundle.loader(split).inputs).all()  # the NaNs of the table are imputed
    # 5 numeric columns (4 measurements, year), island (3 values), sex (2 values)
    assert bundle.spec.input_shape == (len(bundle.preprocessor.feature_names),) == (10,)


def test_a_validation_file_can_be_monitored_without_a_split_fraction(tmp_path):
    frame = table(rows=60)
    train, valid = write(tmp_path, frame[:45], "train.csv"), write(tmp_path, frame[45:], "valid.csv")
    recipe = {"name": "t", "data": {"source": "csv", "train": str(train), "valid": str(valid), "target": "species",
                                    "id": "id", "split": {"valid": 0.0}},
              "model": {"name": "MLP"}, "train": {"monitor": "valid/accuracy", "device": "cpu"}}
    checked = trainlab.check(recipe)
    assert checked.data.valid is not None and checked.spec.num_samples["valid"] == 15
    recipe["data"] = {**recipe["data"], "valid": None}
    with pytest.raises(RecipeError, match="monitors the valid split but the data have no validation split"):
        trainlab.check(recipe)
