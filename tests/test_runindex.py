"""The run index: built, refreshed and rebuilt from the run folders; statuses as status.json says."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import time
from datetime import datetime
from pathlib import Path

import pytest
from rich.console import Console

import trainlab
from trainlab.pipeline import recipe_hash
from trainlab.recipe.errors import TrainlabError
from trainlab.runindex import (
    INDEX_FILE,
    SCHEMA_VERSION,
    STALE_AFTER,
    list_runs,
    rebuild,
    runs_table,
    update_run,
)

from conftest import tiny_recipe

FIRST, SECOND = "tiny/2024-01-02T03-04-05", "tiny/2024-01-03T10-00-00"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two finished runs under one runs root, trained once for the module."""
    root = tmp_path_factory.mktemp("trained")
    first = trainlab.train(tiny_recipe(), out=root / FIRST)
    second = trainlab.train(tiny_recipe(optimizer={"name": "SGD", "lr": 0.3}), out=root / SECOND)
    return root, first, second


@pytest.fixture
def root(trained, tmp_path):
    """A fresh copy of the trained runs root for one test (it may delete or break things)."""
    copy = tmp_path / "runs"
    shutil.copytree(trained[0], copy)
    return copy


def stored_rows(root: Path) -> dict[str, str]:
    """path -> status straight from the SQLite file."""
    with sqlite3.connect(root / INDEX_FILE) as connection:
        return dict(connection.execute("SELECT path, status FROM runs"))


def test_index_is_built_on_first_list(root, trained):
    assert not (root / INDEX_FILE).exists()
    rows = list_runs(root)
    assert [row.path for row in rows] == [SECOND, FIRST]  # newest first
    assert stored_rows(root) == {FIRST: "finished", SECOND: "finished"}
    row = rows[1]
    status = json.loads((root / FIRST / "status.json").read_text())
    assert row.name == "tiny" and row.status == row.shown_status == "finished"
    assert row.started == datetime(2024, 1, 2, 3, 4, 5).timestamp()
    assert row.monitor == "valid/loss"
    assert row.best == status["best_value"] and row.best_step == status["best_step"]
    assert row.seconds == status["seconds"] and row.step == status["step"] and row.epoch == 3
    assert row.folder == root / FIRST
    meta = json.loads((root / FIRST / "checkpoints/best/meta.json").read_text())
    assert row.recipe_hash == meta["recipe_hash"] == recipe_hash(trained[1].recipe)
    assert rows[0].recipe_hash != row.recipe_hash  # another lr


def test_a_new_run_is_added_by_update_run_and_by_list(root):
    list_runs(root)
    run = trainlab.train(tiny_recipe(train={"epochs": 1}), out=root / "tiny" / "2024-02-01T00-00-00")
    row = update_run(run.folder)
    assert row is not None and row.path == "tiny/2024-02-01T00-00-00" and row.epoch == 1
    assert stored_rows(root)[row.path] == "finished"  # in the file, before any list
    shutil.copytree(root / FIRST, root / "other" / "2024-03-01T00-00-00")  # no update_run: found by list
    rows = list_runs(root)
    assert [row.path for row in rows] == ["other/2024-03-01T00-00-00", "tiny/2024-02-01T00-00-00", SECOND, FIRST]
    assert rows[0].name == "tiny"  # the recipe's name, not the folder's


def test_a_changed_status_file_is_read_again(root):
    assert {row.status for row in list_runs(root)} == {"finished"}
    path = root / SECOND / "status.json"
    status = json.loads(path.read_text())
    path.write_text(json.dumps({**status, "status": "interrupted"}))  # as Ctrl-C leaves it
    rows = {row.path: row for row in list_runs(root)}
    assert rows[FIRST].status == "finished" and rows[SECOND].status == "interrupted"
    assert stored_rows(root)[SECOND] == "interrupted"


def test_a_deleted_index_is_rebuilt(root):
    list_runs(root)
    (root / INDEX_FILE).unlink()
    assert len(list_runs(root)) == 2
    assert set(stored_rows(root)) == {FIRST, SECOND}


@pytest.mark.parametrize("damage", ["garbage", "other schema", "old version"])
def test_a_corrupt_index_is_rebuilt_without_an_error(root, damage):
    index = root / INDEX_FILE
    if damage == "garbage":
        index.write_bytes(b"this is not a SQLite database\x00\xff" * 64)
    else:
        with sqlite3.connect(index) as connection:
            connection.execute("CREATE TABLE runs (path TEXT PRIMARY KEY, colour TEXT)")
            if damage == "old version":
                connection.execute("DROP TABLE runs")
                connection.execute("CREATE TABLE runs (path TEXT PRIMARY KEY)")
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        connection.close()
    assert [row.path for row in list_runs(root)] == [SECOND, FIRST]
    assert stored_rows(root) == {FIRST: "finished", SECOND: "finished"}
    with sqlite3.connect(index) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    connection.close()
    assert [path.name for path in root.iterdir() if path.is_file()] == [INDEX_FILE]  # no temporary file left


def test_update_run_rebuilds_a_corrupt_index(root):
    (root / INDEX_FILE).write_bytes(b"garbage" * 100)
    assert update_run(root / FIRST) is not None
    assert stored_rows(root) == {FIRST: "finished", SECOND: "finished"}


def test_a_deleted_run_folder_disappears(root):
    assert len(list_runs(root)) == 2
    shutil.rmtree(root / FIRST)
    assert rebuild(root) == 1
    assert stored_rows(root) == {SECOND: "finished"}
    assert [row.path for row in list_runs(root)] == [SECOND]
    shutil.rmtree(root / SECOND)
    assert list_runs(root) == [] and stored_rows(root) == {}  # also without an explicit rebuild


def test_a_status_only_folder_counts_and_deeper_folders_do_not(root):
    manual = root / "manual" / "attempt-1"
    manual.mkdir(parents=True)
    (manual / "status.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: boom"}))
    (root / "manual" / "attempt-1" / "nested").mkdir()
    (root / "manual" / "attempt-1" / "nested" / "recipe.yaml").write_text("name: nested\n")
    (root / "notes.txt").write_text("not a run")
    rows = {row.path: row for row in list_runs(root)}
    assert set(rows) == {FIRST, SECOND, "manual/attempt-1"}
    assert rows["manual/attempt-1"].status == "failed" and rows["manual/attempt-1"].name == "manual"
    assert rows["manual/attempt-1"].recipe_hash is None


def test_a_running_run_that_went_quiet_is_shown_as_running_with_a_question_mark(root):
    long_ago = time.time() - 2 * STALE_AFTER
    for path, pid in ((root / FIRST, None), (root / SECOND, os.getpid())):
        status = {"status": "running", "updated": long_ago, "device": "cpu"}
        if pid is not None:  # this process is alive, so the run is too
            status.update(pid=pid, host=socket.gethostname())
        (path / "status.json").write_text(json.dumps(status))
        for name in ("status.json", "metrics.jsonl"):
            os.utime(path / name, (long_ago, long_ago))
    rows = {row.path: row for row in list_runs(root)}
    assert rows[FIRST].status == "running" and rows[FIRST].shown_status == "running?"
    assert rows[SECOND].shown_status == "running"
    assert rows[FIRST].step == 27  # from the last record of metrics.jsonl while status.json has none
    now = time.time()
    os.utime(root / FIRST / "metrics.jsonl", (now, now))  # it logged again
    assert {row.path: row for row in list_runs(root)}[FIRST].shown_status == "running"


def test_runs_table_shows_every_run(root):
    (root / SECOND / "status.json").write_text(json.dumps({"status": "interrupted"}))
    console = Console(record=True, width=200)
    console.print(runs_table(list_runs(root)))
    text = console.export_text()
    assert FIRST in text and SECOND in text
    assert "finished" in text and "interrupted" in text and "valid/loss" in text


def test_user_errors_name_the_folder(root, tmp_path):
    with pytest.raises(TrainlabError, match="runs folder '.*nowhere' does not exist"):
        list_runs(tmp_path / "nowhere")
    (root / "tiny" / "empty").mkdir()
    with pytest.raises(TrainlabError, match="is not a trainlab run folder"):
        update_run(root / "tiny" / "empty")
