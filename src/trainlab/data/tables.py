"""Reading the table files of ``csv`` and ``text`` recipes: one file split by ``split:``, or separate
``train`` / ``valid`` / ``test`` files; checked columns, targets and labels, with messages that name
the file, row and column.

Row numbers in messages are the file's line numbers (the header is line 1), so a user can open the
file at that line.

``data.merge_valid: true`` trains on the validation rows too: a ``split.valid`` fraction is not held
out of a single file, and the rows of a ``valid`` file follow the training rows. The test split is
the same rows either way (:func:`~trainlab.data.splits.split_indices` draws it first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainlab.data.files import resolve_path
from trainlab.data.splits import held_valid, split_indices
from trainlab.recipe.errors import Problem, TrainlabError
from trainlab.registry import did_you_mean

SPLITS = ("train", "valid", "test")


@dataclass
class Tables:
    """The rows of each split (pandas DataFrames, original row order) and the file each came from.

    ``lines[split]`` holds each row's line number in its file, for messages. ``appended[split]`` is
    ``(position, file)`` when the rows from ``position`` on came from another file (the ``valid``
    file's rows joining the training split with ``data.merge_valid``); ``files`` still names that
    file under its own split."""

    frames: dict[str, Any]
    files: dict[str, Path]
    lines: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    appended: dict[str, tuple[int, Path]] = field(default_factory=dict)

    def where(self, split: str, position: int) -> str:
        file = self.files[split]
        if split in self.appended and position >= self.appended[split][0]:
            file = self.appended[split][1]
        return f"{file.name} line {self.lines[split][position]}"


def read_table(path: Path, sep: str | None, key: str) -> Any:
    """A CSV/TSV file as a DataFrame (compressed files are read by their suffix: .gz, .bz2, .zip, .xz)."""
    import pandas as pd

    suffixes = [suffix.lower() for suffix in path.suffixes]
    if sep is None:
        sep = "\t" if ".tsv" in suffixes or ".tab" in suffixes else ","
    try:
        frame = pd.read_csv(path, sep=sep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as error:
        raise TrainlabError(problems=[Problem(key, f"cannot read {path} as a table: {str(error).strip()[:200]}",
                                              hint="Check that it is a CSV/TSV file; set data.sep for other "
                                                   "separators.")]) from None
    if frame.empty:
        raise TrainlabError(problems=[Problem(key, f"{path} has no rows", hint="Give a file with a header and data.")])
    frame.columns = [str(column) for column in frame.columns]
    return frame


def require_columns(frame: Any, columns: dict[str, str | list[str] | None], file: Path) -> None:
    """Every column a recipe names (``{recipe key: column or columns}``) exists in ``frame``."""
    problems = []
    for key, names in columns.items():
        for name in [names] if isinstance(names, str) else (names or []):
            if name not in frame.columns:
                guesses = did_you_mean(name, list(frame.columns))
                hint = f"Did you mean '{guesses[0]}'?" if guesses else f"Columns: {', '.join(frame.columns)}."
                problems.append(Problem(f"data.{key}", f"{file.name} has no column '{name}'", name, hint=hint))
    if problems:
        raise TrainlabError(problems=problems)


def check_targets(tables: Tables, target: str) -> None:
    """No empty or NaN target in any split; the rows are named."""
    for split, frame in tables.frames.items():
        values = frame[target]
        empty = values.isna() | values.astype(str).str.strip().eq("")
        if empty.any():
            positions = [int(p) for p in empty.to_numpy().nonzero()[0]]
            shown = ", ".join(str(tables.lines[split][p]) for p in positions[:5])
            more = f" and {len(positions) - 5} more" if len(positions) > 5 else ""
            raise TrainlabError(problems=[Problem(
                "data.target", f"{len(positions)} row(s) of {tables.files[split].name} have an empty target "
                f"'{target}' (line {shown}{more})", hint="Fill in or remove those rows.")])


def infer_task(values: Any) -> tuple[str, str]:
    """``classification`` or ``regression`` for a target column, and why (printed to the user)."""
    import pandas as pd

    values = values.dropna()
    unique = values.nunique()
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "classification", f"the target holds text/boolean values ({unique} classes)"
    integral = bool((values == values.round()).all())
    if integral and unique <= max(2, min(20, len(values) // 10)):
        return "classification", f"the target holds {unique} distinct integer values"
    return "regression", f"the target holds numbers with {unique} distinct values"


def encode_labels(tables: Tables, target: str) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Class names (sorted, from the training split) and each split's labels as int64 indices; a class
    that appears in valid/test but never in train is an error naming it."""
    train_values = tables.frames["train"][target]
    classes = sorted(train_values.unique().tolist())
    names = [_label_text(value) for value in classes]
    index = {value: position for position, value in enumerate(classes)}
    labels = {}
    for split, frame in tables.frames.items():
        values = frame[target]
        unknown = sorted({value for value in values.unique().tolist() if value not in index}, key=str)
        if unknown:
            shown = ", ".join(repr(_label_text(value)) for value in unknown[:5])
            raise TrainlabError(problems=[Problem(
                "data.target", f"class {shown} of the {split} split ({tables.files[split].name}) never appears "
                f"in the training split", hint="Every class needs training rows: move some rows into train, or use "
                "one file with split: to stratify.")])
        labels[split] = torch.tensor([index[value] for value in values.tolist()], dtype=torch.int64)
    return names, labels


def _label_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_tables(config: Any, columns: dict[str, str | list[str] | None]) -> Tables:
    """Read a ``csv`` / ``text`` recipe's files: ``path`` (one file, all rows in ``train`` until
    :func:`hold_out` splits it) or ``train`` / ``valid`` / ``test``. Every file must hold the target,
    the id (when given) and ``columns`` (``{recipe key: column(s)}``); ``data.classes`` drops rows of
    other classes; no target may be empty or NaN."""
    files: dict[str, Path] = {}
    if config.path is not None:
        files["train"] = resolve_path(config.path, "data.path")
    else:
        for split in SPLITS:
            if getattr(config, split) is not None:
                files[split] = resolve_path(getattr(config, split), f"data.{split}")
    frames = {split: read_table(path, config.sep, f"data.{'path' if config.path else split}")
              for split, path in files.items()}
    lines = {split: list(range(2, len(frame) + 2)) for split, frame in frames.items()}
    tables = Tables(frames, dict(files), lines)
    for split, frame in frames.items():
        require_columns(frame, {"target": config.target, "id": config.id, **columns}, files[split])
    if getattr(config, "classes", None):
        _keep_classes(tables, config.target, list(config.classes))
    check_targets(tables, config.target)
    return tables


def hold_out(tables: Tables, config: Any, seed: int, stratify: bool) -> Tables:
    """Split ``split.valid`` / ``split.test`` of the training rows into the splits that have no file
    of their own, seeded, stratified on ``config.target`` when ``stratify``. With
    ``data.merge_valid`` there is no validation split: its rows stay in (or join) the training split."""
    has_valid = "valid" in tables.frames
    held = {"valid": 0.0 if has_valid else held_valid(config, tables.notes, "rows"),
            "test": config.split.test if "test" not in tables.frames else 0.0}
    if held["valid"] > 0 or held["test"] > 0:
        _split_rows(tables, config, seed, stratify, held["valid"], held["test"])
    if has_valid and getattr(config, "merge_valid", False):
        merge_valid_rows(tables)
    return tables


def merge_valid_rows(tables: Tables) -> None:
    """Append the ``valid`` file's rows to the training split (``data.merge_valid``); no valid split remains."""
    import pandas as pd

    train, valid = tables.frames["train"], tables.frames.pop("valid")
    tables.appended["train"] = (len(train), tables.files["valid"])
    tables.frames["train"] = pd.concat([train, valid], ignore_index=True)
    tables.lines["train"] = tables.lines["train"] + tables.lines.pop("valid")
    tables.notes.append(f"data.merge_valid: the {len(valid):,} rows of {tables.files['valid'].name} join the "
                        f"{len(train):,} training rows; there is no validation split")


def _split_rows(tables: Tables, config: Any, seed: int, stratify: bool, valid: float, test: float) -> None:
    """Move ``valid`` / ``test`` fractions of the training rows into those splits (seeded, stratified)."""
    import pandas as pd

    frame, file, lines = tables.frames["train"], tables.files["train"], list(tables.lines["train"])
    if stratify:
        codes = torch.from_numpy(pd.factorize(frame[config.target].astype(str))[0].astype("int64"))
    else:
        codes = torch.zeros(len(frame), dtype=torch.int64)
    for split, index in split_indices(codes, valid, test, seed, stratify=stratify).items():
        positions = index.tolist()
        tables.frames[split] = frame.iloc[positions].reset_index(drop=True)
        tables.files[split] = file
        tables.lines[split] = [lines[p] for p in positions]


def load_tables(config: Any, seed: int, stratify: bool, columns: dict[str, str | list[str] | None]) -> Tables:
    """:func:`read_tables` then :func:`hold_out`: the splits of a ``csv`` / ``text`` recipe."""
    return hold_out(read_tables(config, columns), config, seed, stratify)


def _keep_classes(tables: Tables, target: str, classes: list[str]) -> None:
    """Drop the rows whose target is not one of ``classes`` (``data.classes``), in every split."""
    for split, frame in list(tables.frames.items()):
        keep = frame[target].map(_label_text).isin(classes).to_numpy()
        if not keep.any():
            found = sorted({_label_text(value) for value in frame[target].dropna().unique()})[:10]
            raise TrainlabError(problems=[Problem(
                "data.classes", f"no row of {tables.files[split].name} has one of these classes", classes,
                hint=f"The target '{target}' holds: {', '.join(found)}.")])
        dropped = int((~keep).sum())
        if dropped:
            tables.frames[split] = frame[keep].reset_index(drop=True)
            tables.lines[split] = [line for line, kept in zip(tables.lines[split], keep) if kept]
            tables.notes.append(f"data.classes: dropped {dropped:,} of {len(frame):,} rows of "
                                f"{tables.files[split].name} ({split}) with another class")
