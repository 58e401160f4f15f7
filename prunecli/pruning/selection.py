"""Which layers and which of their weights are prunable: a data table, then a selection.

The table is keyed on the exact Keras layer class name. An entry lists the attributes that
hold prunable kernels; an empty entry means "supported, nothing to prune" (biases and
normalisation parameters never change). A layer with weights whose class is absent is
reported with its reason, never skipped silently and never a crash.

Layer paths are a layer's name, and ``outer/inner`` for a layer inside a nested model (a
transfer-learning model nests its base model; those layers are prunable too).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prunecli.config import Prune
from prunecli.core import masking
from prunecli.core.granularity import Pattern
from prunecli.errors import ConfigError

# Each entry: (attribute path, reduction axis) per prunable kernel. The reduction axis is
# the one a layer's output sums over (a Dense kernel is (in, out): axis -2; a transposed
# conv kernel is (kh, kw, out, in): axis -1); N:M groups run along it. None: no such axis
# (an embedding table is looked up, a depthwise kernel sums over space), so N:M skips it.
# Keras 3 keeps a depthwise kernel in `kernel`; recurrent layers keep theirs in `cell`.
_KERNEL = (("kernel", -2),)
_RNN = (("cell.kernel", -2), ("cell.recurrent_kernel", -2))
PRUNABLE: dict[str, tuple[tuple[str, int | None], ...]] = {
    **dict.fromkeys(("Dense", "Conv1D", "Conv2D", "Conv3D"), _KERNEL),
    **dict.fromkeys(("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"), (("kernel", -1),)),
    **dict.fromkeys(("DepthwiseConv1D", "DepthwiseConv2D"), (("kernel", None),)),
    **dict.fromkeys(
        ("SeparableConv1D", "SeparableConv2D"),
        (("depthwise_kernel", None), ("pointwise_kernel", -2)),
    ),
    "Embedding": (("embeddings", None),),
    **dict.fromkeys(("LSTM", "GRU", "SimpleRNN"), _RNN),
    "Bidirectional": tuple(
        (f"{side}.{attr}", axis)
        for side in ("forward_layer", "backward_layer")
        for attr, axis in _RNN
    ),
    # Query/key/value kernels are (dim, heads, head_dim): they sum over dim. The output
    # kernel (heads, head_dim, dim) sums over heads and head_dim; groups run along head_dim.
    "MultiHeadAttention": (
        ("query_dense.kernel", -3),
        ("key_dense.kernel", -3),
        ("value_dense.kernel", -3),
        ("output_dense.kernel", -2),
    ),
    **dict.fromkeys(
        (
            "BatchNormalization",
            "LayerNormalization",
            "GroupNormalization",
            "UnitNormalization",
            "Normalization",
            "Rescaling",
        ),
        (),
    ),
}


@dataclass
class LayerInfo:
    """One leaf layer with weights, and what prunecli will do with it."""

    path: str
    type: str
    params: int
    kernels: dict[str, Any] = field(default_factory=dict)  # attr -> Keras variable
    axes: dict[str, int | None] = field(default_factory=dict)  # attr -> reduction axis
    target: float | None = None  # None: not pruned (see reason)
    reason: str | None = None

    @property
    def selected(self) -> bool:
        return self.target is not None

    def kernel_sparsity(self) -> float | None:
        """Zeros over this layer's kernels now (None for a layer without prunable kernels)."""
        if not self.kernels:
            return None
        return masking.sparsity(np.concatenate([np.ravel(v) for v in self.kernels.values()]))


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
        describe_kernels = getattr(layer, "describe_kernels", None)
        if describe_kernels is not None:  # a layer that knows its kernels (a SavedModel's)
            infos.extend(describe_kernels(path))
            continue
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
            info.kernels = {attr: _attribute(layer, attr) for attr, _ in PRUNABLE[kind]}
            info.axes = dict(PRUNABLE[kind])
        infos.append(info)
    return infos


def _attribute(layer: Any, dotted: str) -> Any:
    return functools.reduce(getattr, dotted.split("."), layer)


def select(model: Any, prune: Prune) -> list[LayerInfo]:
    """Describe the model and give each matching prunable layer its target sparsity.

    Exclude wins over include; the first matching override sets a layer's own target. A
    layer whose kernels cannot take the granularity (e.g. 2:4 on 30 input channels) is
    left out with the reason. Raises ConfigError when nothing is selected, since pruning
    nothing is surely a mistake.
    """
    rules = prune.layers
    pattern = prune.pattern
    infos = describe(model)
    skipped: list[tuple[str, str]] = []
    for info in infos:
        if not info.kernels:
            continue
        excluded = next((rx for rx in rules.exclude if re.fullmatch(rx, info.path)), None)
        if excluded is not None:
            info.reason = f"excluded by prune.layers.exclude {excluded!r}"
        elif not any(re.fullmatch(rx, info.path) for rx in rules.include):
            info.reason = "not matched by prune.layers.include"
        elif reason := _pattern_problem(info, pattern):
            info.reason = reason
            skipped.append((info.path, reason))
        else:
            override = next(
                (s for rx, s in rules.overrides.items() if re.fullmatch(rx, info.path)), None
            )
            info.target = prune.sparsity if override is None else override
    if not any(info.selected for info in infos):
        prunable = [info.path for info in infos if info.kernels]
        raise ConfigError(
            "no layer selected by prune.layers include/exclude; prunable layers are: "
            + (", ".join(prunable) or "none")
            + "".join(f"; {path}: {why}" for path, why in skipped)
        )
    return infos


def _pattern_problem(info: LayerInfo, pattern: Pattern) -> str | None:
    for attr, variable in info.kernels.items():
        reason = pattern.unsupported(tuple(variable.shape), info.axes[attr])
        if reason:
            return f"{attr}: {reason}"
    return None
