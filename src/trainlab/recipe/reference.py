"""The recipe reference (docs/recipe.md), generated from the schema: one source of truth.

``trainlab schema --markdown > docs/recipe.md`` regenerates it; a test fails when it is stale.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from trainlab.recipe.schema import (
    CsvData,
    DigitsData,
    EarlyStopping,
    EvaluateConfig,
    IdxData,
    ImagesData,
    Impute,
    InitConfig,
    LogConfig,
    LossConfig,
    LRFind,
    ModelConfig,
    OptimizerConfig,
    ParamGroup,
    Recipe,
    ScheduleConfig,
    Split,
    SyntheticData,
    TextData,
    TorchArguments,
    TrainConfig,
    Transforms,
    Warmup,
)

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("recipe", Recipe),
    ("data (source: sklearn-digits)", DigitsData),
    ("data (source: synthetic)", SyntheticData),
    ("data (source: images)", ImagesData),
    ("data (source: idx)", IdxData),
    ("data.transforms (images, idx)", Transforms),
    ("data (source: csv)", CsvData),
    ("data.impute (csv)", Impute),
    ("data (source: text)", TextData),
    ("data.split", Split),
    ("model", ModelConfig),
    ("model.init", InitConfig),
    ("loss", LossConfig),
    ("optimizer", OptimizerConfig),
    ("optimizer.groups[]", ParamGroup),
    ("optimizer.lr_find", LRFind),
    ("schedule", ScheduleConfig),
    ("schedule.warmup", Warmup),
    ("train", TrainConfig),
    ("train.early_stopping", EarlyStopping),
    ("log", LogConfig),
    ("evaluate", EvaluateConfig),
]


def _type_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        shown = dict.fromkeys(_type_text(argument) for argument in typing.get_args(annotation))
        return " \\| ".join(shown)  # a union of section models reads "mapping" once
    if origin in (list, dict):
        inner = ", ".join(_type_text(argument) for argument in typing.get_args(annotation))
        return f"{origin.__name__}[{inner}]"
    if origin is typing.Annotated:
        return _type_text(typing.get_args(annotation)[0])
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "mapping"
        return {"str": "text", "int": "integer", "float": "number", "bool": "true/false"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation).replace("typing.", "")


def _default_text(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(see below)"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def render_reference() -> str:
    """docs/recipe.md: every section's keys with type, default and description."""
    lines = [
        "# Recipe reference",
        "",
        "Generated from `src/trainlab/recipe/schema.py` by `trainlab schema --markdown`; do not edit by hand.",
        "Unknown keys are errors. Sections marked *torch arguments* also take the keyword arguments of the",
        "torch object they name (checked against its signature before training).",
        "",
    ]
    for title, model in SECTIONS:
        lines.append(f"## {title}")
        lines.append("")
        doc = (model.__doc__ or "").strip().replace("\n", " ")
        if doc:
            lines += [" ".join(doc.split()), ""]
        if issubclass(model, TorchArguments):
            lines += ["*torch arguments*: extra keys are passed to the named torch object.", ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            description = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | {_type_text(field.annotation)} | {_default_text(field)} | {description} |")
        lines.append("")
    return "\n".join(lines)
