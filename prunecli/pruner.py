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
from typing import Any

import keras
import numpy as np

from prunecli import masking, scoring
from prunecli.config import Prune
from prunecli.schedules import Schedule
from prunecli.selection import LayerInfo


class _MaskConstraint:
    """``w * mask`` after the layer's own constraint (kept, if the layer had one)."""

    def __init__(self, mask: keras.Variable, inner: Callable[[Any], Any] | None) -> None:
        self.mask, self.inner = mask, inner

    def __call__(self, weights: Any) -> Any:
        if self.inner is not None:
            weights = self.inner(weights)
        return weights * self.mask


class Pruner:
    """The masks of the selected kernels and the schedules that drive them.

    Keys are ``<layer path>/<attr>``, e.g. ``base/conv1/kernel``. Under ``scope: layer``
    every kernel follows its own schedule (its layer's target, overrides included); under
    ``scope: global`` one schedule gives one sparsity shared through a global threshold.
    """

    def __init__(
        self, layers: list[LayerInfo], prune: Prune, schedule_for: Callable[[float], Schedule],
        seed: int = 0,
    ) -> None:
        self.prune, self.seed = prune, seed
        self.score = scoring.get(prune.method)
        self.kernels: dict[str, Any] = {}
        self.schedules: dict[str, Schedule] = {}
        for info in layers:
            if info.selected:
                for attr, variable in info.kernels.items():
                    key = f"{info.path}/{attr}"
                    self.kernels[key] = variable
                    self.schedules[key] = schedule_for(info.target)
        self.global_schedule = schedule_for(prune.sparsity)
        self.masks = {
            key: keras.Variable(np.ones(v.shape, dtype=v.dtype), trainable=False, name="mask")
            for key, v in self.kernels.items()
        }
        self._inner: dict[str, Any] = {}

    def updates_at(self, step: int) -> bool:
        return self.global_schedule.updates_at(step)

    def update(self, step: int) -> float:
        """Recompute the masks for ``step`` and zero the pruned weights; return sparsity."""
        weights = {key: np.asarray(v) for key, v in self.kernels.items()}
        scores = {
            key: self.score(w, scoring.ScoreContext(self.seed, key)) for key, w in weights.items()
        }
        if self.prune.scope == "global":
            target = self.global_schedule.sparsity_at(step)
            masks = masking.global_masks(scores, target, self.prune.min_layer_density)
        else:
            targets = {key: s.sparsity_at(step) for key, s in self.schedules.items()}
            masks = masking.layer_masks(scores, targets)
        for key, mask in masks.items():
            self.masks[key].assign(mask)
            self.kernels[key].assign(weights[key] * mask)
        return self.sparsity()

    def finish(self) -> float:
        """Bring every mask to its final target (after the last training step)."""
        return self.update(step=_FOREVER)

    def attach(self) -> None:
        """Enforce the masks after every optimizer step (constraint on each kernel)."""
        for key, variable in self.kernels.items():
            self._inner[key] = variable.constraint
            variable.constraint = _MaskConstraint(self.masks[key], variable.constraint)

    def detach(self) -> None:
        """Give every kernel its own constraint back; nothing of prunecli stays in the model."""
        for key, inner in self._inner.items():
            self.kernels[key].constraint = inner
        self._inner.clear()

    def sparsity(self) -> float:
        """Zeros over all selected kernels, measured on the weights themselves."""
        total = sum(int(np.prod(v.shape)) for v in self.kernels.values())
        zeros = sum(int(np.count_nonzero(np.asarray(v) == 0)) for v in self.kernels.values())
        return zeros / total if total else 0.0


# A step past the end of every schedule: where each reaches its final sparsity.
_FOREVER = 2**62
