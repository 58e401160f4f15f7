"""``finetune.train_frozen``: train the frozen layers too, then freeze them again.

A transfer-learning model often freezes its base (``base.trainable = False``); pruning such
a layer and fine-tuning the rest leaves its cut weights unrecovered. With ``train_frozen``
every layer is unfrozen for the fine-tune and each layer's and weight's own flag is put
back afterwards, so the saved model is frozen exactly as it came in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from prunecli import compat


def _tree(model: Any) -> list[Any]:
    """Every layer below ``model``, parents before their children."""
    found, stack = [], list(reversed(compat.sublayers(model)))
    seen: set[int] = set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        found.append(layer)
        stack.extend(reversed(compat.sublayers(layer)))
    return found


@contextlib.contextmanager
def unfrozen(model: Any, enabled: bool) -> Iterator[None]:
    """Within the block every layer is trainable (when ``enabled``); the flags are restored
    after, parents first (Keras's setter passes a flag down to the children) and then the
    weights' own."""
    if not enabled:
        yield
        return
    layers = [model, *_tree(model)]
    flags = [(layer, layer.trainable) for layer in layers]
    weights = [(w, w.trainable) for layer in layers for w in layer.weights]
    for layer in layers:  # each one: a Model's own setter does not reach every child
        layer.trainable = True
    try:
        yield
    finally:
        for layer, flag in flags:
            layer.trainable = flag
        for weight, flag in weights:
            weight.trainable = flag
