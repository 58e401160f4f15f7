"""The layer table: which weights of which layer classes are prunable kernels.

A class is looked up by its own name first, then by its bases' names (its MRO), so a
subclass of a known layer (keras_hub's ``ReversibleEmbedding`` is an ``Embedding``, a
user's ``Dense`` subclass is a ``Dense``) is known too. An entry lists the attributes that
hold kernels with their reduction axis; a ``Kept`` entry means "known, nothing to prune"
and says why. A class absent from the table is a composite to descend into (its
sub-layers are looked up in turn) or, when it holds weights of its own, is reported with
its reason.

Example: ``lookup(keras.layers.EinsumDense("abc,cde->abde", ...))`` gives
``(("kernel", -3),)``: the kernel ``cde`` sums over ``c``, its axis -3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# (attribute path, reduction axis) per prunable kernel. The reduction axis is the one a
# layer's output sums over (a Dense kernel is (in, out): axis -2; a transposed conv kernel
# is (kh, kw, out, in): axis -1); N:M groups run along it. None: no such axis (an embedding
# table is looked up, a depthwise kernel sums over space), so N:M skips it. Keras 3 keeps a
# depthwise kernel in `kernel`; recurrent layers keep theirs in `cell`. An attribute that a
# layer instance lacks (an untied ``reverse_embeddings``) is simply absent.
Kernels = tuple[tuple[str, int | None], ...]


@dataclass(frozen=True)
class Kept:
    """A known layer whose weights all stay (normalisation, scaling, positions)."""

    reason: str


_KERNEL: Kernels = (("kernel", -2),)
_RNN: Kernels = (("cell.kernel", -2), ("cell.recurrent_kernel", -2))
_NORM = Kept("normalisation and scaling are kept")
_POSITION = Kept("position embeddings are kept: every sample uses every row")

TABLE: dict[str, Kernels | Kept] = {
    **dict.fromkeys(("Dense", "Conv1D", "Conv2D", "Conv3D"), _KERNEL),
    **dict.fromkeys(("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"), (("kernel", -1),)),
    **dict.fromkeys(("DepthwiseConv1D", "DepthwiseConv2D"), (("kernel", None),)),
    **dict.fromkeys(
        ("SeparableConv1D", "SeparableConv2D"),
        (("depthwise_kernel", None), ("pointwise_kernel", -2)),
    ),
    "EinsumDense": (("kernel", -2),),  # the axis is read from the equation: see lookup
    "Embedding": (("embeddings", None),),
    # keras_hub: the output projection is the transposed table unless tied to it
    "ReversibleEmbedding": (("embeddings", None), ("reverse_embeddings", -2)),
    **dict.fromkeys(("LSTM", "GRU", "SimpleRNN"), _RNN),
    **dict.fromkeys(
        ("LSTMCell", "GRUCell", "SimpleRNNCell"), (("kernel", -2), ("recurrent_kernel", -2))
    ),
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
            "RMSNormalization",
            "Normalization",
            "Rescaling",
        ),
        _NORM,
    ),
    # keras_hub's learned positions (BERT, DistilBERT, GPT-2 ...)
    "PositionEmbedding": _POSITION,
}


def lookup(layer: Any) -> Kernels | Kept | None:
    """The layer's entry (by class name, then its bases'), None for an unknown class."""
    for cls in type(layer).__mro__:
        entry = TABLE.get(cls.__name__)
        if entry is None:
            continue
        if isinstance(entry, tuple) and _is_position_table(layer, entry):
            return _POSITION
        if cls.__name__ == "EinsumDense":
            return (("kernel", einsum_axis(getattr(layer, "equation", ""))),)
        return entry
    return None


_NORM_NAME = re.compile(r"(Norm|Normalization)$")


def kept_by_name(layer: Any, weights: list[Any]) -> Kept | None:
    """``_NORM`` for a leaf layer of a class the table lacks whose name says it normalises
    (keras_hub's ``LlamaLayerNorm``, ``QwenLayerNorm``, ``T5LayerNorm``, a user's
    ``RMSNorm``) and whose ``weights`` are all vectors (scales, offsets): nothing in it is a
    kernel, so "not supported" would be the wrong reason. A layer holding a matrix stays
    unknown, whatever its name."""
    if _NORM_NAME.search(type(layer).__name__) and all(len(w.shape) <= 1 for w in weights):
        return _NORM
    return None


def _is_position_table(layer: Any, entry: Kernels) -> bool:
    """An ``Embedding`` used as learned positions (ViT's ``position_embedding``): every
    row is used by every sample, so it is no sparse lookup table to prune."""
    return entry == TABLE["Embedding"] and "position" in str(getattr(layer, "name", ""))


def einsum_axis(equation: str) -> int | None:
    """The kernel's reduction axis in an ``EinsumDense`` equation: the last kernel letter
    the output lacks, counted from the end (None when there is none).

    >>> einsum_axis("abc,cde->abde"), einsum_axis("abcd,cde->abe"), einsum_axis("ab,bc->ac")
    (-3, -2, -2)
    """
    try:
        inputs, output = equation.replace(" ", "").split("->")
        kernel = inputs.split(",")[1]
    except (ValueError, IndexError):
        return None
    summed = [i for i, letter in enumerate(kernel) if letter not in output]
    return summed[-1] - len(kernel) if summed else None


def attribute(layer: Any, dotted: str) -> Any:
    """``layer.a.b`` for ``"a.b"``; None where a part is missing."""
    node = layer
    for part in dotted.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def kernel_path(layer_path: str, layer: Any, dotted: str) -> str:
    """The kernel's path by the layers that own it: every layer on the attribute path adds
    its name, the variable adds its own (``query_dense.kernel`` of ``enc/attn`` ->
    ``enc/attn/query/kernel``; ``cell.kernel`` of ``lstm`` -> ``lstm/lstm_cell/kernel``)."""
    parts, node = [layer_path], layer
    *owners, last = dotted.split(".")
    for part in owners:
        node = getattr(node, part)
        parts.append(str(getattr(node, "name", part)))
    variable = getattr(node, last)
    name = str(getattr(variable, "name", last)).split("/")[-1].split(":")[0]
    parts.append(name or last)
    return "/".join(parts)
