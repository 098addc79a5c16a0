"""After training: predictions for new inputs, a refit on train + valid, and scikit-learn baselines.

- :func:`predict` turns new files (an image folder or list, a CSV, a CSV/TSV of texts) into a CSV of
  predictions through the run's saved preprocessing (``preprocessing/``) and a checkpoint's weights.
- :func:`refit` trains the run's resolved recipe again as a new run on the training and validation
  data together (``data.merge_valid``), for the epoch count that was best in the run.
- :func:`baseline` fits scikit-learn references (gradient boosting and a linear model for tables,
  bag-of-words models for text) on the training split of a recipe or run and measures them on the
  same split with the same metrics as ``trainlab evaluate``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainlab import runs
from trainlab.recipe.errors import TrainlabError

FILE_SOURCES = ("images", "idx", "csv", "text")
PREDICT_BATCH = 256
REFIT_SUFFIX = "-refit"
REFIT_FILE = "refit.json"
BASELINE_FILE = "baseline.json"
LIST_SUFFIX = ".txt"


def _run_folder(folder: str | Path) -> Path:
    """``folder`` when it is a trainlab run folder, else a TrainlabError saying what to give."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainlabError(f"run folder '{folder}' does not exist. Give the folder that `trainlab train` printed")
    if not (folder / runs.RECIPE_FILE).is_file():
        raise TrainlabError(f"'{folder}' is not a trainlab run folder: it has no {runs.RECIPE_FILE}")
    return folder


def _write_atomic(path: Path, write: Any) -> None:
    """Call ``write(temporary_path)``, then move the finished file to ``path`` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------- predict


@dataclass
class Inputs:
    """New inputs: the id of each (an id column's value, a row number, or an image's path) and their
    model inputs in batches (B, ...), made as they are drawn (images are decoded batch by batch)."""

    ids: list[Any]
    batches: Iterable[torch.Tensor]


def predict(
    run_folder: str | Path,
    input_path: str | Path,
    out: str | Path,
    checkpoint: str = "best",
    columns: str | Sequence[str] | None = None,
    probabilities: bool = False,
    batch_size: int = PREDICT_BATCH,
) -> Path:
    """Predict ``input_path`` with the run in ``run_folder`` and write the CSV ``out`` (atomically).

    Inputs by the run's data source: ``images`` / ``idx`` runs take an image folder (searched
    recursively for image suffixes) or a ``.txt`` list of image paths, one a line, relative to the
    list's folder; ``csv`` runs a table with the feature columns (the target may be absent);
    ``text`` runs a CSV/TSV with the text column. Every input goes through the run's saved
    preprocessing, exactly as evaluation did.

    The CSV holds ``id`` (the id column's value, else the row number from 0; for images the path
    relative to the folder, or as the list wrote it), then ``label`` (the class name) for
    classification or ``prediction`` (``prediction_<i>`` for several targets) in the target's own
    units for regression, and with ``probabilities`` one ``p_<class>`` column per class.
    ``columns`` ("id,label", or "PassengerId=id,Survived=label" to rename) chooses and orders the
    columns written. Returns the path written.
    """
    from trainlab.data import load_preprocessor
    from trainlab.pipeline import PREPROCESSING_DIR, load_run

    if batch_size < 1:
        raise TrainlabError(f"batch size {batch_size}: give 1 or more")
    folder = _run_folder(run_folder)
    path, target = Path(input_path), Path(out)
    if not path.exists():
        raise TrainlabError(f"the input {path} does not exist")
    if target.is_dir():
        raise TrainlabError(f"--out {target} is a folder: give the CSV file to write, e.g. "
                            f"{target / 'predictions.csv'}")
    run = load_run(folder, checkpoint)
    source = run.recipe.data.source
    if source not in FILE_SOURCES:
        raise TrainlabError(f"run '{folder}' was trained on the {source} source, which is built in and has no "
                            f"files to give it: prediction takes {', '.join(FILE_SOURCES)} runs")
    preprocessor = load_preprocessor(folder / PREPROCESSING_DIR)
    if source in ("images", "idx"):
        extensions = getattr(run.recipe.data, "extensions", None)
        inputs = _image_inputs(preprocessor, path, extensions, batch_size)
    else:
        inputs = _table_inputs(preprocessor, path, getattr(run.recipe.data, "sep", None), source, batch_size)
    table = _prediction_table(run, preprocessor, inputs)
    chosen = _choose_columns(table, columns, probabilities)
    _write_atomic(target, lambda temporary: chosen.to_csv(temporary, index=False))
    return target


def image_files(path: Path, extensions: Sequence[str] | None = None) -> tuple[list[Path], list[str]]:
    """The image files of a folder (recursive, by suffix, hidden files left out, sorted) or of a
    ``.txt`` list (one path a line, relative to the list's folder), and the id of each: its path
    relative to the folder, or as the list wrote it."""
    from trainlab.recipe.schema import IMAGE_EXTENSIONS

    suffixes = {(e if e.startswith(".") else "." + e).lower() for e in (extensions or IMAGE_EXTENSIONS)}
    if path.is_dir():
        found = []
        for directory, folders, files in os.walk(path, followlinks=True):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            found += [Path(directory) / name for name in files
                      if not name.startswith(".") and Path(name).suffix.lower() in suffixes]
        found.sort(key=lambda file: file.relative_to(path).as_posix())
        if not found:
            raise TrainlabError(f"{path} holds no image files (suffixes {', '.join(sorted(suffixes))}). Give a folder "
                                f"of images, or a {LIST_SUFFIX} file listing them")
        return found, [file.relative_to(path).as_posix() for file in found]
    if path.suffix.lower() != LIST_SUFFIX:
        raise TrainlabError(f"{path} is neither a folder of images nor a {LIST_SUFFIX} list of image paths. "
                            f"Give an image folder, or a {LIST_SUFFIX} file with one image path a line")
    files, ids, missing = [], [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        file = Path(name).expanduser()
        file = file if file.is_absolute() else path.parent / file
        if not file.is_file():
            missing.append(f"'{name}' (line {number})")
        files.append(file)
        ids.append(name)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise TrainlabError(f"{path} lists image files that do not exist: {', '.join(missing[:3])}{more}. Paths are "
                            f"relative to the list's folder {path.parent}")
    if not files:
        raise TrainlabError(f"{path} lists no image files: give one image path a line")
    return files, ids


def _image_inputs(preprocessor: Any, path: Path, extensions: Sequence[str] | None, batch_size: int) -> Inputs:
    """Images decoded in the run's mode and put through its eval transforms: (N, C, H, W)."""
    from trainlab.data.images import UnreadableImage, decode_image

    files, ids = image_files(path, extensions)
    pipeline = preprocessor.pipeline
    expected = tuple(preprocessor.input_shape)

    def one(file: Path) -> torch.Tensor:
        try:
            image = pipeline.sample(decode_image(file, preprocessor.mode))
        except UnreadableImage as error:
            raise TrainlabError(f"cannot read {file} as an image: {error}. Replace the file, or leave it out of the "
                                "input") from None
        except (TypeError, ValueError, RuntimeError, IndexError) as error:  # e.g. a crop larger than the image
            raise TrainlabError(f"the run's eval transforms fail on {file}: {error}. Give images of the training "
                                "size") from None
        if tuple(image.shape) != expected:
            raise TrainlabError(
                f"{file} becomes a {tuple(image.shape)} input after the run's eval transforms, but the model takes "
                f"{expected}: give images of the training size, or add a Resize to a fixed size to "
                "data.transforms (e.g. {Resize: [H, W]} first in train and eval) and train again")
        return image

    def batches() -> Iterator[torch.Tensor]:
        with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
            for start in range(0, len(files), batch_size):
                yield torch.stack(list(pool.map(one, files[start:start + batch_size])))  # (B, C, H, W)

    return Inputs(ids, batches())


def _missing_columns(frame: Any, wanted: dict[str, str | None], path: Path) -> None:
    """Every column in ``wanted`` ({column: what it is}) is in ``frame``; else one error naming them."""
    missing = [f"'{column}' ({what})" for column, what in wanted.items() if column not in frame.columns]
    if missing:
        shown = ", ".join(frame.columns[:20]) + (", ..." if len(frame.columns) > 20 else "")
        raise TrainlabError(f"{path} has no column {', '.join(missing)}, which the run was trained with. Its columns: "
                            f"{shown}. Give a table with the training columns (the target may be left out)")


def _table_inputs(preprocessor: Any, path: Path, sep: str | None, source: str, batch_size: int) -> Inputs:
    """Rows of a CSV/TSV as model inputs: features through the fitted column transforms (csv), or
    texts through the tokenizer (text); ids from the id column, else row numbers."""
    from trainlab.data.tables import read_table

    if path.is_dir():
        raise TrainlabError(f"{path} is a folder; this {source} run predicts the rows of a CSV/TSV file")
    frame = read_table(path, sep, "input")
    if source == "csv":
        _missing_columns(frame, {column: "feature" for column in preprocessor.features}
                         | ({preprocessor.id: "id"} if preprocessor.id else {}), path)
        features = preprocessor.transform(frame, source=path.name)  # (N, F) float32
        return Inputs(preprocessor.ids(frame), features.split(batch_size))
    id_column = preprocessor.id_column
    _missing_columns(frame, {preprocessor.text_column: "text"} | ({id_column: "id"} if id_column else {}), path)
    ids = frame[id_column].tolist() if id_column else list(range(len(frame)))
    tokens = preprocessor.encode(frame[preprocessor.text_column].tolist())  # (N, width) int64
    return Inputs(ids, tokens.split(batch_size))


def _prediction_table(run: Any, preprocessor: Any, inputs: Inputs) -> Any:
    """Every output column: ``id``, then ``label`` and ``p_<class>`` (classification) or
    ``prediction`` / ``prediction_<i>`` in the target's units (regression)."""
    import pandas as pd

    from trainlab.train.losses import build_loss
    from trainlab.train.precision import choose_device

    spec = run.checked.spec
    criterion = build_loss(run.recipe.loss, spec)
    contract = criterion.contract
    device = choose_device(run.recipe.train.device)
    model = run.model.to(device).eval()
    predicted, chances = [], []
    with torch.no_grad():
        for batch in inputs.batches:
            outputs = model(batch.to(device)).float()
            if spec.task == "classification":
                chances.append(contract.class_probabilities(outputs).cpu())
                predicted.append(contract.predicted_classes(outputs).cpu())
            else:
                shape = (len(batch), *spec.target_shape)
                placeholder = torch.zeros(shape, device=device)  # gives the predictions their shape
                predicted.append(contract.predicted_values(criterion, outputs, placeholder).float().cpu())
    columns: dict[str, Any] = {"id": inputs.ids}
    if spec.task == "classification":
        names = list(spec.class_names or [str(index) for index in range(spec.num_classes or 0)])
        classes = torch.cat(predicted).tolist()
        columns["label"] = [names[index] for index in classes]
        table = torch.cat(chances).numpy()
        for position, name in enumerate(names):
            columns[f"p_{name}"] = table[:, position]
    else:
        values = torch.cat(predicted)
        values = values.reshape(len(values), -1)  # (N, k)
        inverse = getattr(preprocessor, "inverse_target", None)
        if inverse is not None:  # back to the target's own units
            values = inverse(values)
        values = values.numpy()
        if values.shape[1] == 1:
            columns["prediction"] = values[:, 0]
        else:
            for position in range(values.shape[1]):
                columns[f"prediction_{position}"] = values[:, position]
    return pd.DataFrame(columns)


def _choose_columns(table: Any, columns: str | Sequence[str] | None, probabilities: bool) -> Any:
    """The columns to write: all but the ``p_`` ones unless ``probabilities``; or those ``columns``
    names, in order, each ``name`` or ``new_name=name``."""
    import pandas as pd

    if columns is None:
        keep = [name for name in table.columns if probabilities or not name.startswith("p_")]
        return table[keep]
    items = [item.strip() for item in (columns.split(",") if isinstance(columns, str) else columns)]
    items = [item for item in items if item]
    if not items:
        raise TrainlabError("--columns names no column. Give e.g. id,label")
    chosen, names = {}, []
    for item in items:
        new, _, old = item.partition("=")
        new, old = new.strip(), (old or new).strip()
        if old not in table.columns:
            raise TrainlabError(f"--columns: there is no prediction column '{old}'. The columns are: "
                                f"{', '.join(table.columns)}")
        if new in names:
            raise TrainlabError(f"--columns names the output column '{new}' twice")
        names.append(new)
        chosen[new] = table[old]
    return pd.DataFrame(chosen)


# ----------------------------------------------------------------------------------- refit


def refit(run_folder: str | Path, out: str | Path | None = None, root: str | Path = "runs",
          progress: str | None = None) -> Any:
    """Train the run's resolved recipe again as a new run ``<name>-refit`` on the training and
    validation data together (``data.merge_valid: true``; the test split is the same rows) for the
    epoch count of ``checkpoints/best`` (all the run's epochs when it has no best checkpoint).

    With no validation left, the refit monitors ``train/loss`` without early stopping; everything else
    is the run's recipe: ``Normalize: dataset`` is computed again (on train + valid, as the scaler and
    tokenizer are fitted again), a schedule counted in optimizer steps is stretched to the longer
    epochs so the lr is the same at the same point of each epoch, and a ReduceLROnPlateau that
    watched a validation metric watches ``train/loss``. ``refit.json`` in the new run records the
    source run, the epochs and these changes. Returns the new :class:`~trainlab.pipeline.Run`.
    """
    from trainlab.pipeline import train
    from trainlab.recipe.loader import load_recipe
    from trainlab.train import checkpoint as checkpoints

    folder = _run_folder(run_folder)
    recipe = load_recipe(folder / runs.RECIPE_FILE).recipe.model_dump(mode="json")
    best_folder = checkpoints.find_checkpoint(folder / "checkpoints", "best")
    best = checkpoints.read_meta(best_folder) if best_folder is not None else None
    epochs = int(best["epoch"]) if best and best.get("epoch") else int(recipe["train"]["epochs"])
    description = _data_description(folder)
    changes: list[str] = []
    recipe["name"] = recipe["name"] + REFIT_SUFFIX
    recipe["data"]["merge_valid"] = True
    recipe["train"].update(epochs=epochs, monitor="train/loss", mode="min", early_stopping=None)
    changes.append(f"train.epochs: {epochs} ({'the best epoch of' if best else 'all epochs of'} {folder})")
    changes += _dataset_normalize(recipe["data"], description)
    if recipe.get("schedule") is not None:
        ratio = _epoch_length_ratio(recipe, description)
        changes += _refit_schedule(recipe["schedule"], ratio, "schedule")
    run = train(recipe, out=out, root=root, progress=progress)
    record = {"source": str(folder.resolve()), "epochs": epochs, "best": best and {
        key: best.get(key) for key in ("step", "epoch", "monitor", "value")}, "changes": changes}
    checkpoints.write_json_atomic(run.folder / REFIT_FILE, record)
    return run


def _data_description(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / runs.DATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _dataset_normalize(data: dict[str, Any], description: dict[str, Any]) -> list[str]:
    """Turn the Normalize steps that ``Normalize: dataset`` became back into the preset, so the refit
    computes the statistics of its own (larger) training split. The run's data.json records the
    values the preset was resolved to (``normalization.preset == "dataset"``)."""
    normalization = description.get("normalization") or {}
    transforms = data.get("transforms")
    if normalization.get("preset") != "dataset" or not transforms:
        return []
    resolved = {"mean": normalization["mean"], "std": normalization["std"]}
    changed = False
    for key in ("train", "eval"):
        steps = transforms.get(key) or []
        for position, step in enumerate(steps):
            if isinstance(step, dict) and step.get("Normalize") == resolved:
                steps[position] = {"Normalize": "dataset"}
                changed = True
    return ["Normalize: dataset computed again on the training and validation images"] if changed else []


def _steps_per_epoch(samples: int, data: dict[str, Any], accumulate: int) -> int:
    batch = data["batch_size"]
    batches = samples // batch if data.get("drop_last") else math.ceil(samples / batch)
    return max(1, math.ceil(batches / accumulate))


def _epoch_length_ratio(recipe: dict[str, Any], description: dict[str, Any]) -> float:
    """Optimizer steps per epoch of the refit over those of the run (train + valid samples against
    train samples), from the run's data.json."""
    counts = description.get("num_samples") or {}
    train, valid = int(counts.get("train", 0)), int(counts.get("valid", 0))
    if not train or not valid:
        return 1.0
    accumulate = int(recipe["train"].get("accumulate", 1))
    before = _steps_per_epoch(train, recipe["data"], accumulate)
    return _steps_per_epoch(train + valid, recipe["data"], accumulate) / before


def _refit_schedule(schedule: dict[str, Any], ratio: float, path: str) -> list[str]:
    """Adapt a resolved schedule (in place) to the refit: counts in optimizer steps scaled by
    ``ratio`` (rounded up, so a schedule sized to the run still covers it), a per-step decay made
    per-epoch-equal, and a plateau monitor on validation moved to ``train/loss``."""
    from trainlab.train.schedules import SCHEDULES

    changes = []
    name = schedule["name"]
    entry = SCHEDULES.get(name)
    if ratio != 1.0 and schedule.get("interval") == "step":
        scale = (lambda value: max(1, math.ceil(value * ratio - 1e-9)))
        for count in entry.capabilities.get("counts", ()):
            value = schedule.get(count)
            if isinstance(value, list):
                schedule[count] = [scale(item) for item in value]
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                schedule[count] = scale(value)
            else:
                continue
            changes.append(f"{path}.{count}: {value} -> {schedule[count]} (epochs are {ratio:.4g}x as many steps)")
        if name == "ExponentialLR" and isinstance(schedule.get("gamma"), (int, float)):
            schedule["gamma"] = float(schedule["gamma"]) ** (1.0 / ratio)
            changes.append(f"{path}.gamma: the per-step decay of the longer epochs")
    warmup = schedule.get("warmup")
    if ratio != 1.0 and warmup and warmup.get("steps"):
        before = warmup["steps"]
        warmup["steps"] = max(1, math.ceil(before * ratio - 1e-9))
        changes.append(f"{path}.warmup.steps: {before} -> {warmup['steps']}")
    if entry.capabilities.get("unit") == "plateau" and str(schedule.get("monitor") or "").startswith("valid/"):
        changes.append(f"{path}.monitor: {schedule['monitor']} -> train/loss (no validation split)")
        schedule["monitor"], schedule["mode"] = "train/loss", "min"
    for position, child in enumerate(schedule.get("schedules") or []):
        changes += _refit_schedule(child, ratio, f"{path}.schedules[{position}]")
    return changes


# ----------------------------------------------------------------------------------- baselines


@dataclass
class BaselineResult:
    """scikit-learn references measured on one split: ``models`` maps a model's name to its
    :class:`~trainlab.evaluate.metrics.EvalResult`. ``note`` says when the split asked for was
    missing and another was used."""

    split: str
    task: str
    models: dict[str, Any]
    train_samples: int
    samples: int
    note: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        models = {name: {"scalars": {key: float(value) for key, value in result.scalars.items()}}
                  for name, result in self.models.items()}
        data: dict[str, Any] = {"split": self.split, "task": self.task, "train_samples": self.train_samples,
                                "samples": self.samples, "models": models}
        if self.note:
            data["note"] = self.note
        return data


def baseline(recipe_or_run: Any, split: str = "test") -> BaselineResult:
    """scikit-learn references for a csv or text recipe (or run folder), fitted on its training split
    and measured on ``split`` (test; valid when there is no test split, said in ``note``) with the
    recipe's ``evaluate`` metrics.

    Tables: HistGradientBoostingClassifier and LogisticRegression(max_iter=2000) (regression:
    HistGradientBoostingRegressor and Ridge) on the preprocessed features the network sees;
    regression metrics are in the target's own units. Text: CountVectorizer and
    TfidfVectorizer(ngram_range=(1, 2)), each followed by LogisticRegression(max_iter=2000), on the
    raw texts of the same rows. Seeds are the recipe's. Given a run folder, also writes
    ``baseline.json`` there (atomically)."""
    from trainlab.pipeline import check

    folder = None
    if isinstance(recipe_or_run, (str, Path)) and Path(recipe_or_run).is_dir():
        folder = _run_folder(recipe_or_run)
        recipe_or_run = folder / runs.RECIPE_FILE
    checked = check(recipe_or_run)
    recipe, data = checked.recipe, checked.data
    source = recipe.data.source
    if source not in ("csv", "text"):
        raise TrainlabError(f"baselines cover csv and text recipes; this recipe's data source is {source}. "
                            "Compare image models with each other instead")
    if split not in ("train", "valid", "test"):
        raise TrainlabError(f"unknown split '{split}': expected test, valid or train")
    note = None
    if data.loader(split) is None:
        if split == "test" and data.valid is not None:
            note = "the data have no test split: the baselines are measured on the valid split"
            split = "valid"
        else:
            available = ", ".join(name for name in ("train", "valid", "test") if data.loader(name) is not None)
            raise TrainlabError(f"the data have no {split} split (they have: {available}). Choose one of those, or "
                                "give the recipe a test split (data.split.test or a test file)")
    if source == "csv":
        result = _table_baselines(recipe, data, split)
    else:
        result = _text_baselines(recipe, data, split)
    result.note = note
    if folder is not None:
        from trainlab.train.checkpoint import write_json_atomic

        write_json_atomic(folder / BASELINE_FILE, result.to_json())
        if recipe.log.report:  # the report shows the baselines beside the network's numbers
            from trainlab.evaluate.report import write_report

            write_report(folder)
    return result


def loader_tensors(loader: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """All inputs and targets of an in-memory split (a TensorLoader, or a DataLoader over a TensorDataset)."""
    if hasattr(loader, "inputs"):
        return loader.inputs.cpu(), loader.targets.cpu()
    tensors = loader.dataset.tensors
    return tensors[0].cpu(), tensors[1].cpu()


def _fit(name: str, model: Any, inputs: Any, targets: Any) -> Any:
    try:
        return model.fit(inputs, targets)
    except ValueError as error:
        raise TrainlabError(f"the baseline {name} cannot be fitted on the training split: {error}") from None


def _classification_predictions(model: Any, inputs: Any, targets: torch.Tensor, class_names: list[str]) -> Any:
    """Predictions of a fitted scikit-learn classifier: class indices and (N, C) probabilities
    (columns by ``model.classes_``; a class the model never saw gets 0)."""
    import numpy as np

    from trainlab.evaluate.predictions import Predictions

    chances = model.predict_proba(inputs)
    table = np.zeros((len(targets), len(class_names)), dtype=np.float64)
    table[:, np.asarray(model.classes_, dtype=np.int64)] = chances
    predicted = np.asarray(model.predict(inputs), dtype=np.int64)
    return Predictions("classification", targets.long(), torch.from_numpy(predicted),
                       torch.from_numpy(table).float(), list(class_names))


def _measure(recipe: Any, predictions: Any) -> Any:
    from trainlab.evaluate.metrics import compute_metrics

    return compute_metrics(predictions, recipe.evaluate.metrics, recipe.evaluate.top_k)


def _table_baselines(recipe: Any, data: Any, split: str) -> BaselineResult:
    """Gradient boosting and a linear model on the network's own (preprocessed) features."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    from trainlab.evaluate.predictions import Predictions

    spec, seed = data.spec, recipe.seed
    train_x, train_y = loader_tensors(data.train)
    eval_x, eval_y = loader_tensors(data.loader(split))
    results = {}
    if spec.task == "classification":
        models = {"HistGradientBoostingClassifier": HistGradientBoostingClassifier(random_state=seed),
                  "LogisticRegression": LogisticRegression(max_iter=2000, random_state=seed)}
        for name, model in models.items():
            _fit(name, model, train_x.numpy(), train_y.numpy())
            results[name] = _measure(recipe, _classification_predictions(model, eval_x.numpy(), eval_y,
                                                                         list(spec.class_names or [])))
    else:
        inverse = getattr(data.preprocessor, "inverse_target", lambda values: values)
        truth = inverse(eval_y.float().reshape(len(eval_y), -1))
        models = {"HistGradientBoostingRegressor": HistGradientBoostingRegressor(random_state=seed),
                  "Ridge": Ridge()}
        for name, model in models.items():
            _fit(name, model, train_x.numpy(), train_y.float().reshape(-1).numpy())
            guess = torch.as_tensor(model.predict(eval_x.numpy()), dtype=torch.float32).reshape(len(eval_y), -1)
            results[name] = _measure(recipe, Predictions("regression", truth, inverse(guess)))
    return BaselineResult(split, spec.task, results, len(train_y), len(eval_y))


def _text_baselines(recipe: Any, data: Any, split: str) -> BaselineResult:
    """Bag-of-words and TF-IDF (words and word pairs) logistic regressions on the raw texts, re-read
    with the recipe's split: the same rows as the network's."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from trainlab.data.tables import encode_labels, load_tables
    from trainlab.data.text import cell_text

    config, seed = recipe.data, recipe.seed
    tables = load_tables(config, seed, stratify=True, columns={"text": config.text})
    class_names, labels = encode_labels(tables, config.target)
    texts = {name: [cell_text(value) for value in frame[config.text].tolist()] for name, frame in tables.frames.items()}
    # token-id texts ("[0 43 2]"): every id is a word, however short
    words = {"token_pattern": r"[^\s,\[\]]+"} if config.tokenizer == "ids" else {}
    models = {
        "CountVectorizer+LogisticRegression": make_pipeline(
            CountVectorizer(**words), LogisticRegression(max_iter=2000, random_state=seed)),
        "TfidfVectorizer(1,2)+LogisticRegression": make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), **words), LogisticRegression(max_iter=2000, random_state=seed)),
    }
    results = {}
    for name, model in models.items():
        _fit(name, model, texts["train"], labels["train"].numpy())
        results[name] = _measure(recipe, _classification_predictions(model, texts[split], labels[split], class_names))
    return BaselineResult(split, "classification", results, len(labels["train"]), len(labels[split]))


__all__ = ["BaselineResult", "baseline", "image_files", "predict", "refit", "loader_tensors"]
