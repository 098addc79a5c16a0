"""One error type for everything a user got wrong, with one message template.

Each :class:`Problem` reads::

    optimizer.momentun: unknown argument of SGD. Received: momentun=0.9 at line 9. Did you mean 'momentum'?

that is ``<key path>: <what is wrong / expected>. Received: <value> at line <n>. <how to fix>``.
Validation gathers every problem before raising, so a user fixes a recipe in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

_MISSING = object()  # a required value that was not given: rendered as "Received: nothing"
_UNSET = object()  # no received value to show


def format_value(value: Any, limit: int = 80) -> str:
    """A short YAML-like rendering of a received value."""
    if value is _MISSING:
        return "nothing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Problem:
    """One thing wrong with a recipe or an input, located by its dotted key path."""

    path: str
    message: str
    received: Any = _UNSET
    line: int | str | None = None  # a YAML line, or where else the value came from
    hint: str = ""
    argument: str | None = None  # show ``Received: name=value`` for a keyword argument

    def render(self) -> str:
        location = self.path or "recipe"
        text = f"{location}: {self.message.rstrip('.')}."
        if self.received is not _UNSET:
            shown = format_value(self.received)
            if self.argument:
                shown = f"{self.argument}={shown}"
            text += f" Received: {shown}{self._where()}."
        elif self.line:
            text += f" ({self._where().strip()})."
        if self.hint:
            text += f" {self.hint.strip()}"
        return text

    def _where(self) -> str:
        if self.line is None:
            return ""
        return f" at line {self.line}" if isinstance(self.line, int) else f" from {self.line}"

    def __str__(self) -> str:
        return self.render()


class TrainlabError(Exception):
    """A user error: bad recipe, bad input or bad usage. The CLI prints it and exits with 2."""

    def __init__(self, message: str = "", problems: Iterable[Problem] = ()):
        self.problems = list(problems)
        if not message:
            count = len(self.problems)
            message = f"{count} problem{'s' if count != 1 else ''} found"
        self.message = message
        super().__init__(self.render())

    def render(self) -> str:
        if not self.problems:
            return self.message
        lines = [f"{self.message}:"] if self.message else []
        lines += [f"  - {problem.render()}" for problem in self.problems]
        return "\n".join(lines)


class RecipeError(TrainlabError):
    """The recipe is invalid; carries every problem found."""


def missing() -> Any:
    """The sentinel for 'no value received' (a required key that is absent)."""
    return _MISSING
