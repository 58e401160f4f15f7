"""Scores -> binary masks, per layer or under one global budget. Pure numpy, no I/O.

A mask has the shape of its kernel, dtype float32, 1.0 = keep and 0.0 = pruned, so that
enforcing it is one multiply. Counts are exact: pruning a fraction ``s`` of ``n`` weights
zeroes ``round(s * n)`` of them. Ties at the threshold are broken by position (the earlier
flat index is kept), which makes masks deterministic even when many scores are equal (e.g.
weights already zero).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def unstructured(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Zero the ``round(sparsity * n)`` lowest-scoring entries of one kernel.

    >>> unstructured(np.array([[0.1, 3.0], [2.0, 0.5]]), 0.5)
    array([[0., 1.],
           [1., 0.]], dtype=float32)
    """
    flat = scores.reshape(-1)
    keep = flat.size - round(sparsity * flat.size)
    mask = np.zeros(flat.size, dtype=np.float32)
    mask[_top(flat, keep)] = 1.0
    return mask.reshape(scores.shape)


def layer_masks(
    scores: Mapping[str, np.ndarray], targets: Mapping[str, float]
) -> dict[str, np.ndarray]:
    """``scope: layer``: every kernel reaches its own target sparsity."""
    return {key: unstructured(score, targets[key]) for key, score in scores.items()}


def global_masks(
    scores: Mapping[str, np.ndarray], sparsity: float, min_density: float
) -> dict[str, np.ndarray]:
    """``scope: global``: one threshold over all kernels, with a density floor per kernel.

    Each kernel first keeps its best ``ceil(min_density * n)`` weights (so no layer is cut
    off, which would disconnect the network); the rest of the keep budget goes to the
    highest remaining scores wherever they are. Example: kernels of 100 and 10 weights at
    sparsity 0.9 and floor 0.2 keep 20 + 2 guaranteed, and the budget of 11 is already
    spent, so the result is 22 non-zeros (sparsity 0.8: the floor wins over the target).
    """
    keys = list(scores)
    flats = [scores[key].reshape(-1) for key in keys]
    masks = [np.zeros(flat.size, dtype=np.float32) for flat in flats]
    budget = sum(flat.size for flat in flats) - round(sparsity * sum(flat.size for flat in flats))
    pool, owner, position = [], [], []
    for number, flat in enumerate(flats):
        order = _ranked(flat)
        floor = min(flat.size, math.ceil(min_density * flat.size))
        masks[number][order[:floor]] = 1.0
        budget -= floor
        pool.append(flat[order[floor:]])
        owner.append(np.full(flat.size - floor, number))
        position.append(order[floor:])
    if budget > 0:
        chosen = _top(np.concatenate(pool), budget)
        owners, positions = np.concatenate(owner)[chosen], np.concatenate(position)[chosen]
        for number, mask in enumerate(masks):
            mask[positions[owners == number]] = 1.0
    return {key: mask.reshape(scores[key].shape) for key, mask in zip(keys, masks, strict=True)}


def sparsity(mask: np.ndarray) -> float:
    """Fraction of zeros: 0.0 for an empty kernel."""
    return float(1.0 - np.count_nonzero(mask) / mask.size) if mask.size else 0.0


def _ranked(flat: np.ndarray) -> np.ndarray:
    """Indices from highest to lowest score; equal scores keep their original order."""
    return np.argsort(-flat, kind="stable")


def _top(flat: np.ndarray, count: int) -> np.ndarray:
    return _ranked(flat)[: max(count, 0)]
