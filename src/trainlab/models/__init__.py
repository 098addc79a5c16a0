"""Models: ``build_model(recipe.model, data_spec) -> nn.Module``.

A recipe names a model in one of two ways (``ModelConfig``):

- ``name:`` a built-in (LeNet, LeNetBN, MLP), a plugin's model, or any torchvision classifier
  (resnet18, ...); the section's extra keys are its keyword arguments (:mod:`.zoo`);
- ``layers:`` (+ ``blocks:``) a stack of torch.nn layers whose input sizes are inferred from the
  data (:mod:`.layers`).

Then ``init:`` re-initialises the weights by module type (:mod:`.init`) and
``output_activation:`` (LogSoftmax, Softmax, Sigmoid, ...) is applied to the model's output.

:func:`check_model` finds every problem without building anything real: layer stacks and models
are built on the meta device, so validation costs no memory, no compute and no RNG draws.
:func:`build_model` then builds on CPU; with the caller's ``torch.manual_seed`` the weights are
bitwise reproducible, and the only RNG use is parameter initialisation.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainlab.data.spec import DataSpec
from trainlab.models.init import INITS, apply_init, check_init
from trainlab.models.layers import (
    LAYERS,
    LayerStack,
    Residual,
    Shared,
    StackPlan,
    class_dim,
    instantiate,
    keyed,
    plan_stack,
    resolve_layers,
    shape_text,
)
from trainlab.models.summary import ModelOutput, Summary, SummaryRow, describe_output, summarize
from trainlab.models.zoo import MODELS, find_model
from trainlab.recipe.errors import Problem, RecipeError, TrainlabError
from trainlab.recipe.loader import join_path
from trainlab.recipe.schema import ModelConfig
from trainlab.registry import Entry, UnknownName

__all__ = [
    "INITS",
    "LAYERS",
    "MODELS",
    "LayerStack",
    "ModelOutput",
    "Residual",
    "Shared",
    "Summary",
    "SummaryRow",
    "build_model",
    "check_model",
    "describe_output",
    "resolve_model",
    "summarize",
]

ROOT = "model"


@dataclass
class _Prepared:
    """What validation learnt: the problems, and what building needs (the stack plan or the entry)."""

    problems: list[Problem]
    stack: StackPlan | None = None
    entry: Entry | None = None


def check_model(config: ModelConfig, spec: DataSpec) -> list[Problem]:
    """Every problem with the ``model`` section for this data, all at once; never raises for a
    user error. Builds nothing real and leaves the global RNG untouched."""
    return _prepare(config, spec).problems


def build_model(config: ModelConfig, spec: DataSpec) -> nn.Module:
    """The model of ``config`` for data described by ``spec``, on CPU, initialised with the
    global RNG (seed it first). Raises :class:`RecipeError` with every problem when the section
    is invalid, and :class:`TrainlabError` when pretrained weights cannot be downloaded."""
    prepared = _prepare(config, spec)
    if prepared.problems:
        raise RecipeError(problems=prepared.problems)
    if prepared.stack is not None:
        assert prepared.stack.plan is not None
        named: dict[str, nn.Module] = {}
        items = prepared.stack.plan.items
        model: nn.Module = LayerStack(keyed(items, [instantiate(item, named) for item in items]))
    else:
        assert prepared.entry is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torchvision's notes on its own defaults
            model = prepared.entry.target(spec, **config.arguments())
    if config.init is not None:
        apply_init(model, config.init)
    if config.output_activation is not None:
        attach_output_activation(model, _output_activation(LAYERS.get(config.output_activation), spec))
    return model


def resolve_model(config: ModelConfig) -> ModelConfig:
    """The same section with canonical names: layers and grammar keywords, the model, layer-valued
    model arguments (MLP's activation), the init scheme and the output activation. Names that
    are not registered are kept as written (validation reports them)."""
    data: dict[str, Any] = config.model_dump()
    if config.layers is not None:
        data["layers"] = resolve_layers(config.layers)
    data["blocks"] = {name: resolve_layers(items) for name, items in config.blocks.items()}
    if config.name is not None:
        try:
            entry = find_model(config.name)
        except UnknownName:
            entry = None
        if entry is not None:
            data["name"] = entry.name
            for argument in entry.capabilities.get("layer_arguments", ()):
                if isinstance(data.get(argument), str):
                    data[argument] = LAYERS.canonical(data[argument]) or data[argument]
    if config.init is not None:
        data["init"]["name"] = INITS.canonical(config.init.name) or config.init.name
    if config.output_activation is not None:
        data["output_activation"] = LAYERS.canonical(config.output_activation) or config.output_activation
    return ModelConfig.model_validate(data)


# ----------------------------------------------------------------------------------- output activation


def _apply_output_activation(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    return module.output_activation(output)


def attach_output_activation(model: nn.Module, activation: nn.Module) -> nn.Module:
    """Apply ``activation`` to the model's output, keeping the model's own parameter names (a
    wrapper would rename ``fc.weight`` to ``0.fc.weight``): it becomes the child
    ``output_activation``, which an ``nn.Sequential`` runs last by itself and any other model
    calls from a forward hook."""
    model.add_module("output_activation", activation)
    if not isinstance(model, nn.Sequential):
        model.register_forward_hook(_apply_output_activation)
    return model


def _output_activation(entry: Entry, spec: DataSpec) -> nn.Module:
    """The activation module; softmax-like ones over the class dimension (see ``class_dim``)."""
    dim = entry.parameters().get("dim")
    return entry.target(dim=class_dim(spec)) if dim is not None and dim.default is None else entry.target()


def _check_output_activation(config: ModelConfig, spec: DataSpec, output: tuple[int, ...] | None) -> list[Problem]:
    name = config.output_activation
    path = join_path(ROOT, "output_activation")
    if name is None:
        return []
    try:
        entry = LAYERS.get(name)
    except UnknownName as error:
        hint = f"Did you mean '{error.suggestions[0]}'?" if error.suggestions else \
            "Use a layer without arguments such as LogSoftmax, Softmax or Sigmoid."
        return [Problem(path, f"unknown layer '{name}'", name, hint=hint)]
    try:
        with torch.device("meta"):
            module = _output_activation(entry, spec)
            if output is not None:
                module(torch.empty((2, *output)))
    except Exception as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        received = f"output of shape {shape_text(output)}" if output is not None else name
        return [Problem(path, f"{entry.name} cannot be applied to the model's output: {text}", received,
                        hint="Use a layer without arguments such as LogSoftmax, Softmax or Sigmoid.")]
    return []


# ----------------------------------------------------------------------------------- validation


def _prepare(config: ModelConfig, spec: DataSpec) -> _Prepared:
    meta_model: nn.Module | None = None
    output: tuple[int, ...] | None = None
    if config.layers is not None:
        stack = plan_stack(config.layers, config.blocks, spec)
        prepared = _Prepared(list(stack.problems), stack=stack)
        meta_model = stack.meta_model
        output = stack.output.shape if stack.output is not None else None
    else:
        prepared, meta_model, output = _prepare_named(config, spec)
        if config.blocks:
            prepared.problems.append(Problem(join_path(ROOT, "blocks"), "blocks are used by layers:, not by a "
                                             "named model", list(config.blocks),
                                             hint="Remove blocks, or write the model as layers:."))
    prepared.problems += _check_output_activation(config, spec, output)
    if config.init is not None:
        prepared.problems += check_init(config.init, meta_model, join_path(ROOT, "init"))
        if config.arguments().get("pretrained") is True:
            prepared.problems.append(Problem(join_path(ROOT, "init"), "an init scheme would overwrite the pretrained "
                                             "weights", config.init.name,
                                             hint="Remove init, or set pretrained: false."))
    return prepared


def _prepare_named(config: ModelConfig, spec: DataSpec) -> tuple[_Prepared, nn.Module | None, tuple[int, ...] | None]:
    name = str(config.name)
    path = join_path(ROOT, "name")
    try:
        entry = find_model(name)
    except UnknownName as error:
        hint = f"Did you mean '{error.suggestions[0]}'?" if error.suggestions else \
            "Use LeNet, LeNetBN, MLP, a torchvision model such as resnet18, or write layers:."
        return _Prepared([Problem(path, f"unknown model '{name}'", name, hint=hint)]), None, None
    arguments = config.arguments()
    problems = _argument_problems(entry, arguments)
    if entry.capabilities.get("images") and len(spec.input_shape) != 3:
        problems.append(Problem(path, f"{entry.name} expects images of shape (C, H, W)",
                                f"input of shape {shape_text(tuple(spec.input_shape))}",
                                hint="Use MLP or a layer stack for data that are not images."))
    check = entry.capabilities.get("check")
    if not problems and check is not None:
        problems += check(spec, arguments, ROOT)
    prepared = _Prepared(problems, entry=entry)
    if problems:
        return prepared, None, None
    model, output, error = _try_build(entry, spec, arguments, device="meta")
    if error is not None and not entry.capabilities.get("torchvision"):
        # A plugin may not run on the meta device; try it for real, leaving the RNG as it was.
        with torch.random.fork_rng(devices=[]):
            model, output, error = _try_build(entry, spec, arguments, device="cpu")
    if error is not None:
        prepared.problems.append(error)
        return prepared, None, None
    return prepared, model, output


def _argument_problems(entry: Entry, arguments: dict[str, Any]) -> list[Problem]:
    return entry.argument_problems(arguments, ROOT, skip=("spec",))


def _try_build(entry: Entry, spec: DataSpec, arguments: dict[str, Any],
               device: str) -> tuple[nn.Module | None, tuple[int, ...] | None, Problem | None]:
    """Build the model on ``device`` and run a batch of two samples: (model, one sample's output
    shape, None), or the problem that stopped it."""
    path = join_path(ROOT, "name")
    shape = tuple(spec.input_shape)
    try:
        with torch.device(device), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = entry.target(spec, **arguments)
    except TrainlabError as error:
        return None, None, (error.problems or [Problem(path, error.message, entry.name)])[0]
    except Exception as error:
        return None, None, Problem(path, f"could not build {entry.name}: {_first_line(error)}",
                                   arguments or entry.name, hint="Check the model's arguments.")
    try:
        with torch.device(device), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            output = model(torch.zeros((2, *shape), dtype=spec.input_dtype))  # (2, *sample)
    except Exception as error:
        return None, None, Problem(path, f"{entry.name} cannot take inputs of shape {shape_text(shape)}: "
                                   f"{_first_line(error)}", f"input of shape {shape_text(shape)}",
                                   hint=_size_hint(entry, shape))
    if not isinstance(output, torch.Tensor):
        return None, None, Problem(path, f"{entry.name} returns {type(output).__name__}, not one tensor",
                                   entry.name, hint="A model for trainlab returns one tensor of outputs.")
    return model, tuple(output.shape[1:]), None


def _size_hint(entry: Entry, shape: tuple[int, ...]) -> str:
    if len(shape) == 3 and entry.capabilities.get("images"):
        if entry.capabilities.get("torchvision"):
            return (f"The images ({shape[1]}x{shape[2]}) are probably too small for {entry.name}: set "
                    "data.resize (torchvision's models are designed for [224, 224]), or use small_input: true "
                    "with a ResNet on 32x32 images.")
        return f"The images ({shape[1]}x{shape[2]}) are probably too small: set data.resize: [32, 32]."
    return f"Check that {entry.name} accepts samples of shape {shape_text(shape)}."


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
