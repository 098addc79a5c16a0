"""Learning-rate schedules: ``torch.optim.lr_scheduler`` by name, each with a stepping unit.

Every entry of :data:`SCHEDULES` says whether torch's scheduler counts epochs or optimizer steps
(``unit``); ``schedule.interval`` overrides it. The loop asks :class:`Schedule` to step after
each optimizer step or after each epoch accordingly, so a scheduler is never stepped in the wrong
unit. Arguments trainlab can derive (``T_max`` = the run's length in the scheduler's unit) are
filled in and written into the resolved recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from trainlab.recipe.errors import Problem, RecipeError
from trainlab.recipe.schema import ScheduleConfig
from trainlab.registry import Registry, UnknownName

SCHEDULES = Registry("schedule")

# Arguments trainlab supplies itself: never written in a recipe.
SUPPLIED = ("optimizer", "last_epoch", "verbose")


def _run_length(argument: str) -> Callable[[int, int], dict[str, int]]:
    """A filler for an argument that defaults to the run's length in the scheduler's unit."""
    return lambda units, _steps_per_epoch: {argument: units}


def _register(name: str, unit: str, fill: Callable[[int, int], dict[str, Any]] | None = None) -> None:
    target = getattr(torch.optim.lr_scheduler, name)
    SCHEDULES.add(name, target, unit=unit, fill=fill)


_register("StepLR", "epoch")
_register("MultiStepLR", "epoch")
_register("ExponentialLR", "epoch")
_register("CosineAnnealingLR", "epoch", fill=_run_length("T_max"))


@dataclass
class Schedule:
    """A torch scheduler and the unit it is stepped in (``step`` or ``epoch``)."""

    scheduler: Any
    interval: str

    def after_optimizer_step(self) -> None:
        if self.interval == "step":
            self.scheduler.step()

    def after_epoch(self) -> None:
        if self.interval == "epoch":
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


def check_schedule(config: ScheduleConfig | None) -> list[Problem]:
    """Unknown scheduler names, and arguments torch's scheduler does not accept."""
    if config is None:
        return []
    try:
        entry = SCHEDULES.get(config.name)
    except UnknownName as error:
        hint = f"Did you mean '{error.suggestions[0]}'?" if error.suggestions else ""
        return [Problem("schedule.name", f"unknown schedule; known: {', '.join(error.available)}", config.name, hint=hint)]
    arguments = config.arguments()
    problems = entry.argument_problems(arguments, "schedule", skip=SUPPLIED)
    filled = entry.capabilities.get("fill")
    supplied = filled(1, 1) if filled else {}
    for argument in entry.missing_arguments(arguments, skip=SUPPLIED):
        if argument not in supplied:
            problems.append(
                Problem(f"schedule.{argument}", f"{entry.name} needs '{argument}'", config.name,
                        hint=f"Add {argument}: to the schedule section.")
            )
    return problems


def schedule_units(config: ScheduleConfig, epochs: int, steps_per_epoch: int) -> tuple[str, int]:
    """The stepping unit of ``config`` and the run's length in that unit."""
    entry = SCHEDULES.get(config.name)
    interval = config.interval or entry.capabilities["unit"]
    return interval, (epochs if interval == "epoch" else epochs * steps_per_epoch)


def resolve_schedule(config: ScheduleConfig | None, epochs: int, steps_per_epoch: int) -> ScheduleConfig | None:
    """Canonical name, the stepping unit and every derivable argument filled in."""
    if config is None:
        return None
    entry = SCHEDULES.get(config.name)
    interval, units = schedule_units(config, epochs, steps_per_epoch)
    fill = entry.capabilities.get("fill")
    arguments = {**entry.signature_defaults(skip=SUPPLIED), **(fill(units, steps_per_epoch) if fill else {})}
    arguments.update(config.arguments())
    return ScheduleConfig(name=entry.name, interval=interval, **arguments)


def build_schedule(
    config: ScheduleConfig | None, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int
) -> Schedule | None:
    """The torch scheduler of a (resolved or raw) schedule section, bound to ``optimizer``."""
    if config is None:
        return None
    problems = check_schedule(config)
    if problems:
        raise RecipeError("the schedule is invalid", problems)
    resolved = resolve_schedule(config, epochs, steps_per_epoch)
    assert resolved is not None and resolved.interval is not None
    entry = SCHEDULES.get(resolved.name)
    return Schedule(entry.target(optimizer, **resolved.arguments()), resolved.interval)
