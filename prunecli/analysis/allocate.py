"""``prune.sparsity: auto``: per-layer targets that remove the most weights within a budget.

From a scan, each layer ``i`` at level ``l`` has a cost (its accuracy drop when pruned alone,
in validation samples lost, never below 0) and a value (``l * params_i`` weights removed).
Picking one level per layer (0 included) to maximise the weights removed with the summed
cost within ``max_accuracy_drop`` is a multiple-choice knapsack; costs are whole samples,
so a dynamic programme over the budget solves it exactly. Example: with 360 validation
samples and D = 0.01 the budget is 3 samples; a 50k-weight Dense layer that loses 1 sample
at 0.9 is taken there before a 500-weight conv that loses 2 at 0.5.

Summed drops are a prediction: layers interact. So the allocation is then measured with
every layer pruned at once, and the budget shrinks until that measured drop is within D
too (before fine-tuning, which usually wins accuracy back). Beside it, the report shows a
uniform allocation at the same total sparsity, and the highest uniform sparsity that
meets D on its own, so the user sees what the allocation bought.

Under ``granularity: channel`` the rows are channel groups and a level's value is the
multiply-accumulates its channels cost (``flops_removed`` of the scan), so the knapsack
removes the most FLOPs, not the most weights; the total is the share of channels removed,
and each allocation's share of the model's MACs is reported beside it (``flops_removed``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from prunecli.analysis import scan as scanning
from prunecli.analysis import sensitivity
from prunecli.analysis.channels import GroupMasker
from prunecli.analysis.progress import scan_progress
from prunecli.config import Config
from prunecli.errors import ConfigError
from prunecli.progress import Reporter


@dataclass(frozen=True)
class Allocation:
    targets: dict[str, float]  # layer path -> sparsity
    sparsity: float  # weights removed / weights in the selected kernels
    predicted_drop: float  # the layers' scan drops, summed


Value = Callable[[scanning.Point], float]  # what a point removes, to maximise


def knapsack(
    result: scanning.Result,
    params: Mapping[str, int],
    samples: int,
    budget: int,
    value: Value | None = None,
) -> Allocation:
    """The levels maximising removed weights (or ``value`` of the points: the channel
    scan's MACs removed) with summed cost <= ``budget`` samples.

    >>> base = scanning.Point("", 0, 0.0, 1.0, 0.0)
    >>> points = [scanning.Point("a", 10, 0.5, 0.9, 0.0), scanning.Point("b", 90, 0.5, 0.9, 0.0)]
    >>> knapsack(scanning.Result(base, points), {"a": 10, "b": 90}, 10, 1).targets
    {'a': 0.0, 'b': 0.5}
    """
    base = result.baseline.accuracy or 0.0
    worth = value or (lambda point: point.sparsity * params[point.layer])
    # best[b]: most removed at cost <= b; picks[i][b]: layer i's level there
    best = np.zeros(budget + 1)
    picks: list[list[tuple[float, int]]] = []
    for layer in result.layers:
        options = [(0.0, 0, 0.0)] + [
            (p.sparsity, max(0, round((base - (p.accuracy or 0.0)) * samples)), worth(p))
            for p in result.curve(layer)
        ]
        new = np.full(budget + 1, -1.0)
        chosen: list[tuple[float, int]] = [(0.0, 0)] * (budget + 1)
        for level, cost, gain in options:
            for b in range(cost, budget + 1):
                total = best[b - cost] + gain
                if total > new[b]:
                    new[b], chosen[b] = total, (level, cost)
        best = new
        picks.append(chosen)
    targets: dict[str, float] = {}
    remaining = budget
    for layer, chosen in zip(reversed(result.layers), reversed(picks), strict=True):
        level, cost = chosen[remaining]
        targets[layer] = level
        remaining -= cost
    return _allocation(result, params, samples, {layer: targets[layer] for layer in targets})


def _allocation(
    result: scanning.Result, params: Mapping[str, int], samples: int, targets: dict[str, float]
) -> Allocation:
    """``targets`` (in scan order) with their total sparsity and summed scan drop."""
    base = result.baseline.accuracy or 0.0
    ordered = {layer: targets[layer] for layer in result.layers}
    lost = {(p.layer, p.sparsity): max(0, round((base - (p.accuracy or 0.0)) * samples))
            for p in result.points}  # fmt: skip
    spent = sum(lost.get((layer, level), 0) for layer, level in ordered.items())
    total = sum(params[layer] for layer in ordered) or 1
    removed = sum(level * params[layer] for layer, level in ordered.items())
    return Allocation(ordered, removed / total, spent / samples)


def plan(scope: Any, cfg: Config, reporter: Reporter) -> dict[str, Any]:
    """Scan, allocate within ``prune.max_accuracy_drop``, check the allocation on the whole
    model; return the report's ``auto`` section (``allocation``: layer -> sparsity)."""
    limit = cfg.prune.max_accuracy_drop
    if limit is None or scope.evaluator.task.kind == "regression":
        raise ConfigError("prune.sparsity auto needs a classifier and prune.max_accuracy_drop")
    masker, evaluator, samples = scope.masker, scope.evaluator, scope.samples
    with scan_progress(reporter, "scan") as progress:
        result = scanning.scan(masker, evaluator, cfg.analyze.levels, progress)
    base = result.baseline.accuracy or 0.0
    params = {layer: masker.params(layer) for layer in result.layers}
    channel = isinstance(masker, GroupMasker)
    value = _macs_removed if channel else None
    allocation, drop = _fit(scope, result, params, limit, cfg.analyze.levels, value)
    if channel:  # the total is the channels removed, as the channel pruner counts it
        allocation = replace(allocation, sparsity=masker.removal(allocation.targets)["sparsity"])
    same = _drop(masker, evaluator, base, dict.fromkeys(params, allocation.sparsity))
    uniform, uniform_drop = _best_uniform(masker, evaluator, base, limit, list(params))
    section = {
        "max_accuracy_drop": limit,
        "levels": list(cfg.analyze.levels),
        "samples": samples,
        "allocation": allocation.targets,
        "sparsity": allocation.sparsity,
        "predicted_drop": allocation.predicted_drop,
        "scan_drop": drop,
        "uniform": {"sparsity": allocation.sparsity, "scan_drop": same},
        "uniform_within_budget": {"sparsity": uniform, "scan_drop": uniform_drop},
        "scan_seconds": round(result.seconds, 4),
        "scan_evaluations": result.evaluations,
        "scan": sensitivity.curves(result, masker),
    }
    if channel:
        _add_flops(section, masker)
    return section


def _macs_removed(point: scanning.Point) -> float:
    """A channel point's value: the MACs it removes (parameters when MACs are unknown)."""
    removed = getattr(point, "flops_removed", None)
    return float(removed if removed is not None else getattr(point, "params_removed", 0))


def _add_flops(section: dict[str, Any], masker: GroupMasker) -> None:
    """Channel auto: the share of MACs each allocation removes (predicted from the sliced
    shapes), and the groups with the layers that make their channels (the overrides)."""
    uniform, best = section["uniform"], section["uniform_within_budget"]
    groups = dict.fromkeys(section["allocation"])
    section["flops"] = masker.total_macs()
    section["flops_removed"] = masker.removal(section["allocation"])["flops_removed"]
    uniform["flops_removed"] = masker.removal(dict.fromkeys(groups, uniform["sparsity"]))[
        "flops_removed"
    ]
    best["flops_removed"] = masker.removal(dict.fromkeys(groups, best["sparsity"]))["flops_removed"]
    section["groups"] = [
        row
        | {"channels_kept": len(masker.kept_at(row["group"], section["allocation"][row["group"]]))}
        for row in masker.describe()
    ]


def _fit(
    scope: Any,
    result: scanning.Result,
    params: dict[str, int],
    limit: float,
    levels: list[float],
    value: Value | None = None,
) -> tuple[Allocation, float]:
    """The knapsack's allocation, its budget tightened until the whole model pruned at
    once stays within ``limit``; if even a budget of 0 does not (layers that cost nothing
    alone can cost together), the most pruned layer steps down a level at a time until it
    does (pruning nothing always does). Returns the allocation and its measured drop."""
    masker, evaluator, samples = scope.masker, scope.evaluator, scope.samples
    base = result.baseline.accuracy or 0.0
    units = math.floor(limit * samples + 1e-9)
    while True:
        allocation = knapsack(result, params, samples, units, value)
        drop = _drop(masker, evaluator, base, allocation.targets)
        if drop <= limit + 1e-12 or units == 0:
            break
        units -= max(1, units // 4)
    steps = [0.0, *levels]
    targets = dict(allocation.targets)
    while drop > limit + 1e-12 and any(targets.values()):
        layer = max(targets, key=lambda name: (targets[name], params[name]))
        targets[layer] = steps[steps.index(targets[layer]) - 1]
        drop = _drop(masker, evaluator, base, targets)
    return _allocation(result, params, samples, targets), drop


def resolved(cfg: Config, auto: Mapping[str, Any]) -> Config:
    """The config the prune runs with (``auto``: ``plan``'s section): every allocated
    layer's target as an override (an exact-match regex), and ``sparsity`` the mean target
    weighted by parameters. Under channel granularity each group's target is set on every
    layer that makes its channels (what ``structured.groups`` matches overrides against),
    and ``sparsity`` is the share of channels removed."""
    overrides = {re.escape(layer): float(level) for layer, level in auto["allocation"].items()}
    if "groups" in auto:
        overrides = {
            re.escape(producer): float(auto["allocation"][group["group"]])
            for group in auto["groups"]
            for producer in group["producers"]
        }
    layers = cfg.prune.layers.model_copy(update={"overrides": overrides})
    prune = cfg.prune.model_copy(update={"layers": layers, "sparsity": auto["sparsity"]})
    return cfg.model_copy(update={"prune": prune})


def _drop(
    masker: scanning.Masker, evaluator: scanning.Evaluator, base: float, targets: dict[str, float]
) -> float:
    """Accuracy drop with every layer at its target at once (no fine-tuning)."""
    masker.apply(targets)
    try:
        accuracy, _ = masker.evaluate(evaluator)
    finally:
        masker.restore()
    return base - (accuracy or 0.0)


def _best_uniform(
    masker: scanning.Masker,
    evaluator: scanning.Evaluator,
    base: float,
    limit: float,
    layers: list[str],
) -> tuple[float, float]:
    """The highest sparsity (to 1/128) every layer can share with the drop within
    ``limit``, by bisection (accuracy falls with sparsity, near enough), and its drop."""
    low, high, low_drop = 0.0, 1.0, 0.0
    while high - low > 1 / 128:
        middle = (low + high) / 2
        drop = _drop(masker, evaluator, base, dict.fromkeys(layers, middle))
        if drop <= limit + 1e-12:
            low, low_drop = middle, drop
        else:
            high = middle
    return low, low_drop
