"""Built-in models by name (``model.name``): LeNet, LeNetBN, MLP and torchvision's classifiers.

Every entry of :data:`MODELS` is a callable ``(spec, **kwargs) -> nn.Module``: the data's
:class:`DataSpec` plus the recipe's extra ``model`` keys. Plugins register theirs the same way::

    @MODELS.register("TinyNet")
    def tiny_net(spec, width: int = 16): ...

Capabilities an entry may carry: ``check(spec, arguments, path) -> list[Problem]`` (value checks
beyond the signature), ``images`` (the model needs (C, H, W) samples), ``layer_arguments``
(arguments that are layer names, canonicalised in the resolved recipe), ``torchvision``.

torchvision is imported only when a name is not a built-in (:func:`find_model`), so importing
trainlab stays quick; then every name of ``torchvision.models.list_models(module=torchvision.models)``
is registered at once.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from typing import Any, Callable, Sequence

import torch
from torch import nn

from trainlab.data.spec import DataSpec
from trainlab.models.layers import LAYERS, shape_text
from trainlab.recipe.errors import Problem, TrainlabError
from trainlab.recipe.loader import join_path
from trainlab.registry import Entry, Registry, did_you_mean

__all__ = ["MODELS", "LeNet", "MLP", "find_model", "load_torchvision_models", "model_names", "pretrained_file",
           "torchvision_model"]

MODELS = Registry("model")

# ----------------------------------------------------------------------------------- LeNet


def _lenet_features(in_channels: int, batch_norm: bool) -> nn.Sequential:
    def block(inputs: int, outputs: int) -> list[nn.Module]:
        norm: list[nn.Module] = [nn.BatchNorm2d(outputs)] if batch_norm else []
        return [nn.Conv2d(inputs, outputs, kernel_size=5), *norm, nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(in_channels, 6), *block(6, 16))


def lenet_feature_size(input_shape: Sequence[int]) -> int | None:
    """Width of LeNet's flattened features for one (C, H, W) sample, or None when the image is
    too small for two 5x5 convolutions and two 2x2 poolings (less than 16x16). Computed on the
    meta device: no memory, no RNG."""
    if len(input_shape) != 3:
        return None
    with torch.device("meta"):
        probe = _lenet_features(input_shape[0], batch_norm=False)
        try:
            features = probe(torch.empty(2, *input_shape))  # (2, 16, h, w)
        except RuntimeError:
            return None
    return math.prod(features.shape[1:])


class LeNet(nn.Module):
    """LeNet-5 as in the PyTorch tutorials: conv(6, 5x5)-ReLU-maxpool(2), conv(16, 5x5)-ReLU-maxpool(2),
    flatten, Linear 120-ReLU-84-ReLU-num_classes. The first Linear's input width follows from the
    image size (16*5*5 for 32x32, 16*4*4 for 28x28). ``batch_norm`` (LeNetBN) adds BatchNorm2d
    after each convolution and BatchNorm1d after the first Linear."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, batch_norm: bool = False):
        super().__init__()
        flat = lenet_feature_size(input_shape)
        if flat is None:
            raise ValueError(f"LeNet needs (C, H, W) images of at least 16x16, got {tuple(input_shape)}")
        self.features = _lenet_features(input_shape[0], batch_norm)  # (B, C, H, W) -> (B, 16, h, w)
        norm: list[nn.Module] = [nn.BatchNorm1d(120)] if batch_norm else []
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, 16 * h * w)
            nn.Linear(flat, 120), *norm, nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),  # (B, num_classes) logits
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _check_lenet(spec: DataSpec, arguments: dict[str, Any], path: str) -> list[Problem]:
    shape = tuple(spec.input_shape)
    if len(shape) == 3 and lenet_feature_size(shape) is None:
        return [Problem(join_path(path, "name"), "LeNet needs images of at least 16x16 pixels (two 5x5 "
                        "convolutions, each followed by 2x2 max pooling)", f"input of shape {shape_text(shape)}",
                        hint="Set data.resize: [32, 32] (LeNet's classic input size).")]
    return []


@MODELS.register("LeNet", check=_check_lenet, images=True)
def lenet(spec: DataSpec) -> nn.Module:
    """LeNet-5: two 5x5 convolutions with max pooling, then Linear 120-84-num_classes."""
    return LeNet(spec.input_shape, spec.output_size)


@MODELS.register("LeNetBN", check=_check_lenet, images=True)
def lenet_bn(spec: DataSpec) -> nn.Module:
    """LeNet-5 with BatchNorm2d after each convolution and BatchNorm1d after the first Linear."""
    return LeNet(spec.input_shape, spec.output_size, batch_norm=True)


# ----------------------------------------------------------------------------------- MLP

MLP_NORMS = ("BatchNorm1d", "LayerNorm", "RMSNorm")  # normalizations of a (B, F) batch


def _activation(name: str) -> nn.Module:
    """An activation module by registered name; softmax-like ones get dim=-1 (the features)."""
    entry = LAYERS.get(name)
    dim = entry.parameters().get("dim")
    return entry.target(dim=-1) if dim is not None and dim.default is None else entry.target()


class MLP(nn.Module):
    """Flatten, then per hidden width: Linear -> norm (optional) -> activation -> Dropout (when > 0),
    then a Linear to ``out_features``."""

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int] = (128, 64),
                 activation: str = "ReLU", dropout: float = 0.0, norm: str | None = None):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]  # (B, ...) -> (B, in_features)
        width = in_features
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if norm is not None:
                layers.append(LAYERS.get(norm).target(size))
            layers.append(_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, out_features))  # (B, out_features)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _check_mlp(spec: DataSpec, arguments: dict[str, Any], path: str) -> list[Problem]:
    problems = []
    if spec.vocab_size is not None:
        problems.append(Problem(join_path(path, "name"), "MLP takes float features, but the inputs are integer "
                                f"token ids (vocab_size={spec.vocab_size})", "MLP",
                                hint="Write a layer stack that starts with {Embedding: {embedding_dim: 64}}."))
    hidden = arguments.get("hidden", [])
    sizes = hidden if isinstance(hidden, (list, tuple)) else [hidden]
    if not all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in sizes):
        problems.append(Problem(join_path(path, "hidden"), "expected a list of positive layer widths", hidden,
                                argument="hidden", hint="For example hidden: [128, 64], or [] for none."))
    activation = arguments.get("activation", "ReLU")
    activations = [entry.name for entry in LAYERS if entry.capabilities.get("activation")]
    entry = LAYERS.get(activation) if activation in LAYERS else None
    if entry is None or not entry.capabilities.get("activation"):
        suggestions = did_you_mean(str(activation), activations)
        hint = f"Did you mean '{suggestions[0]}'?" if suggestions else f"Use one of: {', '.join(activations)}."
        problems.append(Problem(join_path(path, "activation"), "expected an activation layer name", activation,
                                argument="activation", hint=hint))
    elif not _keeps_width(activation):
        problems.append(Problem(join_path(path, "activation"), f"{entry.name} cannot be built without arguments or "
                                "changes the width of its input", activation, argument="activation",
                                hint="Use an element-wise activation such as ReLU, GELU or Tanh."))
    dropout = arguments.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        problems.append(Problem(join_path(path, "dropout"), "expected a probability in [0, 1)", dropout,
                                argument="dropout"))
    norm = arguments.get("norm")
    if norm is not None and LAYERS.canonical(str(norm)) not in MLP_NORMS:
        suggestions = did_you_mean(str(norm), list(MLP_NORMS))
        hint = f"Did you mean '{suggestions[0]}'?" if suggestions else f"Use null or one of: {', '.join(MLP_NORMS)}."
        problems.append(Problem(join_path(path, "norm"), "expected a normalization for vectors", norm,
                                argument="norm", hint=hint))
    return problems


def _keeps_width(name: str) -> bool:
    try:
        with torch.device("meta"):
            return tuple(_activation(name)(torch.empty(2, 4)).shape) == (2, 4)
    except Exception:
        return False


@MODELS.register("MLP", check=_check_mlp, layer_arguments=("activation", "norm"))
def mlp(spec: DataSpec, hidden: Sequence[int] = (128, 64), activation: str = "ReLU", dropout: float = 0.0,
        norm: str | None = None) -> nn.Module:
    """A multilayer perceptron on the flattened input: Linear-[norm]-activation-[Dropout] per hidden width."""
    sizes = list(hidden) if isinstance(hidden, (list, tuple)) else [hidden]
    return MLP(math.prod(spec.input_shape), spec.output_size, sizes, activation, dropout, norm)


# ----------------------------------------------------------------------------------- torchvision

# Arguments trainlab passes to a freshly initialised torchvision model (never with pretrained
# weights: the builders set their own): no auxiliary heads, which would make forward return a tuple.
TORCHVISION_DEFAULTS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}
TRAINLAB_ARGUMENTS = {  # builder arguments a recipe does not give, and what to write instead
    "weights": "write pretrained: true for the default weights",
    "progress": "downloads are reported by trainlab",
    "num_classes": "it comes from the data (classes, or regression targets)",
}


def _is_meta() -> bool:
    """True inside ``with torch.device("meta")``: a validation build that must not download."""
    return torch.empty(0).device.type == "meta"


def _has_resnet_stem(model: nn.Module) -> bool:
    return isinstance(getattr(model, "conv1", None), nn.Conv2d) and isinstance(getattr(model, "maxpool", None),
                                                                               nn.MaxPool2d)


def _resnet_small_stem(model: nn.Module, in_channels: int) -> None:
    """CIFAR-style stem: conv1 3x3 stride 1 padding 1 and no max pooling, so 32x32 inputs keep
    their resolution into layer1. The new conv gets ResNet's own init (kaiming fan_out)."""
    old = model.conv1
    with torch.device("meta"):
        conv = nn.Conv2d(in_channels, old.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    conv = conv.to_empty(device=old.weight.device)
    if conv.weight.device.type != "meta":
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    model.conv1 = conv
    model.maxpool = nn.Identity()


# (does the model have this stem?, replace it for 32x32 inputs); the first match wins.
SMALL_INPUT_STEMS: list[tuple[Callable[[nn.Module], bool], Callable[[nn.Module, int], None]]] = [
    (_has_resnet_stem, _resnet_small_stem),
]


def _set_module(model: nn.Module, qualified: str, module: nn.Module) -> None:
    parent_name, _, child = qualified.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


@torch.no_grad()
def _adapt_in_channels(model: nn.Module, in_channels: int, pretrained: bool) -> None:
    """Replace the first Conv2d when the data has other than 3 channels, same geometry otherwise.
    Pretrained: each new channel gets the RGB filters' sum / in_channels (a grey image repeated
    on 3 channels gives the same response). Fresh: the model's own initial filters, channel i from
    RGB channel i % 3 (keeps the model's init statistics, uses no RNG)."""
    name, old = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), ("", None))
    if old is None or old.in_channels == in_channels:
        return
    with torch.device("meta"):
        conv = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation,
                         old.groups, old.bias is not None, old.padding_mode)
    conv = conv.to_empty(device=old.weight.device)
    if old.weight.device.type != "meta":
        if pretrained:
            weight = old.weight.sum(dim=1, keepdim=True) / in_channels  # (O, 1, k, k)
            conv.weight.copy_(weight.expand(-1, in_channels // old.groups, -1, -1))
        else:
            conv.weight.copy_(old.weight[:, [i % old.weight.shape[1] for i in range(in_channels // old.groups)]])
        if old.bias is not None:
            conv.bias.copy_(old.bias)
    _set_module(model, name, conv)


def _replace_classifier(model: nn.Module, categories: int, num_classes: int) -> None:
    """Give a pretrained model a new last layer with ``num_classes`` outputs (fresh weights)."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == categories:
            found = (name, nn.Linear(module.in_features, num_classes, bias=module.bias is not None))
        elif isinstance(module, nn.Conv2d) and module.out_channels == categories:  # squeezenet
            found = (name, nn.Conv2d(module.in_channels, num_classes, module.kernel_size))
    if found is not None:
        _set_module(model, *found)


def pretrained_file(name: str) -> tuple[str, str]:
    """The weight file torchvision downloads for ``name`` and the folder it looks in first."""
    import torchvision.models as tvm

    url = tvm.get_model_weights(name).DEFAULT.url
    return os.path.basename(url), os.path.join(torch.hub.get_dir(), "checkpoints")


def torchvision_model(name: str, spec: DataSpec, pretrained: bool = False, small_input: bool = False,
                      **kwargs: Any) -> nn.Module:
    """A torchvision classifier adapted to the data: num_classes outputs, the first conv for the
    data's channels, optionally a 32x32 stem (``small_input``) and the default pretrained weights."""
    import torchvision.models as tvm

    builder = tvm.get_model_builder(name)
    in_channels = spec.input_shape[0]
    if pretrained and not _is_meta():
        weights = tvm.get_model_weights(name).DEFAULT
        try:
            model = builder(weights=weights, **kwargs)
        except Exception as error:
            filename, folder = pretrained_file(name)
            raise TrainlabError("pretrained weights unavailable", [Problem(
                "model.pretrained", f"the pretrained weights of {name} could not be downloaded "
                f"({type(error).__name__}: {str(error).strip()[:120]})", True, argument="pretrained",
                hint=f"Set model.pretrained: false to train from scratch, or place {filename} in {folder} "
                "($TORCH_HOME/hub/checkpoints) and run again.")]) from None
        categories = len(weights.meta["categories"])
        if spec.output_size != categories:
            _replace_classifier(model, categories, spec.output_size)
    else:
        model = builder(weights=None, num_classes=spec.output_size, **{**TORCHVISION_DEFAULTS.get(name, {}), **kwargs})
    if small_input:
        adapt = next((adapt for test, adapt in SMALL_INPUT_STEMS if test(model)), None)
        if adapt is None:
            raise TrainlabError(f"small_input is not supported for {name}")
        adapt(model, in_channels)
    _adapt_in_channels(model, in_channels, pretrained)
    return model


def _check_torchvision(name: str, spec: DataSpec, arguments: dict[str, Any], path: str) -> list[Problem]:
    """Arguments of a torchvision model: trainlab's own (pretrained, small_input), then the model
    class's keyword arguments (the builder's return annotation is the class)."""
    import torchvision.models as tvm

    problems = []
    builder = tvm.get_model_builder(name)
    model_class = inspect.signature(builder).return_annotation
    accepted = [p for p in inspect.signature(model_class).parameters if p != "self"] \
        if isinstance(model_class, type) else []
    for argument, value in arguments.items():
        if argument in ("pretrained", "small_input"):
            if not isinstance(value, bool):
                problems.append(Problem(join_path(path, argument), "expected true or false", value,
                                        argument=argument))
        elif argument in TRAINLAB_ARGUMENTS:
            problems.append(Problem(join_path(path, argument), f"{argument} is set by trainlab: "
                                    f"{TRAINLAB_ARGUMENTS[argument]}", value, argument=argument))
        elif accepted and argument not in accepted:
            suggestions = did_you_mean(argument, accepted + ["pretrained", "small_input"])
            hint = f"Did you mean '{suggestions[0]}'?" if suggestions else \
                f"Accepted: pretrained, small_input, {', '.join(accepted)}."
            problems.append(Problem(join_path(path, argument), f"unknown argument of {name}", value,
                                    argument=argument, hint=hint))
    if problems:
        return problems
    if arguments.get("small_input") is True:
        with torch.device("meta"):
            model = builder(weights=None, num_classes=spec.output_size, **TORCHVISION_DEFAULTS.get(name, {}))
        if not any(test(model) for test, _ in SMALL_INPUT_STEMS):
            problems.append(Problem(join_path(path, "small_input"), f"{name} has no stem trainlab can adapt to "
                                    "small inputs (supported: ResNet-family models with conv1 + maxpool)", True,
                                    argument="small_input",
                                    hint="Remove small_input and resize the images instead (data.resize), or "
                                    "use resnet18 / resnet34 / resnet50 / resnext / wide_resnet."))
    return problems


_torchvision_loaded = False


def load_torchvision_models() -> None:
    """Register every torchvision classification model in :data:`MODELS` (imports torchvision)."""
    global _torchvision_loaded
    if _torchvision_loaded:
        return
    _torchvision_loaded = True
    try:
        import torchvision.models as tvm
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return
    for name in tvm.list_models(module=tvm):
        if name in MODELS:
            continue
        target = functools.partial(torchvision_model, name)
        check = functools.partial(_check_torchvision, name)
        doc = (inspect.getdoc(tvm.get_model_builder(name)) or "").split("\n\n")[0].replace("\n", " ")[:200]
        MODELS.add(name, target, description=doc, torchvision=True, images=True, check=check)


def find_model(name: str) -> Entry:
    """The entry for ``model.name``: a built-in or plugin model, else a torchvision model (which
    imports torchvision). Raises :class:`UnknownName` with suggestions from both."""
    if name in MODELS:
        return MODELS.get(name)
    load_torchvision_models()
    return MODELS.get(name)


def model_names(include_torchvision: bool = True) -> list[str]:
    """Every model name a recipe may use."""
    if include_torchvision:
        load_torchvision_models()
    return MODELS.names()


from trainlab.models import text as _text  # noqa: E402,F401  registers the text classifiers
