"""The ``csv`` source: a table of numeric and categorical columns, preprocessed by a scikit-learn
``ColumnTransformer`` fitted on the training split only.

Every fitted parameter (imputed values, scaler statistics, categories in order, which columns get
a missing-value indicator) is exported to JSON, and :class:`TabularPreprocessor` applies them with
numpy: a saved run needs neither pickle nor scikit-learn to turn new rows into model inputs, and
its output equals the fitted ``ColumnTransformer``'s.

The model inputs are, in this order (the names are scikit-learn's ``get_feature_names_out``):

- ``num__<column>``: numeric columns, imputed, ``log1p``'d when listed in ``data.log1p``, scaled;
- ``cat__<column>_<category>`` (one-hot) or ``cat__<column>`` (ordinal): categorical columns,
  imputed, then encoded. Categories are compared as text (``3``, ``3.0`` and ``"3"`` are one);
- ``missing__missingindicator_<column>`` (with ``impute.indicator``): 1 where the value was
  missing, for each column that had missing values in the training split. The indicators sit
  beside the imputers rather than inside them, so they are neither scaled nor one-hot encoded.

Regression targets are float32 of shape ``(N, 1)``, optionally standardised or log'd
(``data.target_transform``); :meth:`TabularPreprocessor.inverse_target` undoes that for metrics and
predictions. Classification targets are class indices of the sorted class names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from trainlab.data import PREPROCESSING_FILE
from trainlab.data.files import PACKAGE_PREFIX
from trainlab.data.loaders import bundle_from_tensors
from trainlab.data.spec import DataBundle, DataSpec
from trainlab.data.tables import (
    Tables,
    encode_labels,
    hold_out,
    infer_task,
    read_tables,
    require_columns,
)
from trainlab.recipe.errors import Problem, TrainlabError
from trainlab.recipe.schema import CsvData, Impute

FORMAT = 1  # version of the preprocessing.json layout
MANY_CATEGORIES = 50  # a categorical column with more distinct values than this (and than half the rows) is noted


# ----------------------------------------------------------------------------------- rows and values


@dataclass(frozen=True)
class Rows:
    """Where the rows of a frame come from, for messages: a file name and each row's line number
    (by default the row's position + 2: the header is line 1)."""

    source: str = "the table"
    lines: Sequence[int] | None = None
    appended: tuple[int, str] | None = None  # (first position, file name) of rows appended from another file

    @classmethod
    def of(cls, tables: Tables, split: str) -> Rows:
        appended = tables.appended.get(split)
        return cls(tables.files[split].name, tables.lines[split],
                   (appended[0], appended[1].name) if appended is not None else None)

    def where(self, position: int) -> str:
        line = self.lines[position] if self.lines is not None else position + 2
        source = self.appended[1] if self.appended is not None and position >= self.appended[0] else self.source
        return f"{source} line {line}"


def category_text(value: Any) -> str | None:
    """A categorical value as text, ``None`` when missing (NaN, or only spaces). Whole floats lose
    their ``.0`` (a column read with missing values holds ``3.0`` where a complete one holds ``3``)."""
    import pandas as pd

    if pd.isna(value) or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _raise(problems: list[Problem]) -> None:
    if problems:
        raise TrainlabError(problems=problems)


def _numbers(values: Any) -> np.ndarray:
    """A column as float64, NaN where a value is missing or not a number."""
    import pandas as pd

    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _bad_rows(key: str, what: str, values: Any, bad: np.ndarray, rows: Rows, hint: str) -> list[Problem]:
    """One problem for the rows flagged in ``bad``: how many, and the first one's value and line."""
    positions = np.flatnonzero(bad)
    if len(positions) == 0:
        return []
    first = int(positions[0])
    count = f"{len(positions)} rows, the first shown" if len(positions) > 1 else "1 row"
    value = values.iloc[first]
    value = value.item() if isinstance(value, np.generic) else value
    return [Problem(key, f"{what}: {count}", value, line=rows.where(first), hint=hint)]


def _present(values: Any) -> np.ndarray:
    """Where a column holds a value: not NaN and, for text, not only spaces."""
    import pandas as pd

    present = values.notna()
    if not pd.api.types.is_numeric_dtype(values):
        present &= ~values.astype(str).str.strip().eq("")
    return present.to_numpy(dtype=bool)


def _numeric_values(values: Any, column: str, rows: Rows) -> tuple[np.ndarray, list[Problem]]:
    """A numeric feature column as float64 (blank cells are missing values); text or infinite
    values are problems naming the line."""
    numbers = _numbers(values)
    bad = _present(values) & ~np.isfinite(numbers)
    problems = _bad_rows("data.features", f"numeric column '{column}' holds text or an infinite number", values, bad,
                         rows, hint=f"Fix or remove those rows, or list '{column}' under data.categorical to "
                                    "treat its values as categories.")
    return numbers, problems


def _log1p_domain(numbers: np.ndarray, values: Any, column: str, rows: Rows) -> list[Problem]:
    return _bad_rows("data.log1p", f"log1p column '{column}' holds values of -1 or less, where log1p is undefined",
                     values, numbers <= -1, rows, hint=f"Fix those rows, or remove '{column}' from data.log1p.")


def prepare_features(frame: Any, features: Sequence[str], categorical: Sequence[str], log1p: Sequence[str],
                     rows: Rows = Rows()) -> Any:
    """The feature columns of ``frame`` as the ColumnTransformer gets them: numeric columns as float64
    with NaN for missing values, categorical ones as text (object dtype) with NaN for missing values.

    A missing column, text in a numeric column or a ``log1p`` value of -1 or less is a
    :class:`TrainlabError` naming the column and the line (``rows``)."""
    import pandas as pd

    require_columns(frame, {"features": list(features)}, Path(rows.source))
    problems: list[Problem] = []
    columns: dict[str, np.ndarray] = {}
    for column in features:
        values = frame[column]
        if column in categorical:
            texts = [category_text(value) for value in values.tolist()]
            columns[column] = np.array([np.nan if text is None else text for text in texts], dtype=object)
            continue
        numbers, found = _numeric_values(values, column, rows)
        problems += found
        if column in log1p and not found:
            problems += _log1p_domain(numbers, values, column, rows)
        columns[column] = numbers
    _raise(problems)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(frame)))


# ----------------------------------------------------------------------------------- the ColumnTransformer


def numeric_fill(impute: Impute) -> float:
    """The constant of ``impute.numeric: constant``: ``fill_value`` when it is a number, else 0."""
    fill = impute.fill_value
    return float(fill) if isinstance(fill, (int, float)) and not isinstance(fill, bool) else 0.0


def categorical_fill(impute: Impute) -> str:
    """The constant of ``impute.categorical: constant``: ``fill_value`` as text, else ``missing``."""
    text = category_text(impute.fill_value) if impute.fill_value is not None else None
    return text or "missing"


def log1p_columns(values: np.ndarray, positions: Sequence[int]) -> np.ndarray:
    """``log1p`` of the columns at ``positions`` of a 2-D array; the other columns unchanged."""
    values = np.array(values, dtype=np.float64, copy=True)
    values[:, list(positions)] = np.log1p(values[:, list(positions)])
    return values


def column_transformer(features: Sequence[str], categorical: Sequence[str], log1p: Sequence[str],
                       config: CsvData) -> Any:
    """The unfitted ``ColumnTransformer`` of a csv recipe, for a frame from :func:`prepare_features`:

    - ``num``: SimpleImputer -> log1p of the ``log1p`` columns -> StandardScaler | MinMaxScaler;
    - ``cat``: SimpleImputer -> OneHotEncoder (unknown: all zeros) | OrdinalEncoder (unknown: -1);
    - ``missing`` (``impute.indicator``): MissingIndicator of every feature column with missing
      values in the training split (a column complete in training gets none, even if new rows miss it)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import MissingIndicator, SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import (
        FunctionTransformer,
        MinMaxScaler,
        OneHotEncoder,
        OrdinalEncoder,
        StandardScaler,
    )

    numeric = [column for column in features if column not in categorical]
    parts: list[tuple[str, Any, list[str]]] = []
    if numeric:
        steps: list[tuple[str, Any]] = [
            ("impute", SimpleImputer(strategy=config.impute.numeric, fill_value=numeric_fill(config.impute)))]
        if log1p:
            positions = [numeric.index(column) for column in log1p]
            steps.append(("log1p", FunctionTransformer(log1p_columns, kw_args={"positions": positions},
                                                       feature_names_out="one-to-one")))
        if config.scale == "standard":
            steps.append(("scale", StandardScaler()))
        elif config.scale == "minmax":
            steps.append(("scale", MinMaxScaler()))
        parts.append(("num", Pipeline(steps), numeric))
    if categorical:
        if config.encode == "onehot":
            encoder: Any = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        else:
            encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
        imputer = SimpleImputer(strategy=config.impute.categorical, fill_value=categorical_fill(config.impute))
        parts.append(("cat", Pipeline([("impute", imputer), ("encode", encoder)]), list(categorical)))
    if config.impute.indicator:
        parts.append(("missing", MissingIndicator(features="missing-only", error_on_new=False), list(features)))
    return ColumnTransformer(parts, sparse_threshold=0.0)


def export_steps(transformer: Any) -> dict[str, Any]:
    """Every parameter of a fitted :func:`column_transformer` as JSON-able values: what
    :meth:`TabularPreprocessor.apply` needs to compute the same output with numpy."""
    steps: dict[str, Any] = {"numeric": None, "categorical": None, "missing": [],
                             "feature_names": [str(name) for name in transformer.get_feature_names_out()]}
    for name, fitted, columns in transformer.transformers_:
        columns = [str(column) for column in columns]
        if name == "num":
            numeric: dict[str, Any] = {"columns": columns, "impute": fitted["impute"].statistics_.tolist(),
                                       "log1p": [], "scale": {"kind": "none"}}
            if "log1p" in fitted.named_steps:
                numeric["log1p"] = [columns[p] for p in fitted["log1p"].kw_args["positions"]]
            scaler = fitted.named_steps.get("scale")
            if scaler is not None and hasattr(scaler, "mean_"):
                numeric["scale"] = {"kind": "standard", "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist()}
            elif scaler is not None:
                numeric["scale"] = {"kind": "minmax", "min": scaler.min_.tolist(), "scale": scaler.scale_.tolist()}
            steps["numeric"] = numeric
        elif name == "cat":
            encoder = fitted["encode"]
            steps["categorical"] = {
                "columns": columns,
                "impute": [str(value) for value in fitted["impute"].statistics_.tolist()],
                "encode": "onehot" if hasattr(encoder, "drop_idx_") else "ordinal",
                "categories": [[str(value) for value in values.tolist()] for values in encoder.categories_],
            }
        elif name == "missing":
            steps["missing"] = [columns[index] for index in fitted.features_.tolist()]
    return steps


# ----------------------------------------------------------------------------------- targets


def _target_numbers(values: Any, target: str, rows: Rows) -> np.ndarray:
    """A regression target as float64; a missing, non-numeric or infinite value is an error."""
    numbers = _numbers(values)
    _raise(_bad_rows("data.target", f"regression target '{target}' must hold numbers", values,
                     ~np.isfinite(numbers), rows,
                     hint="Fix those rows, or set data.task: classification if the target names classes."))
    return numbers


def fit_target_transform(kind: str, numbers: np.ndarray) -> dict[str, Any]:
    """The parameters of ``data.target_transform`` fitted on the training targets: ``standard``
    keeps their mean and (population) standard deviation, 1 when they are all equal."""
    if kind == "standard":
        std = float(numbers.std())
        return {"kind": "standard", "mean": float(numbers.mean()), "std": std if std > 0 else 1.0}
    return {"kind": kind}


def encode_regression_target(values: Any, target: str, transform: dict[str, Any], rows: Rows) -> torch.Tensor:
    """Regression targets as float32 ``(N, 1)``, transformed as ``transform`` says."""
    numbers = _target_numbers(values, target, rows)
    if transform["kind"] == "log":
        _raise(_bad_rows("data.target_transform", f"target_transform: log needs targets above 0, and "
                         f"'{target}' holds 0 or less", values, numbers <= 0, rows,
                         hint="Use target_transform: none or standard, or shift the target."))
        numbers = np.log(numbers)
    elif transform["kind"] == "standard":
        numbers = (numbers - transform["mean"]) / transform["std"]
    return torch.from_numpy(numbers.astype(np.float32)).unsqueeze(1)


# ----------------------------------------------------------------------------------- the preprocessor


@dataclass
class TabularPreprocessor:
    """The fitted preprocessing of a csv recipe, as plain JSON values: turns a table's rows into
    float32 model inputs (and targets into training targets) exactly as training did.

    ``steps`` is :func:`export_steps` of the fitted ColumnTransformer; ``target_transform`` is
    ``{"kind": "none" | "log"}`` or ``{"kind": "standard", "mean": m, "std": s}``."""

    kind: ClassVar[str] = "tabular"

    features: list[str]
    categorical: list[str]
    target: str
    task: str
    steps: dict[str, Any]
    id: str | None = None
    class_names: list[str] | None = None
    target_transform: dict[str, Any] = field(default_factory=lambda: {"kind": "none"})

    @property
    def numeric(self) -> list[str]:
        return [column for column in self.features if column not in self.categorical]

    @property
    def log1p(self) -> list[str]:
        return list((self.steps["numeric"] or {}).get("log1p", []))

    @property
    def feature_names(self) -> list[str]:
        """The name of each model input, e.g. ``num__age``, ``cat__colour_red``."""
        return list(self.steps["feature_names"])

    # ------------------------------------------------------------------- inputs

    def prepare(self, frame: Any, source: str | Path = "the table", lines: Sequence[int] | None = None) -> Any:
        """The feature columns of ``frame`` as the ColumnTransformer gets them (see :func:`prepare_features`)."""
        return prepare_features(frame, self.features, self.categorical, self.log1p, Rows(str(source), lines))

    def transform(self, frame: Any, source: str | Path = "the table", lines: Sequence[int] | None = None
                  ) -> torch.Tensor:
        """Model inputs, float32 ``(N, F)``, of a frame holding the feature columns (the target may be
        absent). Problems name ``source`` and the line: ``lines[i]`` for row ``i``, else ``i + 2``."""
        return self.apply(self.prepare(frame, source, lines))

    def apply(self, prepared: Any) -> torch.Tensor:
        """The ColumnTransformer's output for a frame from :meth:`prepare`, computed with numpy."""
        blocks: list[np.ndarray] = []
        numeric = self.steps["numeric"]
        if numeric:
            values = prepared[numeric["columns"]].to_numpy(dtype=np.float64, copy=True)
            values = np.where(np.isnan(values), np.asarray(numeric["impute"], dtype=np.float64), values)
            if numeric["log1p"]:
                values = log1p_columns(values, [numeric["columns"].index(column) for column in numeric["log1p"]])
            scale = numeric["scale"]
            if scale["kind"] == "standard":
                values = (values - np.asarray(scale["mean"])) / np.asarray(scale["scale"])
            elif scale["kind"] == "minmax":
                values = values * np.asarray(scale["scale"]) + np.asarray(scale["min"])
            blocks.append(values)
        categorical = self.steps["categorical"]
        if categorical:
            for column, fill, categories in zip(categorical["columns"], categorical["impute"],
                                                categorical["categories"]):
                texts = prepared[column].to_numpy(dtype=object)
                texts = np.where(_missing(texts), fill, texts)
                if categorical["encode"] == "onehot":
                    blocks.append((texts[:, None] == np.asarray(categories, dtype=object)[None, :]).astype(np.float64))
                else:
                    index = {category: position for position, category in enumerate(categories)}
                    blocks.append(np.array([index.get(text, -1) for text in texts], dtype=np.float64)[:, None])
        for column in self.steps["missing"]:
            blocks.append(_missing(prepared[column].to_numpy(dtype=object)).astype(np.float64)[:, None])
        matrix = np.hstack(blocks) if blocks else np.zeros((len(prepared), 0))
        return torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))

    def ids(self, frame: Any) -> list[Any]:
        """The id column's values of ``frame``, or the row positions 0, 1, ... without an id column."""
        if self.id is None:
            return list(range(len(frame)))
        if self.id not in frame.columns:
            raise TrainlabError(problems=[Problem("data.id", f"the table has no id column '{self.id}'", self.id,
                                                  hint="Give a table with the id column the run was trained with.")])
        return frame[self.id].tolist()

    # ------------------------------------------------------------------- targets

    def encode_target(self, values: Any, source: str | Path = "the table", lines: Sequence[int] | None = None
                      ) -> torch.Tensor:
        """Training targets of a target column: class indices (int64, ``(N,)``), or regression values
        transformed by ``target_transform`` (float32, ``(N, 1)``)."""
        rows = Rows(str(source), lines)
        if self.task == "regression":
            return encode_regression_target(values, self.target, self.target_transform, rows)
        assert self.class_names is not None
        index = {name: position for position, name in enumerate(self.class_names)}
        texts = [category_text(value) for value in values.tolist()]
        unknown = np.array([text not in index for text in texts], dtype=bool)
        _raise(_bad_rows("data.target", f"target '{self.target}' holds classes the model was not trained on "
                         f"({', '.join(self.class_names)})", values, unknown, rows,
                         hint="Remove those rows, or train on data that has those classes."))
        return torch.tensor([index[text] for text in texts], dtype=torch.int64)  # type: ignore[index]

    def inverse_target(self, values: torch.Tensor) -> torch.Tensor:
        """Undo ``target_transform`` (model outputs or encoded targets back in the target's units);
        class indices are returned unchanged."""
        kind = self.target_transform["kind"]
        if kind == "standard":
            return values * self.target_transform["std"] + self.target_transform["mean"]
        if kind == "log":
            return torch.exp(values)
        return values

    # ------------------------------------------------------------------- files

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "format": FORMAT, "features": self.features, "categorical": self.categorical,
                "target": self.target, "task": self.task, "id": self.id, "class_names": self.class_names,
                "target_transform": self.target_transform, "steps": self.steps}

    def save(self, folder: str | Path) -> None:
        """Write ``folder/preprocessing.json`` (plain JSON: no pickle)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / PREPROCESSING_FILE).write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> TabularPreprocessor:
        """The preprocessor :meth:`save` wrote into ``folder``."""
        path = Path(folder) / PREPROCESSING_FILE
        try:
            data = json.loads(path.read_text())
            if data["kind"] != cls.kind or data["format"] != FORMAT:
                raise ValueError(f"kind {data['kind']!r}, format {data['format']!r}")
            return cls(features=list(data["features"]), categorical=list(data["categorical"]),
                       target=data["target"], task=data["task"], steps=data["steps"], id=data["id"],
                       class_names=data["class_names"], target_transform=data["target_transform"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise TrainlabError(f"{path} is not a readable tabular preprocessing file ({error}). "
                                "Was it written by trainlab for a csv recipe?") from None


def _missing(values: np.ndarray) -> np.ndarray:
    import pandas as pd

    return np.asarray(pd.isna(values), dtype=bool)


# ----------------------------------------------------------------------------------- the source


def _recipe_problems(config: CsvData) -> list[Problem]:
    """What is wrong with the column lists before any file is read."""
    problems = []
    if config.id is not None and config.id == config.target:
        problems.append(Problem("data.id", "the id column is the target column", config.id,
                                hint="Give another id column, or remove data.id."))
    if config.features is not None and not config.features:
        problems.append(Problem("data.features", "lists no columns", [],
                                hint="List feature columns, or remove data.features to use every column but the "
                                     "target and id."))
    for key in ("features", "categorical", "log1p"):
        seen: set[str] = set()
        for position, name in enumerate(getattr(config, key) or []):
            path = f"data.{key}[{position}]"
            if name in seen:
                problems.append(Problem(path, f"'{name}' is listed twice", name, hint=f"List it once in data.{key}."))
            elif name == config.target:
                problems.append(Problem(path, "the target column cannot be a feature", name,
                                        hint=f"Remove it from data.{key}."))
            elif name == config.id:
                problems.append(Problem(path, "the id column is never a feature", name,
                                        hint=f"Remove it from data.{key}, or remove data.id to use it as a feature."))
            elif key != "features" and config.features is not None and name not in config.features:
                problems.append(Problem(path, f"'{name}' is not in data.features", name,
                                        hint=f"Add it to data.features, or remove it from data.{key}."))
            elif key == "log1p" and name in (config.categorical or []):
                problems.append(Problem(path, f"'{name}' is in data.categorical; log1p applies to numeric columns",
                                        name, hint="Remove it from data.log1p or from data.categorical."))
            seen.add(name)
    fill = config.impute.fill_value
    if config.impute.numeric == "constant" and isinstance(fill, str):
        problems.append(Problem("data.impute.fill_value", "impute.numeric: constant needs a number", fill,
                                hint="Give a number, e.g. fill_value: 0."))
    elif config.impute.numeric == "constant" and config.log1p and numeric_fill(config.impute) <= -1:
        problems.append(Problem("data.impute.fill_value", "log1p of the fill value is undefined (it must be above "
                                "-1)", fill, hint="Use a fill value above -1, or another impute.numeric strategy."))
    if config.task == "classification" and config.target_transform != "none":
        problems.append(Problem("data.target_transform", "applies to regression only, and data.task is "
                                "classification", config.target_transform, hint="Remove data.target_transform."))
    return problems


def _is_categorical(values: Any) -> bool:
    """Text, boolean and category columns are categorical; numbers are numeric."""
    import pandas as pd

    return bool(pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values))


def _column_key(config: CsvData, column: str) -> str:
    """The recipe key that names ``column`` (for the YAML line of a message)."""
    for key in ("categorical", "features"):
        names = getattr(config, key) or []
        if column in names:
            return f"data.{key}[{names.index(column)}]"
    return "data.features"


def _column_problems(config: CsvData, tables: Tables, features: list[str], categorical: list[str]) -> list[Problem]:
    """Feature columns that cannot be used, found once the training file is read."""
    file = tables.files["train"].name
    if not features:
        kept = " and ".join(f"'{name}'" for name in (config.target, config.id) if name)
        return [Problem("data.features", f"{file} has no feature columns: it holds only {kept}",
                        hint="Add feature columns to the file.")]
    problems = []
    inferred = config.categorical is None
    for position, column in enumerate(config.log1p):
        if inferred and column in categorical:
            problems.append(Problem(f"data.log1p[{position}]", f"column '{column}' holds text in {file}; log1p "
                                    "applies to numeric columns", column,
                                    hint="Remove it from data.log1p, or fix its values."))
    return problems


def _empty_columns(config: CsvData, prepared: Any, rows: Rows) -> list[Problem]:
    """Feature columns without a single value in the training split (nothing to impute from)."""
    return [Problem(_column_key(config, column), f"column '{column}' has no values in the training split "
                    f"({rows.source})", column,
                    hint="Fill it in, or leave it out of data.features and data.categorical.")
            for column in prepared.columns if prepared[column].isna().all()]


def _resolved_config(config: CsvData, tables: Tables, task: str, features: list[str],
                     categorical: list[str]) -> CsvData:
    """The data section as loaded: file paths absolute (``package:`` ones kept), task and columns filled in."""
    update: dict[str, Any] = {"task": task, "features": features, "categorical": categorical}
    for key, split in (("path", "train"), ("train", "train"), ("valid", "valid"), ("test", "test")):
        text = getattr(config, key)
        if text is not None and not text.startswith(PACKAGE_PREFIX):
            update[key] = str(tables.files[split])
    return config.model_copy(update=update)


def _feature_note(preprocessor: TabularPreprocessor, encode: str) -> str:
    width = len(preprocessor.feature_names)
    text = (f"{width} features from {len(preprocessor.features)} columns: {len(preprocessor.numeric)} numeric, "
            f"{len(preprocessor.categorical)} categorical ({'one-hot' if encode == 'onehot' else 'ordinal'})")
    indicators = len(preprocessor.steps["missing"])
    if indicators:
        text += f", {indicators} missing-value indicator{'s' if indicators > 1 else ''}"
    return text


def _many_categories_notes(preprocessor: TabularPreprocessor, rows: int) -> list[str]:
    categorical = preprocessor.steps["categorical"]
    if not categorical:
        return []
    return [f"categorical column '{column}' has {len(categories)} distinct values in {rows} training rows: if it "
            "identifies rows, set data.id to it; if it holds numbers, fix its values"
            for column, categories in zip(categorical["columns"], categorical["categories"])
            if len(categories) > MANY_CATEGORIES and len(categories) > rows // 2]


def load_csv(config: CsvData, seed: int) -> DataBundle:
    """A csv recipe's table as in-memory splits of float32 features, with the preprocessing fitted on
    the training split. The task is ``data.task`` or inferred from the whole training file; the
    held-out splits are stratified on the target for classification."""
    _raise(_recipe_problems(config))
    named = {"features": config.features, "categorical": config.categorical, "log1p": config.log1p}
    tables = read_tables(config, columns=named)  # every row in train; split once the task is known
    train = tables.frames["train"]
    notes = list(tables.notes)
    task: str | None = config.task
    if task is None:
        task, reason = infer_task(train[config.target])
        notes.append(f"task: {task} (inferred: {reason}); set data.task to override")
        if task == "classification" and config.target_transform != "none":
            _raise([Problem("data.target_transform", f"applies to regression only, and the task was inferred as "
                            f"classification: {reason}", config.target_transform,
                            hint="Set data.task: regression, or remove data.target_transform.")])
    features = list(config.features) if config.features is not None else [
        column for column in train.columns if column not in (config.target, config.id)]
    if config.categorical is not None:
        categorical = list(config.categorical)
    else:
        categorical = [column for column in features if _is_categorical(train[column])]
        if categorical:
            notes.append(f"categorical columns: {', '.join(categorical)} (inferred: text or boolean values); "
                         "set data.categorical to override")
    _raise(_column_problems(config, tables, features, categorical))

    known_notes = len(tables.notes)
    tables = hold_out(tables, config, seed, stratify=task == "classification")
    notes += tables.notes[known_notes:]  # what holding out said (data.merge_valid)
    rows = {split: Rows.of(tables, split) for split in tables.frames}
    prepared = {split: prepare_features(frame, features, categorical, config.log1p, rows[split])
                for split, frame in tables.frames.items()}
    _raise(_empty_columns(config, prepared["train"], rows["train"]))
    if task == "classification":
        class_names, targets = encode_labels(tables, config.target)
        target_transform: dict[str, Any] = {"kind": "none"}
    else:
        class_names = None
        numbers = _target_numbers(tables.frames["train"][config.target], config.target, rows["train"])
        target_transform = fit_target_transform(config.target_transform, numbers)
        targets = {split: encode_regression_target(frame[config.target], config.target, target_transform, rows[split])
                   for split, frame in tables.frames.items()}

    transformer = column_transformer(features, categorical, config.log1p, config).fit(prepared["train"])
    preprocessor = TabularPreprocessor(features, categorical, config.target, task, export_steps(transformer),
                                       config.id, class_names, target_transform)
    splits = {split: (preprocessor.apply(prepared[split]), targets[split]) for split in prepared}
    notes.append(_feature_note(preprocessor, config.encode))
    notes += _many_categories_notes(preprocessor, len(prepared["train"]))

    width = len(preprocessor.feature_names)
    if task == "classification":
        assert class_names is not None
        spec = DataSpec("classification", (width,), num_classes=len(class_names), class_names=class_names)
    else:
        spec = DataSpec("regression", (width,), target_shape=(1,))
    resolved = _resolved_config(config, tables, task, features, categorical)
    bundle = bundle_from_tensors(resolved, spec, splits, seed, notes=notes, preprocessor=preprocessor)
    return bundle
