"""A SavedModel input keeps its ``serving_default`` input and output names when written back.

tf.keras names a SavedModel's ``serving_default`` outputs after the output layers
(``{"head": ...}``); Keras 3's ``model.export`` names them ``output_0``, ``output_1``, ...
A serving client that reads ``head`` would break on a pruned copy, so the names are read
from the input's ``saved_model.pb`` when it is loaded (``remember``) and the pruned model
is exported with them (``export``): same signature keys, inputs and outputs, e.g.::

    serving_default: inputs {input_1: float32 [-1, 8, 8, 1]} -> outputs {head: ...}

The names travel beside the model object (a weak map: nothing is added to the model).
TensorFlow and Keras are imported inside the functions.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVING = "serving_default"


@dataclass(frozen=True)
class Names:
    """The input and output keys of a ``serving_default`` signature, sorted."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


_NAMES: weakref.WeakKeyDictionary[Any, Names] = weakref.WeakKeyDictionary()


def read(folder: Path) -> Names | None:
    """``serving_default``'s names in ``folder/saved_model.pb`` (None without one): parsed
    from the protocol buffer, so a 100 MB model is not loaded a second time."""
    from tensorflow.core.protobuf import saved_model_pb2

    graph = saved_model_pb2.SavedModel()
    try:
        graph.ParseFromString((folder / "saved_model.pb").read_bytes())
    except (OSError, ValueError):
        return None
    for meta in graph.meta_graphs:
        if SERVING in meta.signature_def:
            signature = meta.signature_def[SERVING]
            return Names(tuple(sorted(signature.inputs)), tuple(sorted(signature.outputs)))
    return None


def remember(model: Any, names: Names | None) -> None:
    if names is not None:
        _NAMES[model] = names


def names_of(model: Any) -> Names | None:
    """The names ``model``'s input SavedModel used, when it was one whose names fit the
    model (one key per model input and output)."""
    names = _NAMES.get(model)
    if names is None:
        return None
    if len(names.inputs) != len(model.inputs) or len(names.outputs) != len(model.outputs):
        return None
    return names


def export(model: Any, path: Path, names: Names) -> None:
    """A SavedModel of ``model`` whose ``serve`` and ``serving_default`` signatures take
    ``names.inputs`` and return ``names.outputs``. Keys are matched to the model's own
    input and output layer names where they are the same (tf.keras's convention), else in
    order."""
    import keras
    import tensorflow as tf

    inputs = _matched(names.inputs, [t.name.split(":")[0] for t in model.inputs])
    outputs = _matched(names.outputs, _output_layers(model))
    specs = [
        tf.TensorSpec(tensor.shape, tensor.dtype, name=name)
        for name, tensor in zip(inputs, model.inputs, strict=True)
    ]

    def serve(*args: Any) -> dict[str, Any]:
        result = model(args[0] if len(args) == 1 else list(args), training=False)
        flat = result if isinstance(result, (list, tuple)) else [result]
        return dict(zip(outputs, flat, strict=True))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=specs)
    archive.write_out(str(path), verbose=False)


def _output_layers(model: Any) -> list[str]:
    """The output layers' names (a Sequential model has one: its last layer)."""
    own = getattr(model, "output_names", None)
    return list(own) if own else [model.layers[-1].name]


def _matched(keys: tuple[str, ...], own: list[str]) -> list[str]:
    """``keys`` in the order of the model's ``own`` names (by name when they agree)."""
    return list(own) if sorted(own) == sorted(keys) else list(keys)
