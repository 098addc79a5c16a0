"""Load a recipe: YAML with line numbers, dotted overrides, schema validation.

``load_recipe(path, overrides)`` returns a :class:`LoadedRecipe`: the validated pydantic
:class:`~trainlab.recipe.schema.Recipe` plus a map from key paths to YAML lines so that every
later problem (a torch argument, a layer stack) can point at its line too.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from trainlab.recipe.errors import Problem, RecipeError, TrainlabError
from trainlab.recipe.schema import (
    DATA_SOURCES,
    CsvData,
    DigitsData,
    IdxData,
    ImagesData,
    Recipe,
    SyntheticData,
    TextData,
)
from trainlab.registry import did_you_mean

Location = int | str  # a YAML line number, or a description such as "override train.epochs=5"


class RecipeYamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 needs ``1.0e-3``)."""


RecipeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def join_path(parent: str, key: Any) -> str:
    """Key path text: ``model.layers[3].Conv2d``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


def _record_lines(node: yaml.Node, path: str, lines: dict[str, Location]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = join_path(path, key_node.value)
            lines[child] = key_node.start_mark.line + 1
            _record_lines(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, join_path(path, index), lines)


def parse_yaml(text: str, origin: str) -> tuple[Any, dict[str, Location]]:
    """Parse YAML text into plain data and a key-path -> line map; syntax errors are user errors."""
    try:
        node = yaml.compose(text, Loader=RecipeYamlLoader)
        data = yaml.load(text, Loader=RecipeYamlLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "context_mark", None) or getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise RecipeError(
            f"{origin} is not valid YAML{where}: {problem}. Check the indentation and quoting near that line"
        ) from None
    lines: dict[str, Location] = {}
    if node is not None:
        _record_lines(node, "", lines)
    return data, lines


# ----------------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """``optimizer.lr=3e-4`` -> (['optimizer', 'lr'], 0.0003); values are parsed as YAML."""
    if "=" not in text:
        raise TrainlabError(
            f"override '{text}' has no '='. Write overrides as key.path=value, e.g. optimizer.lr=3e-4"
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise TrainlabError(f"override '{text}' has an empty key. Write key.path=value, e.g. train.epochs=5")
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in key.split(".")]
    try:
        value = yaml.load(raw, Loader=RecipeYamlLoader) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str], lines: dict[str, Location]) -> dict[str, Any]:
    """Set each dotted override in ``data`` (in place), creating missing mappings on the way."""
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        path = ""
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not isinstance(part, int) or not -len(node) <= part < len(node):
                    raise TrainlabError(
                        f"override '{text}': '{join_path(path, part)}' is not an index of the list at "
                        f"'{path}' (it has {len(node)} items)"
                    )
            elif isinstance(node, dict):
                part = str(part)
            else:
                raise TrainlabError(f"override '{text}': '{path}' holds {node!r}, not a mapping or list")
            path = join_path(path, part)
            if last:
                node[part] = value
            else:
                if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
        lines[path] = f"override {text}"
        for key in [k for k in lines if k.startswith(path + ".") or k.startswith(path + "[")]:
            del lines[key]
    return data


# ----------------------------------------------------------------------------------- pydantic errors


def _section_model(model: type[BaseModel], key: Any, value_at: Any) -> type[BaseModel] | None:
    """The pydantic model one key below ``model`` (unwrapping Optional/list/dict/unions)."""
    info = model.model_fields.get(key) if isinstance(key, str) else None
    if info is None:
        return None
    return _first_model(info.annotation)


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _first_model(argument)
        if found is not None:
            return found
    return None


_DATA_MODELS = {
    "sklearn-digits": DigitsData,
    "synthetic": SyntheticData,
    "images": ImagesData,
    "idx": IdxData,
    "csv": CsvData,
    "text": TextData,
}


def _model_at(loc: tuple[Any, ...], data: Any) -> type[BaseModel] | None:
    """The section model that owns the last element of ``loc``."""
    model: type[BaseModel] | None = Recipe
    value = data
    for key in loc[:-1]:
        if model is None:
            return None
        if key == "data" and model is Recipe:
            source = value.get("data", {}).get("source") if isinstance(value, dict) else None
            model = _DATA_MODELS.get(source) if isinstance(source, str) else None
            value = value.get("data") if isinstance(value, dict) else None
            continue
        if isinstance(key, int):
            value = value[key] if isinstance(value, list) and key < len(value) else None
            continue
        model = _section_model(model, key, value)
        value = value.get(key) if isinstance(value, dict) else None
    return model


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union-tag elements (``data.synthetic.shape`` -> ``data.shape``)."""
    cleaned = []
    for index, key in enumerate(loc):
        if index == 1 and loc[0] == "data" and key in DATA_SOURCES:
            continue
        if isinstance(key, str) and key.startswith(("function-", "literal[", "nullable[", "union[")):
            continue
        cleaned.append(key)
    return tuple(cleaned)


def _path_of(loc: tuple[Any, ...]) -> str:
    path = ""
    for key in loc:
        path = join_path(path, key)
    return path


def _value_at(data: Any, loc: tuple[Any, ...]) -> Any:
    from trainlab.recipe.errors import missing

    value = data
    for key in loc:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and isinstance(key, int) and key < len(value):
            value = value[key]
        else:
            return missing()
    return value


_EXPECTED = {
    "int_parsing": "expected a whole number",
    "int_type": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected text",
    "list_type": "expected a list",
    "dict_type": "expected a mapping of keys to values",
    "model_type": "expected a mapping of keys to values",
    "model_attributes_type": "expected a mapping of keys to values",
}


def problems_from_validation(error: ValidationError, data: Any, lines: dict[str, Location]) -> list[Problem]:
    """One readable :class:`Problem` per pydantic error."""
    problems = []
    for item in error.errors():
        loc = _clean_loc(tuple(item["loc"]))
        kind = item["type"]
        path = _path_of(loc)
        received = _value_at(data, loc)
        hint = ""
        if kind == "extra_forbidden":
            model = _model_at(loc, data)
            known = list(model.model_fields) if model else []
            guess = did_you_mean(str(loc[-1]), known)
            message = "unknown key"
            if guess:
                hint = f"Did you mean '{guess[0]}'?"
            elif known:
                hint = f"Known keys here: {', '.join(known)}."
        elif kind == "missing":
            message = "required key is missing"
            model = _model_at(loc, data)
            description = model.model_fields[loc[-1]].description if model and loc[-1] in model.model_fields else None
            hint = f"Add '{loc[-1]}:'" + (f" ({description})" if description else "") + "."
        elif kind == "union_tag_invalid" or (kind == "union_tag_not_found"):
            message = f"expected a data source: {', '.join(DATA_SOURCES)}"
            path = _path_of(loc + ("source",)) if kind == "union_tag_invalid" else path
            received = _value_at(data, loc + ("source",))
            guess = did_you_mean(str(received), list(DATA_SOURCES)) if isinstance(received, str) else []
            hint = f"Did you mean '{guess[0]}'?" if guess else "Set data.source."
        elif kind == "literal_error":
            expected = item.get("ctx", {}).get("expected", "")
            message = f"expected one of {expected}"
            options = re.findall(r"'([^']*)'", expected)
            guess = did_you_mean(str(received), options) if options else []
            hint = f"Did you mean '{guess[0]}'?" if guess else ""
        elif kind in _EXPECTED:
            message = _EXPECTED[kind]
        elif kind == "value_error":
            message = str(item.get("msg", "")).removeprefix("Value error, ")
        else:
            message = str(item.get("msg", kind))
            message = message[0].lower() + message[1:] if message else kind
        problems.append(Problem(path, message, received, line_of(path, lines), hint))
    return problems


def line_of(path: str, lines: dict[str, Location]) -> Location | None:
    """The YAML line of ``path`` or of its nearest ancestor that has one."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


# ----------------------------------------------------------------------------------- loading


@dataclass
class LoadedRecipe:
    """A schema-valid recipe with the origin of every key, for messages."""

    recipe: Recipe
    lines: dict[str, Location] = field(default_factory=dict)
    origin: str = "<recipe>"

    def locate(self, problems: list[Problem]) -> list[Problem]:
        """Fill in the YAML line of problems raised after loading."""
        for problem in problems:
            if problem.line is None:
                problem.line = line_of(problem.path, self.lines)
        return problems


def recipe_from_data(
    data: Any, lines: dict[str, Location] | None = None, overrides: list[str] | None = None, origin: str = "<recipe>"
) -> LoadedRecipe:
    """Validate plain data (as read from YAML) into a :class:`LoadedRecipe`."""
    lines = dict(lines or {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(
            f"{origin} must be a YAML mapping with keys such as name, data, model; it holds a {type(data).__name__}"
        )
    apply_overrides(data, list(overrides or []), lines)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as error:
        raise RecipeError(f"{origin} is not a valid recipe", problems_from_validation(error, data, lines)) from None
    return LoadedRecipe(recipe, lines, origin)


def read_recipe_file(path: str | Path) -> tuple[Any, dict[str, Location]]:
    path = Path(path)
    if not path.exists():
        raise TrainlabError(f"recipe file '{path}' does not exist. Check the path, or list shipped recipes with `trainlab recipes`")
    if path.is_dir():
        raise TrainlabError(f"'{path}' is a folder, not a recipe file. Give the path of a .yaml recipe")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TrainlabError(f"cannot read recipe '{path}': {error}") from None
    return parse_yaml(text, str(path))


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> LoadedRecipe:
    """Read, override and schema-validate a recipe file (torch-level checks come later)."""
    data, lines = read_recipe_file(path)
    return recipe_from_data(data, lines, overrides, origin=str(path))
