"""The sensitivity scan under ``prune.granularity: channel``: coupled groups, not layers.

A row of the scan is a channel group (``structured.graph``: the channels that must go
together, e.g. both convs of a residual ``Add``), named by the layers that make its
channels (``block1_conv2+stem``; a head group ends in ``[heads]``). At a level ``l`` the
group keeps what ``structured.groups.choose`` keeps for sparsity ``l`` (its lowest-scored
channels go, the count kept rounded to ``round_to``), exactly as a prune run with that
group's target would. Worked example: a 16-channel group, ``round_to: 4``, level 0.3 ->
``16 * 0.7 = 11.2`` kept, rounded to 12: 4 channels removed.

Evaluating a point does not rebuild the model: every weight that reads or makes a removed
channel is zeroed in memory (``structured.rebuild.masks``: the producers' output columns and
biases, every coupled consumer's input rows), which computes what the narrower model
computes: a removed channel's BatchNorm shift or bias still flows, but nothing reads it.
The one exception is a normalisation over the channel axis (LayerNormalization): a zeroed
channel still counts in its mean and variance, so a point that removes channels it reads is
evaluated on the rebuilt model instead (slower, exact). The originals are assigned back
bit for bit (``restore``).

Each point also records the channels, parameters and multiply-accumulates (MACs, the
convention of ``reporting.flops``) that removing them saves, counted from the sliced weight
shapes without building anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from prunecli.analysis import scan as scanning
from prunecli.config import Prune
from prunecli.core.granularity import UNSTRUCTURED
from prunecli.errors import ConfigError
from prunecli.reporting import flops

# Layers that normalise over the channel axis: zeroing a channel is not removing it there.
INEXACT = frozenset({"LayerNormalization"})


@dataclass(frozen=True)
class GroupPoint(scanning.Point):
    """A point of the channel scan: ``layer`` is the group's name (or a whole-model row)."""

    group: int | None = None  # the group's id (None for the whole-model rows)
    channels: int = 0  # channels of the group (of every open group, for model rows)
    channels_removed: int = 0
    params_removed: int = 0
    flops_removed: int | None = None  # MACs at batch 1; None when the model's are unknown

    def row(self) -> dict[str, Any]:
        return super().row() | {
            "group": self.group,
            "channels": self.channels,
            "channels_removed": self.channels_removed,
            "params_removed": self.params_removed,
            "flops_removed": self.flops_removed,
        }


def group_name(group: Any) -> str:
    """``producer+producer`` (``[heads]`` appended for attention heads): a row's name."""
    return "+".join(group.producers) + ("[heads]" if group.kind == "heads" else "")


class _Sliced:
    """A layer as ``reporting.flops`` counters see it (weights' paths and shapes, config),
    with the shapes a plan leaves: its MACs after the rebuild, without rebuilding."""

    def __init__(self, layer: Any, shapes: list[tuple[int, ...]], edits: dict[str, Any]) -> None:
        self.weights = [
            SimpleNamespace(path=v.path, shape=s)
            for v, s in zip(layer.weights, shapes, strict=True)
        ]
        self.config = layer.get_config() | edits

    def get_config(self) -> dict[str, Any]:
        return self.config


def call_macs(layer: Any, shapes: Any, view: Any = None) -> int | None:
    """One call's MACs by ``reporting.flops``' counters (``view``: a ``_Sliced`` stand-in
    for the layer); 0 for layers that do none, None when it cannot be counted."""
    kind = type(layer).__name__
    counter = flops.COUNTERS.get(kind)
    if counter is None:
        return 0 if not getattr(layer, "weights", None) or kind in flops.NO_MACS else None
    ins, outs = shapes
    if any(d is None for shape in ins + outs for d in shape[1:]):
        return None
    return int(counter(view or layer, (list(ins), list(outs))))


class GroupMasker:
    """The channel scan's ``Masker``: zeroes groups' channels and restores them.

    Same interface as ``scan.Masker`` (``layers``, ``apply``, ``apply_global``,
    ``restore``, ``params``, ``point``, ``evaluate``), rows being groups."""

    pattern = UNSTRUCTURED  # the scan's global rows apply (channel has no N:M form)

    def __init__(self, model: Any, prune: Prune, seed: int = 0, gradients: Any = None) -> None:
        from prunecli.structured import graph as coupling
        from prunecli.structured import groups as grouping
        from prunecli.structured import rebuild

        if prune.needs.training:
            raise ConfigError(
                f"prune.method {prune.method} scores channels by fine-tuning, which a "
                "sensitivity scan does not do: scan with a method that scores without it"
            )
        rebuild.check_rebuildable(model)  # LayerNorm-fed groups are evaluated rebuilt
        self.model, self.prune = model, prune
        self.graph = coupling.build(model, heads=prune.heads)
        self.groups, self.scores = grouping.scored(self.graph, prune, seed, gradients)
        self.open = {group_name(g): g for g in self.groups if not g.frozen and g.id in self.scores}
        if not self.open:
            raise ConfigError(
                "prune.granularity channel: every channel group is frozen; see prunecli "
                "inspect MODEL --groups"
            )
        self.variables = {
            v.path: v
            for use in self.graph.uses.values()
            for v, ok in zip(use.weights, rebuild.maskable(use), strict=True)
            if ok
        }
        self.originals = {key: np.array(v, copy=True) for key, v in self.variables.items()}
        self._masked: set[str] = set()
        self.full = {g.id: np.arange(g.width) for g in self.groups}
        self.plan = grouping.Plan(self.graph, self.groups, dict(self.full))
        self.touching = {g.id: _touching(self.graph, g) for g in self.open.values()}
        self.inexact = {
            gid for gid, paths in self.touching.items()
            if any(type(self.graph.uses[p].layer).__name__ in INEXACT for p in paths)
        }  # fmt: skip
        self.base_macs = [call_macs(layer, shapes) for _, layer, shapes in self.graph.calls]
        self._kept: dict[tuple[int, float], np.ndarray] = {}
        self._params: dict[int, int] = {}
        self._every: set[str] | None = None

    @property
    def layers(self) -> list[str]:
        """The open groups' names, in group order."""
        return list(self.open)

    def kept_at(self, name: str, level: float) -> np.ndarray:
        """The channels group ``name`` keeps at sparsity ``level`` (as a prune run would)."""
        from prunecli.structured import groups as grouping

        group = self.open[name]
        key = (group.id, level)
        if key not in self._kept:
            layers = self.prune.layers.model_copy(update={"overrides": {}})
            settings = self.prune.model_copy(
                update={"sparsity": level, "scope": "layer", "layers": layers}
            )
            chosen = grouping.choose([group], self.scores, settings, self.prune.round_to)
            self._kept[key] = chosen[group.id]
        return self._kept[key]

    def apply(self, targets: Mapping[str, float]) -> None:
        """Each group named in ``targets`` (name -> sparsity) at its target, the rest whole."""
        kept = dict(self.full)
        for name, level in targets.items():
            kept[self.open[name].id] = self.kept_at(name, level)
        self._set(kept)

    def apply_global(self, sparsity: float) -> None:
        """One threshold over every open group's normalised scores (``scope: global``)."""
        from prunecli.structured import groups as grouping

        settings = self.prune.model_copy(update={"sparsity": sparsity, "scope": "global"})
        groups = list(self.open.values())
        chosen = grouping.choose(groups, self.scores, settings, self.prune.round_to)
        self._set(dict(self.full) | chosen)

    def restore(self) -> None:
        self._set(dict(self.full))

    def _set(self, kept: dict[int, np.ndarray]) -> None:
        """Zero what ``kept`` removes; give every other weight masked before its original."""
        from prunecli.structured import groups as grouping
        from prunecli.structured import rebuild

        self.plan = grouping.Plan(self.graph, self.groups, kept)
        masked: set[str] = set()
        for path in self._changed_uses():
            use = self.graph.uses[path]
            for variable, mask in zip(use.weights, rebuild.masks(self.plan, use), strict=True):
                if mask is not None and variable.path in self.variables:
                    variable.assign(self.originals[variable.path] * mask)
                    masked.add(variable.path)
        for key in self._masked - masked:
            self.variables[key].assign(self.originals[key])
        self._masked = masked

    def _changed(self) -> list[int]:
        """Ids of the groups the current plan removes channels from."""
        return [g.id for g in self.open.values() if len(self.plan.kept[g.id]) < g.width]

    def _changed_uses(self) -> list[str]:
        return list(dict.fromkeys(p for gid in self._changed() for p in self.touching[gid]))

    def evaluate(self, evaluator: scanning.Evaluator) -> tuple[float | None, float]:
        """Accuracy and loss as the plan is now: the zeroed model, or the rebuilt one when a
        changed group feeds a channel-normalising layer (``INEXACT``)."""
        if not self.inexact.intersection(self._changed()):
            return evaluator()
        from prunecli.structured import rebuild

        evaluator.calls += 1
        return evaluator.on(rebuild.rebuild(self.model, self.plan))()

    def params(self, layer: str | None = None) -> int:
        """Weights in the tensors that carry group ``layer``'s channels (all open groups'
        when None): the scan's ``params`` column."""
        groups = list(self.open.values()) if layer is None else [self.open[layer]]
        for group in groups:
            if group.id not in self._params:
                self._params[group.id] = self._carrying(group)
        if layer is not None:
            return self._params[groups[0].id]
        return sum(v.size for key, v in self.originals.items() if key in self._all_carrying())

    def _carrying(self, group: Any) -> int:
        """Weights of the tensors that lose entries when ``group`` loses every channel."""
        return sum(self.originals[key].size for key in self._carried_by(group))

    def _carried_by(self, group: Any) -> set[str]:
        from prunecli.structured import groups as grouping
        from prunecli.structured import rebuild

        empty = grouping.Plan(self.graph, self.groups, self.full | {group.id: np.arange(0)})
        found = set()
        for path in self.touching[group.id]:
            use = self.graph.uses[path]
            shapes = rebuild.sliced_shapes(empty, use)
            for variable, shape in zip(use.weights, shapes, strict=True):
                if tuple(variable.shape) != shape and variable.path in self.originals:
                    found.add(variable.path)
        return found

    def _all_carrying(self) -> set[str]:
        if self._every is None:  # asked for by every whole-model row: computed once
            self._every = set().union(*(self._carried_by(g) for g in self.open.values()))
        return self._every

    def point(self, layer: str, level: float, accuracy: float | None, loss: float) -> GroupPoint:
        """The scan's row for the plan as it is now (``layer``: a group or a model row)."""
        group = self.open.get(layer)
        groups = [group] if group is not None else list(self.open.values())
        channels = sum(g.width for g in groups)
        removed = channels - sum(len(self.plan.kept[g.id]) for g in groups)
        params_removed, macs_removed = self.removed()
        return GroupPoint(
            layer, self.params(None if group is None else layer), level, accuracy, loss,
            group=None if group is None else group.id, channels=channels,
            channels_removed=removed, params_removed=params_removed, flops_removed=macs_removed,
        )  # fmt: skip

    def removed(self) -> tuple[int, int | None]:
        """(parameters, MACs) the current plan removes, from the sliced shapes."""
        from prunecli.structured import rebuild

        paths = set(self._changed_uses())
        params = 0
        for path in paths:
            use = self.graph.uses[path]
            for variable, shape in zip(
                use.weights, rebuild.sliced_shapes(self.plan, use), strict=True
            ):
                params += int(np.prod(variable.shape)) - int(np.prod(shape))
        if any(m is None for m in self.base_macs):
            return params, None
        macs = 0
        for (path, layer, shapes), base in zip(self.graph.calls, self.base_macs, strict=True):
            if path in paths and base:
                use = self.graph.uses[path]
                view = _Sliced(
                    layer,
                    rebuild.sliced_shapes(self.plan, use),
                    rebuild.config_edits(self.plan, use),
                )
                macs += base - (call_macs(layer, shapes, view) or 0)
        return params, macs

    def removal(self, targets: Mapping[str, float]) -> dict[str, Any]:
        """What ``targets`` (group name -> sparsity) remove, all at once: ``sparsity``
        (channels removed over the open groups' channels, as the channel pruner reports
        it), ``params_removed``, and ``flops_removed`` (a share of the model's MACs, None
        when unknown). The weights are as before afterwards."""
        self.apply(targets)
        try:
            point = self.point(scanning.MODEL_LAYER, 0.0, None, 0.0)
        finally:
            self.restore()
        total = self.total_macs()
        macs = point.flops_removed
        return {
            "sparsity": point.channels_removed / point.channels,
            "params_removed": point.params_removed,
            "flops_removed": None if macs is None or not total else macs / total,
        }

    def total_macs(self) -> int | None:
        """The unpruned model's MACs (None when unknown)."""
        return None if any(m is None for m in self.base_macs) else int(sum(self.base_macs))

    def describe(self) -> list[dict[str, Any]]:
        """The open groups as the document lists them."""
        return [
            {
                "group": name,
                "id": g.id,
                "kind": g.kind,
                "channels": g.width,
                "producers": list(g.producers),
                "members": list(g.members),
            }
            for name, g in self.open.items()
        ]


def _touching(graph: Any, group: Any) -> list[str]:
    """Paths of the layer calls that read or make ``group``'s channels."""
    sources = set(group.sources)
    found = []
    for path, use in graph.uses.items():
        read = {s.source for channels in use.inputs for s in channels.segments}
        made = {use.output, use.heads}
        if sources & (read | made):
            found.append(path)
    return found
