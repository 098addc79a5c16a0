"""torch.nn layers by name, and the ``layers:`` grammar that stacks them into a model.

The registry
------------
:data:`LAYERS` holds every public ``torch.nn`` module that can be one step of a stack: torch.nn's
Module subclasses minus containers, losses, lazy modules and modules that need two inputs.
:data:`NOT_LAYERS` keeps the reason each of those is left out, so a recipe that names one is told
why instead of getting a bare "unknown layer". Capabilities an entry may carry:

``torch_class``   the torch.nn class (differs from ``target`` for the stack wrappers below)
``signature``     what arguments are bound against when the class's own ``__init__`` is ``*args``
``sample_ranks``  ranks one sample may have, with ``layout`` = the shape in words, ``"(C, H, W)"``
``activation``    an activation function module (``ModelOutput.final_activation`` reads it)
``token_input``   accepts integer token ids (Embedding, and layers that only move dimensions)

Arguments computed from the incoming shape are found by *parameter name*
(:data:`INFERRED_ARGUMENTS`, :data:`DEFAULTED_ARGUMENTS`), so a plugin layer with an
``in_channels`` parameter gets it inferred too.

The grammar (``model.layers`` and ``model.blocks``)
---------------------------------------------------
``"ReLU"``                              a layer with no arguments
``{Conv2d: {out_channels: 6, kernel_size: 5}}``   keyword arguments
``{Dropout: 0.5}`` / ``{Flatten: [1, -1]}``       one / several positional arguments, counted
                                        after the inferred ones (``{Conv2d: 16}`` is out_channels)
``{block: conv_bn_relu}``               a named list from ``model.blocks`` (blocks may use blocks)
``{sequential: [...]}``                 a nested list
``{residual: [...]}``                   ``x + f(x)``; a projection is added when shapes differ
``{shared: fc2}``                       the module named ``fc2`` again: the same weights
``repeat: N`` (any item)                N copies, each with fresh weights
``name: fc2`` (any item but shared)     names the item for ``{shared: fc2}``
The value ``num_classes`` anywhere in the arguments is the data's output size.

Module layout: the model is a :class:`LayerStack`, an ``nn.Sequential`` whose child ``"3"`` is
recipe item ``model.layers[3]``, or ``"fc2"`` when the item has ``name: fc2``. Parameter names are
therefore those of the hand-written ``nn.Sequential`` (``0.weight``), and a named layer is a module
name an optimizer group can address (``groups: [{params: [fc2], lr: ...}]``). An item that
expands to several modules (a block, ``sequential``, ``repeat: N``) is an ``nn.Sequential`` whose
children follow the same rule.

How it is built
---------------
:func:`plan_stack` walks the recipe once and propagates one sample's shape through a
meta-device copy of each layer (``torch.device("meta")``: no memory, no compute, no RNG), which
fills the inferred arguments and turns every impossible step into a :class:`Problem` that names
the layer's key path and the shape it received. :func:`instantiate` then builds the real modules
from the plan, in recipe order, so the only RNG use is torch's own parameter initialisation, in the
order a hand-written ``nn.Sequential`` of the same layers would use it.
"""

from __future__ import annotations

import inspect
import math
import warnings
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin

from trainlab.data.spec import DataSpec
from trainlab.recipe.errors import Problem, missing
from trainlab.recipe.loader import join_path
from trainlab.registry import Entry, Registry, UnknownName, did_you_mean, normalize_name

__all__ = [
    "LAYERS",
    "NOT_LAYERS",
    "INFERRED_ARGUMENTS",
    "DEFAULTED_ARGUMENTS",
    "LayerStack",
    "Residual",
    "Shared",
    "RNN",
    "LSTM",
    "GRU",
    "LSTMCell",
    "MultiheadAttention",
    "StackPlan",
    "plan_stack",
    "instantiate",
    "layer_name",
    "class_dim",
    "user_parameters",
    "resolve_layers",
]

LAYERS = Registry("layer")

# ----------------------------------------------------------------------------------- modules a stack is made of


class LayerStack(nn.Sequential):
    """A model written as ``layers:``: child ``"i"`` is recipe item ``model.layers[i]``, or the
    item's ``name:`` when it has one (see the module docstring)."""


class Residual(nn.Module):
    """``projection(x) + body(x)``, or ``x + body(x)`` when the body keeps the shape.

    The projection trainlab inserts when the shapes differ is a bias-free 1x1 convolution with
    the stride that matches the body's downsampling (ResNet's option B without its BatchNorm)
    for channel-first tensors, and a bias-free Linear for vectors and (T, F) sequences.
    """

    def __init__(self, body: nn.Module, projection: nn.Module | None = None):
        super().__init__()
        self.body = body
        self.register_module("projection", projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.projection is None else self.projection(x)
        return identity + self.body(x)


class Shared(nn.Module):
    """Calls the module named ``target_name`` again: the same instance, the same weights.

    The module is held as a plain attribute, not registered as a child, so it appears once in
    ``state_dict()`` (safetensors refuses duplicated tensors) and in ``parameters()``; it is
    registered at the place that defined it. ``deepcopy`` keeps the sharing (memo).
    """

    def __init__(self, target: nn.Module, target_name: str):
        super().__init__()
        self.__dict__["target"] = target  # not a child: see the class docstring
        self.target_name = target_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(x)

    def extra_repr(self) -> str:
        return f"{self.target_name}: {self.target.__class__.__name__}"


# Recurrent layers return (output, hidden state); in a stack only the output sequence goes on.
# These subclasses keep torch's parameter names and __init__, so weights load either way.


class _OutputSequence:
    """Mixin for recurrent layers in a stack: return only the output sequence (B, T, D*H), not the
    final hidden state(s). batch_first defaults to true in a stack."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # (B, T, F) -> (B, T, D*H)
        output, _ = super().forward(input)  # type: ignore[misc]
        return output


class RNN(_OutputSequence, nn.RNN):
    """nn.RNN in a stack: returns only the output sequence (B, T, D*H)."""


class LSTM(_OutputSequence, nn.LSTM):
    """nn.LSTM in a stack: returns only the output sequence (B, T, D*H), not (h_n, c_n)."""


class GRU(_OutputSequence, nn.GRU):
    """nn.GRU in a stack: returns only the output sequence (B, T, D*H)."""


class LSTMCell(nn.LSTMCell):
    """nn.LSTMCell in a stack: one step from a zero state, returns h (B, H) and drops c."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, H)
        hidden, _ = super().forward(input)
        return hidden


class MultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention in a stack: self-attention (query = key = value = the input),
    returns the attended sequence (B, T, E) without the weights. batch_first defaults to true."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, E) -> (B, T, E)
        output, _ = super().forward(x, x, x, need_weights=False)
        return output


def _rnn_signature(
    input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh", bias: bool = True,
    batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, device: Any = None,
    dtype: Any = None,
) -> None:
    """nn.RNN's arguments (its ``__init__`` is ``*args, **kwargs``)."""


def _lstm_signature(
    input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True, batch_first: bool = False,
    dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0, device: Any = None, dtype: Any = None,
) -> None:
    """nn.LSTM's arguments (its ``__init__`` is ``*args, **kwargs``)."""


def _gru_signature(
    input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True, batch_first: bool = False,
    dropout: float = 0.0, bidirectional: bool = False, device: Any = None, dtype: Any = None,
) -> None:
    """nn.GRU's arguments (its ``__init__`` is ``*args, **kwargs``)."""


STACK_WRAPPERS: dict[str, type[nn.Module]] = {
    "RNN": RNN, "LSTM": LSTM, "GRU": GRU, "LSTMCell": LSTMCell, "MultiheadAttention": MultiheadAttention,
}
SIGNATURES: dict[str, Callable[..., Any]] = {"RNN": _rnn_signature, "LSTM": _lstm_signature, "GRU": _gru_signature}

# ----------------------------------------------------------------------------------- what is not a layer, and why

NOT_STACKABLE: dict[str, str] = {
    "Bilinear": "it takes two inputs (input1, input2)",
    "CosineSimilarity": "it compares two inputs (x1, x2)",
    "PairwiseDistance": "it compares two inputs (x1, x2)",
    "MaxUnpool1d": "it needs the indices MaxPool1d returns beside its output",
    "MaxUnpool2d": "it needs the indices MaxPool2d returns beside its output",
    "MaxUnpool3d": "it needs the indices MaxPool3d returns beside its output",
    "Transformer": "it takes two inputs (src, tgt); stack {TransformerEncoderLayer: {nhead: 4}, repeat: N} instead",
    "TransformerDecoder": "it takes two inputs (tgt, memory)",
    "TransformerDecoderLayer": "it takes two inputs (tgt, memory)",
    "TransformerEncoder": "it wraps a layer object; write {TransformerEncoderLayer: {nhead: 4}, repeat: N}",
    "AdaptiveLogSoftmaxWithLoss": "it needs the targets in forward (it is a loss)",
    "RNNBase": "it is the base class of RNN, LSTM and GRU; use one of those",
    "RNNCellBase": "it is the base class of RNNCell, LSTMCell and GRUCell; use one of those",
    "DataParallel": "it is a multi-GPU wrapper, not a layer; trainlab handles devices",
}
CONTAINERS = ("Module", "Container", "Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict")

# (test, reason) pairs, first match wins; the reason completes "'X' cannot be a layer: ..."
EXCLUSIONS: list[tuple[Callable[[str, type], bool], Callable[[str], str]]] = [
    (lambda name, cls: name in NOT_STACKABLE, lambda name: NOT_STACKABLE[name]),
    (lambda name, cls: name in CONTAINERS,
     lambda name: "it is a container; write a list, {sequential: [...]} or a named block"),
    (lambda name, cls: cls.__module__ == "torch.nn.modules.loss",
     lambda name: "it is a loss; set it under loss: {name: %s}" % name),
    (lambda name, cls: issubclass(cls, LazyModuleMixin),
     lambda name: "trainlab infers input sizes itself; use %s" % name.removeprefix("Lazy")),
]

NOT_LAYERS: dict[str, tuple[str, str]] = {}  # normalized name -> (torch name, reason)

# ----------------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Flow:
    """What reaches a layer: one sample's shape (no batch dimension), its dtype, and where it came from."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    source: str  # key path of the layer that produced it, or "the data"


def shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def class_dim(spec: DataSpec) -> int:
    """The dimension a softmax runs over: the last for sequences and token inputs, else 1 (classes
    of (B, C) logits, channels of (B, C, H, W) maps)."""
    return -1 if spec.task == "sequence" or spec.vocab_size is not None else 1


def _channels(flow: Flow, spec: DataSpec, parameter: inspect.Parameter) -> Any:
    return flow.shape[0] if flow.shape else None  # (C, ...) channel-first


def _features(flow: Flow, spec: DataSpec, parameter: inspect.Parameter) -> Any:
    return flow.shape[-1] if flow.shape else None  # (..., F) features last


def _vocabulary(flow: Flow, spec: DataSpec, parameter: inspect.Parameter) -> Any:
    integer = not (flow.dtype.is_floating_point or flow.dtype.is_complex)
    return spec.vocab_size if integer else None  # token ids in [0, vocab_size)


# Always computed from the incoming shape; a value the user types must agree with it.
INFERRED_ARGUMENTS: dict[str, Callable[[Flow, DataSpec, inspect.Parameter], Any]] = {
    "in_channels": _channels,  # Conv*, ConvTranspose*
    "in_features": _features,  # Linear
    "num_features": _channels,  # BatchNorm*, InstanceNorm*, SyncBatchNorm
    "num_channels": _channels,  # GroupNorm
    "input_size": _features,  # RNN, LSTM, GRU and the cells
    "embed_dim": _features,  # MultiheadAttention
    "d_model": _features,  # TransformerEncoderLayer
    "num_embeddings": _vocabulary,  # Embedding, EmbeddingBag on token ids
}
AT_LEAST = ("num_embeddings",)  # a typed value may exceed the inferred one (room for extra tokens)

# Filled in when the user leaves them out (None = leave torch's default).
DEFAULTED_ARGUMENTS: dict[str, Callable[[Flow, DataSpec, inspect.Parameter], Any]] = {
    "normalized_shape": lambda flow, spec, p: flow.shape[-1] if flow.shape and p.default is p.empty else None,
    "batch_first": lambda flow, spec, p: True,  # a stack is (B, T, F) throughout
    "dim": lambda flow, spec, p: class_dim(spec) if p.default is None else None,  # Softmax, LogSoftmax, Softmin
}

HIDDEN_PARAMETERS = ("device", "dtype")  # never from a recipe: trainlab places and casts the model

_SPATIAL_FAMILIES = (
    "Conv", "ConvTranspose", "BatchNorm", "InstanceNorm", "MaxPool", "AvgPool", "AdaptiveMaxPool",
    "AdaptiveAvgPool", "LPPool", "FractionalMaxPool", "Dropout", "ReflectionPad", "ReplicationPad", "CircularPad",
    "SyncBatchNorm",
)
_SPATIAL_LAYOUTS = {"1d": ((2,), "(C, L)", "(N, C, L)"), "2d": ((3,), "(C, H, W)", "(N, C, H, W)"),
                    "3d": ((4,), "(C, D, H, W)", "(N, C, D, H, W)")}
_SEQUENCE = ((2,), "(T, F)", "(N, T, F)")
_IMAGE = ((3,), "(C, H, W)", "(N, C, H, W)")
SAMPLE_LAYOUTS: dict[str, tuple[tuple[int, ...], str, str]] = {
    **{f"{family}{suffix}": layout for family in _SPATIAL_FAMILIES for suffix, layout in _SPATIAL_LAYOUTS.items()},
    "BatchNorm1d": ((1, 2), "(C,) or (C, L)", "(N, C) or (N, C, L)"),
    "SyncBatchNorm": ((1, 2, 3, 4), "(C, ...)", "(N, C, ...)"),
    "RNN": _SEQUENCE, "LSTM": _SEQUENCE, "GRU": _SEQUENCE,
    "MultiheadAttention": ((2,), "(T, E)", "(N, T, E)"), "TransformerEncoderLayer": ((2,), "(T, E)", "(N, T, E)"),
    "RNNCell": ((1,), "(F,)", "(N, F)"), "LSTMCell": ((1,), "(F,)", "(N, F)"), "GRUCell": ((1,), "(F,)", "(N, F)"),
    "Softmax2d": _IMAGE, "PixelShuffle": _IMAGE, "PixelUnshuffle": _IMAGE, "ChannelShuffle": _IMAGE,
    "Unfold": _IMAGE, "CrossMapLRN2d": _IMAGE, "UpsamplingNearest2d": _IMAGE, "UpsamplingBilinear2d": _IMAGE,
    "Fold": ((2,), "(C * prod(kernel_size), L)", "(N, C * prod(kernel_size), L)"),
    "Upsample": ((2, 3, 4), "(C, L), (C, H, W) or (C, D, H, W)", "(N, C, ...)"),
}
TOKEN_INPUT = ("Embedding", "EmbeddingBag", "Identity", "Flatten", "Unflatten")


def _register_torch_layers() -> None:
    """Register torch.nn's public Module subclasses that work as one step of a stack."""
    for name in dir(nn):
        cls = getattr(nn, name)
        if name.startswith("_") or not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            continue
        reason = next((why(name) for test, why in EXCLUSIONS if test(name, cls)), None)
        if reason is not None:
            NOT_LAYERS[normalize_name(name)] = (name, reason)
            continue
        capabilities: dict[str, Any] = {
            "torch_class": cls,
            "activation": cls.__module__ == "torch.nn.modules.activation" and cls is not nn.MultiheadAttention,
            "token_input": name in TOKEN_INPUT,
        }
        if name in SIGNATURES:
            capabilities["signature"] = SIGNATURES[name]
        if name in SAMPLE_LAYOUTS:
            ranks, layout, batched = SAMPLE_LAYOUTS[name]
            capabilities.update(sample_ranks=ranks, layout=layout, batched_layout=batched)
        target = STACK_WRAPPERS.get(name, cls)
        LAYERS.add(name, target, description=_first_paragraph(target), **capabilities)


def _first_paragraph(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")[:200]


_register_torch_layers()

# ----------------------------------------------------------------------------------- entry helpers


def user_parameters(entry: Entry) -> dict[str, inspect.Parameter]:
    """Parameters a recipe may give: the signature minus device/dtype and private ``_x`` ones."""
    return {name: p for name, p in entry.parameters().items() if name not in hidden_parameters(entry)}


def hidden_parameters(entry: Entry) -> tuple[str, ...]:
    return HIDDEN_PARAMETERS + tuple(name for name in entry.parameters() if name.startswith("_"))


def inferred_parameters(entry: Entry) -> tuple[str, ...]:
    """The entry's arguments computed from the incoming shape (a capability, else by parameter name)."""
    if "inferred" in entry.capabilities:
        return tuple(entry.capabilities["inferred"])
    return tuple(name for name in entry.parameters() if name in INFERRED_ARGUMENTS)


def layer_name(module: nn.Module) -> str:
    """The registered name of a module's class (``LSTM`` for the stack wrapper), else its class name."""
    for cls in type(module).__mro__:
        for entry in LAYERS:
            if entry.target is cls or entry.capabilities.get("torch_class") is cls:
                return entry.name
    return type(module).__name__


def is_activation(module: nn.Module) -> bool:
    for entry in LAYERS:
        if entry.capabilities.get("activation") and isinstance(entry.target, type) and isinstance(module, entry.target):
            return True
    return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# ----------------------------------------------------------------------------------- the plan


@dataclass
class LayerPlan:
    """One torch layer with every argument resolved (inferred ones included)."""

    path: str
    entry: Entry
    arguments: dict[str, Any]
    name: str | None = None
    meta: nn.Module | None = field(default=None, repr=False)


@dataclass
class SequencePlan:
    """An ``nn.Sequential``: a block, ``sequential:``, ``repeat: N`` or the top-level list."""

    path: str
    items: list["Plan"]
    name: str | None = None
    meta: nn.Module | None = field(default=None, repr=False)


@dataclass
class ResidualPlan:
    path: str
    body: SequencePlan
    projection: LayerPlan | None
    name: str | None = None
    meta: nn.Module | None = field(default=None, repr=False)


@dataclass
class SharedPlan:
    path: str
    target: str
    name: str | None = None
    meta: nn.Module | None = field(default=None, repr=False)


Plan = Union[LayerPlan, SequencePlan, ResidualPlan, SharedPlan]


@dataclass
class StackPlan:
    """The result of :func:`plan_stack`: the plan (None when there are problems), every problem
    found, the output of one sample, and a meta-device copy of the model (for init checks)."""

    plan: SequencePlan | None
    problems: list[Problem]
    output: Flow | None = None
    meta_model: nn.Module | None = None


def keyed(plans: list[Plan], modules: list[nn.Module]) -> OrderedDict[str, nn.Module]:
    """Children of a Sequential: keyed by the item's name, else by its position."""
    return OrderedDict((plan.name or str(index), module) for index, (plan, module) in enumerate(zip(plans, modules)))


def instantiate(plan: Plan, named: dict[str, nn.Module] | None = None) -> nn.Module:
    """Build real modules from a plan, depth first in recipe order (the RNG order of a hand-written
    model). Under ``torch.device("meta")`` it builds a meta copy instead."""
    named = {} if named is None else named
    module: nn.Module
    if isinstance(plan, LayerPlan):
        module = plan.entry.target(**plan.arguments)
    elif isinstance(plan, SequencePlan):
        module = nn.Sequential(keyed(plan.items, [instantiate(item, named) for item in plan.items]))
    elif isinstance(plan, ResidualPlan):
        body = instantiate(plan.body, named)
        projection = instantiate(plan.projection, named) if plan.projection is not None else None
        module = Residual(body, projection)
    else:
        module = Shared(named[plan.target], plan.target)
    if plan.name is not None:
        named[plan.name] = module
    return module


# ----------------------------------------------------------------------------------- parsing one item

MODIFIERS = ("repeat", "name")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a module name; never an index such as "3"
RESERVED_NAMES = ("output_activation",)  # the child build_model adds for model.output_activation
GRAMMAR = ("block", "sequential", "residual", "shared")


@dataclass
class _Item:
    kind: str  # "layer" or one of GRAMMAR
    key: str  # as written (a layer name, or a grammar keyword)
    value: Any
    path: str  # the item's path: model.layers[3]
    key_path: str  # the path of its arguments: model.layers[3].Conv2d (== path for a plain string)
    repeat: int = 1
    name: str | None = None


@dataclass(frozen=True)
class _Named:
    path: str
    plan: Plan


class _Planner:
    """One walk over the recipe's layers: grammar, names, arguments, shapes. Collects problems."""

    def __init__(self, blocks: dict[str, list[Any]], spec: DataSpec):
        self.blocks = blocks
        self.spec = spec
        self.problems: list[Problem] = []
        self.named: dict[str, _Named] = {}
        self.used_blocks: set[str] = set()
        self.static = False  # checking an unused block: no names, no shapes
        self.kinds: dict[str, Callable[[_Item, Flow | None, tuple[str, ...]], tuple[Plan | None, Flow | None]]] = {
            "layer": self._layer,
            "block": self._block,
            "sequential": self._sequential,
            "residual": self._residual,
            "shared": self._shared,
        }

    def problem(self, path: str, message: str, received: Any = missing(), hint: str = "",
                argument: str | None = None) -> None:
        self.problems.append(Problem(path, message, received, hint=hint, argument=argument))

    # -- lists and items

    def plan_list(self, items: Any, path: str, flow: Flow | None,
                  stack: tuple[str, ...]) -> tuple[SequencePlan | None, Flow | None]:
        if not isinstance(items, list) or not items:
            self.problem(path, "expected a non-empty list of layers", items,
                         hint="Write at least one layer, e.g. [ReLU].")
            return None, None
        plans: list[Plan] = []
        complete = True
        for index, item in enumerate(items):
            plan, flow = self.plan_item(item, join_path(path, index), flow, stack)
            if plan is None:
                complete = False
            else:
                plans.append(plan)
        if not complete:
            return None, None
        return _sequence(path, plans), flow

    def plan_item(self, item: Any, path: str, flow: Flow | None,
                  stack: tuple[str, ...]) -> tuple[Plan | None, Flow | None]:
        parsed = self._parse(item, path)
        if parsed is None:
            return None, None
        copies: list[Plan] = []
        for _ in range(parsed.repeat):
            plan, flow = self.kinds[parsed.kind](parsed, flow, stack)
            if plan is None:
                return None, None
            copies.append(plan)
        plan = copies[0] if parsed.repeat == 1 else _sequence(path, copies)
        if parsed.name is not None and not self.static:
            self._define(parsed, plan)
        return plan, flow

    def _parse(self, item: Any, path: str) -> _Item | None:
        if isinstance(item, str):
            return _Item("layer", item, None, path, path)
        if not isinstance(item, dict) or not item:
            self.problem(path, "expected a layer name such as ReLU, or a one-key mapping such as "
                         "{Conv2d: {out_channels: 6, kernel_size: 5}}", item)
            return None
        modifiers: dict[str, Any] = {}
        main: list[tuple[str, Any]] = []
        for key, value in item.items():
            word = normalize_name(str(key))
            if word in MODIFIERS:
                modifiers[word] = value
            else:
                main.append((str(key), value))
        if len(main) != 1:
            if not main:
                self.problem(path, "the item names no layer", item,
                             hint="Add the layer, e.g. {block: conv_bn_relu, repeat: 2}.")
                return None
            # keys that are neither a layer nor a keyword are most likely misspelt modifiers
            strays = [(key, value) for key, value in main if not _known_key(key)]
            if strays and len(strays) < len(main):
                for key, value in strays:
                    suggestions = did_you_mean(key, list(MODIFIERS) + list(GRAMMAR))
                    hint = f"Did you mean '{suggestions[0]}'?" if suggestions else \
                        "An item holds one layer plus repeat: and name:."
                    self.problem(join_path(path, key), "unknown key in a layer item", value, hint=hint,
                                 argument=key)
            else:
                names = " and ".join(key for key, _ in main)
                self.problem(path, f"one layer per list item, found {names}", item,
                             hint="Write each layer as its own list item.")
            return None
        key, value = main[0]
        word = normalize_name(key)
        kind = word if word in GRAMMAR else "layer"
        parsed = _Item(kind, key, value, path, join_path(path, key))
        repeat = modifiers.get("repeat", 1)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            self.problem(join_path(path, "repeat"), "repeat must be a whole number of copies, 1 or more", repeat,
                         argument="repeat")
            return None
        parsed.repeat = repeat
        name = modifiers.get("name")
        if name is not None:
            if not isinstance(name, str) or not NAME.fullmatch(name) or name in RESERVED_NAMES \
                    or hasattr(nn.Sequential(), name):
                self.problem(join_path(path, "name"), "a layer name must be an identifier (letters, digits, _; "
                             "not starting with a digit) and not an nn.Module attribute", name, argument="name",
                             hint="For example name: fc2.")
                return None
            if kind == "shared":
                self.problem(join_path(path, "name"), "a shared item reuses a named layer and cannot have a "
                             "name of its own", name, argument="name", hint=f"Share '{value}' under its own name.")
                return None
            if repeat > 1:
                self.problem(join_path(path, "name"), f"a named item cannot be repeated (repeat: {repeat} makes "
                             "several modules under one name)", name, argument="name",
                             hint="Wrap it: {sequential: [...], repeat: N, name: ...} names the whole group.")
                return None
            parsed.name = name
        return parsed

    def _define(self, parsed: _Item, plan: Plan) -> None:
        assert parsed.name is not None
        earlier = self.named.get(parsed.name)
        if earlier is not None:
            self.problem(join_path(parsed.path, "name"), f"the name '{parsed.name}' is already used by "
                         f"{earlier.path}", parsed.name, argument="name",
                         hint="Give each named layer its own name (a named layer inside a block used "
                         "twice is defined twice).")
            return
        plan.name = parsed.name
        self.named[parsed.name] = _Named(parsed.path, plan)

    # -- the five kinds of item

    def _layer(self, parsed: _Item, flow: Flow | None, stack: tuple[str, ...]) -> tuple[Plan | None, Flow | None]:
        entry = self._lookup(parsed)
        if entry is None:
            return None, None
        arguments = self._arguments(entry, parsed.value, parsed.key_path)
        if arguments is None:
            return None, None
        return self._plan_layer(entry, arguments, parsed.key_path, flow)

    def _lookup(self, parsed: _Item) -> Entry | None:
        key = parsed.key
        try:
            return LAYERS.get(key)
        except UnknownName as error:
            excluded = NOT_LAYERS.get(normalize_name(key))
            if excluded is not None:
                self.problem(parsed.path, f"'{excluded[0]}' cannot be a layer in a stack: {excluded[1]}", key)
            elif key in self.blocks:
                self.problem(parsed.path, f"unknown layer '{key}'", key,
                             hint=f"'{key}' is a block: write {{block: {key}}}.")
            else:
                hint = f"Did you mean '{error.suggestions[0]}'?" if error.suggestions else \
                    "Layer names are torch.nn class names such as Conv2d, Linear or ReLU."
                self.problem(parsed.path, f"unknown layer '{key}'", key, hint=hint)
            return None

    def _arguments(self, entry: Entry, value: Any, path: str) -> dict[str, Any] | None:
        """The recipe's value of a layer as keyword arguments (positional values named)."""
        if value is None:
            return {}
        if isinstance(value, dict):
            return {str(key): argument for key, argument in value.items()}
        values = value if isinstance(value, list) else [value]
        inferred = inferred_parameters(entry)
        names = [
            name for name, p in user_parameters(entry).items()
            if name not in inferred and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(values) > len(names):
            accepted = ", ".join(names) or "none"
            hint = f"Give keyword arguments as a mapping, e.g. {{{entry.name}: {{{names[0]}: ...}}}}." if names \
                else f"Write it without arguments: {entry.name}."
            self.problem(path, f"{entry.name} takes at most {len(names)} positional values ({accepted})", value,
                         hint=hint)
            return None
        return dict(zip(names, values))

    def _plan_layer(self, entry: Entry, given: dict[str, Any], path: str,
                    flow: Flow | None) -> tuple[Plan | None, Flow | None]:
        """Check and resolve one layer's arguments, then run its meta copy on the incoming shape."""
        count = len(self.problems)
        known = user_parameters(entry)
        # device/dtype/_private are not for recipes: reported like unknown ones
        self.problems += entry.argument_problems(given, path, refused=hidden_parameters(entry))
        if len(self.problems) > count:
            return None, None
        arguments = {name: self._value(value) for name, value in given.items()}
        inferred = inferred_parameters(entry)
        if flow is None:  # shapes unknown (after another problem): only what needs no shape
            self._missing(entry, arguments, path, given, exempt=inferred + tuple(DEFAULTED_ARGUMENTS))
            return None, None
        if not self._input_fits(entry, flow, path):
            return None, None
        for name in inferred:
            value = INFERRED_ARGUMENTS[name](flow, self.spec, known.get(name)) if name in INFERRED_ARGUMENTS else None
            if value is None:
                continue
            if name in AT_LEAST and name in arguments:
                if not isinstance(arguments[name], int) or arguments[name] < value:
                    self.problem(join_path(path, name), f"{name} must be at least {value}, the vocabulary size",
                                 given[name], argument=name, hint="Leave it out: trainlab takes data's vocab_size.")
            elif name in arguments and arguments[name] != value:
                self.problem(join_path(path, name), f"{name} must be {value} to match the incoming sample shape "
                             f"{shape_text(flow.shape)}", given[name], argument=name,
                             hint="Leave it out: trainlab infers it from the layer's input.")
            arguments.setdefault(name, value)
        for name, rule in DEFAULTED_ARGUMENTS.items():
            if name in known and name not in arguments:
                value = rule(flow, self.spec, known[name])
                if value is not None:
                    arguments[name] = value
        if self._missing(entry, arguments, path, given) or len(self.problems) > count:
            return None, None
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                meta = entry.target(**arguments)
        except Exception as error:  # torch's own argument validation: a user error here
            self.problem(path, f"could not build {entry.name}: {_first_line(error)}", given,
                         hint=f"Check the arguments against torch.nn.{entry.name}'s documentation.")
            return None, None
        output = self._forward(meta, entry.name, path, flow)
        if output is None:
            return None, None
        return LayerPlan(path, entry, arguments, meta=meta), output

    def _value(self, value: Any) -> Any:
        """A recipe value as torch wants it: lists -> tuples, ``num_classes`` -> the output size."""
        if isinstance(value, list):
            return tuple(self._value(item) for item in value)
        if value == "num_classes":
            return self.spec.output_size
        return value

    def _missing(self, entry: Entry, arguments: dict[str, Any], path: str, given: dict[str, Any],
                 exempt: tuple[str, ...] = ()) -> bool:
        missing_names = [
            name for name, p in user_parameters(entry).items()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            and name not in arguments and name not in exempt
        ]
        if missing_names:
            example = ", ".join(f"{name}: ..." for name in missing_names)
            self.problem(path, f"{entry.name} needs {', '.join(missing_names)}", given or missing(),
                         hint=f"Write it as {{{entry.name}: {{{example}}}}}.")
        return bool(missing_names)

    def _input_fits(self, entry: Entry, flow: Flow, path: str) -> bool:
        ranks = entry.capabilities.get("sample_ranks")
        if ranks and len(flow.shape) not in ranks:
            layout, batched = entry.capabilities["layout"], entry.capabilities["batched_layout"]
            self.problem(path, f"{entry.name} expects input of shape {layout} per sample, {batched} with the batch",
                         f"input of shape {shape_text(flow.shape)} from {flow.source}",
                         hint=self._rank_hint(entry, flow))
            return False
        if not (flow.dtype.is_floating_point or flow.dtype.is_complex) and not entry.capabilities.get("token_input"):
            self.problem(path, f"{entry.name} cannot take integer token ids",
                         f"{str(flow.dtype).removeprefix('torch.')} input of shape {shape_text(flow.shape)} "
                         f"from {flow.source}",
                         hint="Start the stack with {Embedding: {embedding_dim: 64}}: it maps token ids to vectors "
                         "(num_embeddings is the vocabulary size, inferred).")
            return False
        return True

    def _rank_hint(self, entry: Entry, flow: Flow) -> str:
        layout = entry.capabilities["layout"]
        if flow.source == "the data":
            return f"The data's samples are {shape_text(flow.shape)}; start with layers that take that shape."
        if len(flow.shape) < min(entry.capabilities["sample_ranks"]):
            return (f"The layers before it already flattened the sample to {shape_text(flow.shape)}: move "
                    f"{entry.name} before Flatten (or the layer that reduced the dimensions).")
        return f"Reshape before it (Flatten, Unflatten) so that one sample is {layout}."

    def _forward(self, meta: nn.Module, name: str, path: str, flow: Flow) -> Flow | None:
        """Run the meta copy on a meta batch of two samples (two, so BatchNorm accepts it in training)."""
        received = f"input of shape {shape_text(flow.shape)} from {flow.source}"
        try:
            with torch.device("meta"), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                output = meta(torch.empty((2, *flow.shape), dtype=flow.dtype))
        except Exception as error:
            self.problem(path, f"{name} cannot take its input: {_first_line(error)}", received,
                         hint=f"Check {name}'s arguments against that shape, or the layers before it.")
            return None
        if not isinstance(output, torch.Tensor):
            self.problem(path, f"{name} returns {type(output).__name__}, not one tensor, so it cannot be a step "
                         "of a stack", received,
                         hint="Turn off the option that makes it return several values (e.g. return_indices).")
            return None
        if output.dim() == 0 or output.shape[0] != 2:
            self.problem(path, f"{name} changes the batch dimension (output {tuple(output.shape)} for a batch of "
                         "2)", received, hint="Keep dimension 0 for the batch, e.g. Flatten with start_dim: 1.")
            return None
        return Flow(tuple(output.shape[1:]), output.dtype, path)

    def _block(self, parsed: _Item, flow: Flow | None, stack: tuple[str, ...]) -> tuple[Plan | None, Flow | None]:
        name = parsed.value
        if not isinstance(name, str) or name not in self.blocks:
            defined = list(self.blocks)
            suggestions = did_you_mean(str(name), defined) if isinstance(name, str) else []
            if suggestions:
                hint = f"Did you mean '{suggestions[0]}'?"
            elif defined:
                hint = f"Defined blocks: {', '.join(defined)}."
            else:
                hint = "Define it under model.blocks, e.g. blocks: {conv_bn_relu: [Conv2d, BatchNorm2d, ReLU]}."
            self.problem(parsed.key_path, f"unknown block '{name}'", name, hint=hint)
            return None, None
        if name in stack:
            cycle = " -> ".join((*stack[stack.index(name):], name))
            self.problem(parsed.key_path, f"block '{name}' uses itself ({cycle})", name,
                         hint="A block cannot contain itself, directly or through other blocks.")
            return None, None
        self.used_blocks.add(name)
        return self.plan_list(self.blocks[name], join_path("model.blocks", name), flow, (*stack, name))

    def _sequential(self, parsed: _Item, flow: Flow | None,
                    stack: tuple[str, ...]) -> tuple[Plan | None, Flow | None]:
        return self.plan_list(parsed.value, parsed.key_path, flow, stack)

    def _residual(self, parsed: _Item, flow: Flow | None,
                  stack: tuple[str, ...]) -> tuple[Plan | None, Flow | None]:
        body, output = self.plan_list(parsed.value, parsed.key_path, flow, stack)
        if body is None or flow is None or output is None:
            return None, None
        projection: LayerPlan | None = None
        if output.shape != flow.shape:
            projection = self._projection(parsed, flow, output)
            if projection is None:
                return None, None
        meta = Residual(body.meta, projection.meta if projection else None) if body.meta is not None else None
        return ResidualPlan(parsed.path, body, projection, meta=meta), Flow(output.shape, output.dtype, parsed.path)

    def _projection(self, parsed: _Item, flow: Flow, output: Flow) -> LayerPlan | None:
        choice = projection_for(flow.shape, output.shape)
        if isinstance(choice, str):
            self.problem(parsed.key_path, f"the residual's body turns {shape_text(flow.shape)} into "
                         f"{shape_text(output.shape)} and the input cannot be projected to that: {choice}",
                         f"input of shape {shape_text(flow.shape)} from {flow.source}",
                         hint="Keep the shape in the body, or change it by channels and an integer stride only.")
            return None
        name, arguments = choice
        entry = LAYERS.get(name)
        plan, projected = self._plan_layer(entry, arguments, join_path(parsed.key_path, "projection"), flow)
        if plan is None or projected is None or projected.shape != output.shape:
            self.problem(parsed.key_path, f"the residual's input {shape_text(flow.shape)} cannot be projected to "
                         f"the body's output {shape_text(output.shape)}", f"input of shape {shape_text(flow.shape)}",
                         hint="Use a stride that divides the spatial size, or keep the shape in the body.")
            return None
        assert isinstance(plan, LayerPlan)
        return plan

    def _shared(self, parsed: _Item, flow: Flow | None, stack: tuple[str, ...]) -> tuple[Plan | None, Flow | None]:
        name = parsed.value
        if self.static:  # an unused block: its names are never defined
            return None, None
        target = self.named.get(name) if isinstance(name, str) else None
        if target is None:
            suggestions = did_you_mean(str(name), list(self.named))
            hint = f"Did you mean '{suggestions[0]}'?" if suggestions else \
                "Name a layer first ({Linear: {out_features: 64}, name: fc2}) and share it after it: {shared: fc2}."
            self.problem(parsed.key_path, f"unknown shared layer '{name}'", name, hint=hint)
            return None, None
        if flow is None or target.plan.meta is None:
            return None, None
        source = target.plan.meta
        meta = Shared(source, name)
        received = f"input of shape {shape_text(flow.shape)} from {flow.source}"
        try:
            with torch.device("meta"), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                output = source(torch.empty((2, *flow.shape), dtype=flow.dtype))
        except Exception as error:
            self.problem(parsed.key_path, f"the shared layer '{name}' ({target.path}) does not fit here: "
                         f"{_first_line(error)}", received,
                         hint="A shared layer has fixed weights: it needs the same input size at every use.")
            return None, None
        if not isinstance(output, torch.Tensor):
            return None, None
        return SharedPlan(parsed.path, name, meta=meta), Flow(tuple(output.shape[1:]), output.dtype, parsed.path)


def _known_key(key: str) -> bool:
    word = normalize_name(key)
    return word in GRAMMAR or key in LAYERS or word in NOT_LAYERS


def _sequence(path: str, plans: list[Plan]) -> SequencePlan:
    metas = [plan.meta for plan in plans]
    meta = nn.Sequential(keyed(plans, metas)) if all(m is not None for m in metas) else None  # type: ignore[arg-type]
    return SequencePlan(path, plans, meta=meta)


_PROJECTION_CONVS = {2: "Conv1d", 3: "Conv2d", 4: "Conv3d"}  # sample rank -> 1x1 convolution


def projection_for(source: tuple[int, ...], target: tuple[int, ...]) -> tuple[str, dict[str, Any]] | str:
    """The layer that maps a residual's input shape to its body's output shape, or why none does.

    Vectors (F,) and sequences (T, F) with unchanged T: a bias-free Linear on the last dimension.
    Channel-first (C, L), (C, H, W), (C, D, H, W): a bias-free 1x1 convolution whose stride s
    reproduces each spatial size, floor((n - 1) / s) + 1 == m.
    """
    if len(source) != len(target) or not source:
        return "the body changes the number of dimensions"
    if len(source) == 1 or (len(source) == 2 and source[0] == target[0]):
        if source[:-1] != target[:-1]:
            return "only the last dimension may change"
        return "Linear", {"in_features": source[-1], "out_features": target[-1], "bias": False}
    if len(source) not in _PROJECTION_CONVS:
        return f"no projection for {len(source)}-dimensional samples"
    strides = []
    for before, after in zip(source[1:], target[1:]):
        stride = math.ceil(before / after) if after > 0 else 0
        if stride < 1 or (before - 1) // stride + 1 != after:
            return f"a size {before} cannot become {after} with an integer stride"
        strides.append(stride)
    stride = strides[0] if len(set(strides)) == 1 else tuple(strides)
    return _PROJECTION_CONVS[len(source)], {"in_channels": source[0], "out_channels": target[0], "kernel_size": 1,
                                             "stride": stride, "bias": False}


def plan_stack(layers: list[Any], blocks: dict[str, list[Any]], spec: DataSpec,
               path: str = "model.layers") -> StackPlan:
    """Check a ``layers:`` list against the data and resolve every argument; see the module docstring."""
    planner = _Planner(blocks or {}, spec)
    flow = Flow(tuple(spec.input_shape), spec.input_dtype, "the data")
    plan, output = planner.plan_list(layers, path, flow, ())
    planner.static = True  # blocks no item uses are still checked: names and arguments
    for name, items in (blocks or {}).items():
        if name not in planner.used_blocks:
            planner.plan_list(items, join_path("model.blocks", name), None, (name,))
    problems = _unique(planner.problems)
    if problems or plan is None:
        return StackPlan(None, problems)
    meta_model = LayerStack(OrderedDict(plan.meta.named_children())) if plan.meta is not None else None
    return StackPlan(plan, [], output, meta_model)


def _unique(problems: list[Problem]) -> list[Problem]:
    """A block used twice reports its problem once."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for problem in problems:
        key = (problem.path, problem.message)
        if key not in seen:
            seen.add(key)
            unique.append(problem)
    return unique


def resolve_layers(items: Any) -> Any:
    """The same ``layers:`` list with canonical layer names and grammar keywords (unknown names kept)."""
    if not isinstance(items, list):
        return items
    return [_resolve_item(item) for item in items]


def _resolve_item(item: Any) -> Any:
    if isinstance(item, str):
        return LAYERS.canonical(item) or item
    if not isinstance(item, dict):
        return item
    resolved: dict[str, Any] = {}
    for key, value in item.items():
        word = normalize_name(str(key))
        if word in ("sequential", "residual"):
            resolved[word] = resolve_layers(value)
        elif word in GRAMMAR or word in MODIFIERS:
            resolved[word] = value
        else:
            resolved[LAYERS.canonical(str(key)) or key] = value
    return resolved
