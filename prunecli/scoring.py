"""Weight importance scores: a registry of small pure functions.

A score has the contract ``(weights, context) -> array of weights.shape``: higher means more
important, and masking keeps the highest. Adding a method is one function, one entry in
``REGISTRY`` and one test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScoreContext:
    """What a score may know besides the weights (the seed and which layer they belong to)."""

    seed: int = 0
    key: str = ""


Score = Callable[[np.ndarray, ScoreContext], np.ndarray]


def magnitude(weights: np.ndarray, context: ScoreContext) -> np.ndarray:
    """|w|: the classic criterion (Han et al. 2015); small weights matter least."""
    del context  # magnitude needs nothing but the weights
    return np.abs(weights)


REGISTRY: dict[str, Score] = {"magnitude": magnitude}


def get(name: str) -> Score:
    """The score called ``name``; unknown names list the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown score {name!r}; valid: {', '.join(sorted(REGISTRY))}") from None
