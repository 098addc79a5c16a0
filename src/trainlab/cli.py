"""The ``trainlab`` command line (typer + rich).

Exit codes: 0 success; 2 a bad recipe, bad input or bad usage (a message, no traceback);
1 an unexpected failure (a one-line message; the traceback with ``--debug``); 130 when Ctrl-C or
SIGTERM stopped training after writing a resumable checkpoint (``--devices N``: 128 + the signal's
number, 143 for SIGTERM, once the processes have stopped).
"""

from __future__ import annotations

import gc
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.table import Table

from trainlab.recipe.errors import TrainlabError

app = typer.Typer(
    name="trainlab",
    help="A declarative PyTorch training lab: one YAML recipe trains, logs, checkpoints and resumes a model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
recipes_app = typer.Typer(help="List the shipped recipes, or copy one to edit.", invoke_without_command=True)
app.add_typer(recipes_app, name="recipes")
data_app = typer.Typer(help="Look at a recipe's data before training.")
app.add_typer(data_app, name="data")


class _RunsGroup(TyperGroup):
    """`trainlab runs [DIR]` lists runs; anything that is not a subcommand goes to `list`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


runs_app = typer.Typer(cls=_RunsGroup, help="List the runs of a runs folder, or compare runs.")
app.add_typer(runs_app, name="runs")

# Tables printed to a pipe or a file are not cut to 80 columns (a terminal keeps its own width).
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)
_options: dict[str, Any] = {"debug": False, "plugin_args": []}

SHIPPED = Path(__file__).parent / "recipes"


@app.callback()
def _global(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of unexpected failures."),
    plugins: list[str] = typer.Option(
        [], "--plugins", help="Modules to import that register extra components (mypkg.layers)."
    ),
) -> None:
    _options["debug"] = debug
    _options["plugin_args"] = [argument for module in plugins for argument in ("--plugins", module)]
    if plugins:
        from trainlab.plugins import load_plugins

        load_plugins(plugins)


def _recipe_path(recipe: str) -> Path:
    """A recipe file, or the name of a shipped recipe (``digits-lenet``)."""
    path = Path(recipe)
    if not path.exists():
        shipped = SHIPPED / f"{recipe.removesuffix('.yaml')}.yaml"
        if shipped.exists():
            return shipped
    return path


@app.command()
def train(
    recipe: str = typer.Argument(..., help="Recipe file (or a shipped recipe name)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides: optimizer.lr=3e-4 train.epochs=5"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="The exact run folder (default runs/<name>/<timestamp>)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run folders go when --out is not given."),
    progress: Optional[str] = typer.Option(None, help="auto | bar | plain | none (default: the recipe's log.progress)."),
    devices: Optional[int] = typer.Option(None, "--devices", help="Train data-parallel in N processes on this "
                                          "machine (one per GPU; gloo on CPU), as `torchrun --nproc-per-node N` does."),
) -> None:
    """Validate and train a recipe; prints the run folder."""
    if devices is not None:
        options = [*(["--out", str(out_dir)] if out_dir is not None else []), "--runs-dir", str(runs_dir),
                   *(["--progress", progress] if progress else [])]
        _launch(devices, ["train", recipe, *(overrides or []), *options])
        return
    from trainlab.pipeline import train as train_recipe
    from trainlab.recipe import load_recipe

    loaded = load_recipe(_recipe_path(recipe), overrides or [])
    run = train_recipe(loaded, out=out_dir, root=runs_dir, progress=progress, report=_note)
    _finish(run)


def _note(text: str) -> None:
    """A fact worth a line (data notes: inferred task, loader settings, skipped files)."""
    err.print(text, markup=False, highlight=False, soft_wrap=True)


@app.command()
def resume(
    run_dir: Path = typer.Argument(..., help="A run folder written by `trainlab train`."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides, e.g. train.epochs=20 to extend."),
    progress: Optional[str] = typer.Option(None, help="auto | bar | plain | none."),
    devices: Optional[int] = typer.Option(None, "--devices", help="Continue data-parallel in N processes (as many "
                                          "as the run was trained with)."),
) -> None:
    """Continue an interrupted run exactly, or extend a finished one."""
    if devices is not None:
        _launch(devices, ["resume", str(run_dir), *(overrides or []), *(["--progress", progress] if progress else [])])
        return
    from trainlab.pipeline import resume as resume_run

    _finish(resume_run(run_dir, overrides or [], progress=progress))


def _launch(devices: int, arguments: list[str]) -> None:
    """Run this command again in ``devices`` processes through torch's elastic launcher."""
    from trainlab.train.distributed import environment, launch

    if environment() is not None:
        raise TrainlabError("--devices starts its own processes: drop it when launching with torchrun")
    global_options = [*(["--debug"] if _options["debug"] else []), *_options["plugin_args"]]
    code = launch(devices, [*global_options, *arguments])
    if code:
        raise typer.Exit(code)


def _finish(run: Any) -> None:
    from trainlab.train.distributed import is_main

    if not is_main():  # the other processes of a data-parallel run print nothing
        if run.status == "interrupted":
            raise typer.Exit(130)
        return
    state = run.result.state if run.result else None
    summary = f"[bold]{run.status}[/bold] after {state.epoch} epochs, {state.step} steps" if state else run.status
    if state is not None and state.best_value is not None:
        summary += f"; best {run.recipe.train.monitor} = {state.best_value:.4g} at step {state.best_step}"
    if run.result and run.result.samples_per_second:
        summary += (f"; {run.result.samples_per_second:,.0f} samples/s after a "
                    f"{run.result.warmup_seconds:.2f} s first step")
    err.print(summary, soft_wrap=True)
    print(run.folder)
    if run.status == "interrupted":
        by = f" by {run.result.stopped_by}" if run.result and run.result.stopped_by else ""
        err.print(f"Interrupted{by}; continue with: trainlab resume {run.folder}")
        raise typer.Exit(130)


@app.command()
def validate(recipes: list[str] = typer.Argument(..., help="Recipe files to check.")) -> None:
    """Check recipes completely (schema, torch names and arguments, layer shapes); exit 2 on any problem."""
    from trainlab.pipeline import check
    from trainlab.recipe import TrainlabError, load_recipe

    failed = False
    for recipe in recipes:
        try:
            checked = check(load_recipe(_recipe_path(recipe)))
            for note in checked.data.notes:
                _note(note)
            out.print(f"[green]ok[/green] {recipe}")
        except TrainlabError as error:
            failed = True
            print(str(error), file=sys.stderr)
    if failed:
        raise typer.Exit(2)


@app.command()
def schema(
    markdown: bool = typer.Option(False, "--markdown", help="The recipe reference as Markdown (docs/recipe.md)."),
) -> None:
    """Print the recipe's JSON Schema (or the Markdown reference generated from it)."""
    if markdown:
        from trainlab.recipe.reference import render_reference

        print(render_reference(), end="")
        return
    from trainlab.recipe.schema import Recipe

    print(json.dumps(Recipe.model_json_schema(), indent=2))


@app.command("show-model")
def show_model(
    recipe: str = typer.Argument(..., help="Recipe file."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides."),
) -> None:
    """A table of the model's layers with output shapes and parameter counts."""
    from trainlab.models import summarize
    from trainlab.pipeline import check
    from trainlab.recipe import load_recipe

    checked = check(load_recipe(_recipe_path(recipe), overrides or []))
    summary = summarize(checked.model, checked.spec)
    table = Table(title=f"{checked.recipe.name}: input {tuple(checked.spec.input_shape)}")
    table.add_column("layer")
    table.add_column("type")
    table.add_column("output shape")
    table.add_column("parameters", justify="right")
    for row in summary.rows:
        table.add_row(row.name, row.kind, str(tuple(row.output_shape)), f"{row.parameters:,}")
    out.print(table)
    out.print(f"total parameters: {summary.total_parameters:,}  trainable: {summary.trainable_parameters:,}")


@app.command("schedule")
def schedule_command(
    recipe: str = typer.Argument(..., help="Recipe file (or a shipped recipe name)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG to write (default <name>-schedule.png)."),
) -> None:
    """Show the resolved learning-rate schedule and plot lr (and momentum) against the step, without training."""
    import yaml

    from trainlab.evaluate.plots import plot_schedule
    from trainlab.pipeline import preview
    from trainlab.recipe import load_recipe
    from trainlab.train.schedules import key_points, total_units_text

    report = preview(load_recipe(_recipe_path(recipe), overrides or []))
    shown = report.preview
    if report.schedule is None:
        out.print(f"no schedule: constant lr {shown.lr[0]:.4g}")
    else:
        out.print(yaml.safe_dump({"schedule": report.schedule.model_dump(mode="json", exclude_none=True)},
                                 sort_keys=False).rstrip(), markup=False, highlight=False)
        unit = {"step": "every optimizer step", "epoch": "every epoch",
                "plateau": "after each validation, on " + str(report.schedule.monitor)}[shown.interval]
        out.print(f"stepped {unit}; {total_units_text(report.context)}")
        if shown.interval == "plateau":
            out.print("ReduceLROnPlateau reacts to validation metrics: the plot shows the starting lr only")
    table = Table(title="key points")
    table.add_column("step", justify="right")
    table.add_column("epoch", justify="right")
    table.add_column("lr", justify="right")
    for step, rate in key_points(shown):
        table.add_row(str(step), str((step - 1) // report.context.steps_per_epoch + 1), f"{rate:.6g}")
    out.print(table)
    target = plot or Path(f"{report.recipe.name}-schedule.png")
    plot_schedule(shown.steps, shown.lr, target, shown.momentum, title=f"{report.recipe.name}: lr schedule",
                  epoch_steps=report.context.steps_per_epoch)
    print(target)


@app.command("lr-find")
def lr_find_command(
    recipe: str = typer.Argument(..., help="Recipe file (or a shipped recipe name)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides."),
    start_lr: Optional[float] = typer.Option(None, "--start-lr", help="First lr of the sweep (default 1e-7)."),
    end_lr: Optional[float] = typer.Option(None, "--end-lr", help="Last lr of the sweep (default 10)."),
    num_iter: Optional[int] = typer.Option(None, "--num-iter", help="Optimizer steps of the sweep (default 100)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="exp (default) or linear spacing."),
    accuracy_every: Optional[int] = typer.Option(None, "--accuracy-every",
                                                 help="Also measure validation accuracy every N steps."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for lr_find.png and lr_find.json "
                                           "(default <name>-lr-find)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """The LR range test: raise the lr every step, plot the smoothed loss, suggest learning rates."""
    from trainlab.pipeline import lr_find
    from trainlab.recipe import load_recipe

    loaded = load_recipe(_recipe_path(recipe), overrides or [])
    folder = out_dir or Path(f"{loaded.recipe.name}-lr-find")
    result = lr_find(loaded, out=folder, start_lr=start_lr, end_lr=end_lr, num_iter=num_iter, mode=mode,
                     accuracy_every=accuracy_every)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
        return
    table = Table(title=f"LR range test: {len(result.lrs)} steps" + (" (stopped: the loss diverged)"
                                                                      if result.stopped_early else ""))
    table.add_column("suggestion")
    table.add_column("lr", justify="right")
    for name, value in result.suggestions.items():
        marker = " (default)" if name == result.suggestion else ""
        table.add_row(name + marker, f"{value:.3g}")
    out.print(table)
    print(folder / "lr_find.png")


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run folder written by `trainlab train`."),
    split: str = typer.Option("valid", "--split", help="valid | test | train."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best | last."),
    tta: Optional[str] = typer.Option(None, "--tta", help="Test-time augmentation: fivecrop | tencrop | hflip."),
) -> None:
    """Metrics of a run's checkpoint on a split: a table, eval/<split>.json, plots, and the report."""
    from trainlab.pipeline import evaluate_run

    if split not in ("train", "valid", "test"):
        raise TrainlabError(f"--split {split}: expected train, valid or test")
    evaluation = evaluate_run(run_dir, split=split, checkpoint=checkpoint, tta=tta)
    result = evaluation.result
    title = f"{split} split, checkpoint {checkpoint}" + (f", TTA {tta}" if tta else "")
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.scalars.items():
        table.add_row(name, f"{value:.4f}")
    out.print(table)
    if result.per_class and len(result.per_class) <= 30:
        classes = Table(title="per class")
        fields = [field for field in ("precision", "recall", "f1", "support") if any(
            field in row for row in result.per_class.values())]
        classes.add_column("class")
        for field in fields:
            classes.add_column(field, justify="right")
        for name, row in result.per_class.items():
            classes.add_row(name, *(f"{row[field]:.4g}" if field in row else "" for field in fields))
        out.print(classes)
    for note in result.notes:
        _note(note)
    print(evaluation.path)


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="A run folder written by `trainlab train`."),
    input_path: Path = typer.Argument(..., help="An image folder or file list, a CSV, or a text CSV/TSV."),
    out_file: Path = typer.Option(Path("predictions.csv"), "--out", help="The CSV to write."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best | last."),
    columns: Optional[str] = typer.Option(None, "--columns", help="Output columns in order, e.g. id,label or "
                                          "PassengerId=id,Survived=label (a submission layout)."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Add a p_<class> column per class."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Inputs per forward pass."),
) -> None:
    """Predictions for new inputs through the run's saved preprocessing: id, label (or value), probabilities."""
    from trainlab.inference import predict as predict_inputs

    print(predict_inputs(run_dir, input_path, out_file, checkpoint=checkpoint, columns=columns,
                         probabilities=probabilities, batch_size=batch_size))


@app.command()
def refit(
    run_dir: Path = typer.Argument(..., help="A run folder written by `trainlab train`."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="The exact run folder of the refit."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run folders go when --out is not given."),
    progress: Optional[str] = typer.Option(None, help="auto | bar | plain | none."),
) -> None:
    """Train the run's recipe again on train + valid for its best epoch count, as a new run."""
    from trainlab.inference import refit as refit_run

    _finish(refit_run(run_dir, out=out_dir, root=runs_dir, progress=progress))


@app.command()
def baseline(
    target: str = typer.Argument(..., help="A csv or text recipe (or shipped recipe name), or a run folder."),
    split: str = typer.Option("test", "--split", help="test (valid when there is none) | valid | train."),
) -> None:
    """scikit-learn references on the same split with the same metrics; a run folder gets baseline.json."""
    from trainlab.inference import baseline as run_baseline

    source: Any = Path(target) if Path(target).is_dir() else _recipe_path(target)
    result = run_baseline(source, split=split)
    names = list(result.models)
    table = Table(title=f"scikit-learn baselines on the {result.split} split")
    table.add_column("metric")
    for name in names:
        table.add_column(name, justify="right")
    metrics = list(dict.fromkeys(metric for model in result.models.values() for metric in model.scalars))
    for metric in metrics:
        table.add_row(metric, *(f"{result.models[name].scalars[metric]:.4f}" if metric in result.models[name].scalars
                                else "" for name in names))
    out.print(table)
    if result.note:
        _note(result.note)
    if isinstance(source, Path) and source.is_dir():
        print(source / "baseline.json")


@data_app.command("show")
def data_show(
    recipe: str = typer.Argument(..., help="Recipe file (or a shipped recipe name)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides."),
    count: int = typer.Option(32, "--count", min=1, max=256, help="Training samples in the grid."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG to write (default <name>-samples.png)."),
) -> None:
    """Class counts of each split, and a PNG grid of augmented training samples (image data)."""
    from trainlab.pipeline import data_preview
    from trainlab.recipe import load_recipe

    loaded = load_recipe(_recipe_path(recipe), overrides or [])
    preview = data_preview(loaded, count=count)
    for note in preview.notes:
        _note(note)
    spec = preview.spec
    shape = "x".join(str(size) for size in spec.input_shape)
    sizes = ", ".join(f"{split} {spec.num_samples[split]:,}" for split in ("train", "valid", "test")
                      if split in spec.num_samples)
    out.print(f"{spec.task}: samples of shape {shape} ({str(spec.input_dtype).removeprefix('torch.')}); {sizes}", soft_wrap=True)
    if preview.counts:
        table = Table(title="samples per class")
        table.add_column("class")
        for split in preview.counts:
            table.add_column(split, justify="right")
        for name in spec.class_names or []:
            table.add_row(name, *(f"{preview.counts[split][name]:,}" for split in preview.counts))
        out.print(table)
    if preview.images is None:
        err.print("no image grid: the inputs are not images", markup=False)
        return
    from trainlab.evaluate.plots import plot_samples

    target = plot or Path(f"{preview.recipe.name}-samples.png")
    plot_samples(preview.images, preview.labels, target, title=f"{preview.recipe.name}: training samples as the first epoch serves them")
    print(target)


@runs_app.command("list")
def runs_list(runs_dir: Path = typer.Argument(Path("runs"), help="The runs folder.")) -> None:
    """Every run under the runs folder, newest first (from its index.sqlite, kept up to date)."""
    from trainlab.runindex import list_runs, runs_table

    rows = list_runs(runs_dir)
    out.print(runs_table(rows) if rows else f"no runs in {runs_dir}")


@runs_app.command("compare")
def runs_compare(
    run_dirs: list[Path] = typer.Argument(..., help="Run folders."),
    plot: Path = typer.Option(Path("compare.png"), "--plot", help="PNG of the overlaid curves."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """Final and best metrics of runs side by side, and their curves overlaid in one PNG."""
    from trainlab.evaluate.compare import compare_runs, compare_table

    result = compare_runs(run_dirs, plot)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
        return
    out.print(compare_table(result))
    print(result.plot)


def _describe(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


@recipes_app.callback()
def recipes_list(context: typer.Context) -> None:
    """List the shipped recipes."""
    if context.invoked_subcommand is not None:
        return
    table = Table(title="shipped recipes")
    table.add_column("name")
    table.add_column("description")
    for path in sorted(SHIPPED.glob("*.yaml")):
        table.add_row(path.stem, _describe(path))
    out.print(table)


@recipes_app.command("copy")
def recipes_copy(
    name: str = typer.Argument(..., help="A shipped recipe name (see `trainlab recipes`)."),
    dest: Path = typer.Argument(..., help="File or folder to copy it to."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Copy a shipped recipe to edit it."""
    from trainlab.recipe import TrainlabError
    from trainlab.registry import did_you_mean

    source = SHIPPED / f"{name.removesuffix('.yaml')}.yaml"
    if not source.exists():
        names = [path.stem for path in SHIPPED.glob("*.yaml")]
        guess = did_you_mean(name, names)
        hint = f" Did you mean '{guess[0]}'?" if guess else ""
        raise TrainlabError(f"no shipped recipe '{name}'.{hint} List them with `trainlab recipes`")
    target = dest / source.name if dest.is_dir() else dest
    if target.exists() and not force:
        raise TrainlabError(f"'{target}' already exists. Choose another destination or pass --force")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    print(target)


def _run(entry: Callable[[], Any]) -> int:
    """Run the typer app and map failures onto exit codes."""
    from trainlab.recipe.errors import TrainlabError

    try:
        entry()  # typer reports bad usage itself and exits with 2
        return 0
    except TrainlabError as error:
        print(str(error), file=sys.stderr)
        if _options["debug"]:
            err.print_exception()
        return 2
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KeyboardInterrupt:
        err.print("Interrupted.")
        return 130
    except Exception as error:  # noqa: BLE001 - the last line of defence
        if _options["debug"]:
            err.print_exception()
        else:
            print(f"unexpected failure: {type(error).__name__}: {error} (run with --debug for the traceback)",
                  file=sys.stderr)
        return 1


# The command process runs young-generation garbage collections as usual but a full one only
# after 1,000 of them (Python's default: 10). Importing torch, scikit-learn, matplotlib and the
# rest grows the heap by hundreds of thousands of long-lived objects, and every few imports set
# off a full collection that scans them all: 8 in a `trainlab train` of the default recipe, 1.2 s
# of a ~7 s run, with the same peak memory either way (docs/benchmarks.md, "Command start-up").
FULL_COLLECTION_AFTER = 1000


def main(argv: list[str] | None = None) -> None:
    """Console entry point (the collector's setting is put back for an in-process caller)."""
    saved = gc.get_threshold()
    gc.set_threshold(saved[0], saved[1], FULL_COLLECTION_AFTER)
    try:
        code = _run(lambda: app(args=argv))
    finally:
        gc.set_threshold(*saved)
    sys.exit(code)
