"""The run index: one SQLite table, ``<runs root>/index.sqlite``, listing the run folders below it.

Run folders live at ``<root>/<name>/<timestamp>/``; a folder two levels below the root counts as a
run when it holds ``recipe.yaml`` or ``status.json``. The folders are the truth and the index is a
cache of what :func:`read_run` extracts from them, so ``trainlab runs`` need not parse every
recipe, status file and checkpoint meta again:

- :func:`update_run` upserts one run (the pipeline calls it when a run starts and stops);
- :func:`list_runs` compares each folder's *signature* (size and mtime of the files a row is read
  from) with the stored one, re-reads the runs that changed or are new and drops rows whose folder
  is gone, so the index is never older than the folders;
- an index that is missing, not a SQLite file or of another schema is rebuilt from the folders
  into a temporary file that replaces it (:func:`rebuild`); listing never fails because of it.

Writes happen in one ``BEGIN IMMEDIATE`` transaction each; concurrent writers wait for SQLite's
lock (up to :data:`LOCK_TIMEOUT` seconds). When the index cannot be written at all (a read-only
folder, a lock held too long), :func:`list_runs` reads the folders directly.

``recipe_hash`` is the SHA-256 (first 16 hex digits) of ``recipe.yaml`` parsed and dumped as JSON
with sorted keys. ``recipe.yaml`` is the YAML dump of ``trainlab.pipeline.recipe_dump``, so this
equals ``trainlab.pipeline.recipe_hash`` of the run's resolved recipe (and the ``recipe_hash`` in
its checkpoints' meta) without loading torch or validating the recipe.

A run whose status is ``running`` is shown as ``running?`` when nothing in its folder changed for
:data:`STALE_AFTER` seconds and its process is not known to be alive (``status.json`` may record
``pid`` and ``host``; without them the age alone decides): it was most likely killed without a
chance to write its final status.

This module imports neither torch nor matplotlib, so listing runs is quick.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sqlite3
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from trainlab.recipe.errors import TrainlabError

INDEX_FILE = "index.sqlite"
SCHEMA_VERSION = 1
LOCK_TIMEOUT = 5.0  # seconds a writer waits for another writer's lock
STALE_AFTER = 3600.0  # seconds without any change after which a "running" run is shown as "running?"

# The file names of trainlab.runs; not imported from there because that module loads torch.
RECIPE_FILE = "recipe.yaml"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
ENV_FILE = "env.json"
BEST_META = Path("checkpoints") / "best" / "meta.json"
# The keys of a metrics.jsonl record that place it (the others are its values), and those plus the
# rates recorded beside the metrics.
RECORD_FIELDS = ("step", "epoch", "split", "time")
NOT_METRICS = (*RECORD_FIELDS, "lr", "momentum")

# The files a row is read from: a change to any of them changes the run's signature.
SIGNATURE_FILES = (RECIPE_FILE, STATUS_FILE, METRICS_FILE, str(BEST_META))

FOLDER_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2})(?:-\d+)?$")  # runs.timestamp(), made unique

COLUMNS = (
    "path", "name", "started", "recipe_hash", "monitor", "best", "best_step", "seconds", "status", "step",
    "epoch", "updated", "pid", "host", "signature",
)
SCHEMA = """
CREATE TABLE runs (
    path TEXT PRIMARY KEY,   -- the run folder relative to the runs root, with '/' separators
    name TEXT NOT NULL,      -- the recipe's name
    started REAL,            -- when the run started (seconds since the epoch)
    recipe_hash TEXT,        -- see the module docstring
    monitor TEXT,            -- train.monitor, e.g. valid/loss
    best REAL,               -- the best monitored value so far
    best_step INTEGER,
    seconds REAL,            -- training time
    status TEXT NOT NULL,    -- running, finished, early_stopped, failed, interrupted, diverged or unknown
    step INTEGER,
    epoch INTEGER,
    updated REAL,            -- the last change in the folder (seconds since the epoch)
    pid INTEGER,             -- the training process, when status.json records it
    host TEXT,
    signature TEXT NOT NULL  -- sizes and mtimes of SIGNATURE_FILES when the row was read
);
"""

_STATUS_STYLES = {
    "finished": "green", "early_stopped": "green", "running": "cyan", "running?": "yellow",
    "interrupted": "yellow", "failed": "red", "diverged": "red",
}


@dataclass(frozen=True)
class RunRow:
    """One run of the index. ``folder`` is the run folder itself (``root / path``)."""

    path: str
    name: str
    started: float | None
    recipe_hash: str | None
    monitor: str | None
    best: float | None
    best_step: int | None
    seconds: float | None
    status: str
    step: int | None
    epoch: int | None
    updated: float | None
    pid: int | None
    host: str | None
    signature: str
    folder: Path

    @property
    def shown_status(self) -> str:
        """The status to show: ``running?`` for a ``running`` run that looks abandoned (see the module)."""
        if self.status != "running" or self.updated is None:
            return self.status
        if time.time() - self.updated > STALE_AFTER and not _process_alive(self.pid, self.host):
            return "running?"
        return self.status

    def values(self) -> tuple[Any, ...]:
        """The row's values in :data:`COLUMNS` order, as stored."""
        return tuple(getattr(self, column) for column in COLUMNS)


# ----------------------------------------------------------------------------------- reading folders


def find_run_folders(root: Path) -> dict[str, Path]:
    """Every run folder two levels below ``root``, keyed by its path relative to ``root``."""
    found: dict[str, Path] = {}
    for group in _subfolders(Path(root)):
        for folder in _subfolders(group):
            if (folder / RECIPE_FILE).is_file() or (folder / STATUS_FILE).is_file():
                found[f"{group.name}/{folder.name}"] = folder
    return found


def _subfolders(folder: Path) -> list[Path]:
    """Visible folders directly in ``folder`` (unreadable ones are skipped), sorted by name."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return sorted((Path(entry.path) for entry in entries if not entry.name.startswith(".") and _is_dir(entry)),
                  key=lambda path: path.name)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def signature(folder: Path) -> str:
    """Size and mtime of each file a row is read from ('-' for a missing one)."""
    parts = []
    for name in SIGNATURE_FILES:
        try:
            info = (folder / name).stat()
            parts.append(f"{info.st_size}:{info.st_mtime_ns}")
        except OSError:
            parts.append("-")
    return "|".join(parts)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; ``{}`` when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_recipe(folder: Path) -> dict[str, Any]:
    """The run's resolved recipe as plain data; ``{}`` when recipe.yaml is missing or unreadable."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load((Path(folder) / RECIPE_FILE).read_text(encoding="utf-8"), Loader=loader)
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def recipe_digest(recipe: dict[str, Any]) -> str:
    """``trainlab.pipeline.recipe_hash`` computed from the recipe as plain data (see the module)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def started_time(folder: Path) -> float | None:
    """When a run started: its timestamp folder name (local time), else when env.json or
    recipe.yaml was written."""
    match = FOLDER_TIMESTAMP.match(Path(folder).name)
    if match:
        try:
            return datetime.strptime(match.group(1), "%Y-%m-%dT%H-%M-%S").timestamp()
        except ValueError:
            pass
    for name in (ENV_FILE, RECIPE_FILE):
        try:
            return (Path(folder) / name).stat().st_mtime
        except OSError:
            continue
    return None


def _last_record(path: Path) -> dict[str, Any]:
    """The last complete record of a metrics.jsonl, read from its end; ``{}`` when there is none."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 8192))
            lines = handle.read().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn last line, or the cut first one
        if isinstance(record, dict):
            return record
    return {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _integer(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def read_run(folder: Path, root: Path | None = None) -> RunRow:
    """Everything the index holds about one run, read from its folder.

    Raises TrainlabError when ``folder`` is not a run folder (no recipe.yaml and no status.json).
    """
    folder = Path(folder)
    root = Path(root) if root is not None else folder.parent.parent
    if not (folder / RECIPE_FILE).is_file() and not (folder / STATUS_FILE).is_file():
        raise TrainlabError(
            f"'{folder}' is not a trainlab run folder: it has no {RECIPE_FILE} or {STATUS_FILE}. "
            "Give a folder that `trainlab train` printed"
        )
    current = signature(folder)  # before reading: a change made while reading shows up next time
    recipe = read_recipe(folder)
    status = read_json(folder / STATUS_FILE)
    best_meta = read_json(folder / BEST_META)
    last = {} if isinstance(status.get("step"), int) else _last_record(folder / METRICS_FILE)
    train_section = recipe.get("train") if isinstance(recipe.get("train"), dict) else {}

    started = started_time(folder)
    activity = [t for t in (_number(status.get("updated")), _mtime(folder / STATUS_FILE),
                            _mtime(folder / METRICS_FILE)) if t is not None]
    updated = max(activity) if activity else None
    state = status.get("status") if isinstance(status.get("status"), str) else "unknown"
    seconds = _number(status.get("seconds"))
    if seconds is None and state == "running" and started is not None and updated is not None:
        seconds = max(0.0, updated - started)  # wall time so far
    best = _number(status.get("best_value"))
    best_step = _integer(status.get("best_step"))
    if best is None:
        best, best_step = _number(best_meta.get("value")), _integer(best_meta.get("step"))
    monitor = status.get("monitor") or best_meta.get("monitor") or train_section.get("monitor")
    name = recipe.get("name") if isinstance(recipe.get("name"), str) else folder.parent.name
    return RunRow(
        path=_relative(folder, root),
        name=name,
        started=started,
        recipe_hash=recipe_digest(recipe) if recipe else None,
        monitor=monitor if isinstance(monitor, str) else None,
        best=best,
        best_step=best_step,
        seconds=seconds,
        status=state,
        step=_integer(status.get("step", last.get("step"))),
        epoch=_integer(status.get("epoch", last.get("epoch"))),
        updated=updated,
        pid=_integer(status.get("pid")),
        host=status.get("host") if isinstance(status.get("host"), str) else None,
        signature=current,
        folder=folder,
    )


def _relative(folder: Path, root: Path) -> str:
    try:
        return folder.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise TrainlabError(
            f"run folder '{folder}' is not inside the runs folder '{root}'. Give the runs folder that holds it"
        ) from None


def _process_alive(pid: int | None, host: str | None) -> bool:
    """Whether the process is known to be alive: only decidable for a pid on this machine (POSIX)."""
    if pid is None or host != socket.gethostname() or os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except OSError:
        return False
    return True


# ----------------------------------------------------------------------------------- the database


class _NotAnIndex(Exception):
    """The index file is not a SQLite database of this schema: it is rebuilt."""


def _connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode; transactions are begun explicitly."""
    return sqlite3.connect(str(path), timeout=LOCK_TIMEOUT, isolation_level=None)


def _check_schema(connection: sqlite3.Connection) -> None:
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        columns = {row[1] for row in connection.execute("PRAGMA table_info(runs)")}
    except sqlite3.DatabaseError as error:
        if _busy(error):
            raise
        raise _NotAnIndex(str(error)) from None
    if version != SCHEMA_VERSION or not set(COLUMNS) <= columns:
        raise _NotAnIndex(f"schema version {version}, columns {sorted(columns)}")


def _busy(error: sqlite3.Error) -> bool:
    """A lock held too long or a folder that cannot be written: not a reason to rebuild."""
    name = getattr(error, "sqlite_errorname", "")  # Python >= 3.11
    if name:
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_READONLY", "SQLITE_CANTOPEN",
                                "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_PERM"))
    message = str(error).lower()
    return any(text in message for text in ("locked", "busy", "readonly", "unable to open", "disk i/o", "full"))


def _upsert(connection: sqlite3.Connection, rows: Iterable[RunRow], gone: Iterable[str] = ()) -> None:
    """Insert or replace ``rows`` and delete the ``gone`` paths in one transaction."""
    placeholders = ", ".join("?" for _ in COLUMNS)
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.executemany("DELETE FROM runs WHERE path = ?", [(path,) for path in gone])
        connection.executemany(f"INSERT OR REPLACE INTO runs ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                               [row.values() for row in rows])
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _write_index(root: Path, rows: list[RunRow]) -> None:
    """A new index holding ``rows``, built in a temporary file that then replaces index.sqlite."""
    handle, name = tempfile.mkstemp(dir=root, prefix=".index.", suffix=".sqlite.tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        connection = _connect(temporary)
        try:
            connection.executescript(SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")
            _upsert(connection, rows)
        finally:
            connection.close()
        os.replace(temporary, root / INDEX_FILE)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _runs_root(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise TrainlabError(
            f"runs folder '{root}' does not exist. Train a recipe first (`trainlab train RECIPE`) or give the "
            "folder that holds the runs"
        )
    return root


def _read_all(folders: dict[str, Path], root: Path) -> list[RunRow]:
    rows = []
    for folder in folders.values():
        try:
            rows.append(read_run(folder, root))
        except TrainlabError:  # the folder lost its files between finding and reading it
            continue
    return rows


def rebuild(root: Path) -> int:
    """Rebuild ``<root>/index.sqlite`` from the run folders; returns the number of runs."""
    root = _runs_root(root)
    rows = _read_all(find_run_folders(root), root)
    _write_index(root, rows)
    return len(rows)


def update_run(folder: Path, root: Path | None = None) -> RunRow | None:
    """Upsert one run into its runs root's index (``root`` defaults to ``folder.parent.parent``).

    The index is a cache, so this never fails a run because of it: an index that is not a SQLite
    file or has another schema is rebuilt (with this run), and when the index cannot be written (a
    read-only folder, a lock held longer than :data:`LOCK_TIMEOUT`) the run is left for the next
    :func:`list_runs` to pick up and None is returned. Raises TrainlabError when ``folder`` is not a
    run folder or not inside ``root``.
    """
    folder = Path(folder)
    root = Path(root) if root is not None else folder.parent.parent
    row = read_run(folder, root)
    path = root / INDEX_FILE
    try:
        try:
            if not path.exists():
                raise _NotAnIndex("missing")
            connection = _connect(path)
            try:
                _check_schema(connection)
                _upsert(connection, [row])
            finally:
                connection.close()
        except sqlite3.DatabaseError as error:
            if _busy(error):
                raise
            rebuild(root)
        except _NotAnIndex:
            rebuild(root)
    except (sqlite3.Error, OSError):
        return None
    return row


def list_runs(root: Path) -> list[RunRow]:
    """Every run under ``root``, newest first, from an index brought up to date with the folders.

    Never fails because of the index itself (see the module); raises TrainlabError only when
    ``root`` is not a folder.
    """
    root = _runs_root(root)
    folders = find_run_folders(root)
    try:
        try:
            rows = _refresh(root, folders)
        except _NotAnIndex:
            _write_index(root, _read_all(folders, root))
            rows = _refresh(root, folders)
    except (sqlite3.Error, OSError, _NotAnIndex):
        rows = _read_all(folders, root)  # the index cannot be written: read the folders directly
    return sorted(rows, key=lambda row: (row.started or 0.0, row.path), reverse=True)


def _refresh(root: Path, folders: dict[str, Path]) -> list[RunRow]:
    """Re-read the runs whose folders changed, drop rows whose folders are gone, return all rows."""
    path = root / INDEX_FILE
    if not path.exists():
        raise _NotAnIndex("missing")
    connection = _connect(path)
    try:
        _check_schema(connection)
        try:
            stored = dict(connection.execute("SELECT path, signature FROM runs").fetchall())
        except sqlite3.DatabaseError as error:
            if _busy(error):
                raise
            raise _NotAnIndex(str(error)) from None
        changed = {key: folder for key, folder in folders.items() if stored.get(key) != signature(folder)}
        gone = [key for key in stored if key not in folders]
        if changed or gone:
            _upsert(connection, _read_all(changed, root), gone)
        selected = connection.execute(f"SELECT {', '.join(COLUMNS)} FROM runs").fetchall()
    finally:
        connection.close()
    return [RunRow(**dict(zip(COLUMNS, values)), folder=root / values[0]) for values in selected]


# ----------------------------------------------------------------------------------- display


def format_seconds(seconds: float | None) -> str:
    """A duration for people: ``0.06s``, ``42.1s``, ``4m 05s``, ``2h 03m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2g}s" if seconds < 1 else f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_time(timestamp: float | None, seconds: bool = True) -> str:
    """Seconds since the epoch as local ``YYYY-MM-DD HH:MM[:SS]``; ``-`` when unknown."""
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def runs_table(rows: list[RunRow], title: str | None = None) -> Any:
    """The runs as a rich Table (what ``trainlab runs`` prints)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False)
    widest = max((len(row.path) for row in rows), default=3)
    table.add_column("run", no_wrap=True, min_width=widest)  # the path is what a user copies: never cut it short
    table.add_column("status")
    table.add_column("started")
    table.add_column("duration", justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("monitor")
    table.add_column("best", justify="right")
    table.add_column("recipe")
    for row in rows:
        shown = row.shown_status
        table.add_row(
            Text(row.path),
            Text(shown, style=_STATUS_STYLES.get(shown, "")),
            format_time(row.started, seconds=False),
            format_seconds(row.seconds),
            "-" if row.epoch is None else str(row.epoch),
            Text(row.monitor or "-"),
            "-" if row.best is None else f"{row.best:.4g}",
            Text((row.recipe_hash or "-")[:8]),
        )
    return table
