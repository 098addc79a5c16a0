"""Where a recipe's data files are: plain paths, and ``package:NAME/inner/path`` inside an installed
Python package (found with ``importlib.util.find_spec`` on the top-level name, which locates the
package without importing it: no code named in a recipe ever runs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from trainlab.recipe.errors import Problem, TrainlabError

PACKAGE_PREFIX = "package:"


def resolve_path(text: str, key: str, kind: str = "file") -> Path:
    """The absolute path that ``text`` names; a missing file or folder is a :class:`TrainlabError`
    at ``key`` (``kind`` is ``file`` or ``folder``) that says how to fix it."""
    if text.startswith(PACKAGE_PREFIX):
        name, _, inner = text[len(PACKAGE_PREFIX):].partition("/")
        spec = importlib.util.find_spec(name) if name and "." not in name else None
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            raise TrainlabError(problems=[Problem(
                key, f"no installed Python package named '{name}'", text,
                hint=f"Install it (pip install {name}) or give a file path.")])
        path = Path(locations[0]) / inner
    else:
        path = Path(text).expanduser()
    path = path.resolve()
    exists = path.is_dir() if kind == "folder" else path.is_file()
    if not exists:
        what = "is not a folder" if path.exists() else "does not exist"
        raise TrainlabError(problems=[Problem(
            key, f"the {kind} {path} {what}", text,
            hint=f"Check the path (relative paths start at the working directory {Path.cwd()}).")])
    return path
