"""Training: the fit loop and what it is made of (losses, optimizers, schedules, precision,
checkpoints, callbacks, the LR range test). Import the submodule you need, e.g.
``from trainlab.train.losses import build_loss``; this package imports nothing on its own so
that ``trainlab validate`` stays quick."""

import sys
import types
from typing import Any


class _CallableTrainModule(types.ModuleType):
    """``trainlab.train`` is both this package and the API function ``trainlab.train(recipe, out=...)``.

    Python binds ``trainlab.train`` to this package as soon as any ``trainlab.train.*`` module is
    imported, which would hide the function of the same name; calling the package forwards to
    :func:`trainlab.pipeline.train` so both spellings keep working.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from trainlab.pipeline import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableTrainModule
