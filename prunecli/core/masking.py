"""Scores -> binary masks, per layer or under one global budget. Pure numpy, no I/O.

A mask has the shape of its kernel, dtype float32, 1.0 = keep and 0.0 = pruned, so that
enforcing it is one multiply. Counts are exact: pruning a fraction ``s`` of ``n`` units
zeroes ``round(s * n)`` of them. Ties at the threshold are broken by position (the earlier
flat index is kept), which makes masks deterministic even when many scores are equal (e.g.
weights already zero).

Three granularities (``granularity.Pattern``): ``unstructured`` (a unit is one weight), ``N:M`` (in
every group of M consecutive weights along the reduction axis, at most N survive: what
NVIDIA's sparse tensor cores run) and ``block`` (a unit is an r x c block over the kernel's
last two axes, scored by the mean of its members, as tfmot's ``block_size``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np

from prunecli.core.granularity import UNSTRUCTURED, Pattern


def layer_mask(
    scores: np.ndarray, sparsity: float, pattern: Pattern, axis: int | None
) -> np.ndarray:
    """One kernel's mask at ``sparsity`` under ``pattern`` (``axis``: the reduction axis)."""
    if pattern.kind == "nm":
        return n_of_m(scores, sparsity, pattern.m, axis if axis is not None else -2)
    if pattern.kind == "block":
        units = block_scores(scores, pattern.block)
        return expand_blocks(unstructured(units, sparsity), pattern.block, scores.shape)
    return unstructured(scores, sparsity)


def unstructured(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Zero the ``round(sparsity * n)`` lowest-scoring entries of one kernel.

    >>> unstructured(np.array([[0.1, 3.0], [2.0, 0.5]]), 0.5)
    array([[0., 1.],
           [1., 0.]], dtype=float32)
    """
    flat = scores.reshape(-1)
    keep = flat.size - round(sparsity * flat.size)
    return _top_mask(flat, keep).astype(np.float32).reshape(scores.shape)


def n_of_m(scores: np.ndarray, sparsity: float, m: int, axis: int) -> np.ndarray:
    """In each group of ``m`` consecutive entries along ``axis``, zero the
    ``round(sparsity * m)`` lowest. A Dense kernel is ``(in, out)``: groups run down each
    column (``axis`` 0, the inputs one output sums over); a Conv2D kernel ``(kh, kw, in,
    out)`` groups along ``in`` at each spatial position. At sparsity 0.5 and m = 4 that is
    exactly the 2:4 pattern; a gradual schedule passes 0.25 (1:4 pruned) on the way.

    >>> n_of_m(np.array([[4.0], [1.0], [3.0], [2.0]]), 0.5, 4, 0).ravel()
    array([1., 0., 1., 0.], dtype=float32)
    """
    moved = np.moveaxis(scores, axis, -1)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)
    prune = min(m, round(sparsity * m))
    rank = np.argsort(np.argsort(-groups, axis=-1, kind="stable"), axis=-1, kind="stable")
    keep = (rank < m - prune).astype(np.float32).reshape(moved.shape)
    return np.moveaxis(keep, -1, axis)


def block_scores(scores: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """Mean score of each ``block`` over the last two axes (edge blocks may be partial).

    >>> block_scores(np.arange(8.0).reshape(2, 4), (1, 2))
    array([[0.5, 2.5],
           [4.5, 6.5]])
    """
    rows, cols = block
    *lead, height, width = scores.shape
    padded = np.full((*lead, -(-height // rows) * rows, -(-width // cols) * cols), np.nan)
    padded[..., :height, :width] = scores
    tiles = padded.reshape(*lead, padded.shape[-2] // rows, rows, padded.shape[-1] // cols, cols)
    return np.nanmean(tiles, axis=(-3, -1))


def expand_blocks(units: np.ndarray, block: tuple[int, int], shape: tuple[int, ...]) -> np.ndarray:
    """A per-block mask back to the kernel's shape (edge blocks cropped)."""
    full = np.repeat(np.repeat(units, block[0], axis=-2), block[1], axis=-1)
    return full[..., : shape[-2], : shape[-1]].astype(np.float32)


def layer_masks(
    scores: Mapping[str, np.ndarray],
    targets: Mapping[str, float],
    pattern: Pattern = UNSTRUCTURED,
    axes: Mapping[str, int | None] | None = None,
) -> dict[str, np.ndarray]:
    """``scope: layer``: every kernel reaches its own target sparsity."""
    return {
        key: layer_mask(score, targets[key], pattern, (axes or {}).get(key))
        for key, score in scores.items()
    }


def global_pattern_masks(
    scores: Mapping[str, np.ndarray], sparsity: float, min_density: float, pattern: Pattern
) -> dict[str, np.ndarray]:
    """``scope: global`` for unstructured or block patterns (blocks compete as units)."""
    if pattern.kind != "block":
        return global_masks(scores, sparsity, min_density)
    units = {key: block_scores(score, pattern.block) for key, score in scores.items()}
    masks = global_masks(units, sparsity, min_density)
    return {key: expand_blocks(masks[key], pattern.block, scores[key].shape) for key in scores}


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
    # Selection by threshold (np.partition, O(n)) over one pooled array rather than a full
    # sort: on ResNet50's 25M weights a stable argsort of every kernel and of the pool took
    # ~20 s and ~1 GB. The floors are taken out of the pool by scoring them -inf in place
    # (the budget never exceeds what is left, so none is chosen twice): one concatenation,
    # no per-kernel copies; the same masks, ties included (positions keep their order).
    keys = list(scores)
    bounds = np.cumsum([0] + [scores[key].size for key in keys])
    pool = np.concatenate([np.ravel(scores[key]) for key in keys] or [np.zeros(0)])
    pool = pool.astype(np.result_type(pool.dtype, np.float32), copy=False)
    keep = np.empty(pool.size, dtype=bool)
    for start, end in itertools.pairwise(bounds):
        keep[start:end] = _top_mask(pool[start:end], math.ceil(min_density * (end - start)))
    budget = pool.size - round(sparsity * pool.size) - int(np.count_nonzero(keep))
    if budget > 0:
        # Ties go to the earlier kernel, then the earlier weight, as the floor's ties do.
        pool[keep] = -np.inf
        keep |= _top_mask(pool, budget)
    spans = itertools.pairwise(bounds)
    return {
        key: keep[start:end].astype(np.float32).reshape(scores[key].shape)
        for key, (start, end) in zip(keys, spans, strict=True)
    }


def pattern_ok(kernel: np.ndarray, pattern: Pattern, axis: int | None) -> bool | None:
    """Does a (saved) kernel follow ``pattern``? None for unstructured.

    N:M: every group of M along the reduction axis holds at most N non-zeros. Block: every
    zero lies in an all-zero block (a kept block is never partly cut).
    """
    if pattern.kind == "nm":
        moved = np.moveaxis(kernel, axis if axis is not None else -2, -1)
        groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // pattern.m, pattern.m)
        return bool(np.all(np.count_nonzero(groups, axis=-1) <= pattern.n))
    if pattern.kind == "block":
        zero_blocks = block_scores((kernel != 0).astype(np.float64), pattern.block) == 0
        covered = expand_blocks(zero_blocks.astype(np.float32), pattern.block, kernel.shape)
        return bool(np.count_nonzero(kernel == 0) == np.count_nonzero(covered))
    return None


def sparsity(mask: np.ndarray) -> float:
    """Fraction of zeros: 0.0 for an empty kernel."""
    return float(1.0 - np.count_nonzero(mask) / mask.size) if mask.size else 0.0


def _top_mask(flat: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the ``count`` highest entries of ``flat``; among equal scores at the
    threshold the earlier index wins. One ``np.partition`` (O(n)), no sort.

    >>> _top_mask(np.array([1.0, 2.0, 2.0, 2.0, 5.0]), 3)
    array([False,  True,  True, False,  True])
    """
    count = min(max(count, 0), flat.size)
    if count == 0:
        return np.zeros(flat.size, dtype=bool)
    if count == flat.size:
        return np.ones(flat.size, dtype=bool)
    threshold = _kth_highest(flat, count)
    keep = flat > threshold
    ties = np.flatnonzero(flat == threshold)[: count - int(np.count_nonzero(keep))]
    keep[ties] = True
    return keep


_SAMPLE = 16384  # at most this many scores sampled to bracket a threshold (1 in 8 or fewer)
_SAMPLED_FROM = 32768  # smaller kernels: one partition costs less than the bracket


def _kth_highest(flat: np.ndarray, count: int) -> np.ndarray:
    """The ``count``-th highest value of ``flat`` (1 <= count < flat.size), exactly.

    ``np.partition`` alone slows down several-fold on the kernels a gradual schedule
    re-masks: most scores are then tied at 0 (already pruned), and its pivots keep landing
    in the tie. A sorted sample brackets the answer instead; only the scores inside the
    bracket are partitioned (a few percent of the kernel), or none when the answer is the
    tie itself. If the bracket misses (a sample is only a sample), the full partition.

    >>> float(_kth_highest(np.array([0.0, 0.0, 0.0, 3.0, 1.0, 2.0]), 2))
    2.0
    """
    kth = flat.size - count  # its index in ascending order
    if flat.size >= _SAMPLED_FROM:
        sample = np.sort(flat[:: flat.size // min(_SAMPLE, flat.size // 8)])
        at = kth * sample.size // flat.size
        margin = 3 * math.isqrt(sample.size) + 1  # > 6 sigma of a sampled rank
        low = sample[max(0, at - margin)]
        high = sample[min(sample.size - 1, at + margin)]
        above = int(np.count_nonzero(flat > high))
        if low == high:  # the answer is in a tie: no partition at all
            if above < count <= int(np.count_nonzero(flat >= low)):
                return low
        else:
            inside = (flat >= low) & (flat <= high)
            if above < count <= above + int(np.count_nonzero(inside)):
                bracket = flat[inside]
                index = bracket.size - (count - above)
                return np.partition(bracket, index)[index]
    return np.partition(flat, kth)[kth]
