"""Sparsity as a function of the optimizer step. Pure, frozen dataclasses.

Every schedule answers two questions: ``sparsity_at(step)`` (the target at that step; 0.0
means "no mask yet") and ``updates_at(step)`` (whether the masks are recomputed before that
step). Fine-tuning asks both before every step; one extra mask update is made after the last
step at ``sparsity_at(total_steps)``, which the config guarantees is the final target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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


def build(
    kind: str,
    final: float,
    steps_per_epoch: int,
    *,
    start_epoch: float = 0.0,
    end_epoch: float = 1.0,
    initial: float = 0.0,
    power: float = 3.0,
    frequency: int = 100,
) -> Schedule:
    """A schedule from config values; epochs (fractions allowed) become optimizer steps."""
    begin = round(start_epoch * steps_per_epoch)
    if kind == "one_shot":
        return OneShot(final)
    if kind == "constant":
        return Constant(final, begin)
    if kind == "polynomial":
        end = max(begin + 1, round(end_epoch * steps_per_epoch))
        return Polynomial(initial, final, begin, end, power, frequency)
    raise ValueError(f"unknown schedule {kind!r}; valid: one_shot, constant, polynomial")


def _check_range(final: float, begin: int, end: int) -> None:
    if not 0.0 <= final < 1.0:
        raise ValueError(f"final sparsity must be >= 0 and < 1, got {final}")
    if begin < 0 or end < 0:
        raise ValueError(f"steps must be >= 0, got {begin}, {end}")
