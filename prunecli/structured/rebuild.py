"""A new, narrower model from a plan: configs with smaller widths, weights sliced.

Only the width keys of a layer's config change (``filters``, ``units``, ``num_heads``,
``output_shape`` of attention, ``target_shape`` of a Reshape); every other key passes
through, and the layer names, inputs, outputs and compile config stay. Weights are copied
with the removed channels sliced out of every axis that carries them: a Conv2D kernel
``(3, 3, in, out)`` loses rows of ``in`` (what it reads) and columns of ``out`` (what it
makes), a BatchNorm its gamma/beta/mean/variance entries, an attention layer whole heads.

Each weight's axes are a data table (``_AXES``): ``"in"`` = the first input's channels,
``"out"`` = the channels the layer makes, ``"heads"``, and for attention ``"query"`` /
``"value"`` / ``"key"`` = the rows read from each input.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from prunecli import compat
from prunecli.errors import ConfigError
from prunecli.pruning.selection import walk
from prunecli.structured.graph import Use
from prunecli.structured.groups import Plan, weight

_DENSE = {"kernel": {0: "in", 1: "out"}, "bias": {0: "out"}}
_CONV = {"kernel": {-2: "in", -1: "out"}, "bias": {0: "out"}}
_CONV_T = {"kernel": {-1: "in", -2: "out"}, "bias": {0: "out"}}
_DEPTHWISE = {"kernel": {-2: "in"}, "bias": {0: "in"}}
# a Conv with groups = channels (a depthwise conv): kernel (kh, kw, 1, C), channel k -> k
_GROUPED_DEPTHWISE = {"kernel": {-1: "in"}, "bias": {0: "in"}}
_NORM = {name: {0: "in"} for name in ("gamma", "beta", "moving_mean", "moving_variance")}
_SEPARABLE = {
    "depthwise_kernel": {-2: "in"},
    "pointwise_kernel": {-2: "in", -1: "out"},
    "bias": {0: "out"},
}
_MHA = {
    "query/kernel": {0: "query", 1: "heads"},
    "query/bias": {0: "heads"},
    "key/kernel": {0: "key", 1: "heads"},
    "key/bias": {0: "heads"},
    "value/kernel": {0: "value", 1: "heads"},
    "value/bias": {0: "heads"},
    "attention_output/kernel": {0: "heads", 2: "out"},
    "attention_output/bias": {0: "out"},
}
_AXES: dict[str, dict[str, dict[int, str]]] = {
    "Dense": _DENSE,
    **dict.fromkeys(("Conv1D", "Conv2D", "Conv3D"), _CONV),
    **dict.fromkeys(("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"), _CONV_T),
    **dict.fromkeys(("DepthwiseConv1D", "DepthwiseConv2D"), _DEPTHWISE),
    "SeparableConv1D": _SEPARABLE,
    "SeparableConv2D": _SEPARABLE,
    **dict.fromkeys(("BatchNormalization", "LayerNormalization"), _NORM),
    "MultiHeadAttention": _MHA,
    "PReLU": {"alpha": {-1: "in"}},  # alpha (..., C), or (..., 1) shared over channels
    "GroupNormalization": {name: {0: "in"} for name in ("gamma", "beta")},
    "LayerScale": {"*": {0: "in"}},  # its one weight is unnamed ("variable") in Keras 3.15
}
# Rules whose weights are never masked: their channel is cut off where it is read (masking
# BatchNorm's variance would divide by zero; a zero input stays zero through PReLU).
_UNMASKED = ("norm", "depthwise", "channelwise", "frozen")
# The config key that holds a producer's width.
_WIDTH_KEY = {"Dense": "units", "MultiHeadAttention": "num_heads"}


def keep_indices(plan: Plan, use: Use) -> dict[str, np.ndarray]:
    """Axis role -> surviving positions, for one layer call."""
    roles: dict[str, np.ndarray] = {}
    names = ("query", "value", "key") if use.rule == "mha" else ("in",)
    for name, channels in zip(names, use.inputs, strict=False):
        roles[name] = channels.positions(plan.kept_of)
    if use.output is not None:
        roles["out"] = plan.kept_of(use.output)
    if use.heads is not None:
        roles["heads"] = plan.kept_of(use.heads)
    return roles


def config_edits(plan: Plan, use: Use) -> dict[str, Any]:
    """The width keys of one layer's config that change (empty when nothing does)."""
    kind, config = type(use.layer).__name__, use.layer.get_config()
    roles = keep_indices(plan, use)
    edits: dict[str, Any] = {}
    if use.rule in ("producer", "separable"):
        edits[_WIDTH_KEY.get(kind, "filters")] = len(roles["out"])
    if use.rule == "channelwise" and kind == "GroupNormalization":  # one group per channel
        edits["groups"] = len(roles["in"])
    if use.rule == "channelwise" and kind == "LayerScale":
        edits["projection_dim"] = len(roles["in"])
    if _grouped_depthwise(use):  # Conv2D(C, groups=C)
        edits["filters"] = edits["groups"] = len(roles["in"])
    if use.rule == "mha":
        edits["num_heads"] = len(roles["heads"])
        if len(roles["out"]) != use.shapes[1][0][-1] or len(roles["query"]) != use.shapes[0][0][-1]:
            edits["output_shape"] = len(roles["out"])
    if use.rule == "reshape" and -1 not in config["target_shape"]:
        target = list(config["target_shape"])
        kept = len(roles["in"])  # positions of the input's last axis that survive
        target[-1] = kept * int(np.prod(use.shapes[0][0][1:-1])) if len(target) == 1 else kept
        edits["target_shape"] = tuple(target)
    return {key: value for key, value in edits.items() if config.get(key) != value}


def slice_weights(plan: Plan, use: Use) -> list[np.ndarray]:
    """The layer's weights, in ``layer.weights`` order, with removed positions dropped."""
    roles = keep_indices(plan, use)
    sliced = []
    for variable in use.weights:
        values = np.asarray(variable)
        axes = _axes(use, variable)
        for axis, role in axes.items():
            if values.shape[axis] > 1:  # size 1: broadcast over the channels, kept as is
                values = np.take(values, roles[role], axis=axis)
        sliced.append(values)
    return sliced


def sliced_shapes(plan: Plan, use: Use) -> list[tuple[int, ...]]:
    """The shapes ``slice_weights`` gives, without copying any weight (parameter and MAC
    counts of a plan). Example: a Conv2D kernel (3, 3, 8, 16) whose output group keeps 4
    -> (3, 3, 8, 4)."""
    roles = keep_indices(plan, use)
    shapes = []
    for variable in use.weights:
        shape = list(variable.shape)
        axes = _axes(use, variable)
        for axis, role in axes.items():
            if shape[axis] > 1:  # size 1: broadcast over the channels (as slice_weights)
                shape[axis] = len(roles[role])
        shapes.append(tuple(int(d) for d in shape))
    return shapes


def _table(use: Use) -> dict[str, dict[int, str]]:
    """Weight name -> {axis: role} for one layer call (empty when frozen)."""
    if use.rule == "frozen":
        return {}
    if _grouped_depthwise(use):
        return _GROUPED_DEPTHWISE
    return _AXES.get(type(use.layer).__name__, {})


def _grouped_depthwise(use: Use) -> bool:
    """A ``Conv*D`` with ``groups`` = channels, which the graph follows as depthwise."""
    return use.rule == "depthwise" and type(use.layer).__name__ in ("Conv1D", "Conv2D", "Conv3D")


def _axes(use: Use, variable: Any) -> dict[int, str]:
    """{axis: role} of one of the layer's weights ({} for a weight no channel reaches)."""
    return next((a for name, a in _table(use).items() if _named(variable, name)), {})


def _named(variable: Any, name: str) -> bool:
    """Whether the variable's path ends in ``name`` (``*``: any variable)."""
    parts = variable.path.split("/")
    return name == "*" or "/".join(parts[-len(name.split("/")) :]) == name


_LAYER_GRAPH_CONFIGS = ("Functional.get_config", "Sequential.get_config")


def check_rebuildable(model: Any) -> None:
    """ConfigError unless ``model`` and every model inside it save their layer graph.

    The rebuild edits each layer's config (``filters``, ``units``) and builds the model
    again from it. A class with its own ``get_config`` (keras_hub's ``BertTextClassifier``,
    ``BertBackbone``: hyper-parameters such as ``hidden_dim``, not layers) would be built
    again at its old widths, so no narrower copy of it can be written."""
    import keras

    for layer in [model, *compat.all_layers(model)]:
        own = getattr(type(layer).get_config, "__qualname__", "")
        if isinstance(layer, keras.Model) and own not in _LAYER_GRAPH_CONFIGS:
            name = f"{type(layer).__module__.split('.')[0]}.{type(layer).__name__}"
            raise ConfigError(
                f"prune.granularity channel writes a narrower copy from the layers' configs, "
                f"but {layer.name!r} is a {name}, whose config holds hyper-parameters "
                "rather than layers: prune it with an unstructured granularity"
            )


def rebuild(model: Any, plan: Plan) -> Any:
    """The narrower model: a fresh model from the edited config, weights copied sliced,
    compiled like the original when it was compiled."""
    edits = {
        path: found for path, use in plan.graph.uses.items() if (found := config_edits(plan, use))
    }
    edits.update(_inner_input_edits(plan))
    import keras

    serialized = keras.saving.serialize_keras_object(model)
    serialized.pop("build_config", None)  # the old input shapes; compiled below instead
    serialized.pop("compile_config", None)
    serialized["config"] = _edited(serialized["config"], edits, prefix="")
    # The model's code (a Lambda's function) is already loaded in this process: rebuilding
    # it from its own in-memory config runs nothing new, so safe mode has nothing to guard.
    rebuilt = keras.saving.deserialize_keras_object(serialized, safe_mode=False)
    old = dict(walk(model))
    for path, layer in walk(rebuilt):
        if not layer.weights:
            continue
        use = plan.graph.uses.get(path)
        values = slice_weights(plan, use) if use else [np.asarray(w) for w in old[path].weights]
        layer.set_weights(values)
    if getattr(model, "compiled", False):
        _compile_like(rebuilt, model)
    return rebuilt


def _inner_input_edits(plan: Plan) -> dict[str, dict[str, Any]]:
    """The ``batch_shape`` of each nested model's InputLayer whose channels narrow: a
    ConvNeXt downsampling ``Sequential`` fed 96 channels of which 48 survive is rebuilt
    with ``batch_shape (None, 8, 8, 48)``, else it refuses its narrower input."""
    found = {}
    for path, (shape, channels) in plan.graph.inner_inputs.items():
        kept = len(channels.positions(plan.kept_of))
        if kept != shape[-1]:
            found[path] = {"batch_shape": [*shape[:-1], kept]}
    return found


def _compile_like(rebuilt: Any, model: Any) -> None:
    """Compile as ``model`` was; a loss that cannot be serialised (fine-tuning's
    distillation closure) leaves only the optimizer's settings."""
    import keras

    try:
        rebuilt.compile_from_config(model.get_compile_config())
    except Exception:  # an unserialisable loss: the optimizer's settings still carry over
        optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
        rebuilt.compile(
            optimizer=keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
        )


def _edited(config: dict[str, Any], edits: dict[str, dict[str, Any]], prefix: str) -> dict:
    """A copy of a model config with each layer's width edits applied, nested models
    included, and every ``build_config`` dropped (it records the old input shapes; the
    layers build themselves from the new ones when the graph is called)."""
    config = copy.deepcopy(config)
    for entry in config.get("layers", []):
        entry.pop("build_config", None)
        inner = entry["config"]
        path = f"{prefix}{inner['name']}"
        if "layers" in inner:
            entry["config"] = _edited(inner, edits, prefix=f"{path}/")
        else:
            inner.update(edits.get(path, {}))
    return config


def maskable(use: Use) -> list[bool]:
    """Per weight of the layer: does it read or make channels that a plan may remove?
    Normalisation and depthwise weights never are: their channel is cut off where it is
    read (masking BatchNorm's variance would divide by zero)."""
    return [use.rule not in _UNMASKED and bool(_axes(use, variable)) for variable in use.weights]


def masks(plan: Plan, use: Use) -> list[np.ndarray | None]:
    """Per weight of the layer: a 0/1 mask of its shape zeroing removed channels on the
    axes that read or make them, or None when nothing of it is removed. Normalisation and
    depthwise weights are never masked: their channel is cut off where it is read."""
    if use.rule in _UNMASKED:
        return [None] * len(use.weights)
    roles = keep_indices(plan, use)
    found: list[np.ndarray | None] = []
    for variable in use.weights:
        axes = _axes(use, variable)
        shape = tuple(variable.shape)
        mask = np.ones(shape, dtype=np.float32)
        for axis, role in axes.items():
            if len(roles[role]) < shape[axis]:
                keep = np.zeros(shape[axis], dtype=np.float32)
                keep[roles[role]] = 1.0
                view = [1] * len(shape)
                view[axis] = shape[axis]
                mask = mask * keep.reshape(view)
        found.append(None if mask.all() else mask)
    return found


__all__ = [
    "config_edits",
    "keep_indices",
    "masks",
    "rebuild",
    "slice_weights",
    "sliced_shapes",
    "weight",
]
