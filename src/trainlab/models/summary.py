"""What a built model emits (:func:`describe_output`) and its layer table (:func:`summarize`).

Both run one forward pass of a batch of two samples *on the meta device*: the model's
parameters and buffers are swapped for meta tensors with ``torch.func.functional_call``, so no
memory is used, no RNG is drawn (dropout) and no BatchNorm running statistic moves. A model that
cannot run on meta (a plugin that makes CPU tensors in forward) falls back to a deep copy in eval
mode with a forked RNG: still nothing of the original model or of the RNG changes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainlab.data.spec import DataSpec
from trainlab.models.layers import Residual, Shared, is_activation, layer_name

__all__ = ["ModelOutput", "Summary", "SummaryRow", "describe_output", "summarize", "trace"]


@dataclass
class ModelOutput:
    """What the loss stage needs to know about a model's output.

    ``shape``: one sample's output shape (no batch dimension). ``final_activation``: the canonical
    class name of the module that runs last when it is an activation (``LogSoftmax``), else None.
    ``sparse``: some parameter gets sparse gradients (``Embedding(sparse=True)``), which only a few
    optimizers accept. ``dense_parameters``: some parameter gets ordinary dense gradients.
    """

    shape: tuple[int, ...]
    final_activation: str | None = None
    sparse: bool = False
    dense_parameters: bool = True


@dataclass
class SummaryRow:
    name: str  # qualified module name, "layers.3"
    kind: str  # class name, "Conv2d"; "Shared(fc2)" for a reuse
    output_shape: tuple[int, ...]  # one sample's output (no batch dimension); () if never called
    parameters: int  # parameters first seen in this module (shared weights count once)


@dataclass
class Summary:
    rows: list[SummaryRow]
    total_parameters: int
    trainable_parameters: int


@dataclass
class _Call:
    name: str
    module: nn.Module
    output: Any


def _sample_input(spec: DataSpec, device: torch.device | str) -> torch.Tensor:
    return torch.zeros((2, *spec.input_shape), dtype=spec.input_dtype, device=device)  # (2, *sample)


def trace(model: nn.Module, spec: DataSpec) -> tuple[Any, list[_Call]]:
    """The model's output for a batch of two samples and every module call in completion order,
    without touching the model's state or the RNG (see the module docstring)."""
    try:
        return _run(model, spec, meta=True)
    except Exception:
        # A copy runs for real; its calls are reported against the original's modules (by name), so
        # parameters are counted where they live.
        output, calls = _run(copy.deepcopy(model), spec, meta=False)
        originals = dict(model.named_modules())
        return output, [_Call(call.name, originals.get(call.name, call.module), call.output) for call in calls]


def _run(model: nn.Module, spec: DataSpec, meta: bool) -> tuple[Any, list[_Call]]:
    calls: list[_Call] = []
    names = {id(module): name for name, module in model.named_modules()}

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        calls.append(_Call(names.get(id(module), "?"), module, output))

    handles = [module.register_forward_hook(record) for module in model.modules()]
    try:
        with torch.no_grad():
            if meta:
                state = {
                    name: torch.empty_like(tensor, device="meta")
                    for name, tensor in (*model.named_parameters(remove_duplicate=False),
                                         *model.named_buffers(remove_duplicate=False))
                }
                output = torch.func.functional_call(model, state, (_sample_input(spec, "meta"),), strict=False)
            else:
                model.eval()
                device = next((p.device for p in model.parameters()), torch.device("cpu"))
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    output = model(_sample_input(spec, device))
    finally:
        for handle in handles:
            handle.remove()
    return output, calls


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((t for t in map(_first_tensor, value) if t is not None), None)
    if isinstance(value, dict):
        return next((t for t in map(_first_tensor, value.values()) if t is not None), None)
    return None


def _sample_shape(value: Any) -> tuple[int, ...]:
    tensor = _first_tensor(value)
    return tuple(tensor.shape[1:]) if tensor is not None and tensor.dim() > 0 else ()


TRANSPARENT = (nn.Sequential, Shared)  # containers whose output is their last child's output


def describe_output(model: nn.Module, spec: DataSpec) -> ModelOutput:
    """One sample's output shape, the final activation, and whether gradients are sparse/dense."""
    output, calls = trace(model, spec)
    final = None
    for call in reversed(calls):  # the last module to finish, looking through plain containers
        if call.module is model or isinstance(call.module, TRANSPARENT):
            continue
        final = layer_name(call.module) if is_activation(call.module) else None
        break
    sparse_modules = [m for m in model.modules() if getattr(m, "sparse", False) is True]
    sparse_ids = {id(p) for m in sparse_modules for p in m.parameters(recurse=False)}
    return ModelOutput(
        shape=_sample_shape(output),
        final_activation=final,
        sparse=bool(sparse_ids),
        dense_parameters=any(id(p) not in sparse_ids for p in model.parameters()),
    )


def _row_module(module: nn.Module, model: nn.Module) -> bool:
    """Rows are leaves, the residual/shared wrappers, and any module that owns parameters itself."""
    owns = next(module.parameters(recurse=False), None) is not None
    if module is model:
        return owns
    return owns or isinstance(module, (Residual, Shared)) or next(module.children(), None) is None


def summarize(model: nn.Module, spec: DataSpec) -> Summary:
    """The layer table of ``trainlab show-model``: one row per leaf module (and residual / shared
    wrappers) in the order they finish in forward, with output shapes and parameter counts.

    Parameters are counted where they are first seen, so shared weights count once and the rows
    add up to the totals. Modules forward never calls directly (MultiheadAttention's out_proj)
    are counted in their nearest listed ancestor, or get a row with shape () at the end.
    """
    _, calls = trace(model, spec)
    rows: list[SummaryRow] = []
    row_of: dict[int, SummaryRow] = {}
    for call in calls:
        if id(call.module) in row_of or not _row_module(call.module, model):
            continue
        kind = f"Shared({call.module.target_name})" if isinstance(call.module, Shared) else layer_name(call.module)
        row = SummaryRow(call.name or "(model)", kind, _sample_shape(call.output), 0)
        rows.append(row)
        row_of[id(call.module)] = row
    modules = dict(model.named_modules())
    counted: set[int] = set()
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if id(p) not in counted]
        if not own:
            continue
        row = _nearest_row(name, modules, row_of)
        if row is None:
            row = SummaryRow(name or "(model)", layer_name(module), (), 0)
            rows.append(row)
            row_of[id(module)] = row
        for parameter in own:
            counted.add(id(parameter))
            row.parameters += parameter.numel()
    unique = {id(p): p for p in model.parameters()}.values()
    return Summary(
        rows=rows,
        total_parameters=sum(p.numel() for p in unique),
        trainable_parameters=sum(p.numel() for p in unique if p.requires_grad),
    )


def _nearest_row(name: str, modules: dict[str, nn.Module], row_of: dict[int, SummaryRow]) -> SummaryRow | None:
    """The row of the module ``name`` or of its closest ancestor that has one."""
    while True:
        module = modules.get(name)
        if module is not None and id(module) in row_of:
            return row_of[id(module)]
        if not name:
            return None
        name = name.rpartition(".")[0]


def render(summary: Summary) -> str:
    """A plain-text table (the CLI draws its own with rich)."""
    lines = [f"{'layer':<28} {'type':<22} {'output shape':<18} {'parameters':>12}"]
    for row in summary.rows:
        lines.append(f"{row.name:<28} {row.kind:<22} {str(row.output_shape):<18} {row.parameters:>12,}")
    lines.append(f"total parameters: {summary.total_parameters:,}  trainable: {summary.trainable_parameters:,}")
    return "\n".join(lines)

