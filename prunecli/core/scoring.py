"""Weight importance scores: a registry of small pure functions.

A score has the contract ``(weights, context) -> array of weights.shape``: higher means more
important, and masking keeps the highest. Adding a method is one function, one entry in
``REGISTRY`` and one test. What a score needs from training (gradients, movement) is
measured at the edge (``pruner``) and handed over in the context, so scores stay pure.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScoreContext:
    """What a score may know besides the weights.

    ``abs_gradient``: sum over the score batches of |dL/dw| (taylor). ``movement``: the
    accumulated -w * dL/dw of fine-tuning so far (movement). Both have the kernel's shape.
    """

    seed: int = 0
    key: str = ""
    abs_gradient: np.ndarray | None = None
    movement: np.ndarray | None = None


Score = Callable[[np.ndarray, ScoreContext], np.ndarray]


def magnitude(weights: np.ndarray, context: ScoreContext) -> np.ndarray:
    """|w|: the classic criterion (Han et al. 2015); small weights matter least."""
    del context  # magnitude needs nothing but the weights
    return np.abs(weights)


def random(weights: np.ndarray, context: ScoreContext) -> np.ndarray:
    """Uniform noise, seeded by the run's seed and the kernel's key: the baseline the
    literature asks every method to beat. Pruned weights (0.0) score lowest so a mask only
    grows as the schedule rises."""
    stream = np.random.default_rng([context.seed, zlib.crc32(context.key.encode())])
    return np.where(weights == 0, -1.0, stream.random(weights.shape))


def taylor(weights: np.ndarray, context: ScoreContext) -> np.ndarray:
    """First-order Taylor importance |w * dL/dw| summed over batches (Molchanov et al. 2019):
    the loss change a first-order expansion predicts when w is set to 0. Since
    sum_b |w g_b| = |w| sum_b |g_b|, the context carries sum_b |g_b|. Pruned weights (0.0)
    score lowest, below live weights whose gradient is 0 (e.g. behind a dead ReLU): on a tie
    the earlier position is kept, and a gradual schedule would keep a pruned weight and cut
    a live one, leaving the kernel sparser than its target."""
    if context.abs_gradient is None:
        raise ValueError("taylor needs gradients: the context has none")
    return np.where(weights == 0, -1.0, np.abs(weights) * context.abs_gradient)


def lamp(weights: np.ndarray, context: ScoreContext) -> np.ndarray:
    """LAMP (Lee et al. 2021): w_u^2 / sum of w_v^2 over the weights v of the same kernel at
    least as large as u. Each kernel's largest weight scores 1, so under ``scope: global``
    one threshold no longer wipes out small layers. Example: |w| = (1, 2, 3) gives
    (1/14, 4/13, 9/9).
    """
    del context
    squared = np.square(weights, dtype=np.float64).reshape(-1)
    order = np.argsort(squared, kind="stable")
    tail = np.cumsum(squared[order][::-1])[::-1]  # sum over self and everything larger
    scores = np.empty_like(squared)
    scores[order] = np.divide(squared[order], tail, out=np.zeros_like(tail), where=tail > 0)
    return scores.reshape(weights.shape)


def movement(weights: np.ndarray, context: ScoreContext) -> np.ndarray:
    """Movement pruning (Sanh et al. 2020): keep the weights moving away from zero during
    fine-tuning, S = -sum_t w_t * dL/dw_t, whatever their size. Needs a gradual schedule:
    the score is only known after some training. Pruned weights keep their score (the
    pruner keeps accumulating it), so the mask can change its mind, as in the paper."""
    del weights  # the score is all in the accumulated movement
    if context.movement is None:
        raise ValueError("movement needs fine-tuning statistics: the context has none")
    return context.movement


REGISTRY: dict[str, Score] = {
    "magnitude": magnitude,
    "random": random,
    "taylor": taylor,
    "lamp": lamp,
    "movement": movement,
}


def get(name: str) -> Score:
    """The score called ``name``; unknown names list the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown score {name!r}; valid: {', '.join(sorted(REGISTRY))}") from None
