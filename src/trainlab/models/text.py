"""Text classifiers by name: EmbeddingBagClassifier, TextCNN, GRUClassifier, LSTMClassifier and
TransformerClassifier.

Each takes a ``(B, L)`` int64 batch of token ids and returns ``(B, output_size)`` logits. The
vocabulary is ``spec.vocab_size``; ``spec.padding_idx`` (0 for ``source: text``) marks padding,
which sits at the end of every row. Padding never changes a result, except in TextCNN: the
bag-of-embeddings averages only real tokens, the recurrent models pack each row to its length,
and the Transformer masks padding in attention and in its mean pooling, so a text gives the same
logits however much padding follows it. Data without a padding id (synthetic token ids) treat
every position as a token.

Rows with no token at all (an empty text) give the classifier's bias: a zero bag, a zero
pooling, or a recurrent state that has read one padding embedding (a zero vector).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from trainlab.data.spec import DataSpec
from trainlab.models.layers import shape_text
from trainlab.models.zoo import MODELS
from trainlab.recipe.errors import Problem
from trainlab.recipe.loader import join_path

__all__ = ["EmbeddingBagClassifier", "RNNClassifier", "TextCNN", "TransformerClassifier", "token_mask"]


def token_mask(ids: torch.Tensor, padding_idx: int | None) -> torch.Tensor:
    """``(B, L)`` bool: True where ``ids`` holds a real token (everywhere without a padding id)."""
    if padding_idx is None:
        return torch.ones_like(ids, dtype=torch.bool)
    return ids != padding_idx


def _as_list(value: int | Sequence[int]) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _head(in_features: int, hidden: Sequence[int], out_features: int, dropout: float = 0.0) -> nn.Sequential:
    """Dropout (when > 0), then Linear-ReLU per hidden width, then a Linear to ``out_features``."""
    layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out_features))  # (B, out_features)
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------- bag of embeddings


class EmbeddingBagClassifier(nn.Module):
    """The model of PyTorch's text classification tutorial: the mean of the tokens' embeddings
    (``nn.EmbeddingBag``, padding left out), then optional hidden Linear-ReLU layers and a Linear.
    Weights start as in the tutorial: uniform in [-0.5, 0.5], biases 0."""

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int = 64, hidden: Sequence[int] = (),
                 padding_idx: int | None = None):
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, mode="mean", padding_idx=padding_idx)
        self.head = _head(embed_dim, hidden, num_classes)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, scale: float = 0.5) -> None:
        self.embedding.weight.uniform_(-scale, scale)
        if self.embedding.padding_idx is not None:
            self.embedding.weight[self.embedding.padding_idx].zero_()
        for module in self.head.modules():
            if isinstance(module, nn.Linear):
                module.weight.uniform_(-scale, scale)
                module.bias.zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        bag = self.embedding(ids)  # (B, L) -> (B, embed_dim), mean over non-padding tokens (0 when none)
        return self.head(bag)  # (B, num_classes)


# ----------------------------------------------------------------------------------- convolutions


class TextCNN(nn.Module):
    """Kim (2014): token embeddings, one Conv1d per kernel size with ``num_filters`` filters, ReLU,
    max over time, concatenation, dropout and a Linear. Texts shorter than the largest kernel are
    padded (with the padding embedding, zeros) to its size."""

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int = 128,
                 kernel_sizes: Sequence[int] = (3, 4, 5), num_filters: int = 100, dropout: float = 0.5,
                 padding_idx: int | None = None):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, num_filters, size) for size in kernel_sizes)
        self.min_length = max(kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(num_filters * len(self.convs), num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids).transpose(1, 2)  # (B, L) -> (B, L, E) -> (B, E, L)
        if x.shape[2] < self.min_length:
            x = F.pad(x, (0, self.min_length - x.shape[2]))  # (B, E, max kernel)
        pooled = [conv(x).relu().amax(dim=2) for conv in self.convs]  # each (B, num_filters)
        return self.fc(self.dropout(torch.cat(pooled, dim=1)))  # (B, F * K) -> (B, num_classes)


# ----------------------------------------------------------------------------------- recurrent


class RNNClassifier(nn.Module):
    """Token embeddings read by a GRU or LSTM packed to each text's length; the last layer's final
    hidden state (of both directions when bidirectional) goes through dropout to a Linear.
    ``dropout`` also applies between stacked recurrent layers."""

    def __init__(self, cell: str, vocab_size: int, num_classes: int, embed_dim: int = 128, hidden_size: int = 128,
                 num_layers: int = 1, bidirectional: bool = True, dropout: float = 0.2,
                 padding_idx: int | None = None):
        super().__init__()
        recurrent = {"GRU": nn.GRU, "LSTM": nn.LSTM}[cell]
        self.padding_idx = padding_idx
        self.directions = 2 if bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.rnn = recurrent(embed_dim, hidden_size, num_layers=num_layers, batch_first=True,
                             bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size * self.directions, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        lengths = token_mask(ids, self.padding_idx).sum(dim=1).clamp(min=1)  # (B,) tokens per text
        x = self.embedding(ids)  # (B, L, E)
        if x.device.type == "meta":  # shape-only validation: lengths cannot be read, and shapes need no packing
            _, state = self.rnn(x)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, state = self.rnn(packed)
        hidden = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c); (layers * dirs, B, H)
        last = hidden[-self.directions:]  # the last layer's directions: (dirs, B, H), batch in input order
        features = last.transpose(0, 1).reshape(ids.shape[0], -1)  # (B, dirs * H)
        return self.fc(self.dropout(features))  # (B, num_classes)


# ----------------------------------------------------------------------------------- transformer


class TransformerClassifier(nn.Module):
    """Token plus learned position embeddings, a ``nn.TransformerEncoder`` (batch first) that
    ignores padding (``src_key_padding_mask``), the mean over the real tokens, and a Linear.
    Positions go up to ``max_length``, the data's text width."""

    def __init__(self, vocab_size: int, num_classes: int, max_length: int, d_model: int = 64, nhead: int = 4,
                 num_layers: int = 2, dim_feedforward: int = 128, dropout: float = 0.1,
                 padding_idx: int | None = None):
        super().__init__()
        self.padding_idx = padding_idx
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.position = nn.Embedding(max_length, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.fc = nn.Linear(d_model, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        if length > self.position.num_embeddings:
            raise ValueError(f"texts of {length} tokens are longer than the {self.position.num_embeddings} "
                             "positions the model has")
        keep = token_mask(ids, self.padding_idx)  # (B, L)
        positions = torch.arange(length, device=ids.device)  # (L,)
        x = self.embedding(ids) + self.position(positions)  # (B, L, D)
        # A row of padding only would mask every key (NaN attention): let it attend to itself;
        # the pooling below still leaves it out.
        ignore = ~keep & ~(~keep).all(dim=1, keepdim=True)  # (B, L) True = not attended to
        x = self.encoder(x, src_key_padding_mask=ignore)  # (B, L, D)
        weights = keep.unsqueeze(2).to(x.dtype)  # (B, L, 1)
        pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)  # (B, D)
        return self.fc(pooled)  # (B, num_classes)


# ----------------------------------------------------------------------------------- checks and registration


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_text_model(name: str, spec: DataSpec, arguments: dict[str, Any], path: str) -> list[Problem]:
    """The data must be token ids of shape (L,), and the arguments sizes and probabilities."""
    shape = tuple(spec.input_shape)
    if spec.input_dtype != torch.int64 or spec.vocab_size is None or len(shape) != 1:
        kind = "token ids" if spec.vocab_size is not None else str(spec.input_dtype).removeprefix("torch.")
        return [Problem(join_path(path, "name"), f"{name} takes token ids of shape (L,), but the inputs are {kind} "
                        f"of shape {shape_text(shape)}", name,
                        hint="Use data.source: text (texts become token ids), or a model for this data such as "
                        "MLP or LeNet.")]
    problems = []
    for argument, value in arguments.items():
        if argument in ("embed_dim", "num_filters", "hidden_size", "num_layers", "d_model", "nhead",
                        "dim_feedforward") and not _is_count(value):
            problems.append(Problem(join_path(path, argument), "expected a positive whole number", value,
                                    argument=argument))
        elif argument in ("kernel_sizes", "hidden") and not all(_is_count(size) for size in _as_list(value)):
            example = "[3, 4, 5]" if argument == "kernel_sizes" else "[64], or [] for none"
            problems.append(Problem(join_path(path, argument), "expected a list of positive whole numbers", value,
                                    argument=argument, hint=f"For example {argument}: {example}."))
        elif argument == "kernel_sizes" and not _as_list(value):
            problems.append(Problem(join_path(path, argument), "expected at least one kernel size", value,
                                    argument=argument, hint="For example kernel_sizes: [3, 4, 5]."))
        elif argument == "dropout" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                        or not 0 <= value < 1):
            problems.append(Problem(join_path(path, argument), "expected a probability in [0, 1)", value,
                                    argument=argument))
        elif argument == "bidirectional" and not isinstance(value, bool):
            problems.append(Problem(join_path(path, argument), "expected true or false", value, argument=argument))
    d_model, nhead = arguments.get("d_model", 64), arguments.get("nhead", 4)
    if name == "TransformerClassifier" and _is_count(d_model) and _is_count(nhead) and d_model % nhead:
        problems.append(Problem(join_path(path, "nhead"), f"d_model ({d_model}) must be divisible by nhead", nhead,
                                argument="nhead", hint="Each attention head gets d_model / nhead features; use for "
                                f"example nhead: {math.gcd(d_model, 8)}."))
    return problems


def _checker(name: str) -> Any:
    return functools.partial(_check_text_model, name)


@MODELS.register("EmbeddingBagClassifier", check=_checker("EmbeddingBagClassifier"))
def embedding_bag_classifier(spec: DataSpec, embed_dim: int = 64, hidden: Sequence[int] = ()) -> nn.Module:
    """Mean of the token embeddings (nn.EmbeddingBag), optional hidden layers, a Linear (PyTorch's tutorial)."""
    assert spec.vocab_size is not None
    return EmbeddingBagClassifier(spec.vocab_size, spec.output_size, embed_dim, _as_list(hidden), spec.padding_idx)


@MODELS.register("TextCNN", check=_checker("TextCNN"))
def text_cnn(spec: DataSpec, embed_dim: int = 128, kernel_sizes: Sequence[int] = (3, 4, 5), num_filters: int = 100,
             dropout: float = 0.5) -> nn.Module:
    """Kim (2014): convolutions of several widths over token embeddings, max over time, dropout, a Linear."""
    assert spec.vocab_size is not None
    return TextCNN(spec.vocab_size, spec.output_size, embed_dim, _as_list(kernel_sizes), num_filters, dropout,
                   spec.padding_idx)


@MODELS.register("GRUClassifier", check=_checker("GRUClassifier"))
def gru_classifier(spec: DataSpec, embed_dim: int = 128, hidden_size: int = 128, num_layers: int = 1,
                   bidirectional: bool = True, dropout: float = 0.2) -> nn.Module:
    """A GRU over token embeddings, packed to each text's length; its final hidden state -> Linear."""
    assert spec.vocab_size is not None
    return RNNClassifier("GRU", spec.vocab_size, spec.output_size, embed_dim, hidden_size, num_layers, bidirectional,
                         dropout, spec.padding_idx)


@MODELS.register("LSTMClassifier", check=_checker("LSTMClassifier"))
def lstm_classifier(spec: DataSpec, embed_dim: int = 128, hidden_size: int = 128, num_layers: int = 1,
                    bidirectional: bool = True, dropout: float = 0.2) -> nn.Module:
    """An LSTM over token embeddings, packed to each text's length; its final hidden state -> Linear."""
    assert spec.vocab_size is not None
    return RNNClassifier("LSTM", spec.vocab_size, spec.output_size, embed_dim, hidden_size, num_layers,
                         bidirectional, dropout, spec.padding_idx)


@MODELS.register("TransformerClassifier", check=_checker("TransformerClassifier"))
def transformer_classifier(spec: DataSpec, d_model: int = 64, nhead: int = 4, num_layers: int = 2,
                           dim_feedforward: int = 128, dropout: float = 0.1) -> nn.Module:
    """A Transformer encoder over token and learned position embeddings, mean-pooled over real tokens."""
    assert spec.vocab_size is not None
    return TransformerClassifier(spec.vocab_size, spec.output_size, spec.input_shape[0], d_model, nhead, num_layers,
                                 dim_feedforward, dropout, spec.padding_idx)
