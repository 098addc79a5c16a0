"""Initialisation schemes (``model.init``): a ``torch.nn.init`` function applied by module type.

``init: kaiming_normal_`` (or ``{name: kaiming_normal_, nonlinearity: relu}``) re-initialises,
after the model is built:

- weights of Linear, Conv*/ConvTranspose*, Embedding/EmbeddingBag, the attention projections
  and the recurrent weight matrices (``weight_ih_l0``, ``weight_hh_l0``, ...) get the scheme;
- their biases are set to 0;
- normalization layers (BatchNorm*, SyncBatchNorm, InstanceNorm*, LayerNorm, GroupNorm, RMSNorm)
  get weight 1 and bias 0.

Other parameters (PReLU's slope, a plugin's own tensors) keep the values their module gave them.
Modules are visited in ``model.modules()`` order (each once, shared ones too), parameters in
registration order, so the same seed gives the same weights. ``eye_`` and ``sparse_`` work on
2-D weights only (models of Linear/Embedding layers); validation says so for any other model.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterator

import torch
from torch import nn

from trainlab.recipe.errors import Problem, missing
from trainlab.recipe.loader import join_path
from trainlab.recipe.schema import InitConfig
from trainlab.registry import Registry, UnknownName

__all__ = ["INITS", "apply_init", "check_init", "init_targets"]

INITS = Registry("init scheme")

SCHEMES = (
    "xavier_normal_", "xavier_uniform_", "kaiming_normal_", "kaiming_uniform_", "normal_", "uniform_",
    "trunc_normal_", "orthogonal_", "constant_", "zeros_", "ones_", "eye_", "sparse_",
)
TWO_DIMENSIONAL = ("eye_", "sparse_")  # torch raises on weights of any other rank
NOT_FROM_RECIPE = ("tensor", "generator")  # trainlab passes the tensor; the global RNG is seeded

for _name in SCHEMES:
    INITS.add(_name, getattr(nn.init, _name), weight_dims=(2,) if _name in TWO_DIMENSIONAL else None)

# ----------------------------------------------------------------------------------- which tensor gets what

Scheme = Callable[[torch.Tensor], Any]


def _roles(weight: str, matches: Callable[[str, str], bool]) -> Callable[[nn.Module], Iterator[tuple[str, nn.Parameter, str]]]:
    """Parameters named like a weight get ``weight`` (the scheme, or 1), those named like a bias 0."""

    def assign(module: nn.Module) -> Iterator[tuple[str, nn.Parameter, str]]:
        for name, parameter in module.named_parameters(recurse=False):
            if matches(name, "weight"):
                yield name, parameter, weight
            elif matches(name, "bias"):
                yield name, parameter, "zero"

    return assign


_exact = lambda name, kind: name == kind  # noqa: E731
_contains = lambda name, kind: kind in name  # noqa: E731
# Linear, Conv*, Embedding*: ``weight`` gets the scheme, ``bias`` is zeroed.
_weights_and_biases = _roles("scheme", _exact)
# RNN/LSTM/GRU (+ cells) and attention: every ``*weight*`` matrix gets the scheme, ``*bias*`` 0.
_matrices = _roles("scheme", _contains)
# Normalization layers: weight 1, bias 0 (nothing when affine is off).
_normalization = _roles("one", _exact)


# (module types, which of its parameters get what); the first matching row wins.
INIT_RULES: list[tuple[tuple[type, ...], Callable[[nn.Module], Iterator[tuple[str, nn.Parameter, str]]]]] = [
    ((nn.Linear, nn.modules.conv._ConvNd, nn.Embedding, nn.EmbeddingBag, nn.Bilinear), _weights_and_biases),
    ((nn.RNNBase, nn.RNNCellBase, nn.MultiheadAttention), _matrices),
    ((nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm), _normalization),
]


def init_targets(model: nn.Module) -> Iterator[tuple[str, nn.Parameter, str]]:
    """``(qualified name, parameter, "scheme" | "zero" | "one")`` for every parameter init touches."""
    for module_name, module in model.named_modules():
        for types, rule in INIT_RULES:
            if isinstance(module, types):
                for name, parameter, action in rule(module):
                    yield join_path(module_name, name) if module_name else name, parameter, action
                break


def _scheme(config: InitConfig) -> Scheme:
    entry = INITS.get(config.name)
    arguments = config.arguments()
    return lambda tensor: entry.target(tensor, **arguments)


@torch.no_grad()
def apply_init(model: nn.Module, config: InitConfig) -> nn.Module:
    """Re-initialise ``model`` in place with the scheme of ``config`` (see the module docstring)."""
    scheme = _scheme(config)
    actions: dict[str, Scheme] = {"scheme": scheme, "zero": nn.init.zeros_, "one": nn.init.ones_}
    for _, parameter, action in init_targets(model):
        actions[action](parameter)
    return model


# ----------------------------------------------------------------------------------- validation


def check_init(config: InitConfig, meta_model: nn.Module | None, path: str = "model.init") -> list[Problem]:
    """Every problem with ``model.init``: the name, its arguments against the torch signature (the
    tensor left out), and whether the scheme works on each kind of weight the model has. The
    trial runs on small CPU tensors of the weights' ranks under a forked RNG, so it leaves the
    global RNG as it was."""
    try:
        entry = INITS.get(config.name)
    except UnknownName as error:
        hint = f"Did you mean '{error.suggestions[0]}'?" if error.suggestions else \
            f"Known schemes: {', '.join(INITS.names())}."
        return [Problem(join_path(path, "name"), f"unknown init scheme '{config.name}'", config.name, hint=hint)]
    arguments = config.arguments()
    known = entry.parameters(NOT_FROM_RECIPE)
    problems = []
    # ``tensor`` leads the signature and is supplied; ``generator`` trails it and is not for recipes
    problems = entry.argument_problems(arguments, path, skip=("tensor",), refused=NOT_FROM_RECIPE)
    required = [name for name, p in known.items() if p.default is inspect.Parameter.empty and name not in arguments]
    if required:
        example = ", ".join(f"{name}: ..." for name in required)
        problems.append(Problem(path, f"{entry.name} needs {', '.join(required)}", arguments or missing(),
                                hint=f"Write init: {{name: {entry.name}, {example}}}."))
    if problems:
        return problems
    return _trial(entry.name, config, meta_model, path)


def _trial(name: str, config: InitConfig, meta_model: nn.Module | None, path: str) -> list[Problem]:
    """Apply the scheme to a small stand-in for each weight rank the model has (first one of each)."""
    examples: dict[int, tuple[str, torch.Size]] = {}
    if meta_model is not None:
        for qualified, parameter, action in init_targets(meta_model):
            if action == "scheme":
                examples.setdefault(parameter.dim(), (qualified, parameter.shape))
    else:
        examples[2] = ("a Linear weight", torch.Size((4, 4)))
    scheme = _scheme(config)
    with torch.random.fork_rng(devices=[]):
        for rank, (qualified, shape) in sorted(examples.items()):
            try:
                scheme(torch.empty(tuple(min(size, 4) for size in shape)))
            except Exception as error:
                text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                hint = "Choose a scheme that works for every layer, e.g. kaiming_normal_." \
                    if INITS.get(name).capabilities.get("weight_dims") else "Check the scheme's arguments."
                return [Problem(join_path(path, "name"), f"{name} cannot initialize the {rank}-D weight "
                                f"{qualified} {tuple(shape)}: {text}", name, hint=hint)]
    return []
