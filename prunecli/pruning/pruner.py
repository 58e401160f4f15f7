"""Masks that live outside the model: computed in numpy, enforced inside the train step.

Each selected kernel gets a non-trainable mask variable and, while fine-tuning, a
constraint ``w -> w * mask``. Keras 3 optimizers apply a variable's constraint right after
each update, inside the compiled train step, so every masked weight is exactly 0.0 after
every optimizer step, whatever momentum the optimizer carries for it. Masks change only at
the schedule's update steps (``update``), by assigning new values to the same variables, so
the compiled step is never retraced. ``detach`` restores the original constraints before
saving: the written model is a plain Keras model with nothing of prunecli in it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from prunecli.config import Prune
from prunecli.core import masking, scoring
from prunecli.core.schedules import Schedule
from prunecli.pruning.selection import LayerInfo


@dataclass(frozen=True)
class _Movement:
    """Movement pruning's state for one kernel: the score, the kernel as it was after the
    last step, and a shadow copy holding each pruned weight's last live value."""

    score: keras.Variable
    previous: keras.Variable
    shadow: keras.Variable


class _MaskConstraint:
    """``w * mask`` after the layer's own constraint (kept, if the layer had one).

    For movement pruning it also accumulates S += w_t * (w_t+1 - w_t) in the same compiled
    step: under SGD, w_t+1 - w_t = -lr * dL/dw, so S is Sanh et al.'s -sum_t w * dL/dw up to
    the constant lr (with Adam, the step it actually took), with no Python per step. As in
    the paper, pruned weights keep scoring (straight-through: the optimizer still moves
    them from 0, and their shadow value is what they would have), so a weight cut early by
    a noisy score can come back.
    """

    def __init__(
        self,
        mask: keras.Variable,
        inner: Callable[[Any], Any] | None,
        movement: _Movement | None = None,
    ) -> None:
        self.mask, self.inner, self.movement = mask, inner, movement

    def __call__(self, weights: Any) -> Any:
        if self.inner is not None:
            weights = self.inner(weights)
        masked = weights * self.mask
        if self.movement is not None:
            state = self.movement
            state.score.assign_add(state.shadow * (weights - state.previous))
            state.shadow.assign(keras.ops.where(self.mask > 0, weights, state.shadow))
            state.previous.assign(masked)
        return masked


class Pruner:
    """The masks of the selected kernels and the schedules that drive them.

    Keys are ``<layer path>/<attr>``, e.g. ``base/conv1/kernel``. Under ``scope: layer``
    every kernel follows its own schedule (its layer's target, overrides included); under
    ``scope: global`` one schedule gives one sparsity shared through a global threshold.
    """

    def __init__(
        self,
        layers: list[LayerInfo],
        prune: Prune,
        schedule_for: Callable[[float], Schedule],
        seed: int = 0,
        gradients: Callable[[dict[str, Any]], dict[str, np.ndarray]] | None = None,
    ) -> None:
        """``gradients`` maps the kernels to sum_b |dL/dw| over a few batches (taylor)."""
        self.prune, self.seed, self.gradients = prune, seed, gradients
        self.score = scoring.get(prune.method)
        self.pattern = prune.pattern
        self.kernels: dict[str, Any] = {}
        self.axes: dict[str, int | None] = {}
        self.schedules: dict[str, Schedule] = {}
        for info in layers:
            if info.selected:
                for attr, variable in info.kernels.items():
                    key = f"{info.path}/{attr}"
                    self.kernels[key] = variable
                    self.axes[key] = info.axes.get(attr)
                    self.schedules[key] = schedule_for(info.target)
        self.global_schedule = schedule_for(prune.sparsity)
        # numpy arrays until ``attach`` makes them variables for the train step: a one-shot
        # run without fine-tuning never needs one (on ResNet50, 25M ones in variables cost
        # as much as the masking itself).
        self.masks: dict[str, Any] = {}
        self.movement = {
            key: _Movement(_state_like(v, 0.0), _state_like(v, 0.0), _state_like(v, None))
            for key, v in self.kernels.items()
            if prune.needs.training
        }
        self._inner: dict[str, Any] = {}
        self._applied: Any = None

    def updates_at(self, step: int) -> bool:
        return self.global_schedule.updates_at(step)

    def update(self, step: int) -> float:
        """Recompute the masks for ``step`` and zero the pruned weights; return sparsity.

        Nothing is recomputed when the targets have not moved since the last update, so a
        score that is noisy or costly (random, taylor) never reshuffles a finished mask.
        """
        if self.prune.scope == "global":
            targets: Any = self.global_schedule.sparsity_at(step)
        else:
            targets = {key: s.sparsity_at(step) for key, s in self.schedules.items()}
        if targets == self._applied:
            return self.sparsity()
        weights = {key: np.asarray(v) for key, v in self.kernels.items()}
        scores = self._scores(weights)
        # Movement: a weight chosen again comes back with its last live value.
        weights |= {key: np.asarray(state.shadow) for key, state in self.movement.items()}
        if self.prune.scope == "global":
            masks = masking.global_pattern_masks(
                scores, targets, self.prune.min_layer_density, self.pattern
            )
        else:
            masks = masking.layer_masks(scores, targets, self.pattern, self.axes)
        zeros = 0
        for key, mask in masks.items():
            self._set_mask(key, mask)
            masked = np.multiply(weights[key], mask, out=weights[key])  # weights are copies
            self.kernels[key].assign(masked)
            if key in self.movement:
                self.movement[key].previous.assign(masked)
            zeros += masked.size - np.count_nonzero(masked)
        self._applied = targets
        total = sum(mask.size for mask in masks.values())
        return float(zeros / total) if total else 0.0

    def _set_mask(self, key: str, mask: np.ndarray) -> None:
        """Give kernel ``key`` its mask: once attached, by assigning the same variable (the
        compiled train step reads it, so it is never replaced); before, as an array."""
        current = self.masks.get(key)
        if isinstance(current, keras.Variable):
            current.assign(mask)
        else:
            self.masks[key] = mask.astype(np.dtype(self.kernels[key].dtype), copy=False)

    def _scores(self, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        wanted = self.prune.needs.gradients
        gradients = self.gradients(self.kernels) if wanted and self.gradients else {}
        if wanted and not gradients:
            raise ValueError(f"{self.prune.method} scores need training data for gradients")
        return {
            key: self.score(
                w,
                scoring.ScoreContext(
                    self.seed,
                    key,
                    abs_gradient=gradients.get(key),
                    movement=np.asarray(self.movement[key].score) if key in self.movement else None,
                ),
            )
            for key, w in weights.items()
        }

    def state(self) -> Any:
        """The targets of the last mask update (a checkpoint stores them: a resumed run
        then recomputes no mask whose target has not moved)."""
        return self._applied

    def restore(self, applied: Any) -> None:
        """Take back ``state()`` from a checkpoint (the masks come with the variables)."""
        self._applied = applied

    def finish(self) -> float:
        """Bring every mask to its final target (after the last training step)."""
        return self.update(step=_FOREVER)

    def attach(self) -> None:
        """Enforce the masks after every optimizer step (constraint on each kernel)."""
        for key, variable in self.kernels.items():
            if key not in self.masks:  # no update yet (a schedule starting later)
                self._set_mask(key, np.ones(variable.shape, np.float32))
        self.masks = {  # in kernel order, as checkpoints store them
            key: mask
            if isinstance(mask := self.masks[key], keras.Variable)
            else keras.Variable(mask, trainable=False, name="prune_state")
            for key in self.kernels
        }
        for key, variable in self.kernels.items():
            self._inner[key] = variable.constraint
            if key in self.movement:
                self.movement[key].previous.assign(variable)
            variable.constraint = _MaskConstraint(
                self.masks[key], variable.constraint, self.movement.get(key)
            )

    def detach(self) -> None:
        """Give every kernel its own constraint back; nothing of prunecli stays in the model."""
        for key, inner in self._inner.items():
            self.kernels[key].constraint = inner
        self._inner.clear()

    def sparsity(self) -> float:
        """Zeros over all selected kernels, measured on the weights themselves."""
        arrays = [np.asarray(v) for v in self.kernels.values()]
        total = sum(a.size for a in arrays)
        zeros = sum(a.size - np.count_nonzero(a) for a in arrays)
        return float(zeros / total) if total else 0.0


def _state_like(variable: Any, value: float | None) -> keras.Variable:
    """A non-trainable variable of the kernel's shape and dtype, filled with ``value``
    (None: a copy of the kernel's current values)."""
    dtype = np.dtype(variable.dtype)
    start = np.asarray(variable, dtype) if value is None else np.full(variable.shape, value, dtype)
    return keras.Variable(start, trainable=False, name="prune_state")


# A step past the end of every schedule: where each reaches its final sparsity.
_FOREVER = 2**62
