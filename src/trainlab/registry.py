"""Registries: a recipe name -> the torch object it stands for.

Every name a recipe may use (a loss, an optimizer, a layer, an init scheme, a model, a
schedule, a data source) resolves through one :class:`Registry`. An entry carries the target
callable, a one-line description, the defaults trainlab fills in, and free-form capabilities
(the loss contract, a scheduler's stepping unit, ...) that validation, docs and forms read.

Lookup is forgiving in spelling and strict in meaning: ``crossentropyloss``,
``cross_entropy_loss`` and ``CrossEntropyLoss`` all resolve to the canonical
``CrossEntropyLoss``; anything else is an error with a did-you-mean. This module imports no
torch, so the recipe layer can use it.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator


def normalize_name(name: str) -> str:
    """The spelling-insensitive key of a name: lower case, no underscores, dashes or spaces."""
    return "".join(ch for ch in name.lower() if ch not in "_- ")


def did_you_mean(name: str, candidates: list[str], n: int = 1) -> list[str]:
    """Close matches of ``name`` among ``candidates`` (compared spelling-insensitively)."""
    by_key = {normalize_name(c): c for c in candidates}
    matches = difflib.get_close_matches(normalize_name(name), list(by_key), n=n, cutoff=0.6)
    if not matches:  # fall back on the plain spelling, which keeps underscores meaningful
        return difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)
    return [by_key[m] for m in matches]


@dataclass
class Entry:
    """One registered name."""

    name: str
    target: Callable[..., Any]
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    capabilities: dict[str, Any] = field(default_factory=dict)

    def signature_target(self) -> Callable[..., Any]:
        """What the recipe's arguments are bound against (a class's ``__init__``)."""
        return self.capabilities.get("signature", self.target)

    def parameters(self, skip: tuple[str, ...] = ()) -> dict[str, inspect.Parameter]:
        """Named parameters a recipe may give, in signature order (``self`` and ``skip`` left out)."""
        try:
            signature = inspect.signature(self.signature_target())
        except (TypeError, ValueError):
            return {}
        return {
            name: p
            for name, p in signature.parameters.items()
            if name not in skip and name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    def accepts_var_keyword(self) -> bool:
        try:
            signature = inspect.signature(self.signature_target())
        except (TypeError, ValueError):
            return True
        return any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())

    def signature_defaults(self, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """Defaults of the target's signature that a recipe can write (numbers, text, lists)."""
        plain = (bool, int, float, str, type(None))
        defaults: dict[str, Any] = {}
        for name, p in self.parameters(skip).items():
            value = p.default
            if value is inspect.Parameter.empty:
                continue
            if isinstance(value, tuple):
                value = list(value)
            if isinstance(value, plain) or (isinstance(value, list) and all(isinstance(v, plain) for v in value)):
                defaults[name] = value
        return defaults

    def missing_arguments(self, arguments: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
        """Required parameters (no default) that neither ``arguments`` nor trainlab (``skip``) give."""
        return [
            name
            for name, p in self.parameters(skip).items()
            if p.default is inspect.Parameter.empty and name not in arguments
        ]

    def argument_problems(
        self, arguments: dict[str, Any], path: str, skip: tuple[str, ...] = (), refused: tuple[str, ...] = ()
    ) -> list[Any]:
        """Problems binding a recipe section's ``arguments`` to the target's signature.

        Uses ``inspect.signature(...).bind_partial`` so a required argument that trainlab supplies
        later (an optimizer's params, a layer's in_features) is not an error here. ``skip`` names the
        leading parameters trainlab fills; ``refused`` names parameters a recipe may not set (a
        layer's ``device``). Each problem is a :class:`~trainlab.recipe.errors.Problem` at
        ``<path>.<argument>`` with a did-you-mean among the accepted names.
        """
        from trainlab.recipe.errors import Problem  # recipe imports this module: import late

        known = {name: p for name, p in self.parameters(skip).items() if name not in refused}
        open_ended = self.accepts_var_keyword()
        problems = []
        for argument, value in arguments.items():
            if argument in known or (open_ended and argument not in refused):
                continue
            guess = did_you_mean(argument, list(known))
            hint = f"Did you mean '{guess[0]}'?" if guess else f"Accepted: {', '.join(known) or 'none'}."
            problems.append(
                Problem(f"{path}.{argument}", f"unknown argument of {self.name}", value, hint=hint, argument=argument)
            )
        if problems:
            return problems
        try:
            signature = inspect.signature(self.signature_target())
        except (TypeError, ValueError):
            return []
        # Leading positional parameters that trainlab supplies (``self``, ``params``, ``optimizer``)
        # get placeholders so keyword binding sees the real remaining signature.
        placeholders = []
        for parameter in signature.parameters.values():
            if parameter.name not in skip and parameter.name != "self":
                break
            if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
                placeholders.append(None)
        try:
            signature.bind_partial(*placeholders, **{k: v for k, v in arguments.items() if k not in skip})
        except TypeError as error:
            problems.append(Problem(path, f"arguments do not fit {self.name}: {error}", arguments,
                                    hint="Check the argument names against torch's documentation."))
        return problems


class UnknownName(LookupError):
    """A name that is not registered; carries the suggestions."""

    def __init__(self, kind: str, name: str, suggestions: list[str], available: list[str]):
        self.kind = kind
        self.name = name
        self.suggestions = suggestions
        self.available = available
        hint = f" Did you mean '{suggestions[0]}'?" if suggestions else ""
        super().__init__(f"unknown {kind} '{name}'.{hint}")


class Registry:
    """Names of one kind (``loss``, ``optimizer``, ...) mapped to :class:`Entry` objects."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._keys: dict[str, str] = {}  # normalized spelling or alias -> canonical name

    def add(
        self,
        name: str,
        target: Callable[..., Any],
        description: str = "",
        defaults: dict[str, Any] | None = None,
        aliases: tuple[str, ...] = (),
        **capabilities: Any,
    ) -> Entry:
        if not description:
            doc = inspect.getdoc(target) or ""
            description = doc.strip().split("\n\n")[0].replace("\n", " ")[:200]
        entry = Entry(name, target, description, dict(defaults or {}), capabilities)
        self._entries[name] = entry
        for spelling in (name, *aliases):
            self._keys[normalize_name(spelling)] = name
        return entry

    def register(
        self,
        name: str | None = None,
        description: str = "",
        defaults: dict[str, Any] | None = None,
        aliases: tuple[str, ...] = (),
        **capabilities: Any,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator form of :meth:`add`, used by built-ins and by plugin modules."""

        def decorate(target: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name or target.__name__, target, description, defaults, aliases, **capabilities)
            return target

        return decorate

    def canonical(self, name: str) -> str | None:
        """The canonical spelling of ``name``, or None when it is not registered."""
        if not isinstance(name, str):
            return None
        return self._keys.get(normalize_name(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.canonical(name) is not None

    def get(self, name: str) -> Entry:
        canonical = self.canonical(name)
        if canonical is None:
            names = self.names()
            raise UnknownName(self.kind, str(name), did_you_mean(str(name), names), names)
        return self._entries[canonical]

    def names(self) -> list[str]:
        return list(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
