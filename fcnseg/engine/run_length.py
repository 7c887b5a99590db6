"""A run's length: a number of optimiser steps, or minutes of training on the clock.

Everything that depends on which of the two a run has asks :class:`RunLength`: whether the
run is finished, whether a validation is due, where the learning-rate schedule stands, how
progress reads, and whether a resume has anything left to train. A run's place along its
length is a :class:`Position`: the optimiser steps taken and the seconds spent training
(validation excluded).

Validations fall at ``evals`` evenly spaced moments of the length, the last at its end,
for step-counted and clock-timed runs alike; a step-counted run with ``val_every`` set
validates every ``val_every`` steps instead (and at its end).

A clocked run stops at its budget: no step starts once the budget is spent (such a step
would cross the budget by more than its own duration), so the run ends at the first step
boundary at or past the budget, less than one step beyond it, however slow a step is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

#: A clock-based schedule is evaluated at this many evenly spaced moments of the budget.
CLOCK_RESOLUTION = 10_000


class Position(NamedTuple):
    """Where a run stands: optimiser steps taken and seconds spent training (validation excluded)."""

    step: int
    seconds: float


@dataclass(frozen=True)
class RunLength:
    """``steps`` optimiser steps, or ``seconds`` of training (exactly one is set), and its validation plan."""

    steps: int | None = None
    seconds: float | None = None
    evals: int = 10
    val_every: int | None = None  # step-counted runs only: validate every N steps instead of at ``evals`` moments

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.seconds is None):
            raise ValueError("a run's length is a number of steps or a number of seconds, not both or neither")
        for name in ("steps", "seconds", "evals", "val_every"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")

    @classmethod
    def of(cls, recipe: Any) -> RunLength:
        """The length a :class:`~fcnseg.engine.recipes.Recipe` asks for (its minutes when set, else its steps)."""
        if recipe.minutes is None:
            return cls(steps=recipe.steps, evals=recipe.evals, val_every=recipe.val_every)
        return cls(seconds=60.0 * recipe.minutes, evals=recipe.evals)

    @property
    def clocked(self) -> bool:
        """Whether the run trains to the clock (else it counts steps)."""
        return self.seconds is not None

    @property
    def total(self) -> float:
        """The length in its own unit: steps, or seconds of training."""
        return float(self.seconds) if self.seconds is not None else float(self.steps)  # type: ignore[arg-type]

    @property
    def unit(self) -> str:
        return "s" if self.clocked else "step"

    def along(self, position: Position) -> float:
        """How far ``position`` is along the length, in its unit (steps, or seconds of training)."""
        return position.seconds if self.clocked else float(position.step)

    def fraction_done(self, position: Position) -> float:
        """The share of the length behind ``position``, in [0, 1]."""
        return min(1.0, max(0.0, self.along(position) / self.total))

    def finished(self, position: Position) -> bool:
        """Whether the run at ``position`` is done: its steps taken, or its clock budget spent."""
        return self.along(position) >= self.total

    # --- the learning-rate schedule --------------------------------------------------------

    @property
    def schedule_steps(self) -> int:
        """The moments the schedule spans: the steps, or ``CLOCK_RESOLUTION`` moments of the clock."""
        return CLOCK_RESOLUTION if self.clocked else int(self.total)

    def schedule_moment(self, position: Position) -> int:
        """The schedule's moment for the step that starts at ``position``."""
        if not self.clocked:
            return position.step
        return min(CLOCK_RESOLUTION - 1, int(position.seconds / self.total * CLOCK_RESOLUTION))

    # --- validations ------------------------------------------------------------------------

    def validations_passed(self, position: Position) -> int:
        """How many validation moments lie at or before ``position`` (the end counts among them)."""
        if not self.clocked and self.val_every is not None:
            return position.step // self.val_every
        if not self.clocked:  # integer arithmetic: step s passes moment i when s >= steps * i / evals
            return min(self.evals, position.step * self.evals // int(self.total))
        return min(self.evals, int(position.seconds * self.evals / self.total))

    def validation_due(self, before: Position, after: Position) -> bool:
        """Whether a validation moment fell in the step from ``before`` to ``after`` (the run's end is checked
        apart, by :meth:`finished`)."""
        return self.validations_passed(after) > self.validations_passed(before)

    # --- words ------------------------------------------------------------------------------

    def describe(self) -> str:
        """The length in words: ``2998 steps`` or ``30 minutes of training``."""
        return f"{self.steps} steps" if not self.clocked else f"{self.total / 60:g} minutes of training"

    def where(self, position: Position) -> str:
        """``position`` in words: ``step 300/2998``, or on the clock ``step 812, 6.0/30 min`` (seconds below 10 min)."""
        if not self.clocked:
            return f"step {position.step}/{self.steps}"
        if self.total < 600:
            return f"step {position.step}, {position.seconds:.1f}/{self.total:g} s"
        return f"step {position.step}, {position.seconds / 60:.1f}/{self.total / 60:g} min"
