"""Recipe loading: schema errors with key path, line, received value and did-you-mean; overrides."""

from __future__ import annotations

import json

import pytest

from trainlab.recipe import RecipeError, TrainlabError, load_recipe, recipe_from_data
from trainlab.recipe.loader import parse_override
from trainlab.recipe.schema import Recipe

GOOD = """\
name: ok
seed: 1
data:
  source: synthetic
  shape: [4]
model:
  name: MLP
  hidden: [8]
optimizer: {name: SGD, lr: 1e-2, momentum: 0.9}
"""


def problems_of(error: RecipeError) -> dict[str, str]:
    return {problem.path: problem.render() for problem in error.problems}


def test_good_recipe_loads_with_1e_floats(recipe_file):
    recipe = load_recipe(recipe_file(GOOD)).recipe
    assert recipe.optimizer.lr == pytest.approx(0.01)
    assert recipe.optimizer.arguments() == {"momentum": 0.9}
    assert recipe.model.arguments() == {"hidden": [8]}


def test_every_schema_problem_is_reported_at_once(recipe_file):
    text = GOOD.replace("  shape: [4]", "  shap: [4]\n  batch_size: 0").replace("seed: 1", "sede: 1")
    text += "train: {epochs: two, precision: 64}\n"
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe_file(text))
    found = problems_of(caught.value)
    assert set(found) == {"sede", "data.shap", "data.batch_size", "train.epochs", "train.precision"}
    assert found["data.shap"] == "data.shap: unknown key. Received: [4] at line 5. Did you mean 'shape'?"
    assert "Did you mean 'seed'?" in found["sede"]
    assert "Received: 0 at line 6" in found["data.batch_size"]
    assert "expected a whole number. Received: two at line 11" in found["train.epochs"]
    assert "expected one of" in found["train.precision"] and "Received: 64" in found["train.precision"]


def test_unknown_data_source_has_a_suggestion(recipe_file):
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe_file(GOOD.replace("source: synthetic", "source: synthtic")))
    (message,) = problems_of(caught.value).values()
    assert message.startswith("data.source: expected a data source")
    assert "Received: synthtic at line 4" in message and "Did you mean 'synthetic'?" in message


def test_missing_required_keys_say_what_to_add():
    with pytest.raises(RecipeError) as caught:
        recipe_from_data({"data": {"source": "synthetic"}})
    found = problems_of(caught.value)
    assert "name: required key is missing. Received: nothing" in found["name"]
    assert "Add 'name:'" in found["name"]
    assert "model" in found


def test_model_needs_exactly_one_of_name_or_layers():
    with pytest.raises(RecipeError) as caught:
        recipe_from_data({"name": "x", "data": {"source": "synthetic"}, "model": {"name": "MLP", "layers": []}})
    assert "exactly one of 'name'" in str(caught.value)


def test_overrides_are_typed_and_located(recipe_file):
    loaded = load_recipe(recipe_file(GOOD), ["optimizer.lr=3e-4", "train.epochs=5", "data.shape=[2, 3]",
                                             "train.clip_grad_norm=null"])
    assert loaded.recipe.optimizer.lr == pytest.approx(3e-4)
    assert loaded.recipe.train.epochs == 5
    assert loaded.recipe.data.shape == [2, 3]
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe_file(GOOD), ["train.epoch=5"])
    (message,) = problems_of(caught.value).values()
    assert message == "train.epoch: unknown key. Received: 5 from override train.epoch=5. Did you mean 'epochs'?"


@pytest.mark.parametrize("text, expected", [("train.epochs", "has no '='"), ("=3", "empty key"), ("a..b=1", "empty key")])
def test_malformed_overrides(text, expected):
    with pytest.raises(TrainlabError, match=expected):
        parse_override(text)


def test_yaml_syntax_error_names_the_line(recipe_file):
    with pytest.raises(TrainlabError, match="not valid YAML at line 3"):
        load_recipe(recipe_file("name: x\ndata:\n  source: [synthetic\n"))


def test_missing_recipe_file(tmp_path):
    with pytest.raises(TrainlabError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


def test_json_schema_forbids_unknown_keys():
    schema = Recipe.model_json_schema()
    assert schema["additionalProperties"] is False
    assert {"name", "data", "model", "loss", "optimizer", "schedule", "train", "log"} <= set(schema["properties"])
    json.dumps(schema)
