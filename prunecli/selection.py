"""Which layers and which of their weights are prunable: a data table, then a selection.

The table is keyed on the exact Keras layer class name. An entry lists the attributes that
hold prunable kernels; an empty entry means "supported, nothing to prune" (biases and
normalisation parameters never change). A layer with weights whose class is absent is
reported with its reason, never skipped silently and never a crash.

Layer paths are a layer's name, and ``outer/inner`` for a layer inside a nested model (a
transfer-learning model nests its base model; those layers are prunable too).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prunecli.config import Prune
from prunecli.errors import ConfigError

# Keras 3 keeps a depthwise kernel in `kernel`; separable convs keep two kernels.
PRUNABLE: dict[str, tuple[str, ...]] = {
    **{name: ("kernel",) for name in (
        "Dense", "Conv1D", "Conv2D", "Conv3D",
        "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
        "DepthwiseConv1D", "DepthwiseConv2D",
    )},
    "SeparableConv1D": ("depthwise_kernel", "pointwise_kernel"),
    "SeparableConv2D": ("depthwise_kernel", "pointwise_kernel"),
    **{name: () for name in (
        "BatchNormalization", "LayerNormalization", "GroupNormalization",
        "UnitNormalization", "Normalization", "Rescaling",
    )},
}


@dataclass
class LayerInfo:
    """One leaf layer with weights, and what prunecli will do with it."""

    path: str
    type: str
    params: int
    kernels: dict[str, Any] = field(default_factory=dict)  # attr -> Keras variable
    target: float | None = None  # None: not pruned (see reason)
    reason: str | None = None

    @property
    def selected(self) -> bool:
        return self.target is not None

    def kernel_sparsity(self) -> float | None:
        """Zeros over this layer's kernels now (None for a layer without prunable kernels)."""
        sizes = [int(np.prod(v.shape)) for v in self.kernels.values()]
        if not sum(sizes):
            return None
        zeros = sum(int(np.count_nonzero(np.asarray(v) == 0)) for v in self.kernels.values())
        return zeros / sum(sizes)


def walk(model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, layer) for every leaf layer, descending into nested models."""
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if hasattr(layer, "layers") and hasattr(layer, "inputs"):  # a nested Model
            yield from walk(layer, prefix=f"{path}/")
        else:
            yield path, layer


def describe(model: Any) -> list[LayerInfo]:
    """Every leaf layer that has weights, with its prunable kernels (nothing selected yet)."""
    infos = []
    for path, layer in walk(model):
        params = sum(int(np.prod(w.shape)) for w in layer.weights)
        if not params:
            continue
        kind = type(layer).__name__
        info = LayerInfo(path, kind, params)
        if kind not in PRUNABLE:
            info.reason = f"{kind} is not supported for pruning yet"
        elif not PRUNABLE[kind]:
            info.reason = f"{kind} has nothing to prune (normalisation and scaling are kept)"
        else:
            info.kernels = {attr: getattr(layer, attr) for attr in PRUNABLE[kind]}
        infos.append(info)
    return infos


def select(model: Any, prune: Prune) -> list[LayerInfo]:
    """Describe the model and give each matching prunable layer its target sparsity.

    Exclude wins over include; the first matching override sets a layer's own target.
    Raises ConfigError when nothing is selected, since pruning nothing is surely a mistake.
    """
    rules = prune.layers
    infos = describe(model)
    for info in infos:
        if not info.kernels:
            continue
        excluded = next((rx for rx in rules.exclude if re.fullmatch(rx, info.path)), None)
        if excluded is not None:
            info.reason = f"excluded by prune.layers.exclude {excluded!r}"
        elif not any(re.fullmatch(rx, info.path) for rx in rules.include):
            info.reason = "not matched by prune.layers.include"
        else:
            override = next((s for rx, s in rules.overrides.items() if re.fullmatch(rx, info.path)), None)
            info.target = prune.sparsity if override is None else override
    if not any(info.selected for info in infos):
        prunable = [info.path for info in infos if info.kernels]
        raise ConfigError(
            "no layer selected by prune.layers include/exclude; prunable layers are: "
            + (", ".join(prunable) or "none")
        )
    return infos
