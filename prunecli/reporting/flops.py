"""Multiply-accumulates (MACs) of one forward pass at batch 1, counted from layer shapes.

The convention of the pruning papers' MAC tables: convolutions (plain, transposed,
depthwise, separable), Dense, EinsumDense and attention's matrix products count;
normalisation, activations, pooling and element-wise merges do not, and zeros left by
unstructured pruning are not subtracted (a dense kernel multiplies them all the same).
Worked example: a 3x3 Conv2D from 8 to 16 channels with a 32x32 output does
``32 * 32 * (3 * 3 * 8 * 16) = 1,179,648`` MACs: output positions times kernel size.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from prunecli.errors import ConfigError

Shapes = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]


def _size(layer: Any, name: str) -> int:
    return sum(math.prod(v.shape) for v in layer.weights if v.path.endswith(f"/{name}"))


def _positions(shape: tuple[Any, ...]) -> int:
    """Positions a kernel is applied at: every axis but batch and channels."""
    return math.prod(int(d) for d in shape[1:-1])


def _conv(layer: Any, shapes: Shapes) -> int:
    return _positions(shapes[1][0]) * _size(layer, "kernel")


def _transposed(layer: Any, shapes: Shapes) -> int:
    return _positions(shapes[0][0]) * _size(layer, "kernel")


def _separable(layer: Any, shapes: Shapes) -> int:
    kernels = _size(layer, "depthwise_kernel") + _size(layer, "pointwise_kernel")
    return _positions(shapes[1][0]) * kernels


def _einsum(layer: Any, shapes: Shapes) -> int:
    """Kernel size times the output axes the kernel does not span (``abc,cd->abd``: b)."""
    equation = layer.get_config()["equation"]
    _, kernel, out = re.split(r",|->", equation.replace(" ", ""))
    shape = shapes[1][0]
    free = [int(d) for letter, d in zip(out, shape, strict=False) if letter not in kernel]
    return math.prod(free[1:]) * _size(layer, "kernel")  # free[0]: the batch axis


def _attention(layer: Any, shapes: Shapes) -> int:
    """q/k/v/output projections plus QK^T and the weighting of V, over all heads."""
    query = shapes[0][0]
    value = shapes[0][1] if len(shapes[0]) > 1 else query
    key = shapes[0][2] if len(shapes[0]) > 2 else value
    config = layer.get_config()
    heads, key_dim = config["num_heads"], config["key_dim"]
    value_dim = config.get("value_dim") or key_dim
    tq, tk = _positions(query), _positions(key)
    projections = (
        tq * _size(layer, "query/kernel")
        + tk * _size(layer, "key/kernel")
        + _positions(value) * _size(layer, "value/kernel")
        + tq * _size(layer, "attention_output/kernel")
    )
    return projections + heads * tq * tk * (key_dim + value_dim)


COUNTERS: dict[str, Callable[[Any, Shapes], int]] = {
    **dict.fromkeys(("Conv1D", "Conv2D", "Conv3D", "Dense"), _conv),
    **dict.fromkeys(("DepthwiseConv1D", "DepthwiseConv2D"), _conv),
    **dict.fromkeys(("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"), _transposed),
    **dict.fromkeys(("SeparableConv1D", "SeparableConv2D"), _separable),
    "EinsumDense": _einsum,
    "MultiHeadAttention": _attention,
}


# Layers with weights that do no multiply-accumulates by the convention (normalisation,
# lookups, per-channel scales). Any other layer with weights and no counter (a custom layer
# wrapping Dense layers) makes the count unknown: None, rather than an undercount.
NO_MACS = frozenset(
    [
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "UnitNormalization",
        "Normalization",
        "Embedding",
        "PReLU",
        "Rescaling",
        "LayerScale",  # ConvNeXt's x * gamma, one multiply per element like PReLU
    ]
)


def count(model: Any) -> int | None:
    """MACs of ``model`` at batch 1, over every call in its layer graph (a shared layer
    counts once per call; nested models included); None when the graph is unknown (a
    subclassed model), a counted layer has a variable-size axis, or a layer with weights
    has no counter (``NO_MACS``): ``measured`` says which."""
    return measured(model)[0]


def measured(model: Any) -> tuple[int | None, str | None]:
    """``(MACs, None)``, or ``(None, why not)``: ``(None, "conv has an axis of variable
    size (None, None, None, 3)")`` for keras.applications built without ``input_shape``."""
    from prunecli.structured import graph

    try:
        calls = graph.build(model).calls
    except ConfigError:
        return None, "a subclassed model has no layer graph to count"
    total = 0
    for path, layer, (ins, outs) in calls:
        kind = type(layer).__name__
        counter = COUNTERS.get(kind)
        weighted = bool(getattr(layer, "weights", None))  # a keras.ops node has none
        if counter is None and weighted and kind not in NO_MACS:
            return None, f"{path} ({kind}) has weights but no MAC count"
        if counter is None:
            continue
        shape = next((s for s in ins + outs if any(d is None for d in s[1:])), None)
        if shape is not None:
            return None, f"{path} has an axis of variable size {shape}"
        total += counter(layer, (list(ins), list(outs)))
    return int(total), None


def null_note(model: Any, stats: dict[str, Any]) -> str | None:
    """The report's warning when ``flops`` or ``latency_ms`` is null for a reason the
    user can fix (an image input of variable size, a layer without a MAC count); None when
    both were measured, or when the reason is not one to fix (a SavedModel signature, a
    failed timing run, a text model's variable sequence length)."""
    from prunecli.formats import savedmodel

    missing = [key for key in ("flops", "latency_ms") if stats.get(key) is None]
    if not missing or savedmodel.signature_layer(model) is not None:
        return None
    try:
        shapes = [tuple(t.shape) for t in model.inputs]
    except (AttributeError, ValueError, TypeError):
        return None
    images = [s for s in shapes if len(s) >= 4]  # (batch, height, width, channels)
    variable = next((s for s in images if any(d is None for d in s[1:])), None)
    if any(d is None for s in shapes for d in s[1:]) and variable is None:
        return None  # a sequence of variable length: its cost depends on the input
    if variable is not None:
        return (
            f"{' and '.join(missing)} {'are' if len(missing) > 1 else 'is'} null: the "
            f"model's input {variable} has a variable size; save it with a fixed one "
            "(keras.applications: input_shape=(224, 224, 3)) to have them"
        )
    reason = measured(model)[1] if "flops" in missing else None
    return f"flops is null: {reason}" if reason else None
