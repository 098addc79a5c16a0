"""Learning-rate schedules: every ``torch.optim.lr_scheduler`` scheduler by name, each with a unit.

Every entry of :data:`SCHEDULES` says when torch's scheduler is stepped (``unit``): per
optimizer step (OneCycleLR, CyclicLR), per epoch (StepLR and the other decays), or after
validation with the monitored metric (ReduceLROnPlateau). ``schedule.interval`` overrides the
unit. The loop asks :class:`Schedule` to step at the right moment, so a scheduler is never stepped
in the wrong unit; with gradient accumulation a step is an optimizer step, not a batch.

Resolution (:func:`resolve_schedule`) makes the schedule explicit for the run's ``recipe.yaml``:
``<argument>_epochs`` keys become steps, derivable arguments are filled in (``T_max``, OneCycle's
``total_steps``, cyclical momentum only where the optimizer has momentum), and a ``warmup:`` turns
the schedule into ``SequentialLR([LinearLR, schedule])`` in optimizer steps, converting an epoch
schedule's counts to steps. Resolving a resolved schedule changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from trainlab.recipe.errors import Problem, RecipeError
from trainlab.recipe.loader import join_path
from trainlab.recipe.schema import ScheduleConfig, Warmup
from trainlab.registry import Registry, UnknownName

SCHEDULES = Registry("schedule")

# Arguments trainlab supplies itself: never written in a recipe.
SUPPLIED = ("optimizer", "last_epoch", "verbose", "schedulers", "scale_fn", "epochs", "steps_per_epoch")
NOT_REGISTRABLE = {
    "LambdaLR": "it needs a Python function; register a schedule from a plugin module (--plugins)",
    "MultiplicativeLR": "it needs a Python function; register a schedule from a plugin module (--plugins)",
}


@dataclass
class ScheduleContext:
    """What a schedule is resolved and checked against."""

    epochs: int
    steps_per_epoch: int  # optimizer steps per epoch (accumulation counted)
    lr: float | None = None  # the optimizer's learning rate
    momentum: str | None = None  # what the optimizer can cycle: "momentum", "betas" or None
    metrics: tuple[str, ...] = ()  # keys a plateau schedule may monitor, e.g. ("valid/loss", ...)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def units(self, interval: str) -> int:
        return self.total_steps if interval == "step" else self.epochs


# ----------------------------------------------------------------------------------- per-scheduler rules

Filler = Callable[[dict[str, Any], ScheduleContext, int], dict[str, Any]]
Checker = Callable[[dict[str, Any], ScheduleContext, str, str], list[Problem]]


def _fill_length(argument: str) -> Filler:
    """``argument`` defaults to what is left of the run in the schedule's unit."""
    return lambda arguments, context, remaining: {argument: remaining}


def _momentum_fill(arguments: dict[str, Any], context: ScheduleContext, remaining: int) -> dict[str, Any]:
    """Cycle momentum only where the optimizer has some (torch's default would invent it)."""
    return {"cycle_momentum": context.momentum is not None}


def _fill_one_cycle(arguments: dict[str, Any], context: ScheduleContext, remaining: int) -> dict[str, Any]:
    filled = {"total_steps": remaining, **_momentum_fill(arguments, context, remaining)}
    if context.lr is not None:
        filled["max_lr"] = context.lr  # the optimizer's lr is the peak of the cycle
    return filled


def _check_momentum(arguments: dict[str, Any], context: ScheduleContext, path: str, name: str) -> list[Problem]:
    if arguments.get("cycle_momentum") and context.momentum is None:
        return [Problem(f"{path}.cycle_momentum", f"{name} can only cycle momentum with an optimizer that has "
                        "momentum (SGD with momentum > 0, RMSprop with momentum, or Adam-like betas)",
                        arguments["cycle_momentum"], argument="cycle_momentum",
                        hint="Set cycle_momentum: false, or give the optimizer momentum.")]
    return []


def _check_cyclic(arguments: dict[str, Any], context: ScheduleContext, path: str, name: str) -> list[Problem]:
    problems = _check_momentum(arguments, context, path, name)
    base, peak = arguments.get("base_lr"), arguments.get("max_lr")
    if isinstance(base, (int, float)) and isinstance(peak, (int, float)) and base > peak:
        problems.append(Problem(path, f"base_lr ({base}) is above max_lr ({peak}); they look swapped",
                                {"base_lr": base, "max_lr": peak},
                                hint=f"Use base_lr: {peak} and max_lr: {base}."))
    for argument in ("step_size_up", "step_size_down"):
        value = arguments.get(argument)
        if isinstance(value, (int, float)) and value < 1:
            problems.append(Problem(f"{path}.{argument}", "a half cycle must last at least one step", value,
                                    argument=argument, hint="Give at least 1 step (or more epochs)."))
    return problems


def _check_one_cycle(arguments: dict[str, Any], context: ScheduleContext, path: str, name: str) -> list[Problem]:
    problems = _check_momentum(arguments, context, path, name)
    total = arguments.get("total_steps")
    pct = arguments.get("pct_start", 0.3)
    if isinstance(total, int):
        phases = 3 if arguments.get("three_phase") else 2
        if isinstance(pct, (int, float)) and (pct * total < 2 or total < 2 * phases):
            problems.append(Problem(f"{path}.total_steps", f"OneCycleLR needs more steps: {total} steps with "
                                    f"pct_start {pct} leave no room to warm up and anneal", total,
                                    argument="total_steps",
                                    hint="Train for more epochs, use a smaller batch, or choose another schedule."))
    return problems


def _exponential_to_steps(arguments: dict[str, Any], steps_per_epoch: int) -> dict[str, Any]:
    """Per-epoch decay ``gamma`` as a per-step decay with the same value at every epoch boundary."""
    if isinstance(arguments.get("gamma"), (int, float)):
        arguments["gamma"] = float(arguments["gamma"]) ** (1.0 / steps_per_epoch)
    return arguments


def _register(name: str, unit: str, counts: tuple[str, ...] = (), fill: Filler | None = None,
              check: Checker | None = None, to_steps: Callable[[dict[str, Any], int], dict[str, Any]] | None = None,
              description: str = "") -> None:
    SCHEDULES.add(name, getattr(torch.optim.lr_scheduler, name), description, unit=unit, counts=counts,
                  fill=fill, check=check, to_steps=to_steps)


_register("StepLR", "epoch", ("step_size",), description="Multiply the lr by gamma every step_size epochs.")
_register("MultiStepLR", "epoch", ("milestones",), description="Multiply the lr by gamma at each milestone.")
_register("ConstantLR", "epoch", ("total_iters",), description="A constant factor for the first total_iters.")
_register("LinearLR", "epoch", ("total_iters",), description="Linear change of a factor over total_iters.")
_register("ExponentialLR", "epoch", to_steps=_exponential_to_steps, description="Multiply the lr by gamma every epoch.")
_register("PolynomialLR", "epoch", ("total_iters",), fill=_fill_length("total_iters"),
          description="Polynomial decay to 0 over total_iters (default: the whole run).")
_register("CosineAnnealingLR", "epoch", ("T_max",), fill=_fill_length("T_max"),
          description="Cosine decay to eta_min over T_max (default: the whole run).")
_register("CosineAnnealingWarmRestarts", "epoch", ("T_0",),
          description="SGDR: cosine decay restarting after T_0, T_0*T_mult, ... units.")
_register("CyclicLR", "step", ("step_size_up", "step_size_down"), fill=_momentum_fill, check=_check_cyclic,
          description="Cyclical lr between base_lr and max_lr (triangular, triangular2, exp_range).")
_register("OneCycleLR", "step", ("total_steps",), fill=_fill_one_cycle, check=_check_one_cycle,
          description="One cycle: warm up to max_lr, then anneal far below the start (total_steps filled in).")
_register("ReduceLROnPlateau", "plateau",
          description="Divide the lr by 1/factor when the monitored metric stops improving (after validation).")
_register("SequentialLR", "composite", ("milestones",),
          description="Run the listed schedules one after another, switching at the milestones.")
_register("ChainedScheduler", "composite", description="Apply the listed schedules together, multiplying their effects.")


# ----------------------------------------------------------------------------------- the schedule object


@dataclass
class Schedule:
    """A torch scheduler and when it is stepped: ``step``, ``epoch`` or ``plateau`` (after validation)."""

    scheduler: Any
    interval: str
    monitor: str | None = None
    cycles_momentum: bool = False
    name: str = ""

    def after_optimizer_step(self) -> None:
        if self.interval == "step":
            self.scheduler.step()

    def after_epoch(self, values: dict[str, dict[str, float] | None]) -> None:
        """Called once an epoch ends (after validation, if there was one)."""
        if self.interval == "epoch":
            self.scheduler.step()
        elif self.interval == "plateau" and self.monitor:
            split, _, metric = self.monitor.partition("/")
            current = (values.get(split) or {}).get(metric)
            if current is not None:  # no validation this epoch: nothing to react to
                self.scheduler.step(current)

    @property
    def steps_every_optimizer_step(self) -> bool:
        return self.interval == "step"

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


def momentum_of(optimizer: torch.optim.Optimizer) -> float | None:
    """The momentum a cyclical schedule moves: ``momentum``, or ``betas[0]`` for Adam-likes."""
    group = optimizer.param_groups[0]
    if "momentum" in group:
        return float(group["momentum"])
    if "betas" in group:
        return float(group["betas"][0])
    return None


# ----------------------------------------------------------------------------------- resolution


def _entry_problem(name: Any, path: str) -> tuple[Any, list[Problem]]:
    if isinstance(name, str) and name in NOT_REGISTRABLE:
        return None, [Problem(f"{path}.name", f"{name} cannot be used from a recipe: {NOT_REGISTRABLE[name]}", name)]
    try:
        return SCHEDULES.get(name), []
    except UnknownName as error:
        hint = f"Did you mean '{error.suggestions[0]}'?" if error.suggestions else ""
        return None, [Problem(f"{path}.name", f"unknown schedule; known: {', '.join(error.available)}", name, hint=hint)]


def warmup_steps(warmup: Warmup | None, steps_per_epoch: int) -> int:
    if warmup is None:
        return 0
    if warmup.steps is not None:
        return warmup.steps
    return max(1, round(float(warmup.epochs or 0) * steps_per_epoch))


def _interval(entry: Any, config: ScheduleConfig, parent: str | None) -> str:
    if parent is not None:
        return parent
    if entry.capabilities["unit"] == "composite":
        return config.interval or _composite_unit(config)
    if entry.capabilities["unit"] == "plateau":
        return "epoch"
    return config.interval or entry.capabilities["unit"]


def _composite_unit(config: ScheduleConfig) -> str:
    """A composite's unit: ``step`` if any child steps per optimizer step, else ``epoch``."""
    for child in config.schedules or []:
        canonical = SCHEDULES.canonical(child.name)
        if canonical and (child.interval == "step" or SCHEDULES.get(canonical).capabilities["unit"] == "step"):
            return "step"
    return "epoch"


def _convert_epoch_keys(entry: Any, arguments: dict[str, Any], interval: str, steps_per_epoch: int) -> dict[str, Any]:
    """``<count>_epochs`` keys become the count in the schedule's unit."""
    for count in entry.capabilities["counts"]:
        key = f"{count}_epochs"
        if key not in arguments:
            continue
        value = arguments.pop(key)
        scale = steps_per_epoch if interval == "step" else 1
        if isinstance(value, list):
            arguments[count] = [max(1, round(item * scale)) for item in value]
        elif isinstance(value, (int, float)):
            arguments[count] = max(1, round(value * scale))
        else:
            arguments[count] = value
    return arguments


def _to_steps(entry: Any, arguments: dict[str, Any], steps_per_epoch: int) -> dict[str, Any]:
    """An epoch schedule's counts in optimizer steps (needed to put a per-step warmup in front)."""
    for count in entry.capabilities["counts"]:
        value = arguments.get(count)
        if isinstance(value, list):
            arguments[count] = [item * steps_per_epoch for item in value]
        elif isinstance(value, int):
            arguments[count] = value * steps_per_epoch
    convert = entry.capabilities.get("to_steps")
    return convert(arguments, steps_per_epoch) if convert else arguments


def _defaults(entry: Any) -> dict[str, Any]:
    defaults = entry.signature_defaults(skip=SUPPLIED)
    defaults.pop("scale_fn", None)
    return defaults


def resolve_schedule(
    config: ScheduleConfig | None, context: ScheduleContext, parent_interval: str | None = None
) -> ScheduleConfig | None:
    """The schedule as the run's recipe.yaml records it: canonical names, unit, every argument."""
    if config is None:
        return None
    entry, problems = _entry_problem(config.name, "schedule")
    if problems:
        raise RecipeError("the schedule is invalid", problems)
    unit = entry.capabilities["unit"]
    interval = _interval(entry, config, parent_interval)
    arguments = _convert_epoch_keys(entry, config.arguments(), interval, context.steps_per_epoch)
    warmup = config.warmup
    warm = warmup_steps(warmup, context.steps_per_epoch)
    if warmup is not None:
        warmup = Warmup(steps=warm, start_factor=warmup.start_factor)
        if interval == "epoch" and unit != "plateau":
            arguments = _to_steps(entry, arguments, context.steps_per_epoch)
            interval = "step"
    remaining = max(context.units(interval) - warm, 1)
    fill = entry.capabilities.get("fill")
    filled = fill(arguments, context, remaining) if fill else {}
    resolved = {**_defaults(entry), **filled, **arguments}
    children = None
    if config.schedules is not None:
        children = [resolve_schedule(child, context, interval) for child in config.schedules]
    monitor = config.monitor
    if unit == "plateau":
        monitor = monitor or "valid/loss"
        if "mode" not in arguments:
            metric = monitor.partition("/")[2]
            resolved["mode"] = "max" if metric in ("accuracy", "top5_accuracy", "f1", "auroc", "r2") else "min"
    return ScheduleConfig(name=entry.name, interval=interval, warmup=warmup, monitor=monitor, schedules=children,
                          **resolved)


# ----------------------------------------------------------------------------------- checks


def check_schedule(
    config: ScheduleConfig | None, context: ScheduleContext | None = None, path: str = "schedule",
    nested: bool = False,
) -> list[Problem]:
    """Every problem of a schedule section: names, arguments, units, lengths, monitors."""
    if config is None:
        return []
    entry, problems = _entry_problem(config.name, path)
    if entry is None:
        return problems
    unit = entry.capabilities["unit"]
    arguments = config.arguments()
    counts = entry.capabilities["counts"]
    plain = {key.removesuffix("_epochs") if key.removesuffix("_epochs") in counts else key: value
             for key, value in arguments.items()}
    problems += entry.argument_problems(plain, path, skip=SUPPLIED)
    if unit == "plateau":
        if config.interval == "step":
            problems.append(Problem(f"{path}.interval", "ReduceLROnPlateau steps after each validation, "
                                    "never per optimizer step", "step", hint="Remove interval."))
        if config.warmup is not None:
            problems.append(Problem(f"{path}.warmup", "a warmup cannot be put in front of ReduceLROnPlateau",
                                    config.warmup.model_dump(exclude_none=True),
                                    hint="Use a warmup with another schedule, or none."))
        if nested:
            problems.append(Problem(f"{path}.name", "ReduceLROnPlateau cannot be combined inside "
                                    "SequentialLR or ChainedScheduler", config.name))
    elif config.monitor is not None:
        problems.append(Problem(f"{path}.monitor", f"only ReduceLROnPlateau watches a metric; {entry.name} does not",
                                config.monitor, hint="Remove monitor."))
    if unit == "composite":
        problems += _check_children(config, path, context)
    elif config.schedules is not None:
        problems.append(Problem(f"{path}.schedules", "only SequentialLR and ChainedScheduler take schedules",
                                "a list", hint="Remove schedules."))
    if nested and config.warmup is not None:
        problems.append(Problem(f"{path}.warmup", "put the warmup on the outer schedule", "a warmup"))
    if problems or context is None:
        return problems

    resolved = resolve_schedule(config, context, parent_interval=None if not nested else config.interval)
    assert resolved is not None
    resolved_arguments = resolved.arguments()
    for argument in entry.missing_arguments(resolved_arguments, skip=SUPPLIED):
        problems.append(Problem(f"{path}.{argument}", f"{entry.name} needs '{argument}'", config.name,
                                hint=f"Add {argument}: to {path}."))
    check = entry.capabilities.get("check")
    if check is not None:
        problems += check(resolved_arguments, context, path, entry.name)
    warm = warmup_steps(config.warmup, context.steps_per_epoch)
    if warm and warm >= context.total_steps:
        problems.append(Problem(f"{path}.warmup", f"the warmup ({warm} steps) is as long as the whole run "
                                f"({context.total_steps} optimizer steps)", config.warmup.model_dump(exclude_none=True),
                                hint="Shorten the warmup or train for more epochs."))
    if entry.name == "OneCycleLR" and isinstance(resolved_arguments.get("total_steps"), int):
        needed = context.total_steps - warm
        if resolved_arguments["total_steps"] < needed:
            problems.append(Problem(f"{path}.total_steps", f"the run takes {needed} optimizer steps but OneCycleLR "
                                    "is set for fewer; torch would stop with an error mid-run",
                                    resolved_arguments["total_steps"], argument="total_steps",
                                    hint="Leave total_steps out: trainlab fills it in from the run."))
    if unit == "plateau" and resolved.monitor not in context.metrics:
        shown = ", ".join(context.metrics) or "none"
        problems.append(Problem(f"{path}.monitor", f"this recipe never logs that metric; it logs {shown}",
                                resolved.monitor, hint=f"Use one of: {shown}."))
    return problems


def _check_children(config: ScheduleConfig, path: str, context: ScheduleContext | None) -> list[Problem]:
    problems = []
    children = config.schedules or []
    if not children:
        return [Problem(f"{path}.schedules", f"{config.name} needs a list of schedules", config.schedules,
                        hint="Add schedules: [{name: LinearLR, ...}, {name: CosineAnnealingLR}].")]
    for index, child in enumerate(children):
        problems += check_schedule(child, context, join_path(f"{path}.schedules", index), nested=True)
    if config.name == SCHEDULES.canonical("SequentialLR"):
        milestones = config.arguments().get("milestones", config.arguments().get("milestones_epochs"))
        if not isinstance(milestones, list) or len(milestones) != len(children) - 1:
            problems.append(Problem(f"{path}.milestones", f"SequentialLR needs {len(children) - 1} milestone(s) "
                                    f"for {len(children)} schedules", milestones,
                                    hint="One milestone (in the schedule's unit) where each next schedule starts."))
    return problems


# ----------------------------------------------------------------------------------- building


def _construct(config: ScheduleConfig, optimizer: torch.optim.Optimizer) -> Any:
    entry = SCHEDULES.get(config.name)
    arguments = config.arguments()
    if entry.name == "SequentialLR":
        children = [_construct(child, optimizer) for child in config.schedules or []]
        return entry.target(optimizer, schedulers=children, **arguments)
    if entry.name == "ChainedScheduler":
        children = [_construct(child, optimizer) for child in config.schedules or []]
        return entry.target(children, optimizer=optimizer)
    return entry.target(optimizer, **arguments)


def build_schedule(config: ScheduleConfig | None, optimizer: torch.optim.Optimizer,
                   context: ScheduleContext) -> Schedule | None:
    """The torch scheduler of a schedule section (resolved or not), bound to ``optimizer``."""
    if config is None:
        return None
    problems = check_schedule(config, context)
    if problems:
        raise RecipeError("the schedule is invalid", problems)
    resolved = resolve_schedule(config, context)
    assert resolved is not None
    entry = SCHEDULES.get(resolved.name)
    warm = warmup_steps(resolved.warmup, context.steps_per_epoch)
    if warm:
        warmup = torch.optim.lr_scheduler.LinearLR(
            optimizer, start_factor=resolved.warmup.start_factor, end_factor=1.0, total_iters=warm
        )
        main = _construct(resolved, optimizer)
        scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[warm])
    else:
        scheduler = _construct(resolved, optimizer)
    interval = "plateau" if entry.capabilities["unit"] == "plateau" else str(resolved.interval)
    cycles = bool(resolved.arguments().get("cycle_momentum")) or any(
        bool(child.arguments().get("cycle_momentum")) for child in resolved.schedules or []
    )
    return Schedule(scheduler, interval, resolved.monitor, cycles, resolved.name)


def schedule_problems_from_torch(config: ScheduleConfig, optimizer: torch.optim.Optimizer,
                                 context: ScheduleContext) -> list[Problem]:
    """Construct the scheduler once so torch's own value checks are reported at validate time."""
    try:
        build_schedule(config, optimizer, context)
    except RecipeError as error:
        return error.problems
    except (ValueError, TypeError, KeyError) as error:
        return [Problem("schedule", f"torch rejected the {config.name} settings: {error}", config.arguments(),
                        hint="Fix the argument values (see torch.optim.lr_scheduler).")]
    return []


# ----------------------------------------------------------------------------------- preview


@dataclass
class SchedulePreview:
    """The lr (and momentum) at every optimizer step of a run, computed without training."""

    interval: str
    steps: list[int] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    momentum: list[float] | None = None


def preview_schedule(config: ScheduleConfig | None, optimizer: torch.optim.Optimizer,
                     context: ScheduleContext) -> SchedulePreview:
    """Step the schedule as the loop would over the whole run and record the lr used at each step.

    ReduceLROnPlateau depends on metrics that only training produces: its preview is flat.
    """
    schedule = build_schedule(config, optimizer, context)
    cycles = schedule is not None and schedule.cycles_momentum
    preview = SchedulePreview(schedule.interval if schedule else "none", momentum=[] if cycles else None)
    step = 0
    for _ in range(context.epochs):
        for _ in range(context.steps_per_epoch):
            step += 1
            preview.steps.append(step)
            preview.lr.append(optimizer.param_groups[0]["lr"])
            if preview.momentum is not None:
                preview.momentum.append(momentum_of(optimizer) or 0.0)
            optimizer.step()  # no gradients: a no-op that keeps torch's step-order check quiet
            if schedule is not None:
                schedule.after_optimizer_step()
        if schedule is not None and schedule.interval != "plateau":
            schedule.after_epoch({})
    return preview


def key_points(preview: SchedulePreview) -> list[tuple[int, float]]:
    """The steps where the lr changes direction or jumps: start, turns, restarts, end."""
    points = [(preview.steps[0], preview.lr[0])] if preview.steps else []
    for index in range(1, len(preview.lr) - 1):
        before = preview.lr[index] - preview.lr[index - 1]
        after = preview.lr[index + 1] - preview.lr[index]
        turn = (before > 0 > after) or (before < 0 < after)
        starts_changing = before == 0 and after != 0  # a step decay or a restart after a flat stretch
        if turn or starts_changing:
            points.append((preview.steps[index], preview.lr[index]))
    if preview.steps:
        points.append((preview.steps[-1], preview.lr[-1]))
    return points[:20]


def total_units_text(context: ScheduleContext) -> str:
    return f"{context.epochs} epochs x {context.steps_per_epoch} optimizer steps = {context.total_steps} steps"


__all__ = [
    "SCHEDULES", "Schedule", "ScheduleContext", "SchedulePreview", "build_schedule", "check_schedule",
    "key_points", "momentum_of", "preview_schedule", "resolve_schedule", "schedule_problems_from_torch",
    "warmup_steps", "total_units_text",
]
