"""Score the coupled groups' channels and choose which survive.

Each member that owns weights for a group's channels contributes one score per channel
(the producers' output filters; BatchNorm's |gamma| for ``bn_scale``; a head's q/k/v/output
slices for head groups). Members are normalised by their mean before being averaged, so a
wide layer with large weights does not outvote the others. Worked example, a residual group
of two convs with filter L2 norms ``[2, 4]`` and ``[1, 3]``: normalised ``[0.67, 1.33]`` and
``[0.5, 1.5]``, group score ``[0.58, 1.42]``: channel 0 goes first.

How many go: ``sparsity`` of each group (``scope: layer``), or one threshold over every
group's normalised scores (``scope: global``) with ``min_layer_density`` as each group's
floor; then the count kept is rounded to a multiple of ``round_to`` (never below it, never
above the group's width), so the rebuilt layers stay friendly to SIMD kernels.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from prunecli.config import Prune
from prunecli.structured.graph import Graph, Group, Use

# Which weight of a producer holds its output channels, and along which axis.
_OUTPUT_AXIS: dict[str, tuple[str, int]] = {
    "Conv1DTranspose": ("kernel", -2),
    "Conv2DTranspose": ("kernel", -2),
    "Conv3DTranspose": ("kernel", -2),
    "SeparableConv1D": ("pointwise_kernel", -1),
    "SeparableConv2D": ("pointwise_kernel", -1),
    "MultiHeadAttention": ("attention_output/kernel", -1),
}
_HEAD_AXES = (("query/kernel", 1), ("key/kernel", 1), ("value/kernel", 1))
_HEAD_OUTPUT = ("attention_output/kernel", 0)

Gradients = Callable[[dict[str, Any]], dict[str, np.ndarray]]


@dataclass
class Plan:
    """The graph, its groups and the channels each group keeps (sorted indices)."""

    graph: Graph
    groups: list[Group]
    kept: dict[int, np.ndarray]

    def kept_of(self, source: int) -> np.ndarray:
        return self.kept[self._group_of[source]]

    def __post_init__(self) -> None:
        self._group_of = {s: g.id for g in self.groups for s in g.sources}

    def removed(self) -> dict[int, np.ndarray]:
        """group id -> the channel indices removed."""
        return {
            g.id: np.setdiff1d(np.arange(g.width), self.kept[g.id])
            for g in self.groups
            if len(self.kept[g.id]) < g.width
        }


def weight(layer: Any, name: str) -> Any:
    """A layer's variable by its name relative to the layer (``kernel``, ``query/kernel``)."""
    for variable in layer.weights:
        parts = variable.path.split("/")
        if "/".join(parts[-len(name.split("/")) :]) == name:
            return variable
    raise KeyError(f"{layer.name} has no weight {name}")


def producers(graph: Graph) -> dict[int, Use]:
    """source id -> the use that created it (producers and attention heads)."""
    found: dict[int, Use] = {}
    for use in graph.uses.values():
        if use.output is not None:
            found[use.output] = use
        if use.heads is not None:
            found[use.heads] = use
    return found


def freeze_unselected(groups: list[Group], graph: Graph, prune: Prune) -> None:
    """prune.layers include/exclude: a group is pruned only when all its producers are."""
    makers = producers(graph)
    for group in groups:
        for source in group.sources:
            use = makers.get(source)
            if use is None:
                continue
            rules = prune.layers
            excluded = next((rx for rx in rules.exclude if re.fullmatch(rx, use.path)), None)
            if excluded is not None:
                _note(group, f"{use.path} excluded by prune.layers.exclude {excluded!r}")
            elif not any(re.fullmatch(rx, use.path) for rx in rules.include):
                _note(group, f"{use.path} not matched by prune.layers.include")


def _note(group: Group, reason: str) -> None:
    if reason not in group.frozen:
        group.frozen.append(reason)


def score(
    graph: Graph, group: Group, method: str, seed: int, gradients: dict[str, np.ndarray]
) -> np.ndarray | None:
    """One score per channel of ``group`` (higher = keep); None when nothing owns weights."""
    if method == "random":
        stream = np.random.default_rng([seed, zlib.crc32(str(group.sources).encode())])
        return stream.random(group.width)
    makers = producers(graph)
    rows = [
        _filters(makers[s], group.kind, gradients, method == "taylor")
        for s in group.sources
        if s in makers
    ]
    if method == "bn_scale" and group.kind == "channels":
        rows = _bn_gammas(graph, group) or rows  # |gamma| rows are 1-D: taken as they are
    vectors = [_reduce(filters, method) for filters in rows]
    if not vectors:
        return None
    found = np.mean([v / (v.mean() or 1.0) for v in vectors], axis=0)
    return lamp(found) if method == "lamp" else found


def lamp(scores: np.ndarray) -> np.ndarray:
    """LAMP (Lee et al. 2021) as a normaliser of one group's channel scores: s_i^2 over the
    sum of s_j^2 of the channels at least as large. A group's largest channel scores 1
    (unless tied), so one global threshold never empties a group. Example: [3, 1, 2] ->
    [9/9, 1/14, 4/13]; ties count each other: [1, 2, 2] -> [1/9, 4/8, 4/8]."""
    squared = scores.astype(np.float64) ** 2
    order = np.argsort(-squared, kind="stable")
    ranked = squared[order]
    tails = np.cumsum(ranked)
    # a tie shares the tail sum of its whole run of equal values
    runs = np.searchsorted(-ranked, -ranked, side="right") - 1
    normalised = np.empty_like(squared)
    normalised[order] = ranked / np.where(tails[runs] > 0, tails[runs], 1.0)
    return normalised


def _filters(use: Use, kind: str, gradients: dict[str, np.ndarray], taylor: bool) -> np.ndarray:
    """(channels, n) matrix: one row per output channel (or head) of this producer; under
    taylor, |w * dL/dw| instead of w."""
    parts = []
    for name, axis in [*_HEAD_AXES, _HEAD_OUTPUT] if kind == "heads" else [_spec(use)]:
        variable = weight(use.layer, name)
        values = np.asarray(variable)
        if taylor:
            values = np.abs(values) * gradients.get(variable.path, np.zeros_like(values))
        moved = np.moveaxis(values, axis, 0)
        parts.append(moved.reshape(moved.shape[0], -1))
    return np.concatenate(parts, axis=1)


def _spec(use: Use) -> tuple[str, int]:
    name, axis = _OUTPUT_AXIS.get(type(use.layer).__name__, ("kernel", -1))
    return name, axis


def _bn_gammas(graph: Graph, group: Group) -> list[np.ndarray]:
    """|gamma| of each BatchNormalization that reads exactly one whole source of the group."""
    found = []
    for use in graph.uses.values():
        if type(use.layer).__name__ != "BatchNormalization" or not use.layer.scale:
            continue
        segments = use.inputs[0].segments
        whole = use.inputs[0].spatial == 1 and use.inputs[0].width == group.width
        if whole and len(segments) == 1 and segments[0].source in group.sources:
            found.append(np.abs(np.asarray(weight(use.layer, "gamma"))))
    return found


def _l1(filters: np.ndarray) -> np.ndarray:
    return np.abs(filters).sum(axis=1)


def _l2(filters: np.ndarray) -> np.ndarray:
    return np.sqrt((filters**2).sum(axis=1))


def _fpgm(filters: np.ndarray) -> np.ndarray:
    """The summed distance to the other filters (He et al. 2019): a filter near the
    geometric median is replaceable by the others, so it scores low."""
    squared = (filters**2).sum(axis=1)
    gram = filters @ filters.T
    return np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * gram, 0)).sum(axis=1)


# prune.method -> how a member's (channels, n) rows become one score per channel; keys are
# exactly ``catalog.CHANNEL_METHODS``. taylor's rows are already |w * dL/dw| (summed);
# bn_scale uses |gamma| where the group has a BatchNorm, else the producers' L2 norms;
# random draws seeded noise instead (``score``).
REDUCERS: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {
    "l1": _l1,
    "l2": _l2,
    "bn_scale": _l2,
    "taylor": _l1,
    "fpgm": _fpgm,
    "random": None,
    "magnitude": _l1,
    "lamp": _l2,  # then normalised by ``lamp`` (for scope: global)
}


def _reduce(filters: np.ndarray, method: str) -> np.ndarray:
    """Rows -> one number each (a 1-D row, BatchNorm's gamma, is one number per channel)."""
    if filters.ndim == 1:
        return np.abs(filters)
    reducer = REDUCERS[method]
    if reducer is None:
        raise ValueError(f"{method} scores are drawn, not reduced from weights")
    return reducer(filters)


def rounded(count: float, round_to: int, width: int) -> int:
    """Channels kept: ``count`` rounded to a multiple of ``round_to``, at least ``round_to``
    (and 1), at most ``width``. ``rounded(30.4, 8, 64) == 32``; ``rounded(3, 8, 6) == 6``
    (a group narrower than round_to is left whole)."""
    if width <= round_to:
        return width
    return int(min(width, max(round_to, 1, round_to * round(count / round_to))))


def choose(
    groups: list[Group], scores: dict[int, np.ndarray], prune: Prune, round_to: int
) -> dict[int, np.ndarray]:
    """group id -> kept channel indices (sorted); frozen or unscored groups keep all."""
    open_groups = [g for g in groups if not g.frozen and g.id in scores]
    counts = {g.id: g.width for g in groups}
    if prune.scope == "global" and open_groups:
        pooled = np.concatenate([scores[g.id] for g in open_groups])
        cut = math.floor(prune.sparsity * pooled.size)
        threshold = np.sort(pooled)[cut - 1] if cut else -np.inf
        for g in open_groups:
            floor = max(1, math.ceil(prune.min_layer_density * g.width))
            counts[g.id] = max(floor, int((scores[g.id] > threshold).sum()))
    else:
        for g in open_groups:
            counts[g.id] = g.width * (1 - _target(g, prune))
    kept = {}
    for g in groups:
        step = round_to if g.kind == "channels" else 1
        keep = rounded(counts[g.id], step, g.width) if g in open_groups else g.width
        order = np.argsort(-scores[g.id], kind="stable") if g in open_groups else None
        kept[g.id] = np.arange(g.width) if order is None else np.sort(order[:keep])
    return kept


def _target(group: Group, prune: Prune) -> float:
    """The group's sparsity: the first prune.layers.overrides pattern matching one of the
    layers that make its channels (not those that only read them)."""
    for pattern, sparsity in prune.layers.overrides.items():
        if any(re.fullmatch(pattern, producer) for producer in group.producers):
            return sparsity
    return prune.sparsity


def plan(
    graph: Graph,
    prune: Prune,
    round_to: int,
    seed: int = 0,
    gradients: Gradients | None = None,
) -> Plan:
    """Score every open group and choose its survivors under ``prune``."""
    groups, scores = scored(graph, prune, seed, gradients)
    return Plan(graph, groups, choose(groups, scores, prune, round_to))


def scored(
    graph: Graph, prune: Prune, seed: int = 0, gradients: Gradients | None = None
) -> tuple[list[Group], dict[int, np.ndarray]]:
    """The groups (frozen ones noted) and each open group's channel scores, before any
    choice: what ``plan`` chooses from, and what a sensitivity scan reuses at every level."""
    groups = graph.groups()
    freeze_unselected(groups, graph, prune)
    method = prune.method
    grads: dict[str, np.ndarray] = {}
    if method == "taylor":
        if gradients is None:
            raise ValueError("taylor channel scores need training data to take gradients on")
        kernels = _scored_kernels(graph)
        grads = {kernels[key].path: g for key, g in gradients(kernels).items()}
    scores = {}
    for group in groups:
        if group.frozen:
            continue
        found = score(graph, group, method, seed, grads)
        if found is None:
            _note(group, "no layer owns weights for these channels")
        else:
            scores[group.id] = found
    return groups, scores


def _scored_kernels(graph: Graph) -> dict[str, Any]:
    found = {}
    for use in producers(graph).values():
        names = [n for n, _ in (*_HEAD_AXES, _HEAD_OUTPUT)] if use.heads is not None else []
        for name in [_spec(use)[0], *names]:
            variable = weight(use.layer, name)
            found[variable.path] = variable
    return found


def keep_all(graph: Graph) -> Plan:
    """A plan that removes nothing (rebuilding with it must reproduce the model exactly)."""
    groups = graph.groups()
    return Plan(graph, groups, {g.id: np.arange(g.width) for g in groups})
