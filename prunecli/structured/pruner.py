"""``prune.granularity: channel`` in the pipeline: the same interface as ``Pruner``.

Fine-tuning drives any pruner through ``updates_at``/``update``/``finish`` and
``attach``/``detach`` (see ``prunecli.pruning.pruner``). Here an update re-plans the groups
at the schedule's current sparsity and masks whole channels: every weight that reads or
makes a removed channel is zeroed and held at zero by a constraint, so a gradual schedule
(``polynomial``, ``iterative``) trains the network it will become. Once the masks are
final, ``rebuilt`` writes the narrower model: right after the prune phase for
``one_shot``, after fine-tuning for gradual schedules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from prunecli.config import Prune
from prunecli.core.schedules import Schedule
from prunecli.pruning import selection
from prunecli.pruning.selection import LayerInfo
from prunecli.structured import graph as coupling
from prunecli.structured import groups, rebuild

_FOREVER = 2**62  # a step past the end of every schedule


class _Hold:
    """``w * mask`` after the layer's own constraint (kept, if it had one)."""

    def __init__(self, mask: keras.Variable, inner: Callable[[Any], Any] | None) -> None:
        self.mask, self.inner = mask, inner

    def __call__(self, weights: Any) -> Any:
        return (self.inner(weights) if self.inner is not None else weights) * self.mask


class ChannelPruner:
    """Whole-channel masks on ``model``, planned by the coupling graph."""

    def __init__(
        self,
        model: Any,
        prune: Prune,
        schedule_for: Callable[[float], Schedule],
        seed: int = 0,
        gradients: groups.Gradients | None = None,
    ) -> None:
        self.prune, self.seed, self.gradients = prune, seed, gradients
        rebuild.check_rebuildable(model)
        self.graph = coupling.build(model, heads=prune.heads)
        self.schedule = schedule_for(prune.sparsity)
        # each override's target rises by its own schedule, as the unstructured pruner's
        # per-layer schedules do: a gradual run never jumps a group to its final width
        self.override_schedules = {
            pattern: schedule_for(target) for pattern, target in prune.layers.overrides.items()
        }
        self.plan = groups.keep_all(self.graph)
        self.first = self.plan  # the groups as the input model had them (for the report)
        self.movement: dict[str, Any] = {}  # checkpoints look for movement state
        self.variables: dict[str, Any] = {}
        for use in self.graph.uses.values():
            for variable, maskable in zip(use.weights, rebuild.maskable(use), strict=True):
                if maskable:
                    self.variables[variable.path] = variable
        self.masks = {
            key: keras.Variable(np.ones(v.shape, np.float32), trainable=False, name="channel_mask")
            for key, v in self.variables.items()
        }
        self._inner: dict[str, Any] = {}
        self._applied: Any = None  # the target the masks hold (checkpoints restore it)
        self._planned: Any = None  # the target ``plan`` was made for
        self.done = False  # rebuilt: nothing left to mask

    def updates_at(self, step: int) -> bool:
        return not self.done and self.schedule.updates_at(step)

    def update(self, step: int) -> float:
        """Re-plan at the schedule's sparsity for ``step``; zero what it removes."""
        target = self.schedule.sparsity_at(step)
        # A resumed run has its masks and _applied back but no plan: it plans again (the
        # masked channels score 0, so the same ones go) before the rebuild needs it.
        if self.done or target == self._applied == self._planned:
            return self.sparsity()
        settings = self._settings_at(step, target)
        self.plan = groups.plan(
            self.graph, settings, self.prune.round_to, self.seed, self.gradients
        )
        for use in self.graph.uses.values():
            for variable, mask in zip(use.weights, rebuild.masks(self.plan, use), strict=True):
                if variable.path in self.masks:
                    full = np.ones(variable.shape, np.float32) if mask is None else mask
                    self.masks[variable.path].assign(full)
                    variable.assign(np.asarray(variable) * full)
        self._applied = self._planned = target
        return self.sparsity()

    def _settings_at(self, step: int, target: float) -> Prune:
        """``prune`` with the sparsity and every override's target at ``step``."""
        ramped = {p: s.sparsity_at(step) for p, s in self.override_schedules.items()}
        layers = self.prune.layers.model_copy(update={"overrides": ramped})
        return self.prune.model_copy(update={"sparsity": target, "layers": layers})

    def finish(self) -> float:
        return self.update(_FOREVER)

    def state(self) -> Any:
        """The target the masks hold (a checkpoint stores it)."""
        return self._applied

    def restore(self, applied: Any) -> None:
        """Take back ``state()`` from a checkpoint; the masks come with the variables, and
        the plan is made again at the next update (see ``update``)."""
        self._applied = applied

    def attach(self) -> None:
        for key, variable in self.variables.items():
            self._inner[key] = variable.constraint
            variable.constraint = _Hold(self.masks[key], variable.constraint)

    def detach(self) -> None:
        for key, inner in self._inner.items():
            self.variables[key].constraint = inner
        self._inner.clear()

    def sparsity(self) -> float:
        """Channels removed over all channels of the groups that may be pruned."""
        open_groups = [g for g in self.plan.groups if not g.frozen and g.kind == "channels"]
        total = sum(g.width for g in open_groups)
        kept = sum(len(self.plan.kept[g.id]) for g in open_groups)
        return float(1 - kept / total) if total else 0.0

    def rebuilt(self, model: Any) -> tuple[Any, list[LayerInfo] | None]:
        """The narrower model once the masks are final (else ``model`` unchanged, None);
        the new model's layer selection comes with it. After this the pruner is spent."""
        if self.done or self._applied != self.schedule.sparsity_at(_FOREVER):
            return model, None
        self.detach()
        self.done = True
        narrow = rebuild.rebuild(model, self.plan)
        self.variables, self.masks = {}, {}
        return narrow, selection.select(narrow, self.prune)

    def layer_columns(self) -> dict[str, dict[str, Any]]:
        """Per producer path: ``channels_before``, ``channels_after`` and its ``group``."""
        columns: dict[str, dict[str, Any]] = {}
        group_of = {s: g.id for g in self.plan.groups for s in g.sources}
        for use in self.graph.uses.values():
            source = use.output if use.heads is None else use.heads
            if source is None:
                continue
            columns[use.path] = {
                "channels_before": self.graph.sources[source].width,
                "channels_after": len(self.plan.kept_of(source)),
                "group": group_of[source],
            }
        return columns
