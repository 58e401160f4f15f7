"""Sensitivity scan: prune one layer at a time (no fine-tuning) and measure what it costs.

For every selected layer and every level of ``analyze.levels`` the layer alone is masked
with the configured score and granularity, the model is evaluated on a fixed validation
subset, and the layer's kernels get their original values back (in memory: assigning the
saved arrays, bit for bit, no reload). Then the whole model at each level, under layer
scope (every layer at the level) and global scope (one threshold). Example: a model with 4
selected layers and 10 levels costs 1 + 4 x 10 + 2 x 10 = 61 evaluations.

Evaluations are cheap because nothing is rebuilt per point: the samples are decoded once
into tensors (``Evaluator``), and one ``tf.function`` of the model's forward pass reads
the kernel variables, whose values change by assignment (no retrace).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prunecli.config import Prune
from prunecli.core import masking, scoring
from prunecli.errors import ConfigError
from prunecli.pruning.selection import LayerInfo
from prunecli.reporting import evaluate

# Names of the whole-model rows in the points table (a layer path never has '<').
MODEL_LAYER = "<model:layer>"
MODEL_GLOBAL = "<model:global>"

Progress = Callable[[int, int, str], None]  # (points done, points in all, what is running)


@dataclass(frozen=True)
class Point:
    """One evaluation: ``layer`` pruned (alone, or the whole model) to ``sparsity``."""

    layer: str
    params: int  # weights in the kernels that were masked
    sparsity: float
    accuracy: float | None
    loss: float

    def row(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "params": self.params,
            "sparsity": self.sparsity,
            "accuracy": self.accuracy,
            "loss": self.loss,
        }


@dataclass
class Result:
    """A finished scan: the unpruned baseline, every point, and what it cost."""

    baseline: Point
    points: list[Point] = field(default_factory=list)
    seconds: float = 0.0
    evaluations: int = 0

    def curve(self, layer: str) -> list[Point]:
        return [point for point in self.points if point.layer == layer]

    @property
    def layers(self) -> list[str]:
        """The scanned layers in scan order (whole-model rows excluded)."""
        names = dict.fromkeys(p.layer for p in self.points)
        return [name for name in names if not name.startswith("<")]

    def sensitivity(self, layer: str) -> float:
        """Mean accuracy drop over the levels (loss rise when there is no accuracy): the
        area under the layer's drop curve, so a layer that breaks early ranks high."""
        base = self.baseline
        if base.accuracy is None:
            return float(np.mean([p.loss - base.loss for p in self.curve(layer)]))
        return float(np.mean([base.accuracy - (p.accuracy or 0.0) for p in self.curve(layer)]))

    def most_sensitive(self) -> str | None:
        return max(self.layers, key=self.sensitivity, default=None)


class Evaluator:
    """Accuracy and mean loss of ``model`` as its weights are now, on fixed samples.

    The samples are held as tensors (one per batch) and the forward pass is one
    ``tf.function``: a call costs only the model's arithmetic. Accuracy is computed as
    ``evaluate.accuracy`` does, the loss with the loss function, so a point means what the
    prune report's accuracy means.
    """

    def __init__(
        self,
        model: Any,
        x: np.ndarray | dict[str, np.ndarray],
        y: np.ndarray,
        task: evaluate.Task,
        loss: Any,
    ) -> None:
        import keras
        import tensorflow as tf

        size = evaluate.PREDICT_BATCH
        # x: one array, or a dict of them (a multi-input model's, fed by name)
        self.batches = [
            tf.nest.map_structure(lambda a, i=i: tf.constant(a[i : i + size]), x)
            for i in range(0, len(y), size)
        ]
        self.y, self.task, self.loss = y, task, keras.losses.get(loss)
        self.forward = tf.function(lambda batch: model(batch, training=False))
        self.calls = 0

    def on(self, model: Any) -> Evaluator:
        """The same samples, task and loss, evaluating ``model`` (e.g. a rebuilt copy)."""
        import tensorflow as tf

        other = copy.copy(self)
        other.forward = tf.function(lambda batch: model(batch, training=False))
        return other

    def __call__(self) -> tuple[float | None, float]:
        import keras

        self.calls += 1
        predictions = np.concatenate([np.asarray(self.forward(b)) for b in self.batches])
        mean_loss = float(np.mean(keras.ops.convert_to_numpy(self.loss(self.y, predictions))))
        return evaluate.accuracy(predictions, self.y, self.task), mean_loss


class Masker:
    """Masks the selected kernels from scores of their original values, and restores them.

    ``apply`` sets each named kernel to ``original * mask`` (the others to their originals);
    ``restore`` assigns the saved arrays back, so after a scan the weights are bit-identical
    to the input's.
    """

    def __init__(
        self,
        layers: list[LayerInfo],
        prune: Prune,
        seed: int = 0,
        gradients: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        if prune.needs.training:
            raise ConfigError(
                f"prune.method {prune.method} scores weights by fine-tuning, which a "
                "sensitivity scan does not do: scan with a method that scores without it"
            )
        self.prune, self.pattern = prune, prune.pattern
        self.variables: dict[str, Any] = {}
        self.axes: dict[str, int | None] = {}
        self.owner: dict[str, str] = {}  # kernel key -> layer path
        for info in layers:
            if info.selected:
                for attr, variable in info.kernels.items():
                    key = f"{info.path}/{attr}"
                    self.variables[key], self.axes[key] = variable, info.axes.get(attr)
                    self.owner[key] = info.path
        self.originals = {key: np.array(v, copy=True) for key, v in self.variables.items()}
        self._masked: set[str] = set()  # kernels not at their original values now
        score = scoring.get(prune.method)
        self.scores = {
            key: score(w, scoring.ScoreContext(seed, key, (gradients or {}).get(key)))
            for key, w in self.originals.items()
        }

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(self.owner.values()))

    def params(self, layer: str | None = None) -> int:
        """Weights in ``layer``'s kernels (all selected kernels when None)."""
        return sum(w.size for k, w in self.originals.items() if layer in (None, self.owner[k]))

    def apply(self, targets: Mapping[str, float]) -> None:
        """Layer scope: each layer named in ``targets`` (layer path -> sparsity) pruned to
        its target, every other kernel at its original values."""
        masks = {
            key: masking.layer_mask(self.scores[key], targets[owner], self.pattern, self.axes[key])
            for key, owner in self.owner.items()
            if owner in targets
        }
        self._set(masks)

    def apply_global(self, sparsity: float) -> None:
        """Global scope: one threshold over every selected kernel."""
        self._set(
            masking.global_pattern_masks(
                self.scores, sparsity, self.prune.min_layer_density, self.pattern
            )
        )

    def restore(self) -> None:
        self._set({})

    def _set(self, masks: Mapping[str, np.ndarray]) -> None:
        """Assign only what changes: a kernel already at its original values is left as
        is (a scan of one layer touches one layer, not the whole model, per point)."""
        for key, variable in self.variables.items():
            if key in masks:
                variable.assign(self.originals[key] * masks[key])
                self._masked.add(key)
            elif key in self._masked:
                variable.assign(self.originals[key])
                self._masked.discard(key)

    def evaluate(self, evaluator: Evaluator) -> tuple[float | None, float]:
        """The model as masked now (the channel scan sometimes evaluates a rebuilt copy)."""
        return evaluator()

    def point(self, layer: str, level: float, accuracy: float | None, loss: float) -> Point:
        """The scan's row for ``layer`` (or a whole-model row) at ``level``."""
        return Point(layer, self.params(None if layer.startswith("<") else layer), level,
                     accuracy, loss)  # fmt: skip

    def sparsity(self) -> float:
        """Zeros over all selected kernels as they are now."""
        flat = [np.ravel(np.asarray(v)) for v in self.variables.values()]
        return masking.sparsity(np.concatenate(flat))


def scan(
    masker: Any,
    evaluator: Evaluator,
    levels: list[float],
    progress: Progress | None = None,
) -> Result:
    """Every selected layer alone at every level, then the whole model (layer scope, and
    global scope unless the granularity is N:M, which has no global form); the kernels are
    restored after each point and at the end, whatever happens. ``masker``: a ``Masker``,
    or under channel granularity a ``channels.GroupMasker`` (rows are groups)."""
    started = time.perf_counter()
    jobs = _jobs(masker, levels)
    report = progress or (lambda done, total, label: None)
    base_accuracy, base_loss = evaluator()
    result = Result(Point("", 0, 0.0, base_accuracy, base_loss))
    try:
        for done, (layer, level, run) in enumerate(jobs):
            report(done, len(jobs), layer)
            run()
            accuracy, loss = masker.evaluate(evaluator)
            result.points.append(masker.point(layer, level, accuracy, loss))
        report(len(jobs), len(jobs), "")
    finally:
        masker.restore()
    result.seconds = time.perf_counter() - started
    result.evaluations = len(jobs) + 1
    return result


def _jobs(masker: Any, levels: list[float]) -> list[tuple[str, float, Callable[[], None]]]:
    """(row name, level, what to mask) for every point, in scan order."""
    jobs: list[tuple[str, float, Callable[[], None]]] = [
        (layer, level, lambda layer=layer, level=level: masker.apply({layer: level}))
        for layer in masker.layers
        for level in levels
    ]
    everything = masker.layers
    jobs += [
        (MODEL_LAYER, level, lambda level=level: masker.apply(dict.fromkeys(everything, level)))
        for level in levels
    ]
    if masker.pattern.kind != "nm":
        jobs += [
            (MODEL_GLOBAL, level, lambda level=level: masker.apply_global(level))
            for level in levels
        ]
    return jobs
