"""The few private Keras / TensorFlow APIs prunecli cannot avoid, each in one place with the
version it was written against, so an upgrade breaks here and nowhere else."""

from __future__ import annotations

from typing import Any


def sublayers(layer: Any) -> list[Any]:
    """The layers ``layer`` holds directly, in the order it tracked them.

    Keras 3.15 has no public API for a plain ``Layer``'s children (only ``Model.layers``);
    ``_flatten_layers(include_self=False, recursive=False)`` is what ``Layer.weights``
    itself walks, so it finds every sub-layer whose weights the layer reports.
    """
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        return list(getattr(layer, "layers", []) or [])
    return list(flatten(include_self=False, recursive=False))
