"""Every use of a private Keras or TensorFlow API, each with the versions it is for.

prunecli pins ``keras`` and ``tensorflow`` to the ranges these shims cover (pyproject.toml).
Each shim has a test in ``tests/test_compat.py`` that fails the day the private name moves
or the public API makes the shim unnecessary, so the day it can go is visible.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

# Keras 3.0 - 3.15: no public way to run Keras's own deserializer under a chosen safe mode;
# ``keras.saving.load_model(safe_mode=...)`` sets it only for its own call.
SAFE_MODE_SCOPE = "keras.src.saving.serialization_lib.SafeModeScope"
# Keras 3.0 - 3.15: the legacy (Keras 2 JSON) model builder is not exported.
LEGACY_MODEL_FROM_CONFIG = "keras.src.legacy.saving.saving_utils.model_from_config"


@contextlib.contextmanager
def safe_mode_scope(safe_mode: bool) -> Iterator[None]:
    """Keras's deserializer refuses lambdas and unsafe classes inside this scope."""
    from keras.src.saving.serialization_lib import SafeModeScope

    with SafeModeScope(safe_mode):
        yield


def legacy_model_from_config(config: dict[str, Any]) -> Any:
    """Build a Keras 2 style ``{"class_name", "config"}`` model config with Keras 3."""
    from keras.src.legacy.saving import saving_utils

    return saving_utils.model_from_config(config)


def symbolic_build(model: Any, data_batch: Any) -> None:
    """Build a model's metrics and optimizer variables from one batch (Keras 3.x
    ``Model._symbolic_build``; under a distribution strategy it must see one replica's
    shard, which ``fit`` cannot be told)."""
    model._symbolic_build(data_batch=data_batch)


def h5_image(model: Any) -> bytes:
    """``model.save(path.h5)``'s file, built in memory.

    Keras 3.0 - 3.15: its HDF5 writer takes an open ``h5py.File`` only through this private
    function (``model.save`` wants a path). Written to disk by HDF5, a disk that fills up
    during the final flush leaves HDF5's state broken and the interpreter crashes at exit
    (SIGSEGV / double free); written as bytes by Python, the same disk gives a plain OSError.
    """
    import io

    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        legacy_h5_format.save_model_to_hdf5(model, file, overwrite=True, include_optimizer=True)
    return buffer.getvalue()


def distribute_strategy(model: Any) -> Any | None:
    """The strategy a model was built under (Keras 3.x ``Model._distribute_strategy``;
    None under the default strategy)."""
    return getattr(model, "_distribute_strategy", None)


def set_symbolic_build(model: Any, build: Any) -> None:
    """Replace the hook ``fit`` calls before its first step (Keras 3.x
    ``Model._maybe_symbolic_build``)."""
    model._maybe_symbolic_build = build


def all_layers(layer: Any) -> list[Any]:
    """Every layer inside ``layer``, recursively, not itself: sub-layers of composite and
    custom layers included (Keras 3.x ``Layer._flatten_layers``; ``Model.layers`` lists only
    the top level and a custom layer's sub-layers are in no public list)."""
    return list(layer._flatten_layers(include_self=False, recursive=True))


def sublayers(layer: Any) -> list[Any]:
    """The layers ``layer`` holds directly, in the order it tracked them (Keras 3.x
    ``Layer._flatten_layers(include_self=False, recursive=False)``: what ``Layer.weights``
    itself walks; only ``Model.layers`` is public, and a custom layer's children are in no
    public list). The selection walk descends with it one level at a time, so it knows
    each layer's path."""
    return list(layer._flatten_layers(include_self=False, recursive=False))


def reloaded_object(layer: Any) -> Any:
    """The ``tf.saved_model.load`` result a ``keras.layers.TFSMLayer`` wraps (Keras 3.x
    ``TFSMLayer._reloaded_obj``): its signatures are what a re-saved SavedModel keeps."""
    return layer._reloaded_obj


@functools.cache
def tfsm_layer_class(behaviour: type) -> type:
    """``keras.layers.TFSMLayer`` + ``behaviour``, naming its weights so that Keras
    optimizers accept them (Keras 3.x ``TFSMLayer._add_existing_weight``, ``_track_variable``).

    TFSMLayer names a weight after its variable with ``/`` -> ``_``, which keeps the ``:0``
    of a loaded variable; an optimizer then names its slots ``dense_kernel:0_momentum``, an
    invalid scope name. The original name is kept in ``original_names`` for the report.
    """
    import keras
    from keras.layers import TFSMLayer

    class SignatureLayer(behaviour, TFSMLayer):
        def _add_existing_weight(self, weight: Any) -> None:
            name = weight.name.split(":")[0]
            variable = keras.Variable(
                initializer=weight,  # the same tf.Variable: the graphs see every assign
                trainable=weight.trainable,
                dtype=weight.dtype,
                shape=weight.shape,
                name=name.replace("/", "_"),
            )
            if not hasattr(self, "original_names"):
                self.original_names: dict[int, str] = {}
            self.original_names[id(variable)] = name
            self._track_variable(variable)

    return SignatureLayer


# Keras 3.0 - 3.15: no public API says which layer call produced a symbolic tensor, or with
# which inputs; Functional walks its own graph with exactly these two attributes
# (``KerasTensor._keras_history``, ``Operation._inbound_nodes``). The channel-coupling
# graph (``prunecli.structured.graph``) and the FLOPs counter follow them.


def producer(tensor: Any) -> tuple[Any, int, int]:
    """``(operation, node_index, tensor_index)`` of the call that produced ``tensor``."""
    history = tensor._keras_history  # Keras 3.15: a KerasHistory namedtuple
    return history.operation, history.node_index, history.tensor_index


def is_symbolic(tensor: Any) -> bool:
    """Whether ``tensor`` is a symbolic tensor of a recorded layer graph."""
    return getattr(tensor, "_keras_history", None) is not None  # Keras 3.15


def node_inputs(operation: Any, node_index: int) -> list[Any]:
    """The symbolic input tensors of one call (node) of ``operation``, flattened in call
    order (``mha(query, value)`` -> ``[query, value]``)."""
    return list(operation._inbound_nodes[node_index].input_tensors)  # Keras 3.15


def node_outputs(operation: Any, node_index: int) -> list[Any]:
    """The symbolic output tensors of one call of ``operation``."""
    return list(operation._inbound_nodes[node_index].output_tensors)  # Keras 3.15


def node_arguments(operation: Any, node_index: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments of one call, as written (``mha(x, value=y)``:
    ``((x,), {"value": y})``): flattened inputs lose which argument was which."""
    arguments = operation._inbound_nodes[node_index].arguments  # Keras 3.15
    return tuple(arguments.args), dict(arguments.kwargs)
