"""The few private Keras attributes prunecli cannot avoid, in one place.

Checked against Keras 3.15. Keras 3 has no public API for "which layer call produced this
symbolic tensor, and with which inputs"; the Functional model itself walks its graph with
exactly these two attributes (``KerasTensor._keras_history`` and
``Operation._inbound_nodes``), which have been stable since Keras 3.0.
"""

from __future__ import annotations

from typing import Any


def producer(tensor: Any) -> tuple[Any, int, int]:
    """``(operation, node_index, tensor_index)`` of the call that produced ``tensor``."""
    history = tensor._keras_history  # Keras 3.15: a KerasHistory namedtuple
    return history.operation, history.node_index, history.tensor_index


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
