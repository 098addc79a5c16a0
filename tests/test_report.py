"""report.html is one self-contained, escaped page of a run; compare_runs summarizes runs side by side."""

from __future__ import annotations

import base64
import json
import os
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

import trainlab
from trainlab.evaluate.compare import compare_runs, compare_table
from trainlab.evaluate.plots import plot_schedule
from trainlab.evaluate.report import REPORT_FILE, write_report
from trainlab.recipe.errors import TrainlabError
from trainlab.train.callbacks import read_records

from conftest import tiny_recipe

CLASS = "<b>x</b>"


class Page(HTMLParser):
    """What a browser would see: tags, image sources, and the text of every table row."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.rows: list[list[str]] = []
        self.headings: list[str] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes["src"])
        self.links += [value for name, value in attrs if name in ("href", "src") and tag != "img"]
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h2":
            self._heading = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "h2" and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data):
        self.text.append(data)
        for part in (self._cell, self._heading):
            if part is not None:
                part.append(data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two runs trained once for the module; the first writes its curves plot."""
    root = tmp_path_factory.mktemp("trained")
    first = trainlab.train(tiny_recipe(log={"plots": True}), out=root / "tiny" / "2024-01-02T03-04-05")
    second = trainlab.train(tiny_recipe(optimizer={"name": "SGD", "lr": 0.3}, train={"epochs": 2}),
                            out=root / "tiny" / "2024-01-03T10-00-00")
    return first.folder, second.folder


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the first run, with more plots, an evaluation and baselines as evaluation writes them."""
    folder = tmp_path / "run"
    shutil.copytree(trained[0], folder)
    plot_schedule([1, 2, 3], [0.1, 0.05, 0.01], folder / "plots" / "schedule.png")
    plot_schedule([1, 2], [0.3, 0.2], folder / "plots" / "eval" / "test_confusion.png")
    plot_schedule([1, 2], [0.5, 0.4], tmp_path / "secret.png")  # named by the evaluation, outside the run
    (folder / "eval").mkdir(exist_ok=True)  # training wrote eval/valid.json already
    evaluation = {
        "split": "test", "checkpoint": "best",
        "scalars": {"accuracy": 0.8125, "macro_f1": 0.75},
        "per_class": {CLASS: {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "support": 4},
                      "cat": {"precision": 1.0, "recall": 0.875, "f1": 0.9333, "support": 8}},
        "confusion": {"counts": [[1, 3], [1, 7]], "normalized": [[0.25, 0.75], [0.125, 0.875]]},
        "figures": {"confusion": "plots/eval/test_confusion.png", "outside": "../secret.png"},
    }
    (folder / "eval" / "test.json").write_text(json.dumps(evaluation))
    (folder / "baseline.json").write_text(json.dumps(
        {"split": "test", "models": {"majority class": {"scalars": {"accuracy": 0.3333, "macro_f1": 0.1667}}}}))
    data = json.loads((folder / "data.json").read_text())
    data["class_names"] = [CLASS, "cat", "dog"]
    (folder / "data.json").write_text(json.dumps(data))
    return folder


def test_every_plot_is_inlined_and_nothing_is_loaded_from_elsewhere(run):
    page = Page(write_report(run).read_text(encoding="utf-8"))
    plots = sorted((run / "plots").rglob("*.png"))
    # curves, the two added here, and the validation figures training wrote (confusion, ROC, PR, F1)
    assert {"curves.png", "schedule.png", "test_confusion.png", "valid_confusion.png", "valid_roc.png"} <= \
        {path.name for path in plots}
    inlined = [base64.b64decode(src.removeprefix("data:image/png;base64,")) for src in page.images]
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    for path in plots:
        assert inlined.count(path.read_bytes()) == 1, path  # each exactly once
    assert len(page.images) == len(plots)  # the figure outside the run folder is not inlined
    assert "script" not in page.tags and "link" not in page.tags and page.links == []
    captions = "".join(page.text)
    assert "Training curves" in captions and "Learning-rate schedule" in captions
    assert "Confusion matrix (counts) (plots/eval/test_confusion.png)" in captions


def test_tables_of_the_run_its_evaluation_and_its_baselines(run):
    page = Page(write_report(run).read_text(encoding="utf-8"))
    records = read_records(run / "metrics.jsonl")
    last_valid = [record for record in records if record["split"] == "valid"][-1]
    status = json.loads((run / "status.json").read_text())
    valid_row = next(row for row in page.rows if row[:3] == ["valid", "3", "27"])
    assert {f"{last_valid['loss']:.4g}", f"{last_valid['accuracy']:.4g}", f"{last_valid['f1_macro']:.4g}"} <= \
        set(valid_row)  # the loss's metrics and the evaluate metrics of every validation
    assert ["best valid/loss", f"{status['best_value']:.4g} at step {status['best_step']}"] in page.rows
    assert ["optimizer steps", "27"] in page.rows
    assert ["accuracy", "0.8125"] in page.rows and ["macro_f1", "0.75"] in page.rows
    assert ["class", "precision", "recall", "f1", "support"] in page.rows
    assert [CLASS, "0.5", "0.25", "0.3333", "4"] in page.rows
    assert ["cat", "1", "0.875", "0.9333", "8"] in page.rows
    assert ["true \\ predicted", CLASS, "cat"] in page.rows
    assert [CLASS, "1 (0.25)", "3 (0.75)"] in page.rows
    assert ["network (test)", "0.8125", "0.75"] in page.rows
    assert ["majority class (test)", "0.3333", "0.1667"] in page.rows
    assert ["train", "72"] in page.rows and ["valid", "24"] in page.rows  # samples per split
    assert "name: tiny" in "".join(page.text)  # the recipe, verbatim


def test_user_text_is_escaped(run):
    recipe = (run / "recipe.yaml").read_text()
    (run / "recipe.yaml").write_text(recipe + "# <script>alert(1)</script> & more\n")
    html = write_report(run).read_text(encoding="utf-8")
    page = Page(html)
    assert "b" not in page.tags and "script" not in page.tags
    assert "&lt;b&gt;x&lt;/b&gt;" in html and CLASS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert "<b>x</b>, cat, dog" in "".join(page.text)  # the data section's class names, as text


def test_the_report_is_replaced_atomically(run, monkeypatch):
    first = write_report(run)
    assert first == run / REPORT_FILE
    before = first.read_bytes()
    (run / "eval" / "test.json").write_text(json.dumps({"split": "test", "scalars": {"accuracy": 0.5}}))

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(run)
    assert first.read_bytes() == before  # the old report is intact
    monkeypatch.undo()
    write_report(run)
    assert first.read_bytes() != before and ["accuracy", "0.5"] in Page(first.read_text()).rows
    assert sorted(path.name for path in run.iterdir() if "report" in path.name) == [REPORT_FILE]  # no temporary


def test_missing_optional_files_are_left_out(run, tmp_path):
    for name in ("plots", "eval"):
        shutil.rmtree(run / name)
    for name in ("baseline.json", "data.json", "env.json", "metrics.jsonl"):
        (run / name).unlink()
    page = Page(write_report(run).read_text(encoding="utf-8"))
    assert page.images == []
    assert page.headings == ["Training", "Recipe"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainlabError, match="is not a trainlab run folder"):
        write_report(tmp_path / "empty")


# ----------------------------------------------------------------------------------- compare


def test_compare_table_matches_each_runs_metrics(trained, tmp_path):
    result = compare_runs(list(trained), tmp_path / "compare.png")
    assert [run.label for run in result.runs] == ["tiny (2024-01-02T03-04-05)", "tiny (2024-01-03T10-00-00)"]
    assert {"train/loss", "train/accuracy", "valid/loss", "valid/accuracy", "valid/f1_macro"} <= set(result.metrics)
    for folder, run in zip(trained, result.runs):
        records = read_records(folder / "metrics.jsonl")
        status = json.loads((folder / "status.json").read_text())
        for key in result.metrics:
            split, metric = key.split("/")
            values = [record[metric] for record in records if record["split"] == split and metric in record]
            summary = run.metrics[key]
            assert summary.final == values[-1], key
            assert summary.best == (max(values) if metric == "accuracy" else min(values)), key
        assert run.seconds == status["seconds"] and run.step == status["step"] and run.status == "finished"
    assert result.runs[0].step != result.runs[1].step  # 3 and 2 epochs
    json.dumps(result.to_json())
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(compare_table(result))
    text = console.export_text()
    assert "valid/accuracy best" in text and "tiny (2024-01-03T10-00-00)" in text


def test_compare_plot_draws_one_colour_per_run(trained, tmp_path):
    result = compare_runs(list(trained), tmp_path)
    assert result.plot == tmp_path / "compare.png"
    with Image.open(result.plot) as image:
        image.verify()
    with Image.open(result.plot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    assert pixels.shape[1] > 3 * pixels.shape[0]  # three panels: valid loss, valid accuracy, train loss

    def near(colour):
        return int((np.abs(pixels - np.array(colour)).sum(axis=-1) < 40).sum())

    assert near((31, 119, 180)) > 200 and near((255, 127, 14)) > 200  # tab:blue, tab:orange


def test_compare_refuses_what_is_not_a_run(trained, tmp_path):
    with pytest.raises(TrainlabError, match="no runs to compare"):
        compare_runs([], tmp_path / "compare.png")
    with pytest.raises(TrainlabError, match="'.*nope' does not exist"):
        compare_runs([trained[0], tmp_path / "nope"], tmp_path / "compare.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainlabError, match="is not a trainlab run folder"):
        compare_runs([tmp_path / "empty"], tmp_path / "compare.png")
    assert not (tmp_path / "compare.png").exists()
