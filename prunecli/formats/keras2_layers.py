"""Keras 2 layers that Keras 3 has no class for, rewritten as plain Keras 3 layers doing
the same computation, so the loaded model (and the pruned one prunecli saves) needs no
custom object anywhere.

- ``TFOpLambda``: tf_keras's record of a TensorFlow op applied to a Keras tensor
  (MobileNetV3's hard sigmoid ``relu6(x + 3) * (1/6)``, RegNet's and ConvNeXt's residual
  ``+`` and squeeze-excite ``*``). ``add``/``subtract``/``multiply``/``truediv`` by a
  number -> ``Rescaling(scale, offset)``; by another tensor -> ``Add``/``Subtract``/
  ``Multiply``. Any other op is left as it is (the load then names ``TFOpLambda``).
- InceptionResNetV2's ``CustomScaleLayer`` (``a + b * scale``) -> ``Rescaling(scale)``
  on ``b`` (named ``<name>_scale``) and an ``Add`` of the layer's own name.
- ConvNeXt's ``LayerScale`` (``x * gamma``, a learnt vector) -> ``Rescaling(scale=gamma)``
  with the stored gamma written into the config: the same outputs, but gamma is a
  constant from then on (fine-tuning does not train it).
- ConvNeXt's ``StochasticDepth`` (drops a sample's residual branch while training) ->
  ``Dropout(rate, noise_shape=(None, 1, 1, 1))``, the same computation.

Example: ``{"class_name": "TFOpLambda", "config": {"function": "__operators__.add"},
"inbound_nodes": [[["bn", 0, 0, {"y": 3.0}]]]}`` -> ``Rescaling(scale=1.0, offset=3.0)``
called on ``bn``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# TFOpLambda function -> (merge layer for a tensor operand, (scale, offset) for a number y)
_OPS: dict[str, tuple[str, Callable[[float], tuple[float, float]]]] = {
    "__operators__.add": ("Add", lambda y: (1.0, y)),
    "math.add": ("Add", lambda y: (1.0, y)),
    "math.subtract": ("Subtract", lambda y: (1.0, -y)),
    "math.multiply": ("Multiply", lambda y: (y, 0.0)),
    "math.truediv": ("", lambda y: (1.0 / y, 0.0)),
}

Stored = Callable[[str], list[np.ndarray]]  # a layer's weights as the file stores them
Layer = dict[str, Any]


def rewrite(layers: list[Layer], stored: Stored | None, absorbed: set[str]) -> list[Any]:
    """A functional config's ``layers`` with every layer above replaced; ``absorbed``
    collects the stored layers whose weights went into a config (``LayerScale``)."""
    found: list[Layer] = []
    for layer in layers:
        replace = _REWRITES.get(str(layer.get("class_name", "")).rsplit(">", 1)[-1])
        found.extend(replace(layer, stored, absorbed) if replace else [layer])
    return found


def _absorbed_scale(layer: Layer, stored: Stored | None, absorbed: set[str]) -> list[Layer]:
    if stored is None:  # no weights to read gamma from: left as it is
        return [layer]
    absorbed.add(layer["config"]["name"])
    return [_layer_scale(layer, stored)]


def _stochastic_depth(layer: Layer, *_: Any) -> list[Layer]:
    rate = layer["config"].get("drop_path_rate", 0.0)
    return [_layer(layer, "Dropout", {"rate": rate, "noise_shape": [None, 1, 1, 1]})]


def _layer(old: dict[str, Any], kind: str, args: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A Keras 2 layer entry of class ``kind``, with ``old``'s name, dtype and wiring."""
    config = {
        key: old["config"][key] for key in ("name", "trainable", "dtype") if key in old["config"]
    }
    entry = {"class_name": kind, "config": config | args, "name": config["name"]}
    return entry | {"inbound_nodes": old.get("inbound_nodes", [])} | extra


def _op_lambda(layer: dict[str, Any]) -> dict[str, Any]:
    """tf_keras wrote a TFOpLambda's one call as ``[[name, node, tensor, kwargs]]`` (one
    nesting level less than other layers' calls), its other operand in ``kwargs["y"]``."""
    op = _OPS.get(str(layer["config"].get("function")))
    calls = layer.get("inbound_nodes", [])
    if len(calls) == 1 and calls[0] and not _is_ref(calls[0]) and len(calls[0]) == 1:
        calls = calls[0]  # the nesting other layers use
    if op is None or len(calls) != 1 or not _is_ref(calls[0]) or len(calls[0]) < 4:
        return layer
    x = calls[0]
    y = x[3].get("y")
    merge, scaling = op
    if _is_ref(y) and merge:
        return _layer(layer, merge, {}, inbound_nodes=[[[*x[:3], {}], [*y[:3], {}]]])
    if isinstance(y, (int, float)) and not isinstance(y, bool):
        scale, offset = scaling(float(y))
        return _layer(
            layer, "Rescaling", {"scale": scale, "offset": offset},
            inbound_nodes=[[[*x[:3], {}]]],
        )  # fmt: skip
    return layer


def _is_ref(value: Any) -> bool:
    """``["layer name", node, tensor]``: a Keras 2 reference to another layer's output."""
    return isinstance(value, list) and len(value) >= 3 and isinstance(value[0], str)


def _custom_scale(layer: dict[str, Any]) -> list[dict[str, Any]]:
    calls = layer.get("inbound_nodes", [])
    if len(calls) != 1 or len(calls[0]) != 2:
        return [layer]
    (a, b), name = calls[0], layer["config"]["name"]
    scaled = _layer(layer, "Rescaling", {"scale": layer["config"]["scale"], "offset": 0.0},
                    inbound_nodes=[[b]])  # fmt: skip
    scaled["config"]["name"] = scaled["name"] = f"{name}_scale"
    return [scaled, _layer(layer, "Add", {}, inbound_nodes=[[a, [f"{name}_scale", 0, 0, {}]]])]


def _layer_scale(layer: dict[str, Any], stored: Stored) -> dict[str, Any]:
    (gamma,) = stored(layer["config"]["name"])
    scale = [float(value) for value in np.asarray(gamma, np.float64).ravel()]
    return _layer(layer, "Rescaling", {"scale": scale, "offset": 0.0})


# Keras 2 class -> its plain Keras 3 layers; a file's ``Custom>CustomScaleLayer`` is one of
# these, so it needs no import (``REWRITTEN``, read by ``libraries``)
_REWRITES: dict[str, Callable[[Layer, Stored | None, set[str]], list[Layer]]] = {
    "TFOpLambda": lambda layer, *_: [_op_lambda(layer)],
    "CustomScaleLayer": lambda layer, *_: _custom_scale(layer),
    "LayerScale": _absorbed_scale,
    "StochasticDepth": _stochastic_depth,
}
REWRITTEN = frozenset(_REWRITES)
