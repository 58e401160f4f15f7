"""Sparsity as a function of the optimizer step. Pure, frozen dataclasses.

Every schedule answers two questions: ``sparsity_at(step)`` (the target at that step; 0.0
means "no mask yet") and ``updates_at(step)`` (whether the masks are recomputed before that
step). Fine-tuning asks both before every step; one extra mask update is made after the last
step at ``sparsity_at(total_steps)``, which the config guarantees is the final target.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class Schedule(Protocol):
    final: float

    def sparsity_at(self, step: int) -> float: ...

    def updates_at(self, step: int) -> bool: ...


@dataclass(frozen=True)
class OneShot:
    """Prune to ``final`` before the first step and hold the masks (prune, then fine-tune)."""

    final: float

    def __post_init__(self) -> None:
        _check_range(self.final, 0, 0)

    def sparsity_at(self, step: int) -> float:
        return self.final

    def updates_at(self, step: int) -> bool:
        return step == 0


@dataclass(frozen=True)
class Constant:
    """Train dense until ``begin``, then prune to ``final`` once and hold."""

    final: float
    begin: int

    def __post_init__(self) -> None:
        _check_range(self.final, self.begin, self.begin)

    def sparsity_at(self, step: int) -> float:
        return self.final if step >= self.begin else 0.0

    def updates_at(self, step: int) -> bool:
        return step == self.begin


@dataclass(frozen=True)
class Polynomial:
    """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f)(1 - (t - t0)/(t1 - t0))^power.

    Sparsity rises fast at first, while the network still has redundancy to spare, and
    slowly near the end. Masks are recomputed every ``frequency`` steps from ``begin`` and
    at ``end`` itself, so the final target is reached exactly at ``end``. For example
    initial 0, final 0.8, power 3, steps 0..10: s_5 = 0.8 - 0.8 * 0.5**3 = 0.7.
    """

    initial: float
    final: float
    begin: int
    end: int
    power: float = 3.0
    frequency: int = 100

    def __post_init__(self) -> None:
        _check_range(self.final, self.begin, self.end)
        if not self.begin < self.end:
            raise ValueError(f"polynomial schedule needs begin < end, got {self.begin}, {self.end}")

    def sparsity_at(self, step: int) -> float:
        if step < self.begin:
            return 0.0
        progress = min(1.0, (step - self.begin) / (self.end - self.begin))
        return self.final + (self.initial - self.final) * (1.0 - progress) ** self.power

    def updates_at(self, step: int) -> bool:
        in_window = self.begin <= step <= self.end
        return in_window and ((step - self.begin) % self.frequency == 0 or step == self.end)


@dataclass(frozen=True)
class Iterative:
    """Prune-retrain rounds (Han et al. 2015): ``rounds`` mask updates spread evenly over
    ``total`` steps, each removing the same fraction of the weights still alive, so the
    density after round k of K is (1 - final)^(k/K) and the last round reaches ``final``.
    Example: final 0.875 in 3 rounds gives 0.5, 0.75, 0.875 at steps 0, T/3, 2T/3.
    """

    final: float
    rounds: int
    total: int

    def __post_init__(self) -> None:
        _check_range(self.final, 0, self.total)
        if self.rounds < 1:
            raise ValueError(f"iterative schedule needs rounds >= 1, got {self.rounds}")

    def _starts(self) -> list[int]:
        return [k * self.total // self.rounds for k in range(self.rounds)]

    def sparsity_at(self, step: int) -> float:
        done = sum(1 for start in self._starts() if start <= step)
        return 1.0 - (1.0 - self.final) ** (done / self.rounds)

    def updates_at(self, step: int) -> bool:
        return step in self._starts()


@dataclass(frozen=True)
class Plan:
    """Schedule settings in epochs (from the config) plus the run's step counts."""

    steps_per_epoch: int
    total_steps: int
    start_epoch: float = 0.0
    end_epoch: float = 1.0
    initial: float = 0.0
    power: float = 3.0
    frequency: int = 100
    rounds: int = 3

    def step(self, epoch: float) -> int:
        return round(epoch * self.steps_per_epoch)


BUILDERS: dict[str, Callable[[float, Plan], Schedule]] = {
    "one_shot": lambda final, plan: OneShot(final),
    "constant": lambda final, plan: Constant(final, plan.step(plan.start_epoch)),
    "polynomial": lambda final, plan: Polynomial(
        min(plan.initial, final),
        final,
        plan.step(plan.start_epoch),
        max(plan.step(plan.start_epoch) + 1, plan.step(plan.end_epoch)),
        plan.power,
        plan.frequency,
    ),
    "iterative": lambda final, plan: Iterative(final, plan.rounds, max(plan.total_steps, 1)),
}


def factory(settings: Any, steps_per_epoch: int, epochs: int) -> Callable[[float], Schedule]:
    """Builds each layer's schedule from ``prune.schedule`` (``settings``): layers differ
    only in their final target."""
    plan = Plan(
        steps_per_epoch,
        steps_per_epoch * epochs,
        start_epoch=settings.start_epoch,
        end_epoch=settings.end_epoch,
        initial=settings.initial_sparsity,
        power=settings.power,
        frequency=settings.frequency,
        rounds=settings.steps,
    )
    return functools.partial(build, settings.type, plan=plan)


def build(kind: str, final: float, plan: Plan) -> Schedule:
    """The schedule ``kind`` reaching ``final``; epochs (fractions allowed) become steps."""
    try:
        return BUILDERS[kind](final, plan)
    except KeyError:
        raise ValueError(f"unknown schedule {kind!r}; valid: {', '.join(BUILDERS)}") from None


def _check_range(final: float, begin: int, end: int) -> None:
    if not 0.0 <= final < 1.0:
        raise ValueError(f"final sparsity must be >= 0 and < 1, got {final}")
    if begin < 0 or end < 0:
        raise ValueError(f"steps must be >= 0, got {begin}, {end}")
