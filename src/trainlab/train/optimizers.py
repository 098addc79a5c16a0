"""Optimizers: every ``torch.optim`` optimizer, with parameter groups built from the recipe.

``optimizer: {name: SGD, lr: 0.01, momentum: 0.9, weight_decay: 1e-4, no_decay: [bias, norm],
groups: [{params: [classifier], lr: 0.1}]}`` becomes::

    torch.optim.SGD(parameter_groups(config, model), lr=0.01, momentum=0.9, weight_decay=1e-4, fused=True)

* ``fused=True`` is trainlab's choice where torch has a fused implementation for the optimizer,
  parameters and device (:func:`fused_by_default`); a recipe that sets ``foreach``, ``fused``,
  ``capturable`` or ``differentiable`` gets exactly what it asks for.
* ``no_decay`` tokens pick parameters that get ``weight_decay: 0``: ``bias`` (parameters whose
  own name is ``bias``), ``norm`` (every parameter of a normalization layer, found by module
  *type*, never by name), ``embedding`` (Embedding / EmbeddingBag weights); any other token is an
  ``fnmatch`` glob on the qualified parameter name (``encoder.*.bias``).
* ``groups`` give other settings to the parameters of some modules: ``params`` are module names
  (the module and its descendants); the group's other keys override the optimizer's arguments.
* Each group is split into a decay and a no-decay part; empty parts are left out; every torch
  param group carries a ``name`` for logging (``default``, ``default/no_decay``, ``groups[0]``...).
  Parameters keep ``model.named_parameters()`` order; a shared parameter appears once; frozen
  parameters (``requires_grad=False``) are not given to the optimizer.

:func:`check_optimizer` finds every problem before anything runs, including the constraints an
optimizer's registry entry declares (LBFGS's closure and single group, SparseAdam's sparse
gradients, Muon's 2-D matrices).
"""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from trainlab.recipe.errors import Problem, RecipeError
from trainlab.recipe.schema import OptimizerConfig
from trainlab.registry import Entry, Registry, did_you_mean
from trainlab.train.losses import argument_problems, jsonable_default

__all__ = [
    "OPTIMIZERS",
    "build_optimizer",
    "check_optimizer",
    "fused_by_default",
    "needs_closure",
    "parameter_groups",
    "resolve_optimizer",
]

# Implementation switches of torch optimizers: accepted in a recipe, left out of resolved ones
# (they change speed, not the optimization, and their best value depends on the device).
IMPLEMENTATION_ARGUMENTS = ("foreach", "fused", "capturable", "differentiable")
# Device types with fused optimizer kernels (Adam, AdamW, SGD, Adagrad) in every torch trainlab supports.
FUSED_DEVICES = ("cpu", "cuda")

# Constraints and traits that the signature does not show, by optimizer name.
CONSTRAINTS: dict[str, dict[str, Any]] = {
    "LBFGS": {
        "needs_closure": True,
        "single_group": True,
        "range_test": False,
        "range_test_reason": "LBFGS re-evaluates the loss several times per step through a closure, "
        "so one batch per learning rate (the range test) does not measure it",
    },
    "Rprop": {
        "range_test": False,
        "range_test_reason": "Rprop adapts each parameter's step size from gradient signs; lr only "
        "sets the initial step, so sweeping it shows nothing",
    },
    "SparseAdam": {"sparse_only": True, "sparse_gradients": True},
    "SGD": {"sparse_gradients": True},
    "Adagrad": {"sparse_gradients": True},
    "Muon": {"matrix_only": True},
}


def _optimizer_classes() -> list[type[torch.optim.Optimizer]]:
    classes = []
    for name in getattr(torch.optim, "__all__", dir(torch.optim)):
        candidate = getattr(torch.optim, name, None)
        if (
            isinstance(candidate, type)
            and issubclass(candidate, torch.optim.Optimizer)
            and candidate is not torch.optim.Optimizer
        ):
            classes.append(candidate)
    return classes


def _capabilities(optimizer_class: type) -> dict[str, Any]:
    parameters = inspect.signature(optimizer_class).parameters
    capabilities: dict[str, Any] = {
        "needs_closure": False,
        "sparse_only": False,
        "sparse_gradients": False,
        "single_group": False,
        "matrix_only": False,
        # the argument CyclicLR / OneCycleLR cycle when cycle_momentum is on
        "cycles_momentum": "betas" if "betas" in parameters else "momentum" if "momentum" in parameters else None,
        "weight_decay": "weight_decay" in parameters,
        "range_test": True,
        "range_test_reason": "",
    }
    capabilities.update(CONSTRAINTS.get(optimizer_class.__name__, {}))
    return capabilities


def _build_registry() -> Registry:
    registry = Registry("optimizer")
    for optimizer_class in _optimizer_classes():
        registry.add(optimizer_class.__name__, optimizer_class, **_capabilities(optimizer_class))
    return registry


OPTIMIZERS: Registry = _build_registry()


# ----------------------------------------------------------------------------------- parameters


@dataclass
class _Parameter:
    name: str  # qualified: features.1.weight
    module_name: str  # features.1 ('' for the root module)
    module: nn.Module
    attribute: str  # weight
    parameter: nn.Parameter


def _trainable_parameters(model: nn.Module) -> list[_Parameter]:
    """Trainable parameters with their owning modules, in ``model.named_parameters()`` order
    (modules in ``named_modules()`` order, each module's own parameters); shared ones once."""
    seen: set[int] = set()
    found = []
    for module_name, module in model.named_modules():
        for attribute, parameter in module.named_parameters(recurse=False):
            if id(parameter) in seen:
                continue
            seen.add(id(parameter))
            if parameter.requires_grad:
                name = f"{module_name}.{attribute}" if module_name else attribute
                found.append(_Parameter(name, module_name, module, attribute, parameter))
    return found


NORM_TYPES: tuple[type, ...] = tuple(
    getattr(nn, name)
    for name in (
        "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d",
        "SyncBatchNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LazyInstanceNorm1d",
        "LazyInstanceNorm2d", "LazyInstanceNorm3d", "LayerNorm", "GroupNorm", "LocalResponseNorm",
        "RMSNorm", "CrossMapLRN2d",
    )
    if hasattr(nn, name)
)
EMBEDDING_TYPES = (nn.Embedding, nn.EmbeddingBag)

# no_decay tokens with a meaning; any other token is a glob on qualified parameter names.
NO_DECAY_TOKENS: dict[str, Callable[[_Parameter], bool]] = {
    "bias": lambda item: item.attribute == "bias",
    "norm": lambda item: isinstance(item.module, NORM_TYPES),
    "embedding": lambda item: isinstance(item.module, EMBEDDING_TYPES),
}


def _token_matches(token: str, item: _Parameter) -> bool:
    rule = NO_DECAY_TOKENS.get(token)
    return rule(item) if rule is not None else fnmatch.fnmatchcase(item.name, token)


def _in_module(item: _Parameter, module_name: str) -> bool:
    return item.module_name == module_name or item.module_name.startswith(module_name + ".")


def _group_of(item: _Parameter, config: OptimizerConfig) -> int | None:
    """The first group whose params name the parameter's module or an ancestor."""
    for index, group in enumerate(config.groups):
        if any(_in_module(item, prefix) for prefix in group.params):
            return index
    return None


def _has_sparse_gradient(item: _Parameter) -> bool:
    return isinstance(item.module, EMBEDDING_TYPES) and item.attribute == "weight" and bool(item.module.sparse)


def _torch_arguments(entry: Entry, arguments: dict[str, Any]) -> dict[str, Any]:
    """Recipe values as torch takes them: YAML lists become tuples where torch's default is a
    tuple (betas, etas, step_sizes, ns_coefficients, Adafactor's eps)."""
    parameters = entry.parameters(("params",))
    converted = {}
    for argument, value in arguments.items():
        parameter = parameters.get(argument)
        if parameter is not None and isinstance(parameter.default, tuple) and isinstance(value, list):
            value = tuple(value)
        converted[argument] = value
    return converted


def parameter_groups(config: OptimizerConfig, model: nn.Module) -> list[dict]:
    """Torch param-group dicts for ``model``: the recipe's groups split into decay and no-decay
    parts (see the module docstring). Every dict has ``params`` and ``name``; group overrides and
    ``weight_decay: 0.0`` for no-decay parts are the only other keys, the rest comes from the
    optimizer's own arguments. Raises RecipeError for an unknown optimizer name."""
    if config.name not in OPTIMIZERS:
        raise RecipeError(problems=[_name_problem(config.name)])
    entry = OPTIMIZERS.get(config.name)
    split = bool(config.no_decay) and entry.capabilities.get("weight_decay", False)
    buckets: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for item in _trainable_parameters(model):
        group = _group_of(item, config)
        no_decay = split and any(_token_matches(token, item) for token in config.no_decay)
        buckets.setdefault((-1 if group is None else group, no_decay), []).append(item.parameter)
    result = []
    for index in range(-1, len(config.groups)):
        overrides = {} if index < 0 else _torch_arguments(entry, config.groups[index].arguments())
        base_name = "default" if index < 0 else f"groups[{index}]"
        for no_decay in (False, True):
            params = buckets.get((index, no_decay))
            if not params:
                continue
            group_dict: dict[str, Any] = {"params": params, "name": base_name, **overrides}
            if no_decay:
                group_dict["name"] = f"{base_name}/no_decay"
                group_dict["weight_decay"] = 0.0
            result.append(group_dict)
    return result


# ----------------------------------------------------------------------------------- checks


def _name_problem(name: Any) -> Problem:
    suggestions = did_you_mean(str(name), OPTIMIZERS.names())
    hint = f"Did you mean '{suggestions[0]}'?" if suggestions else f"Available: {', '.join(OPTIMIZERS.names())}."
    return Problem("optimizer.name", "unknown optimizer: expected a torch.optim class name such as AdamW",
                   received=name, hint=hint)


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _group_problems(entry: Entry, config: OptimizerConfig, model: nn.Module, items: list[_Parameter]) -> list[Problem]:
    problems: list[Problem] = []
    module_names = [name for name, _ in model.named_modules() if name]
    for index, group in enumerate(config.groups):
        path = f"optimizer.groups[{index}]"
        problems += argument_problems(entry, group.arguments(), path, skip=("params",))
        for position, prefix in enumerate(group.params):
            if prefix not in module_names:
                suggestions = did_you_mean(prefix, module_names)
                hint = (f"Did you mean '{suggestions[0]}'?" if suggestions
                        else f"Module names: {_listing(module_names, 8)} (see trainlab show-model).")
                problems.append(Problem(f"{path}.params[{position}]", "names no module of the model",
                                        received=prefix, hint=hint))
    # a parameter claimed by two groups
    reported: set[tuple[int, int]] = set()
    for item in items:
        claims = [i for i, group in enumerate(config.groups) if any(_in_module(item, p) for p in group.params)]
        for later in claims[1:]:
            if (claims[0], later) in reported:
                continue
            reported.add((claims[0], later))
            shared = [other.name for other in items
                      if any(_in_module(other, p) for p in config.groups[claims[0]].params)
                      and any(_in_module(other, p) for p in config.groups[later].params)]
            problems.append(Problem(
                f"optimizer.groups[{later}].params",
                f"parameters already in optimizer.groups[{claims[0]}]: {_listing(shared)}",
                received=config.groups[later].params,
                hint="A parameter belongs to one group; name disjoint modules (e.g. 'features' and 'classifier').",
            ))
    if config.groups and entry.capabilities.get("single_group"):
        problems.append(Problem("optimizer.groups", f"{entry.name} supports a single parameter group only",
                                received=f"{len(config.groups)} group{'s' if len(config.groups) != 1 else ''}",
                                hint="Remove groups, or use another optimizer such as AdamW."))
    return problems


def _no_decay_problems(entry: Entry, config: OptimizerConfig, items: list[_Parameter]) -> list[Problem]:
    if not config.no_decay:
        return []
    if not entry.capabilities.get("weight_decay"):
        return [Problem("optimizer.no_decay", f"{entry.name} has no weight_decay, so no_decay has nothing to switch off",
                        received=config.no_decay, hint="Remove no_decay.")]
    problems = []
    names = [item.name for item in items]
    for position, token in enumerate(config.no_decay):
        # bias / norm / embedding are categories; a model without norm layers is not an error
        # (no_decay: true means [bias, norm] for any model). A glob that matches nothing is.
        if token in NO_DECAY_TOKENS or any(_token_matches(token, item) for item in items):
            continue
        suggestions = did_you_mean(token, list(NO_DECAY_TOKENS) + names)
        hint = f"Did you mean '{suggestions[0]}'?" if suggestions else (
            "Use bias, norm, embedding, or a glob on parameter names such as '*.bias' or 'encoder.*'.")
        problems.append(Problem(f"optimizer.no_decay[{position}]",
                                "matches no parameter of the model (bias, norm, embedding or a name glob)",
                                received=token, hint=hint))
    return problems


def _constraint_problems(entry: Entry, items: list[_Parameter]) -> list[Problem]:
    problems = []
    capabilities = entry.capabilities
    if capabilities.get("sparse_only"):
        dense = [item.name for item in items if not _has_sparse_gradient(item)]
        if dense:
            problems.append(Problem(
                "optimizer.name",
                f"{entry.name} updates parameters with sparse gradients only; these have dense gradients: {_listing(dense)}",
                received=entry.name,
                hint="Use Adam or AdamW for this model, or SparseAdam with a model whose parameters are all "
                     "Embedding(sparse=True) weights.",
            ))
    elif not capabilities.get("sparse_gradients"):
        sparse = [item.name for item in items if _has_sparse_gradient(item)]
        if sparse:
            problems.append(Problem(
                "optimizer.name",
                f"{entry.name} cannot update sparse gradients, which these parameters have: {_listing(sparse)}",
                received=entry.name,
                hint="Use SparseAdam, SGD or Adagrad, or build the Embedding with sparse=False.",
            ))
    if capabilities.get("matrix_only"):
        other = [f"{item.name} {tuple(item.parameter.shape)}" for item in items if item.parameter.ndim != 2]
        if other:
            problems.append(Problem(
                "optimizer.name",
                f"{entry.name} updates 2-D weight matrices only; these parameters are not 2-D: {_listing(other)}",
                received=entry.name,
                hint="Use AdamW, or a model made of Linear layers without biases or normalization layers.",
            ))
    return problems


def _static_problems(config: OptimizerConfig, model: nn.Module) -> tuple[Entry | None, list[Problem]]:
    canonical = OPTIMIZERS.canonical(config.name)
    if canonical is None:
        return None, [_name_problem(config.name)]
    entry = OPTIMIZERS.get(canonical)
    items = _trainable_parameters(model)
    problems = argument_problems(entry, config.arguments(), "optimizer", skip=("params",))
    problems += _group_problems(entry, config, model, items)
    problems += _no_decay_problems(entry, config, items)
    problems += _constraint_problems(entry, items)
    return entry, problems


def fused_by_default(entry: Entry, config: OptimizerConfig, model: nn.Module) -> bool:
    """Whether trainlab asks torch for the optimizer's fused implementation: one kernel per step
    for all parameters instead of torch's default (a Python loop over the parameters on the CPU,
    a few multi-tensor kernels on a GPU). The same update, in another order of floating-point
    operations; on a small MLP on the CPU 1.2x faster training with AdamW, a few percent with SGD
    (docs/benchmarks.md).

    Yes when the optimizer takes ``fused`` (Adam, AdamW, SGD, Adagrad), the recipe sets none of
    the implementation switches (in the section or a group: ``foreach: true`` or ``fused: false``
    is the way back to torch's default), and every trainable parameter is a floating-point tensor
    on a device with fused kernels (the CPU or CUDA, torch>=2.4) with dense gradients (fused steps
    refuse ``Embedding(sparse=True)`` gradients)."""
    if "fused" not in entry.parameters(("params",)):
        return False
    given = set(config.arguments()).union(*(group.arguments() for group in config.groups))
    if given & set(IMPLEMENTATION_ARGUMENTS):
        return False
    items = _trainable_parameters(model)
    return bool(items) and all(
        item.parameter.device.type in FUSED_DEVICES and item.parameter.is_floating_point()
        and not _has_sparse_gradient(item)
        for item in items
    )


def _construct(entry: Entry, config: OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = parameter_groups(config, model)
    learning_rate = {"lr": config.lr} if isinstance(config.lr, (int, float)) else {}  # None/auto: torch's default
    fused = {"fused": True} if fused_by_default(entry, config, model) else {}
    return entry.target(groups, **learning_rate, **fused, **_torch_arguments(entry, config.arguments()))


def _torch_problem(entry: Entry, config: OptimizerConfig, error: Exception) -> Problem:
    return Problem("optimizer", f"torch rejected the {entry.name} settings: {error}",
                   received=config.arguments() or entry.name,
                   hint="Fix the argument values (see the torch.optim documentation).")


def check_optimizer(config: OptimizerConfig, model: nn.Module) -> list[Problem]:
    """Every problem with the optimizer section for this model; never raises for user errors.

    Unknown name (did-you-mean); arguments torch does not accept or of the wrong type (also in
    groups); groups naming no module (did-you-mean among module names) or sharing parameters;
    no_decay globs matching nothing; the optimizer's declared constraints (SparseAdam needs
    sparse gradients, others cannot take them, Muon takes 2-D matrices, LBFGS one group). When
    none of those apply, the optimizer is constructed once so torch's own value checks
    (``Invalid beta parameter``, ...) are reported here instead of at step 0.
    """
    entry, problems = _static_problems(config, model)
    if entry is not None and not problems:
        try:
            _construct(entry, config, model)
        except (ValueError, TypeError, RuntimeError) as error:
            problems.append(_torch_problem(entry, config, error))
    return problems


def build_optimizer(config: OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The torch optimizer over ``model``'s trainable parameters; RecipeError on a bad section."""
    entry, problems = _static_problems(config, model)
    if problems or entry is None:
        raise RecipeError(problems=problems)
    try:
        return _construct(entry, config, model)
    except (ValueError, TypeError, RuntimeError) as error:
        raise RecipeError(problems=[_torch_problem(entry, config, error)]) from None


def resolve_optimizer(config: OptimizerConfig) -> OptimizerConfig:
    """The optimizer section as the resolved recipe writes it: the canonical name and every
    JSON-representable argument of the torch signature with its default (tuples as lists),
    implementation switches (foreach, fused, capturable, differentiable) left out unless given.

    ``lr`` is the recipe's, or torch's default for that optimizer when the recipe gives none."""
    canonical = OPTIMIZERS.canonical(config.name)
    if canonical is None:
        raise RecipeError(problems=[_name_problem(config.name)])
    entry = OPTIMIZERS.get(canonical)
    given = config.arguments()
    resolved: dict[str, Any] = {}
    for argument, parameter in entry.parameters(("params", "lr")).items():
        if argument in given:
            resolved[argument] = jsonable_default(given[argument]) if isinstance(given[argument], tuple) else given[argument]
        elif argument not in IMPLEMENTATION_ARGUMENTS and parameter.default is not inspect.Parameter.empty:
            value = jsonable_default(parameter.default)
            if value is not ...:
                resolved[argument] = value
    for argument, value in given.items():  # anything else is kept so validation still reports it
        resolved.setdefault(argument, value)
    learning_rate = config.lr
    if learning_rate is None:  # ("auto" stays: the pipeline replaces it with the range test's choice)
        default = entry.parameters().get("lr")
        learning_rate = float(default.default) if default is not None and isinstance(default.default, (int, float)) else None
    return OptimizerConfig(name=entry.name, lr=learning_rate, no_decay=list(config.no_decay),
                           groups=[group.model_copy(deep=True) for group in config.groups], **resolved)


def needs_closure(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` must be given a closure that re-evaluates the loss (LBFGS)."""
    return any(
        isinstance(optimizer, entry.target) and entry.capabilities.get("needs_closure", False)
        for entry in OPTIMIZERS
    )
