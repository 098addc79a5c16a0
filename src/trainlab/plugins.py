"""The only place that imports user code: modules named explicitly with ``--plugins``.

A recipe never names code to import. A plugin module registers extra components with the
registries' decorators when it is imported, e.g.::

    from trainlab.models import MODELS

    @MODELS.register("TinyNet")
    def tiny_net(spec, width: int = 16):
        ...
"""

from __future__ import annotations

import importlib
from types import ModuleType

from trainlab.recipe.errors import TrainlabError


def load_plugins(names: list[str]) -> list[ModuleType]:
    """Import each named module (``mypkg.layers``); an import failure is a user error."""
    modules = []
    for name in names:
        for part in filter(None, (item.strip() for item in name.split(","))):
            try:
                modules.append(importlib.import_module(part))
            except ImportError as error:
                raise TrainlabError(
                    f"--plugins: cannot import '{part}' ({error}). Give an importable module name such as "
                    "mypkg.layers, installed or on PYTHONPATH"
                ) from None
    return modules
