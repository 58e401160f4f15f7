"""Signature-only SavedModels: pruned and fine-tuned through their variables.

A SavedModel folder written by Keras 3 ``model.export(dir)`` or by
``tf.saved_model.save(module, dir)`` of a plain ``tf.Module`` holds TensorFlow graphs and
variables, but no Keras architecture to rebuild. prunecli loads it with
``tf.saved_model.load`` (graphs only: no Python code runs) and wraps its ``serving_default``
signature in a one-layer Keras model, ``Input -> _SignatureLayer``, whose weights are the
SavedModel's own variables (the same ``tf.Variable`` objects the graphs capture). So the
whole pipeline works unchanged: the masks' constraints hold inside Keras's compiled train
step, and assigning a Keras weight assigns the variable the graphs read.

Saving writes the loaded object again, ``tf.saved_model.save(obj, dir, signatures=...)``,
with every one of the input's signatures (same names, inputs and outputs); only the
variable values differ.

Without layers, a kernel is recognised by its variable: trainable, floating point, rank
>= 2 and a leaf name in ``KERNEL_NAMES`` (``sequential/hidden/kernel:0`` is the kernel of
group ``sequential/hidden``; ``dense/bias:0`` and BatchNorm's rank-1 statistics are kept).
Its N:M reduction axis is -2, the input dimension of a matmul ``(in, out)`` or conv
``(kh, kw, in, out)`` kernel. Layer names are not part of a SavedModel's contract (the
exporter chose them), so ``prune.layers`` include/exclude/overrides are refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prunecli import compat
from prunecli.errors import ConfigError, ModelLoadError, OutputError, first_line
from prunecli.formats import graphops
from prunecli.formats.base import InputFormat
from prunecli.pruning.selection import LayerInfo

FORMAT = "savedmodel"
ENDPOINT = "serving_default"
# What prunecli can do with this format (``inspect --json`` lists it).
SUPPORTS = ("unstructured", "structured", "finetune")  # no layer_selection: no layers
# Leaf variable names that hold a matmul or conv kernel (Keras, Sonnet, hand-written
# tf.Module conventions). Anything else of rank >= 2 (an embedding table, a
# positional encoding) is reported and kept.
KERNEL_NAMES = re.compile(
    r"(kernel|recurrent_kernel|pointwise_kernel|weights?|w|w_?\d+|matrix)", re.IGNORECASE
)
_REDUCTION_AXIS = -2


def is_savedmodel(path: Path) -> bool:
    """A folder with ``saved_model.pb`` and no ``keras_metadata.pb`` (tf_keras writes that,
    and its folders do carry a Keras architecture)."""
    return (
        path.is_dir()
        and (path / "saved_model.pb").is_file()
        and not (path / "keras_metadata.pb").exists()
    )


def default_output(source: Path) -> Path:
    """``<input stem>_pruned`` beside the input: a folder, like the input."""
    return source.with_name(f"{source.stem}_pruned")


def check_request(source: Path, layers: Any, formats: list[str]) -> None:
    """Refuse, before any work, what a signature-only SavedModel cannot do.

    ``layers`` is the config's ``prune.layers``; ``formats`` those of every planned output.
    """
    if layers.include != [".*"] or layers.exclude or layers.overrides:
        raise ConfigError(
            f"prune.layers: {source} is a signature-only SavedModel: it has no layers, only "
            "variables named by its exporter, so include/exclude/overrides cannot pick one; "
            "remove prune.layers to prune every kernel, or prune the original Keras model"
        )
    keras_formats = sorted(set(formats) & {"keras", "h5"})
    if keras_formats:
        raise OutputError(
            f"{source} is a signature-only SavedModel with no Keras architecture to save as "
            f"{' or '.join(keras_formats)}; write a SavedModel folder (output.path without a "
            "suffix) or .tflite, and drop keras/h5 from output.export"
        )


def load(path: Path) -> Any:
    """``Input -> _SignatureLayer`` on the ``serving_default`` signature (one input, one
    output: the shape of the data prunecli trains on)."""
    names = _signature_names(path)
    if ENDPOINT not in names:
        raise ModelLoadError(
            f"{path}: has no {ENDPOINT} signature (it has: {', '.join(names) or 'none'}); "
            f"prunecli fine-tunes and measures a SavedModel through {ENDPOINT}"
        )
    try:
        layer = compat.tfsm_layer_class(_SignatureCall)(
            str(path), call_endpoint=ENDPOINT, trainable=True
        )
    except Exception as exc:  # TF raises many types for a graph it cannot restore
        raise ModelLoadError(f"{path}: cannot load SavedModel: {first_line(exc)}") from None
    inputs = layer.call_endpoint_fn.structured_input_signature[1]
    if len(inputs) != 1 or len(layer.call_endpoint_fn.structured_outputs) != 1:
        raise ModelLoadError(
            f"{path}: signature {ENDPOINT} takes {sorted(inputs)} and returns "
            f"{sorted(layer.call_endpoint_fn.structured_outputs)}; prunecli trains on one input "
            "and one output"
        )
    ((name, spec),) = inputs.items()
    if not spec.dtype.is_floating:
        raise ModelLoadError(f"{path}: signature input {name} is {spec.dtype.name}, not a float")
    import keras

    tensor = keras.Input(tuple(spec.shape[1:]), name=name, dtype=spec.dtype.name)
    model = keras.Model(tensor, layer(tensor), name=path.name)
    layer.activation = _output_activation(layer, spec)
    return model


def _signature_names(path: Path) -> list[str]:
    """The signature names in ``saved_model.pb``, read without loading any graph."""
    proto = graphops.read_proto(path)
    # ``__saved_model_init_op`` is TensorFlow's own bookkeeping, not a signature to serve.
    signatures = {name for graph in proto.meta_graphs for name in graph.signature_def}
    return sorted(name for name in signatures if not name.startswith("__"))


def signature_layer(model: Any) -> Any | None:
    """The model's signature layer (None for an ordinary Keras model)."""
    return next(
        (lay for lay in getattr(model, "layers", []) if isinstance(lay, _SignatureCall)), None
    )


def describe(layer: Any) -> list[LayerInfo]:
    """One LayerInfo per variable group (``a/b/kernel:0`` and ``a/b/bias:0`` -> ``a/b``)."""
    infos: dict[str, LayerInfo] = {}
    reasons: dict[str, list[str]] = {}
    for name, variable in _named(layer):
        group, _, leaf = name.rpartition("/")
        group = group or leaf
        info = infos.setdefault(group, LayerInfo(group, "SavedModel variables", 0))
        info.params += _size(variable.shape)
        why = _not_a_kernel(leaf, variable)
        if why is None:
            attr = leaf if leaf not in info.kernels else f"{leaf}_{len(info.kernels)}"
            info.kernels[attr] = variable
            info.axes[attr] = _REDUCTION_AXIS
        else:
            reasons.setdefault(group, []).append(f"{leaf}: {why}")
    for group, info in infos.items():
        if not info.kernels:
            info.reason = "no kernel among its variables (" + "; ".join(reasons[group]) + ")"
    return list(infos.values())


def save(model: Any, path: Path) -> None:
    """Write the loaded SavedModel with its current variable values and all its signatures
    to ``path`` (a temporary folder: callers rename it into place)."""
    import tensorflow as tf

    source = compat.reloaded_object(signature_layer(model))
    tf.saved_model.save(source, str(path), signatures=dict(source.signatures))


def _named(layer: Any) -> Iterator[tuple[str, Any]]:
    """(original variable name without ``:0``, Keras weight) for every weight of the layer."""
    for variable in layer.weights:
        yield layer.original_names[id(variable)], variable


def _not_a_kernel(leaf: str, variable: Any) -> str | None:
    """Why this variable is kept whole (None: it is a prunable kernel)."""
    if not variable.trainable:
        return "not trainable"
    if "float" not in str(variable.dtype):
        return f"{variable.dtype} values"
    if len(variable.shape) < 2:
        return f"rank {len(variable.shape)}, a kernel has at least 2 axes"
    if not KERNEL_NAMES.fullmatch(leaf):
        return "not a kernel name (kernel, weights, w, matrix)"
    return None


def _size(shape: Any) -> int:
    total = 1
    for dim in shape:
        total *= int(dim)
    return total


def _output_activation(layer: Any, spec: Any) -> Any:
    """softmax / sigmoid when the signature's outputs look like probabilities, else None.

    A SavedModel does not say which op ends its graph (it sits inside a nested function),
    so the outputs on a few random inputs decide: rows of non-negative values summing to 1
    are a softmax, one unit in [0, 1] a sigmoid. The pipeline's loss follows from it
    (probabilities or logits), exactly as a Keras model's last activation would decide.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    if any(dim is None for dim in spec.shape[1:]):
        return None
    probe = np.random.default_rng(0).normal(size=(8, *spec.shape[1:])).astype(spec.dtype.name)
    values = np.asarray(layer(tf.constant(probe)))
    if values.ndim < 2 or values.min() < 0 or values.max() > 1:
        return None
    if values.shape[-1] == 1:
        return keras.activations.sigmoid
    if np.allclose(values.sum(axis=-1), 1.0, atol=1e-4):
        return keras.activations.softmax
    return None


class _SignatureCall:
    """What the signature layer adds to ``keras.layers.TFSMLayer`` (the class itself is made
    in ``compat``, since it overrides a private method): a single output tensor instead of
    a dict, and its kernels described from its variables for selection."""

    call_endpoint_fn: Any

    def call(self, inputs: Any, training: bool = False) -> Any:
        (output,) = self.call_endpoint_fn(inputs).values()
        return output

    def describe_kernels(self, path: str) -> list[LayerInfo]:
        del path  # variables carry the exporter's own names
        return describe(self)


class SignatureSavedModel(InputFormat):
    """A SavedModel with signatures only: no layers to select, no Keras file to write."""

    name = FORMAT
    supports = SUPPORTS

    def load(self, path: Path, safe_mode: bool) -> Any:
        """Graphs, not Python: loading runs no user code, so safe mode refuses nothing."""
        del safe_mode
        return load(path)

    def default_output(self, source: Path) -> Path:
        return default_output(source)

    def check_request(self, source: Path, layers: Any, formats: list[str]) -> None:
        check_request(source, layers, formats)

    def output_activation(self, model: Any) -> str:
        activation = signature_layer(model).activation
        return getattr(activation, "__name__", "")

    def reset_training_state(self, model: Any, config: dict[str, Any]) -> None:
        del model, config  # its own graphs and variables: no optimizer is saved in it

    def export_savedmodel(self, model: Any, path: Path) -> None:
        save(model, path)
