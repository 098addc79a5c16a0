"""Text classifiers: trained end to end on a tiny text file, padding-invariant, checked against the data."""

from __future__ import annotations

import os
import random
import signal

import pandas as pd
import pytest
import torch

import trainlab
from trainlab.data.spec import DataSpec
from trainlab.models import build_model, check_model, summarize
from trainlab.recipe import RecipeError
from trainlab.recipe.schema import ModelConfig
from trainlab.train.callbacks import Progress

from conftest import same_weights, tiny_recipe, without_time

POSITIVE = ["good", "great", "lovely", "superb", "fun", "moving"]
NEGATIVE = ["bad", "awful", "poor", "dull", "weak", "boring"]
FILLER = ["the", "film", "was", "plot", "and", "a", "very"]

SMALL = {  # small widths so each model trains in a fraction of a second
    "EmbeddingBagClassifier": {"embed_dim": 8, "hidden": [8]},
    "TextCNN": {"embed_dim": 8, "kernel_sizes": [1, 2, 3], "num_filters": 8, "dropout": 0.1},
    "GRUClassifier": {"embed_dim": 8, "hidden_size": 8},
    "LSTMClassifier": {"embed_dim": 8, "hidden_size": 8, "num_layers": 2},
    "TransformerClassifier": {"d_model": 8, "nhead": 2, "num_layers": 1, "dim_feedforward": 16},
}
PADDING_INVARIANT = [  # (model, arguments beside SMALL's)
    ("EmbeddingBagClassifier", {}),
    ("GRUClassifier", {}),
    ("GRUClassifier", {"bidirectional": False, "num_layers": 2}),
    ("LSTMClassifier", {}),
    ("LSTMClassifier", {"bidirectional": False}),
    ("TransformerClassifier", {}),
]


def sentiment_csv(path, rows: int = 80) -> str:
    """Short reviews whose label is given by their one sentiment word among filler words."""
    generator = random.Random(0)
    texts, labels = [], []
    for index in range(rows):
        positive = index % 2 == 0
        words = generator.sample(FILLER, generator.randint(0, 5))
        words.insert(generator.randint(0, len(words)), generator.choice(POSITIVE if positive else NEGATIVE))
        texts.append(" ".join(words))
        labels.append("pos" if positive else "neg")
    pd.DataFrame({"review": texts, "sentiment": labels}).to_csv(path, index=False)
    return str(path)


def text_recipe(path: str, model: dict, **data) -> dict:
    """A recipe that trains ``model`` on the reviews at ``path`` (data keys override)."""
    recipe = tiny_recipe()
    recipe["data"] = {"source": "text", "path": path, "text": "review", "target": "sentiment",
                      "tokenizer": "whitespace", "min_frequency": 1, "batch_size": 8, "split": {"valid": 0.25}, **data}
    recipe["model"] = model
    recipe["optimizer"] = {"name": "AdamW", "lr": 0.03}
    recipe["train"] = {"epochs": 6, "log_every": 5, "device": "cpu", "precision": "32"}
    return recipe


def token_spec(width: int = 9, vocab_size: int = 40) -> DataSpec:
    return DataSpec("classification", (width,), num_classes=3, class_names=["a", "b", "c"], input_dtype=torch.int64,
                    vocab_size=vocab_size, padding_idx=0)


@pytest.mark.parametrize("name", list(SMALL))
def test_each_model_trains_on_a_text_file(name, tmp_path):
    bucket = name in ("GRUClassifier", "TransformerClassifier")  # trimmed batches of varying width
    recipe = text_recipe(sentiment_csv(tmp_path / "reviews.csv"), {"name": name, **SMALL[name]}, bucket=bucket)
    run = trainlab.train(recipe, out=tmp_path / "run")
    assert run.status == "finished"
    valid = run.records("valid")
    assert len(valid) == 6 and valid[-1]["loss"] < valid[0]["loss"]
    assert valid[-1]["accuracy"] >= 0.8  # the sentiment word decides the label
    data = (tmp_path / "run" / "data.json").read_text()
    assert '"input_dtype": "int64"' in data


def test_text_run_resumes_exactly_mid_epoch_with_bucketing(tmp_path, monkeypatch):
    recipe = text_recipe(sentiment_csv(tmp_path / "reviews.csv"), {"name": "GRUClassifier", **SMALL["GRUClassifier"]},
                         bucket=True)
    recipe["train"]["epochs"] = 2
    whole = trainlab.train(recipe, out=tmp_path / "whole")
    original = Progress.on_step

    def on_step(self, step, samples):
        original(self, step, samples)
        if step == 11:  # epoch 2, batch 3 of 8
            os.kill(os.getpid(), signal.SIGINT)

    with monkeypatch.context() as patch:
        patch.setattr(Progress, "on_step", on_step)
        stopped = trainlab.train(recipe, out=tmp_path / "stopped")
    assert stopped.status == "interrupted" and stopped.result.state.step == 11
    resumed = trainlab.resume(tmp_path / "stopped")
    assert same_weights(whole.model, resumed.model)
    assert without_time(whole.metrics) == without_time(resumed.metrics)


@pytest.mark.parametrize(("name", "arguments"), PADDING_INVARIANT)
def test_padding_does_not_change_the_output(name, arguments):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, **{**SMALL[name], **arguments}), token_spec()).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 0], [3, 0, 0, 0, 0, 0], [4, 4, 2, 9, 11, 12], [0, 0, 0, 0, 0, 0]])  # (4, 6)
    padded = torch.cat([ids, torch.zeros(4, 3, dtype=torch.int64)], dim=1)  # (4, 9)
    with torch.no_grad():
        short, long = model(ids), model(padded)
        alone = model(ids[1:2, :1])  # one text without any padding
    assert short.shape == (4, 3) and torch.isfinite(short).all()
    assert torch.allclose(short, long, atol=1e-5)
    assert torch.allclose(alone, short[1:2], atol=1e-5)
    assert not torch.allclose(short[0], short[2], atol=1e-5)  # the tokens themselves matter


def test_textcnn_takes_texts_shorter_than_its_widest_kernel():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="TextCNN", kernel_sizes=[2, 5]), token_spec()).eval()
    assert model(torch.tensor([[7]])).shape == (1, 3)
    assert model(torch.tensor([[7, 3, 0, 0, 0, 0, 0, 0, 0]])).shape == (1, 3)


def test_transformer_refuses_texts_longer_than_its_positions():
    model = build_model(ModelConfig(name="TransformerClassifier"), token_spec(width=4))
    with pytest.raises(ValueError, match="texts of 5 tokens are longer than the 4 positions"):
        model(torch.ones(1, 5, dtype=torch.int64))


@pytest.mark.parametrize("name", list(SMALL))
def test_each_model_passes_validation_and_summarizes(name):
    spec = token_spec()
    assert check_model(ModelConfig(name=name), spec) == []
    torch.manual_seed(0)
    summary = summarize(build_model(ModelConfig(name=name), spec), spec)
    assert summary.total_parameters > 40 * 8 and summary.rows[-1].output_shape == (3,)


def test_show_model_prints_a_text_model(tmp_path, capsys):
    import yaml

    from trainlab.cli import main

    recipe = text_recipe(sentiment_csv(tmp_path / "reviews.csv"), {"name": "LSTMClassifier", "hidden_size": 8})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    with pytest.raises(SystemExit) as exit_info:
        main(["show-model", str(path)])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "LSTM" in out and "Embedding" in out


def test_a_text_model_on_feature_data_is_a_recipe_error():
    recipe = tiny_recipe()
    recipe["model"] = {"name": "TextCNN"}
    with pytest.raises(RecipeError) as error:
        trainlab.check(recipe)
    assert "model.name: TextCNN takes token ids of shape (L,), but the inputs are float32 of shape (6,)" in str(
        error.value)
    assert "data.source: text" in str(error.value)


def test_argument_values_are_checked():
    spec = token_spec()
    problems = check_model(ModelConfig(name="TransformerClassifier", d_model=10, nhead=4, dropout=1.5), spec)
    assert [problem.path for problem in problems] == ["model.dropout", "model.nhead"]
    problems = check_model(ModelConfig(name="TextCNN", kernel_sizes=[3, 0]), spec)
    assert [problem.path for problem in problems] == ["model.kernel_sizes"]
    assert check_model(ModelConfig(name="GRUClassifier", hidden_size=-2), spec)[0].path == "model.hidden_size"
