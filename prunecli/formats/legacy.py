"""Keras 2 inputs rebuilt as plain Keras 3 models: tf.keras ``.h5``, tfmot-wrapped ``.h5``,
and tf.keras SavedModel folders (the ones with ``keras_metadata.pb``).

Keras 3 reads a Keras 2 ``.h5`` only partly: a nested model is called at node 1 in the
outer config (Keras 2 counted the nested model's own construction as node 0), LSTM/GRU
configs carry ``time_major``, and tfmot's ``PruneLowMagnitude`` wrapper is unknown. So the
stored config is rewritten first, then built by Keras, then the weights are copied layer by
layer from the HDF5 groups, e.g. for a tfmot file::

    prune_low_magnitude_hidden/  weight_names: hidden/kernel:0, hidden/bias:0,
        prune_low_magnitude_hidden/{mask, threshold, pruning_step}:0
    -> layer "hidden" (strip_pruning's name), kernel = kernel * mask, bias; the rest dropped

Nothing here imports TensorFlow at module level.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from prunecli import compat
from prunecli.errors import ModelLoadError
from prunecli.formats import compiling, keras2_layers, libraries

TFMOT_WRAPPER = "PruneLowMagnitude"
# Keras 2 layer arguments Keras 3 refuses; dropping them changes nothing Keras 3 supports.
# Keras 2's depthwise and separable convs inherit its Conv base's ``groups`` (always 1
# there) and ``kernel_initializer/regularizer/constraint`` (unused: their kernels are the
# ``depthwise_*`` / ``pointwise_*`` ones), which Keras 3's classes do not take
# (Xception's ``SeparableConv2D``).
_CONV_BASE = ("groups", "kernel_initializer", "kernel_regularizer", "kernel_constraint")
_DROPPED_ARGS = {
    **dict.fromkeys(("LSTM", "GRU", "SimpleRNN"), ("time_major",)),
    **dict.fromkeys(
        ("DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D"), _CONV_BASE
    ),
}
# tf_keras serialised some initializers as TensorFlow's own; Keras 3 has each under
# keras.initializers.
_TF_INITIALIZERS = libraries.KERAS_ONES_IN_TF
# tf_keras wrote a layer's dtype policy as ``{"module": "keras.mixed_precision",
# "class_name": "Policy", "config": {"name": "mixed_float16"}}``, which Keras 3 cannot read.
_KERAS2_POLICY = "keras.mixed_precision"
# Keras 2 wrote some axes as a one-element list; Keras 3 takes the int.
_SINGLE_AXIS = ("BatchNormalization",)


def h5_format(attrs: Any) -> str:
    """``h5-tfmot`` (tfmot wrappers inside), ``h5-keras2`` (tf.keras / tf_keras) or ``h5``."""
    config = attrs.get("model_config")
    text = config.decode() if isinstance(config, bytes) else str(config or "")
    if f'"class_name": "{TFMOT_WRAPPER}"' in text:
        return "h5-tfmot"
    version = attrs.get("keras_version")
    version = version.decode() if isinstance(version, bytes) else str(version or "")
    return "h5-keras2" if version.startswith("2.") else "h5"


def load_h5(path: Path) -> Any:
    """A Keras 2 or tfmot ``.h5`` as a Keras 3 model, compiled when the file was."""
    with h5py.File(path, "r") as handle:
        config = json.loads(_text(handle.attrs["model_config"]))
        training = handle.attrs.get("training_config")
        renames: dict[str, str] = {}
        wrappers: set[str] = set()
        absorbed: set[str] = set()  # weights written into the rewritten config
        stored = functools.partial(_stored_weights, handle["model_weights"])
        rewritten = to_keras3(config, renames, wrappers, stored=stored, absorbed=absorbed)
        model = compat.legacy_model_from_config(rewritten)
        _copy_weights(handle["model_weights"], model, renames, wrappers, path, absorbed)
    if training is not None:
        model.compile(**compiling.from_training_config(json.loads(_text(training))))
    return model


def compile_h5(model: Any, path: Path) -> None:
    """Compile a model Keras 3 loaded uncompiled from ``path`` with the file's compile config."""
    with h5py.File(path, "r") as handle:
        training = handle.attrs.get("training_config")
    if training is not None:
        model.compile(**compiling.from_training_config(json.loads(_text(training))))


def savedmodel_config(folder: Path) -> dict[str, Any]:
    """The model config stored in a tf.keras SavedModel's ``keras_metadata.pb`` (root node)."""
    from tf_keras.protobuf import saved_metadata_pb2

    metadata = saved_metadata_pb2.SavedMetadata()
    metadata.ParseFromString((folder / "keras_metadata.pb").read_bytes())
    for node in metadata.nodes:
        if node.node_path == "root":
            return json.loads(node.metadata)
    raise ModelLoadError(f"{folder}: keras_metadata.pb has no root model entry")


def load_savedmodel(folder: Path) -> Any:
    """A tf.keras SavedModel as a Keras 3 model: tf_keras rebuilds it from its metadata and
    writes it as a Keras 2 ``.h5`` in a temporary folder, which ``load_h5`` then reads."""
    import io
    import warnings

    import h5py
    import tf_keras

    legacy = tf_keras.models.load_model(folder, compile=True)
    buffer = io.BytesIO()  # built in memory, written by Python: see compat.h5_image
    with h5py.File(buffer, "w") as file, warnings.catch_warnings():
        # tf_keras's "You are saving your model as an HDF5 file ... legacy": about this
        # intermediate file, which the user never sees
        warnings.filterwarnings("ignore", "You are saving your model as an HDF5", UserWarning)
        legacy.save(file)  # tf_keras takes an open h5py.File (public, unlike Keras 3)
    with tempfile.TemporaryDirectory(prefix="prunecli-") as scratch:
        staged = Path(scratch) / "model.h5"
        staged.write_bytes(buffer.getvalue())
        return load_h5(staged)


def to_keras3(
    config: dict[str, Any],
    renames: dict[str, str],
    wrappers: set[str] | None = None,
    *,
    stored: keras2_layers.Stored | None = None,
    absorbed: set[str] | None = None,
) -> dict[str, Any]:
    """The stored Keras 2 config rewritten for Keras 3 (pure; ``renames`` collects
    ``{stored name: Keras 3 name}`` for every tfmot wrapper removed and every name with a
    ``/``; ``wrappers`` the stored names that were tfmot wrappers, whose own weights go).
    Layers Keras 3 has no class for become plain ones (``keras2_layers``); ``stored``
    reads a layer's weights from the file, ``absorbed`` collects those written into the
    config."""
    config = _unwrap(config, renames)
    taken = set() if absorbed is None else absorbed
    config = _each_model(config, lambda layers: keras2_layers.rewrite(layers, stored, taken))
    if wrappers is not None:
        wrappers |= set(renames)
    slashed = _slashed_names(config)
    renames.update({old: slashed.get(new, new) for old, new in renames.items()} | slashed)
    return _renumber_nodes(_rename_refs(config, renames))


def _each_model(node: Any, change: Callable[[list[Any]], list[Any]]) -> Any:
    """``node`` with ``change`` applied to the layer list of every functional config in it
    (nested models included)."""
    if isinstance(node, list):
        return [_each_model(item, change) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _each_model(value, change) for key, value in node.items()}
    config = node.get("config")
    if node.get("class_name") in ("Functional", "Model") and isinstance(config, dict):
        node["config"] = config | {"layers": change(config.get("layers", []))}
    return node


def _stored_weights(group: h5py.Group, name: str) -> list[np.ndarray]:
    """The weights the file stores for layer ``name``, in its order."""
    names = [_text(weight) for weight in group[name].attrs["weight_names"]]
    return [np.asarray(group[name][weight]) for weight in names]


def _slashed_names(node: Any) -> dict[str, str]:
    """``{old: new}`` for every layer name with a ``/`` (MobileNetV3's
    ``expanded_conv/project``): Keras 3 refuses them, so ``/`` becomes ``_``."""
    found: dict[str, str] = {}
    if isinstance(node, list):
        for item in node:
            found |= _slashed_names(item)
    elif isinstance(node, dict):
        config = node.get("config")
        name = config.get("name") if isinstance(config, dict) else None
        if "class_name" in node and isinstance(name, str) and "/" in name:
            found[name] = name.replace("/", "_")
        for value in node.values():
            found |= _slashed_names(value)
    return found


def _unwrap(node: Any, renames: dict[str, str]) -> Any:
    """Replace each ``PruneLowMagnitude`` by the layer it wraps, as ``strip_pruning`` does,
    and drop arguments Keras 3 refuses."""
    if isinstance(node, list):
        return [_unwrap(item, renames) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("class_name") == TFMOT_WRAPPER:
        outer = node["config"]
        inner = dict(outer["layer"])
        renames[outer["name"]] = inner["config"]["name"]
        if "inbound_nodes" in node:  # a functional model's wiring lives outside the config
            inner["inbound_nodes"] = node["inbound_nodes"]
        if "name" in node:
            inner["name"] = inner["config"]["name"]
        return _unwrap(inner, renames)
    if node.get("class_name") == "Policy" and node.get("module") == _KERAS2_POLICY:
        return node["config"]["name"]  # a mixed_float16 layer: Keras 3 takes the name
    node = {key: _unwrap(value, renames) for key, value in node.items()}
    if str(node.get("module", "")).startswith(_TF_INITIALIZERS):  # EfficientNetV2's Constant
        node |= {"module": "keras.initializers", "registered_name": None}
    kind, config = str(node.get("class_name")), node.get("config")
    if isinstance(config, dict):
        dropped = _DROPPED_ARGS.get(kind, ())
        config = {k: v for k, v in config.items() if k not in dropped}
        axis = config.get("axis")
        if kind in _SINGLE_AXIS and isinstance(axis, list) and len(axis) == 1:
            config["axis"] = axis[0]
        node["config"] = config
    return node


def _rename_refs(node: Any, renames: dict[str, str]) -> Any:
    """Layer names in ``inbound_nodes``/``input_layers``/``output_layers`` after unwrapping."""
    if not renames:
        return node
    if isinstance(node, list):
        return [_rename_refs(item, renames) for item in node]
    if isinstance(node, dict):
        return {key: _rename_refs(value, renames) for key, value in node.items()}
    return renames.get(node, node) if isinstance(node, str) else node


def _renumber_nodes(node: Any) -> Any:
    """In each functional config, number every layer's call sites 0, 1, ... in order.

    Keras 2 gave a nested model built on its own input a node 0 of its own, so the outer
    model calls it at node 1; Keras 3 creates no such node and would wait for node 1 forever.
    """
    if isinstance(node, list):
        return [_renumber_nodes(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _renumber_nodes(value) for key, value in node.items()}
    config = node.get("config")
    if node.get("class_name") in ("Functional", "Model") and isinstance(config, dict):
        used: dict[str, set[int]] = {}
        for ref in _refs(config):
            used.setdefault(ref[0], set()).add(ref[1])
        order = {
            name: {old: new for new, old in enumerate(sorted(idx))} for name, idx in used.items()
        }
        for ref in _refs(config):
            ref[1] = order[ref[0]][ref[1]]
    return node


def _refs(config: dict[str, Any]) -> list[list[Any]]:
    """Every ``[layer name, node index, tensor index, ...]`` reference in a functional config
    (the lists themselves, so callers can edit them in place)."""
    found: list[list[Any]] = []
    for layer in config.get("layers", []):
        for call in layer.get("inbound_nodes", []):
            found.extend(_ref_lists(call))
    for key in ("input_layers", "output_layers"):
        found.extend(_ref_lists(config.get(key, [])))
    return found


def _ref_lists(node: Any) -> list[list[Any]]:
    if isinstance(node, list):
        if len(node) >= 3 and isinstance(node[0], str) and isinstance(node[1], int):
            return [node]
        return [ref for item in node for ref in _ref_lists(item)]
    if isinstance(node, dict):  # Keras 3 style {"args": [...], "kwargs": {...}} calls
        return [ref for value in node.values() for ref in _ref_lists(value)]
    return []


def _copy_weights(
    group: h5py.Group,
    model: Any,
    renames: dict[str, str],
    wrappers: set[str],
    path: Path,
    absorbed: set[str] = frozenset(),
) -> None:
    """Assign each stored layer's weights to the layer of the same (unwrapped, renamed)
    name, in the order Keras 2 saved them: trainable weights, then non-trainable ones.
    (A renamed layer is not a wrapper: ``Conv/BatchNorm``'s weights are all its own.)"""
    for stored in (_text(name) for name in group.attrs["layer_names"]):
        if stored in absorbed:  # already in the config (a LayerScale's gamma)
            continue
        names = [_text(name) for name in group[stored].attrs["weight_names"]]
        values = _stored_weights(group, stored)
        if stored in wrappers:  # a tfmot wrapper: its own state goes, masks are applied
            values = _strip_tfmot_state(stored, names, values)
        if not values:
            continue
        layer = _layer(model, renames.get(stored, stored), path)
        variables = list(layer.trainable_weights) + list(layer.non_trainable_weights)
        shapes = [tuple(v.shape) for v in variables]
        if shapes != [value.shape for value in values]:
            raise ModelLoadError(
                f"{path}: weights of layer {stored} do not fit the rebuilt model "
                f"(stored {[value.shape for value in values]}, expected {shapes})"
            )
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)


def _strip_tfmot_state(stored: str, names: list[str], values: list[np.ndarray]) -> list[np.ndarray]:
    """The wrapped layer's own weights, each pruned kernel multiplied by its mask.

    The wrapper's weights are named ``<wrapper>/mask:0``, ``<wrapper>/mask_1:0`` ... in the
    order of the layer's prunable weights (kernel, then an RNN's recurrent kernel); each
    mask goes to the first not yet masked weight of its shape. tfmot already zeroes masked
    weights after each step; the multiply only makes sure.
    """
    own = [(n, v) for n, v in zip(names, values, strict=True) if not n.startswith(f"{stored}/")]
    masks = [
        v
        for n, v in zip(names, values, strict=True)
        if n.startswith(f"{stored}/") and n.rsplit("/", 1)[-1].startswith("mask")
    ]
    kept = [v for _, v in own]
    masked: set[int] = set()
    for mask in masks:
        for i, value in enumerate(kept):
            if i not in masked and value.shape == mask.shape:
                kept[i] = (value * mask).astype(value.dtype)
                masked.add(i)
                break
    return kept


def _layer(model: Any, name: str, path: Path) -> Any:
    try:
        return model.get_layer(name)
    except ValueError:
        raise ModelLoadError(
            f"{path}: the file holds weights for layer {name!r}, which its config lacks"
        ) from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
