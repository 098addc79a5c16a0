"""trainlab.models: the layer registry and grammar, init schemes, built-in models, summaries.

Everything runs on CPU with tiny shapes; torchvision models are built only where a test is about
them (resnet18 on 32x32 inputs).
"""

from __future__ import annotations

import math
import subprocess
import sys
import urllib.error
from typing import Any

import pytest
import torch
from torch import nn

from trainlab.data.spec import DataSpec
from trainlab.models import (
    INITS,
    LAYERS,
    MODELS,
    ModelOutput,
    build_model,
    check_model,
    describe_output,
    resolve_model,
    summarize,
)
from trainlab.models.init import apply_init
from trainlab.models.layers import Residual, Shared
from trainlab.recipe.errors import RecipeError, TrainlabError
from trainlab.recipe.schema import InitConfig, ModelConfig


def spec_for(shape: tuple[int, ...], classes: int = 10, **extra: Any) -> DataSpec:
    return DataSpec("classification", shape, num_classes=classes, **extra)


def stack(*layers: Any, blocks: dict[str, list[Any]] | None = None, **extra: Any) -> ModelConfig:
    return ModelConfig.model_validate({"layers": list(layers), "blocks": blocks or {}, **extra})


def named(name: str, **arguments: Any) -> ModelConfig:
    return ModelConfig.model_validate({"name": name, **arguments})


def build(config: ModelConfig, spec: DataSpec, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(config, spec)


def rendered(config: ModelConfig, spec: DataSpec) -> str:
    """Every problem's rendered message, one per line; fails when there is none."""
    problems = check_model(config, spec)
    assert problems, "expected at least one problem"
    return "\n".join(problem.render() for problem in problems)


def sample(spec: DataSpec, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(123)
    if spec.vocab_size is not None:
        return torch.randint(0, spec.vocab_size, (batch, *spec.input_shape), generator=generator)
    return torch.randn((batch, *spec.input_shape), generator=generator)


# ----------------------------------------------------------------------------------- every layer builds

# Values for required arguments, by parameter name; LAYER_CASES overrides per layer.
EXAMPLE_VALUES: dict[str, Any] = {
    "out_channels": 4, "kernel_size": 2, "out_features": 4, "hidden_size": 4, "output_size": 2, "padding": 1,
    "num_groups": 2, "size": 2, "embedding_dim": 4, "num_heads": 2, "nhead": 2, "upscale_factor": 2,
    "downscale_factor": 2, "groups": 2, "norm_type": 2.0, "threshold": 0.1, "value": 0.0, "dim": 1,
    "unflattened_size": [2, 4],
}
DEFAULT_SAMPLE = {1: (8,), 2: (4, 8), 3: (4, 8, 8), 4: (4, 4, 8, 8)}  # sample rank -> shape
LAYER_CASES: dict[str, tuple[dict[str, Any], tuple[int, ...]]] = {  # name -> (arguments, sample shape)
    "Fold": ({"output_size": [4, 4], "kernel_size": 2}, (8, 9)),  # 2 channels * 2*2 kernel, 3*3 blocks
    "Unflatten": ({"dim": 1, "unflattened_size": [2, 4]}, (8,)),
    "FractionalMaxPool2d": ({"kernel_size": 2, "output_ratio": 0.5}, (4, 8, 8)),
    "FractionalMaxPool3d": ({"kernel_size": 2, "output_ratio": 0.5}, (4, 4, 8, 8)),
    "Upsample": ({"scale_factor": 2}, (4, 8, 8)),
    "UpsamplingNearest2d": ({"scale_factor": 2}, (4, 8, 8)),
    "UpsamplingBilinear2d": ({"scale_factor": 2}, (4, 8, 8)),
    "TransformerEncoderLayer": ({"nhead": 2, "dim_feedforward": 16}, (4, 8)),
}
TOKEN_LAYERS = ("Embedding", "EmbeddingBag")
SKIPPED_LAYERS: dict[str, str] = {}  # name -> why it cannot be built generically (none today)


def layer_case(name: str) -> tuple[dict[str, Any], DataSpec]:
    entry = LAYERS.get(name)
    if name in LAYER_CASES:
        arguments, shape = LAYER_CASES[name]
    else:
        from trainlab.models.layers import inferred_parameters, user_parameters

        inferred = inferred_parameters(entry)
        arguments = {
            parameter: EXAMPLE_VALUES[parameter]
            for parameter, p in user_parameters(entry).items()
            if p.default is p.empty and parameter not in inferred and parameter not in ("normalized_shape",
                                                                                          "num_embeddings")
        }
        ranks = entry.capabilities.get("sample_ranks")
        shape = DEFAULT_SAMPLE[ranks[0]] if ranks else (4, 8, 8)
    if name in TOKEN_LAYERS:
        return arguments, spec_for((6,), vocab_size=20, input_dtype=torch.int64)
    return arguments, spec_for(shape)


@pytest.mark.parametrize("name", LAYERS.names())
def test_every_layer_builds_and_runs(name: str) -> None:
    if name in SKIPPED_LAYERS:
        pytest.skip(SKIPPED_LAYERS[name])
    arguments, spec = layer_case(name)
    config = stack({name: arguments} if arguments else name)
    assert check_model(config, spec) == []
    model = build(config, spec)
    output = model(sample(spec))
    assert isinstance(output, torch.Tensor) and output.shape[0] == 2
    # the meta-device shape propagation agrees with the real forward pass
    assert describe_output(model, spec).shape == tuple(output.shape[1:])


def test_registry_covers_torch_nn_and_leaves_out_non_layers() -> None:
    assert len(LAYERS) > 90
    for name in ("Conv2d", "Linear", "ReLU", "LSTM", "TransformerEncoderLayer", "Embedding", "GroupNorm"):
        assert name in LAYERS
    for name in ("CrossEntropyLoss", "LazyLinear", "ModuleList", "Sequential", "Bilinear", "Transformer"):
        assert name not in LAYERS
    assert LAYERS.get("relu").name == "ReLU" and LAYERS.get("batch_norm_2d").name == "BatchNorm2d"
    assert LAYERS.get("Sigmoid").capabilities["activation"] and not LAYERS.get("Linear").capabilities["activation"]


def test_non_layers_are_refused_with_their_reason() -> None:
    spec = spec_for((8,))
    assert "it is a loss" in rendered(stack("CrossEntropyLoss"), spec)
    assert "two inputs" in rendered(stack({"Bilinear": {"out_features": 2}}), spec)
    assert "use Linear" in rendered(stack({"LazyLinear": 4}), spec)


# ----------------------------------------------------------------------------------- init schemes


def _fans(weight: torch.Tensor) -> tuple[int, int]:
    return weight.shape[1], weight.shape[0]  # Linear (out, in)


INIT_CHECKS: dict[str, tuple[dict[str, Any], Any]] = {  # scheme -> (arguments, check of a 128x128 weight)
    "zeros_": ({}, lambda w: bool((w == 0).all())),
    "ones_": ({}, lambda w: bool((w == 1).all())),
    "constant_": ({"val": 0.3}, lambda w: torch.allclose(w, torch.full_like(w, 0.3))),
    "eye_": ({}, lambda w: torch.equal(w, torch.eye(*w.shape))),
    "normal_": ({"mean": 0.5, "std": 0.02}, lambda w: abs(w.mean() - 0.5) < 2e-3 and abs(w.std() - 0.02) < 2e-3),
    "uniform_": ({"a": -0.2, "b": 0.3}, lambda w: w.min() >= -0.2 and w.max() <= 0.3 and abs(w.mean() - 0.05) < 0.01),
    "trunc_normal_": ({"std": 1.0, "a": -0.5, "b": 0.5}, lambda w: w.abs().max() <= 0.5 and w.std() > 0.2),
    "orthogonal_": ({"gain": 2.0}, lambda w: torch.allclose(w @ w.T, 4 * torch.eye(w.shape[0]), atol=1e-3)),
    "xavier_normal_": ({}, lambda w: abs(w.std() - math.sqrt(2 / sum(_fans(w)))) < 0.05 * math.sqrt(2 / sum(_fans(w)))),
    "xavier_uniform_": ({}, lambda w: w.abs().max() <= math.sqrt(6 / sum(_fans(w)))
                        and w.abs().max() > 0.95 * math.sqrt(6 / sum(_fans(w)))),
    "kaiming_normal_": ({"nonlinearity": "relu"},
                        lambda w: abs(w.std() - math.sqrt(2 / w.shape[1])) < 0.05 * math.sqrt(2 / w.shape[1])),
    "kaiming_uniform_": ({"nonlinearity": "relu"}, lambda w: w.abs().max() <= math.sqrt(6 / w.shape[1])
                         and w.abs().max() > 0.95 * math.sqrt(6 / w.shape[1])),
    "sparse_": ({"sparsity": 0.5, "std": 0.1}, lambda w: bool(((w == 0).sum(dim=0) >= 64).all())),
}


def test_every_init_scheme_has_a_check() -> None:
    assert set(INITS.names()) == set(INIT_CHECKS)


@pytest.mark.parametrize("scheme", sorted(INIT_CHECKS))
def test_init_scheme_sets_weights_biases_and_norms(scheme: str) -> None:
    arguments, check = INIT_CHECKS[scheme]
    spec = spec_for((128,))  # 16k weights: statistics within a few percent
    config = stack({"Linear": 128}, "BatchNorm1d", "ReLU", {"Linear": "num_classes"})
    assert check_model(config.model_copy(update={"init": InitConfig(name=scheme, **arguments)}), spec) == []
    model = build(config, spec)
    with torch.no_grad():  # move everything init should reset away from its value
        for module in model.modules():
            for parameter in module.parameters(recurse=False):
                parameter.fill_(7.0)
    torch.manual_seed(1)
    apply_init(model, InitConfig(name=scheme, **arguments))
    first, norm, last = model[0], model[1], model[3]
    assert check(first.weight.detach())
    assert not (last.weight == 7).any()
    assert (first.bias == 0).all() and (last.bias == 0).all()
    assert (norm.weight == 1).all() and (norm.bias == 0).all()


def test_init_covers_conv_recurrent_attention_and_norm_layers() -> None:
    spec = spec_for((3, 8, 8))
    config = stack(
        {"Conv2d": {"out_channels": 4, "kernel_size": 3, "padding": 1}}, "BatchNorm2d", {"GroupNorm": 2},
        {"Flatten": [2]},  # (4, 64): a sequence of 4 steps
        {"Linear": 8}, "LayerNorm", {"LSTM": {"hidden_size": 8}}, {"MultiheadAttention": {"num_heads": 2}},
        "PReLU", init="ones_",
    )
    model = build(config, spec)
    conv, lstm, attention, prelu = model[0], model[6], model[7], model[8]
    assert (conv.weight == 1).all() and (conv.bias == 0).all()
    assert (lstm.weight_ih_l0 == 1).all() and (lstm.weight_hh_l0 == 1).all() and (lstm.bias_hh_l0 == 0).all()
    assert (attention.in_proj_weight == 1).all() and (attention.in_proj_bias == 0).all()
    assert (attention.out_proj.weight == 1).all() and (attention.out_proj.bias == 0).all()
    assert (model[2].weight == 1).all() and (model[5].bias == 0).all()
    assert torch.allclose(prelu.weight, torch.tensor(0.25))  # not a weight init touches


def test_init_problems() -> None:
    spec = spec_for((8,))
    text = rendered(stack({"Linear": 4}, init="xavier_normel"), spec)
    assert "model.init.name: unknown init scheme 'xavier_normel'" in text
    assert "Received: xavier_normel." in text and "Did you mean 'xavier_normal_'?" in text
    text = rendered(stack({"Linear": 4}, init={"name": "xavier_normal_", "gian": 2}), spec)
    assert "model.init.gian: unknown argument of xavier_normal_. Received: gian=2." in text
    assert "Did you mean 'gain'?" in text
    assert "needs val" in rendered(stack({"Linear": 4}, init="constant_"), spec)
    conv = stack({"Conv2d": {"out_channels": 2, "kernel_size": 3}}, init={"name": "sparse_", "sparsity": 0.5})
    text = rendered(conv, spec_for((1, 8, 8)))
    assert "model.init.name: sparse_ cannot initialize the 4-D weight 0.weight (2, 1, 3, 3)" in text
    assert "Received: sparse_." in text


# ----------------------------------------------------------------------------------- inference and the grammar


def test_input_sizes_are_inferred_and_num_classes_filled() -> None:
    spec = spec_for((3, 12, 12), classes=5)
    config = stack(
        {"Conv2d": {"out_channels": 8, "kernel_size": 3}}, "BatchNorm2d", {"GroupNorm": 4}, "ReLU",
        {"MaxPool2d": 2}, "Flatten", {"Linear": {"out_features": 16}}, "BatchNorm1d", {"Dropout": 0.5},
        {"Linear": {"out_features": "num_classes"}},
    )
    model = build(config, spec)
    layers = model
    assert layers[0].in_channels == 3 and layers[1].num_features == 8 and layers[2].num_channels == 8
    assert layers[6].in_features == 8 * 5 * 5 and layers[7].num_features == 16 and layers[8].p == 0.5
    assert layers[9].out_features == 5
    assert model(sample(spec)).shape == (2, 5)
    regression = DataSpec("regression", (4,), target_shape=(3,))
    assert build(stack({"Linear": "num_classes"}), regression)[0].out_features == 3


def test_positional_values_follow_the_inferred_arguments() -> None:
    spec = spec_for((2, 8))
    model = build(stack({"Conv1d": [6, 3]}, {"Flatten": [1, -1]}, {"Linear": 4}), spec)
    assert (model[0].in_channels, model[0].out_channels, model[0].kernel_size) == (2, 6, (3,))
    assert model[2].in_features == 6 * 6


def test_sequence_layers_infer_sizes_and_return_the_sequence() -> None:
    tokens = spec_for((7,), classes=3, vocab_size=50, input_dtype=torch.int64)
    config = stack(
        {"Embedding": {"embedding_dim": 8}}, {"GRU": {"hidden_size": 6, "bidirectional": True}},
        {"TransformerEncoderLayer": {"nhead": 2, "dim_feedforward": 16}}, "LayerNorm",
        {"Flatten": []}, {"Linear": "num_classes"},
    )
    model = build(config, tokens)
    embedding, gru, encoder = model[0], model[1], model[2]
    assert embedding.num_embeddings == 50 and gru.input_size == 8 and gru.batch_first
    assert encoder.self_attn.embed_dim == 12 and encoder.self_attn.batch_first
    assert model[4 + 1].in_features == 7 * 12
    assert model(sample(tokens)).shape == (2, 3)


def test_embedding_takes_the_vocabulary_size() -> None:
    tokens = spec_for((5,), vocab_size=40, input_dtype=torch.int64)
    model = build(stack({"Embedding": 6}, "Flatten", {"Linear": 2}), tokens)  # the scalar is embedding_dim
    assert (model[0].num_embeddings, model[0].embedding_dim) == (40, 6)
    assert check_model(stack({"Embedding": {"num_embeddings": 50, "embedding_dim": 6}}), tokens) == []
    text = rendered(stack({"Embedding": {"num_embeddings": 20, "embedding_dim": 6}}), tokens)
    assert "model.layers[0].Embedding.num_embeddings: num_embeddings must be at least 40" in text


def test_explicit_inferred_argument_must_match_the_shape() -> None:
    text = rendered(stack({"Conv2d": {"in_channels": 3, "out_channels": 4, "kernel_size": 3}}), spec_for((1, 8, 8)))
    assert "model.layers[0].Conv2d.in_channels: in_channels must be 1" in text
    assert "Received: in_channels=3." in text
    assert check_model(stack({"Conv2d": {"in_channels": 1, "out_channels": 4, "kernel_size": 3}}),
                       spec_for((1, 8, 8))) == []


def test_blocks_repeat_and_nesting() -> None:
    spec = spec_for((2, 8, 8))
    blocks = {
        "conv_bn_relu": [{"Conv2d": {"out_channels": 4, "kernel_size": 3, "padding": 1}}, "BatchNorm2d", "ReLU"],
        "double": [{"block": "conv_bn_relu", "repeat": 2}],
    }
    config = stack({"block": "double"}, {"sequential": [{"Conv2d": [4, 1]}, "ReLU"], "repeat": 3}, "Flatten",
                   {"Linear": 3}, blocks=blocks)
    model = build(config, spec)
    double = model[0]  # block "double" -> its item 0: conv_bn_relu repeated twice
    first, second = double[0][0], double[0][1]
    assert first[0].in_channels == 2 and second[0].in_channels == 4
    assert first[0].weight is not second[0].weight and not torch.equal(first[0].weight[:, :2], second[0].weight[:, :2])
    repeated = model[1]
    assert len(repeated) == 3 and len({id(copy[0].weight) for copy in repeated}) == 3
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 5
    assert model(sample(spec)).shape == (2, 3)


def test_residual_without_projection_adds_the_input() -> None:
    spec = spec_for((4, 6, 6))
    model = build(stack({"residual": [{"Conv2d": {"out_channels": 4, "kernel_size": 3, "padding": 1}}, "Tanh"]}), spec)
    residual = model[0]
    assert isinstance(residual, Residual) and residual.projection is None
    x = sample(spec)
    assert torch.equal(model(x), x + residual.body(x))


def test_residual_projection_matches_channels_and_stride() -> None:
    spec = spec_for((4, 8, 8))
    body = [{"Conv2d": {"out_channels": 8, "kernel_size": 3, "stride": 2, "padding": 1}}, "ReLU"]
    model = build(stack({"residual": body}), spec)
    residual = model[0]
    projection = residual.projection
    assert isinstance(projection, nn.Conv2d) and projection.kernel_size == (1, 1) and projection.stride == (2, 2)
    assert (projection.in_channels, projection.out_channels, projection.bias) == (4, 8, None)
    x = sample(spec)
    assert torch.equal(model(x), projection(x) + residual.body(x))
    vectors = spec_for((6,))
    model = build(stack({"residual": [{"Linear": 10}, "ReLU"]}), vectors)
    projection = model[0].projection
    assert isinstance(projection, nn.Linear) and (projection.in_features, projection.out_features) == (6, 10)
    x = sample(vectors)
    assert torch.equal(model(x), projection(x) + model[0].body(x))


def test_shared_layers_reuse_the_same_parameters() -> None:
    spec = spec_for((8,))
    config = stack({"Linear": {"out_features": 8}, "name": "fc"}, "Tanh", {"shared": "fc"}, {"Linear": 2})
    model = build(config, spec)
    fc, shared = model[0], model[2]
    assert isinstance(shared, Shared) and shared.target is fc
    assert len([p for p in model.parameters() if p is fc.weight]) == 1
    assert not any(key.startswith("2.") for key in model.state_dict())  # one copy in checkpoints
    assert "fc.weight" in model.state_dict() and "3.weight" in model.state_dict()  # names, else positions
    x = sample(spec)
    assert torch.equal(model(x), model[3](fc(torch.tanh(fc(x)))))
    summary = summarize(model, spec)
    assert summary.total_parameters == (8 * 8 + 8) + (8 * 2 + 2)
    assert sum(row.parameters for row in summary.rows) == summary.total_parameters
    assert [row.kind for row in summary.rows].count("Shared(fc)") == 1


def test_named_layers_are_module_names() -> None:
    """A named item is the child of that name (optimizer groups address it); others keep positions."""
    spec = spec_for((8,))
    model = build(stack({"Linear": 6}, {"Linear": {"out_features": 4}, "name": "hidden"}, "ReLU",
                        {"sequential": [{"Linear": 3, "name": "inner"}]}), spec)
    names = [name for name, _ in model.named_modules() if name]
    assert names == ["0", "hidden", "2", "3", "3.inner"]
    assert model.hidden is model[1] and model(sample(spec)).shape == (2, 3)
    for bad in ("1abc", "forward", "a.b", "output_activation"):
        assert "model.layers[0].name: a layer name must be an identifier" in rendered(
            stack({"Linear": 4, "name": bad}), spec)


def test_same_seed_gives_identical_weights() -> None:
    spec = spec_for((3, 10, 10))
    config = stack({"Conv2d": {"out_channels": 4, "kernel_size": 3}}, "BatchNorm2d", {"Flatten": [2]},
                   {"LSTM": {"hidden_size": 5}}, "Flatten", {"Linear": 3}, init="xavier_uniform_")
    first, second, other = build(config, spec, seed=7), build(config, spec, seed=7), build(config, spec, seed=8)
    for a, b, c in zip(first.state_dict().values(), second.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(first[0].weight, other[0].weight)


def test_parity_with_a_hand_written_lenet() -> None:
    """Layers are built in recipe order, so a seeded build equals the tutorial's hand-written model."""
    spec = spec_for((1, 32, 32))
    model = build(named("LeNet"), spec, seed=3)
    torch.manual_seed(3)
    conv1, conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
    fc1, fc2, fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)
    assert torch.equal(model.features[0].weight, conv1.weight) and torch.equal(model.features[3].weight, conv2.weight)
    assert torch.equal(model.classifier[1].weight, fc1.weight) and torch.equal(model.classifier[5].bias, fc3.bias)
    del fc2


def test_validation_and_summaries_leave_rng_and_model_untouched() -> None:
    spec = spec_for((3, 8, 8))
    config = stack({"Conv2d": [4, 3]}, "BatchNorm2d", {"Dropout": 0.5}, "Flatten", {"Linear": 2})
    model = build(config, spec)
    before_rng = torch.get_rng_state()
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    check_model(config, spec)
    describe_output(model, spec)
    summarize(model, spec)
    assert torch.equal(before_rng, torch.get_rng_state())
    assert all(torch.equal(before_state[k], v) for k, v in model.state_dict().items())
    assert model.training


# ----------------------------------------------------------------------------------- built-in models


@pytest.mark.parametrize("shape", [(1, 32, 32), (1, 28, 28)])
@pytest.mark.parametrize("name", ["LeNet", "LeNetBN", "MLP"])
def test_builtin_models_on_small_images(name: str, shape: tuple[int, ...]) -> None:
    spec = spec_for(shape)
    config = named(name)
    assert check_model(config, spec) == []
    model = build(config, spec)
    assert model(sample(spec)).shape == (2, 10)
    if name.startswith("LeNet"):
        assert model.classifier[1].in_features == 16 * ((shape[1] - 4) // 2 - 4) // 2 * ((shape[2] - 4) // 2 - 4) // 2
        assert any(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == (name == "LeNetBN")
        assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == (2 if name == "LeNetBN" else 0)


def test_lenet_on_tiny_images_asks_for_resize() -> None:
    text = rendered(named("LeNet"), spec_for((1, 8, 8)))
    assert text.startswith("model.name: LeNet needs images of at least 16x16")
    assert "Received: input of shape (1, 8, 8)." in text and "data.resize: [32, 32]" in text
    with pytest.raises(RecipeError):
        build_model(named("LeNet"), spec_for((1, 8, 8)))


def test_mlp_options_regression_and_problems() -> None:
    regression = DataSpec("regression", (5,), target_shape=(2,))
    config = named("MLP", hidden=[16, 8], activation="gelu", dropout=0.1, norm="layernorm")
    model = build(config, regression)
    kinds = [type(m).__name__ for m in model.layers]
    assert kinds == ["Flatten", "Linear", "LayerNorm", "GELU", "Dropout", "Linear", "LayerNorm", "GELU", "Dropout",
                     "Linear"]
    assert model(sample(regression)).shape == (2, 2)
    tokens = spec_for((6,), vocab_size=30, input_dtype=torch.int64)
    assert "MLP takes float features" in rendered(named("MLP"), tokens)
    text = rendered(named("MLP", activation="Relu6x", norm="BatchNorm2d", dropout=1.5, hiden=[3]), spec_for((4,)))
    assert "model.hiden: unknown argument of MLP. Received: hiden=[3]. Did you mean 'hidden'?" in text
    text = rendered(named("MLP", activation="Relu6x", norm="BatchNorm2d", dropout=1.5), spec_for((4,)))
    assert "model.activation: expected an activation layer name. Received: activation=Relu6x." in text
    assert "Did you mean 'ReLU6'?" in text and "model.norm" in text and "model.dropout" in text


def test_resnet18_small_input_and_one_channel() -> None:
    spec = spec_for((3, 32, 32))
    config = named("resnet18", small_input=True)
    assert check_model(config, spec) == []
    model = build(config, spec)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and isinstance(model.maxpool, nn.Identity)
    assert describe_output(model, spec).shape == (10,)
    grey = spec_for((1, 32, 32), classes=10)
    model = build(named("ResNet18"), grey)
    assert model.conv1.in_channels == 1 and model.conv1.kernel_size == (7, 7) and model.fc.out_features == 10
    model.eval()
    assert model(sample(grey)).shape == (2, 10)
    summary = summarize(model, grey)
    assert summary.total_parameters == sum(p.numel() for p in model.parameters())
    assert sum(row.parameters for row in summary.rows) == summary.total_parameters


def test_pretrained_weights_are_adapted_to_the_data(monkeypatch) -> None:
    """Offline stand-in for the download: a seeded 1000-class resnet18's state dict."""
    import torchvision.models

    torch.manual_seed(5)
    imagenet = torchvision.models.resnet18().state_dict()
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", lambda *args, **kwargs: imagenet)
    model = build(named("resnet18", pretrained=True), spec_for((1, 32, 32), classes=4))
    assert model.fc.out_features == 4 and model.conv1.in_channels == 1
    assert torch.allclose(model.conv1.weight, imagenet["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(model.layer1[0].conv1.weight, imagenet["layer1.0.conv1.weight"])
    assert "would overwrite the pretrained weights" in rendered(named("resnet18", pretrained=True, init="zeros_"),
                                                                 spec_for((3, 32, 32)))


def test_torchvision_argument_problems() -> None:
    spec = spec_for((3, 32, 32))
    text = rendered(named("resnet18", zero_init_residul=True), spec)
    assert "model.zero_init_residul: unknown argument of resnet18" in text
    assert "Did you mean 'zero_init_residual'?" in text
    assert "model.small_input" in rendered(named("vgg11", small_input=True), spec)
    assert "model.num_classes" in rendered(named("resnet18", num_classes=3), spec)


def test_pretrained_weights_that_cannot_be_downloaded(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    spec = spec_for((3, 32, 32))
    config = named("resnet18", pretrained=True)
    assert check_model(config, spec) == []  # validation never downloads
    with pytest.raises(TrainlabError) as raised:
        build(config, spec)
    text = str(raised.value)
    assert "pretrained weights of resnet18 could not be downloaded" in text
    assert "pretrained: false" in text and "resnet18-f37072fd.pth" in text and "hub/checkpoints" in text


def test_plugin_models_register_with_the_decorator() -> None:
    @MODELS.register("TinyTestNet")
    def tiny(spec: DataSpec, width: int = 4) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(spec.input_shape), width), nn.ReLU(),
                             nn.Linear(width, spec.output_size))

    spec = spec_for((3,))
    assert build(named("TinyTestNet", width=6), spec)[1].out_features == 6
    assert "Did you mean 'width'?" in rendered(named("TinyTestNet", widht=6), spec)
    # an nn.Sequential runs the output activation as its last child, exactly once
    model = build(named("TinyTestNet", output_activation="Softmax"), spec)
    x = sample(spec)
    assert torch.allclose(model(x), nn.Sequential(*list(model)[:-1])(x).softmax(dim=1))
    assert describe_output(model, spec).final_activation == "Softmax"


def test_output_activation_for_stacks_and_builtins() -> None:
    spec = spec_for((1, 32, 32))
    model = build(named("LeNet", output_activation="log_softmax"), spec)
    assert describe_output(model, spec) == ModelOutput((10,), "LogSoftmax", False, True)
    assert torch.allclose(model(sample(spec)).exp().sum(dim=1), torch.ones(2))
    assert "model.fc.weight" not in model.state_dict() and "features.0.weight" in model.state_dict()
    vectors = spec_for((4,), classes=3)
    model = build(stack({"Linear": "num_classes"}, output_activation="Sigmoid"), vectors)
    assert describe_output(model, vectors).final_activation == "Sigmoid"
    assert describe_output(build(stack({"Linear": 3}), vectors), vectors).final_activation is None
    residual_tail = build(stack({"residual": [{"Linear": 4}, "ReLU"]}), spec_for((4,)))
    assert describe_output(residual_tail, spec_for((4,))).final_activation is None  # x + relu(...) is not a ReLU
    assert "Did you mean 'LogSoftmax'?" in rendered(stack({"Linear": 3}, output_activation="LogSoftmx"), vectors)


def test_sparse_embeddings_are_reported() -> None:
    tokens = spec_for((5,), classes=2, vocab_size=12, input_dtype=torch.int64)
    config = stack({"EmbeddingBag": {"embedding_dim": 4, "sparse": True}}, {"Linear": 2})
    output = describe_output(build(config, tokens), tokens)
    assert output.sparse and output.dense_parameters and output.shape == (2,)
    only_embedding = describe_output(build(stack({"Embedding": {"embedding_dim": 3, "sparse": True}}), tokens), tokens)
    assert only_embedding.sparse and not only_embedding.dense_parameters


# ----------------------------------------------------------------------------------- problems


def test_unknown_layer_name_suggests_the_nearest() -> None:
    text = rendered(stack({"Lineer": {"out_features": 4}}), spec_for((8,)))
    assert "model.layers[0]: unknown layer 'Lineer'. Received: Lineer. Did you mean 'Linear'?" in text


def test_bad_layer_argument_names_its_path() -> None:
    text = rendered(stack({"Conv2d": {"out_channels": 4, "kernal_size": 3}}), spec_for((1, 8, 8)))
    assert ("model.layers[0].Conv2d.kernal_size: unknown argument of Conv2d. Received: kernal_size=3. "
            "Did you mean 'kernel_size'?") in text
    assert "needs kernel_size" in rendered(stack({"Conv2d": {"out_channels": 4}}), spec_for((1, 8, 8)))
    assert "unknown argument of Linear" in rendered(stack({"Linear": {"out_features": 4, "device": "cuda"}}),
                                                     spec_for((8,)))
    assert "takes at most" in rendered(stack({"ReLU": [True, 1]}), spec_for((8,)))


def test_conv_after_flatten_explains_the_shape() -> None:
    config = stack({"Conv2d": [4, 3]}, "Flatten", {"Conv2d": {"out_channels": 4, "kernel_size": 3}}, {"Linear": 2})
    text = rendered(config, spec_for((1, 8, 8)))
    assert text.startswith("model.layers[2].Conv2d: Conv2d expects input of shape (C, H, W) per sample, "
                           "(N, C, H, W) with the batch. Received: input of shape (144,) from model.layers[1].")
    assert "move Conv2d before Flatten" in text
    assert "model.layers[3]" not in text  # nothing reported after the first impossible step


def test_impossible_sizes_are_reported_at_the_layer() -> None:
    text = rendered(stack({"Conv2d": {"out_channels": 4, "kernel_size": 9}}), spec_for((1, 8, 8)))
    assert "model.layers[0].Conv2d: Conv2d cannot take its input" in text
    assert "Received: input of shape (1, 8, 8) from the data." in text
    assert "integer token ids" in rendered(stack({"Linear": 2}), spec_for((4,), vocab_size=9, input_dtype=torch.int64))


def test_unknown_and_cyclic_blocks() -> None:
    blocks = {"conv_bn_relu": ["ReLU"], "a": [{"block": "b"}], "b": ["ReLU", {"block": "a"}]}
    text = rendered(stack({"block": "conv_bn_rlu"}, blocks=blocks), spec_for((8,)))
    assert ("model.layers[0].block: unknown block 'conv_bn_rlu'. Received: conv_bn_rlu. "
            "Did you mean 'conv_bn_relu'?") in text
    text = rendered(stack({"block": "a"}, blocks=blocks), spec_for((8,)))
    assert "model.blocks.b[1].block: block 'a' uses itself (a -> b -> a). Received: a." in text
    text = rendered(stack("ReLU", blocks={"unused": ["Relu7"]}), spec_for((8,)))
    assert "model.blocks.unused[0]: unknown layer 'Relu7'" in text  # unused blocks are checked too


def test_unknown_shared_name_and_shape_mismatch() -> None:
    spec = spec_for((8,))
    text = rendered(stack({"Linear": 8, "name": "fc2"}, {"shared": "fc3"}), spec)
    assert "model.layers[1].shared: unknown shared layer 'fc3'. Received: fc3. Did you mean 'fc2'?" in text
    text = rendered(stack({"Linear": 4, "name": "fc"}, {"shared": "fc"}), spec)
    assert "model.layers[1].shared: the shared layer 'fc' (model.layers[0]) does not fit here" in text
    assert "Received: input of shape (4,)" in text
    assert "already used" in rendered(stack({"Linear": 8, "name": "fc"}, {"Linear": 8, "name": "fc"}), spec)


def test_item_grammar_problems() -> None:
    spec = spec_for((8,))
    assert "Did you mean 'repeat'?" in rendered(stack({"Linear": 4, "repat": 2}), spec)
    assert "one layer per list item" in rendered(stack({"Linear": 4, "ReLU": None}), spec)
    assert "model.layers[0].repeat" in rendered(stack({"Linear": 4, "repeat": 0}), spec)
    assert "write {block: mine}" in rendered(stack("mine", blocks={"mine": ["ReLU"]}), spec)


def test_unknown_model_name() -> None:
    text = rendered(named("LeNat"), spec_for((1, 32, 32)))
    assert "model.name: unknown model 'LeNat'. Received: LeNat. Did you mean 'LeNet'?" in text
    assert "Did you mean 'resnet18'?" in rendered(named("resnet-181"), spec_for((3, 32, 32)))


def test_all_problems_are_collected_at_once() -> None:
    config = stack({"Lineer": 4}, {"Conv2d": {"out_channels": 4, "kernal_size": 3}}, {"block": "missing"},
                   init="xavier_normel", output_activation="Softmx")
    paths = [problem.path for problem in check_model(config, spec_for((1, 8, 8)))]
    assert paths == ["model.layers[0]", "model.layers[1].Conv2d.kernal_size", "model.layers[2].block",
                     "model.output_activation", "model.init.name"]
    with pytest.raises(RecipeError) as raised:
        build_model(config, spec_for((1, 8, 8)))
    assert len(raised.value.problems) == 5


# ----------------------------------------------------------------------------------- resolve, summary, imports


def test_resolve_model_writes_canonical_names() -> None:
    config = stack("relu", {"conv2d": {"out_channels": 2, "kernel_size": 1}, "Repeat": 2},
                   {"Sequential": ["tanh"]}, {"block": "mine"}, blocks={"mine": ["batch_norm_2d"]},
                   init="Xavier_Normal_", output_activation="log_softmax")
    resolved = resolve_model(config)
    assert resolved.layers == ["ReLU", {"Conv2d": {"out_channels": 2, "kernel_size": 1}, "repeat": 2},
                               {"sequential": ["Tanh"]}, {"block": "mine"}]
    assert resolved.blocks == {"mine": ["BatchNorm2d"]}
    assert resolved.init is not None and resolved.init.name == "xavier_normal_"
    assert resolved.output_activation == "LogSoftmax"
    mlp = resolve_model(named("mlp", activation="gelu", norm="layer_norm"))
    assert (mlp.name, mlp.arguments()) == ("MLP", {"activation": "GELU", "norm": "LayerNorm"})


def test_summary_rows_shapes_and_totals() -> None:
    spec = spec_for((1, 28, 28))
    model = build(named("LeNetBN"), spec)
    summary = summarize(model, spec)
    assert summary.total_parameters == sum(p.numel() for p in model.parameters())
    assert summary.trainable_parameters == summary.total_parameters
    assert sum(row.parameters for row in summary.rows) == summary.total_parameters
    first, last = summary.rows[0], summary.rows[-1]
    assert (first.name, first.kind, first.output_shape, first.parameters) == ("features.0", "Conv2d", (6, 24, 24), 156)
    assert (last.kind, last.output_shape) == ("Linear", (10,))
    attention = spec_for((4, 8))
    model = build(stack({"MultiheadAttention": {"num_heads": 2}}), attention)  # out_proj is never called itself
    summary = summarize(model, attention)
    assert summary.total_parameters == sum(row.parameters for row in summary.rows) == 4 * 8 * 8 + 4 * 8
    model[0].in_proj_weight.requires_grad_(False)
    assert summarize(model, attention).trainable_parameters == 8 * 8 + 4 * 8  # in_proj_weight (3E, E) frozen


class _HostSync(nn.Module):
    """A model that cannot run on the meta device: it reads a value back to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.body(x)
        return self.head(hidden) * (1.0 if hidden.sum().item() == hidden.sum().item() else 0.0)


def test_summary_of_a_model_that_cannot_run_on_meta_counts_parameters_in_their_rows() -> None:
    spec = spec_for((4,))
    model = _HostSync()
    summary = summarize(model, spec)
    rows = {row.name: row for row in summary.rows}
    assert (rows["body"].parameters, rows["body"].output_shape) == (15, (3,))
    assert (rows["head"].parameters, rows["head"].output_shape) == (8, (2,))
    assert sum(row.parameters for row in summary.rows) == summary.total_parameters == 23


def test_importing_models_does_not_import_torchvision() -> None:
    code = "import sys, trainlab.models; print('torchvision' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
