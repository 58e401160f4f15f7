"""The channel-coupling graph of a Sequential or Functional Keras model.

Removing output channel ``k`` of a Conv2D is only sound if every layer that reads that
channel drops it too: the BatchNormalization after it, the depthwise conv after that, the
other branch of a residual ``Add`` (whose channel ``k`` is summed with it), the next conv's
input rows. This module follows every symbolic tensor from the model's inputs to its
outputs and records, for each position of its last (channel) axis, which *source* channel
sits there. A source is the output of one producer (Conv, Dense, MHA output, a model input);
``Add``-like merges union their inputs' sources, so the union-find classes are the coupled
*groups* that are scored and removed together. Heads of a MultiHeadAttention are a group of
their own (kind ``heads``).

What each layer class does with channels is a data table (``RULES``); a class without a
rule, a Lambda, or a shape change that mixes channels freezes every group it touches, with
the reason. Worked example, ``x = conv_a(in); y = conv_b(x); z = Add()([x, y])``::

    conv_a -> source 1 (model input is source 0, frozen)
    conv_b -> source 2, reads source 1
    Add    -> union(1, 2): one group {conv_a, conv_b}, removed together
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prunecli import compat
from prunecli.errors import ConfigError


@dataclass(frozen=True)
class Segment:
    """Channels ``start..stop`` of ``source``, side by side on a tensor's last axis."""

    source: int
    start: int
    stop: int

    @property
    def width(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Channels:
    """Where a tensor's last axis comes from: segments in order; ``spatial`` > 1 after a
    Flatten (channels-last: flat position ``s * width + c`` holds channel ``c``)."""

    segments: tuple[Segment, ...]
    spatial: int = 1

    @property
    def width(self) -> int:
        return sum(segment.width for segment in self.segments)

    def positions(self, kept: Any) -> np.ndarray:
        """The positions along the axis that survive, ``kept(source)`` giving each source's
        surviving channel indices. Example: segments (s1: 0..4, s2: 0..2), s1 keeps
        [1, 3], s2 keeps [0] -> [1, 3, 4]."""
        picked, offset = [], 0
        for segment in self.segments:
            keep = np.asarray(kept(segment.source))
            inside = keep[(keep >= segment.start) & (keep < segment.stop)]
            picked.append(inside - segment.start + offset)
            offset += segment.width
        base = np.concatenate(picked) if picked else np.zeros(0, dtype=int)
        if self.spatial == 1:
            return base.astype(int)
        return (np.arange(self.spatial)[:, None] * offset + base[None, :]).ravel().astype(int)


@dataclass
class Source:
    """One producer's output channels (or a head set); ``frozen`` says why it must stay."""

    id: int
    width: int
    path: str
    kind: str = "channels"  # or "heads"
    frozen: str | None = None


@dataclass
class Use:
    """One leaf layer's call: its rule, the channels of its inputs, what it produces."""

    path: str
    layer: Any
    rule: str
    node: int = 0  # which call of the layer (Keras keeps stale calls of Sequential layers)
    inputs: tuple[Channels, ...] = ()
    output: int | None = None  # the source a producer creates
    heads: int | None = None  # MultiHeadAttention: its head source
    shapes: tuple[tuple[Any, ...], tuple[Any, ...]] = ((), ())  # (input, output) shapes

    @property
    def weights(self) -> list[Any]:
        """The layer's variables; none for a bare Keras operation in a functional graph
        (``x + 3.0`` in MobileNetV3's hard-sigmoid is a ``keras.ops`` Add, not a layer)."""
        return list(getattr(self.layer, "weights", ()))


@dataclass
class Group:
    """Coupled sources: scored together, the same channel indices removed from each."""

    id: int
    kind: str
    width: int
    sources: list[int]
    members: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    producers: list[str] = field(default_factory=list)  # the layers that make the channels


# Layer class name -> rule. Rules are implemented by Graph._rule_<name>.
_PASS = (
    "Activation ReLU LeakyReLU ELU ThresholdedReLU Dropout SpatialDropout1D SpatialDropout2D "
    "SpatialDropout3D GaussianNoise GaussianDropout AlphaDropout ActivityRegularization Identity "
    "MaxPooling1D MaxPooling2D MaxPooling3D AveragePooling1D AveragePooling2D AveragePooling3D "
    "ZeroPadding1D ZeroPadding2D ZeroPadding3D Cropping1D Cropping2D Cropping3D UpSampling1D "
    "UpSampling2D UpSampling3D GlobalAveragePooling1D GlobalAveragePooling2D "
    "GlobalAveragePooling3D GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D Rescaling"
)
RULES: dict[str, str] = {
    **dict.fromkeys(_PASS.split(), "passthrough"),
    **dict.fromkeys(("BatchNormalization", "LayerNormalization"), "norm"),
    # one weight per channel, each channel computed on its own: its entries are sliced
    # (ConvNeXt's LayerScale: x * gamma, one gamma per channel)
    **dict.fromkeys(("PReLU", "GroupNormalization", "LayerScale"), "channelwise"),
    **dict.fromkeys(("DepthwiseConv1D", "DepthwiseConv2D"), "depthwise"),
    **dict.fromkeys(("Dense", "Conv1D", "Conv2D", "Conv3D"), "producer"),
    **dict.fromkeys(("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"), "producer"),
    **dict.fromkeys(("SeparableConv1D", "SeparableConv2D"), "separable"),
    **dict.fromkeys(["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"], "merge"),
    "Concatenate": "concat",
    "Flatten": "flatten",
    "Reshape": "reshape",
    "MultiHeadAttention": "mha",
}

# Activations that normalise over the channel axis: removing a channel changes the others.
_MIXING_ACTIVATIONS = ("softmax", "log_softmax")


class Graph:
    """Sources, their unions and every layer call, built by ``build(model)``."""

    def __init__(self, heads: bool = True) -> None:
        self.heads = heads
        self.sources: list[Source] = []
        self.parent: list[int] = []
        self.uses: dict[str, Use] = {}
        self.touched: dict[int, list[str]] = {}  # source -> member layer paths
        # every leaf call in the model's graph, shared layers once per call (for FLOPs)
        self.calls: list[tuple[str, Any, tuple[Any, Any]]] = []
        # a nested model's InputLayer path -> (its shape, the channels fed to it): its
        # batch_shape must narrow with them (``keras.Sequential`` saves an InputLayer)
        self.inner_inputs: dict[str, tuple[tuple[Any, ...], Channels]] = {}
        self.output_layers: set[str] = set()  # the layers that make the model's outputs

    # -- union-find over sources -------------------------------------------------------
    def new_source(
        self, width: int, path: str, kind: str = "channels", frozen: str | None = None
    ) -> int:
        """A new source of ``width`` channels made by the layer at ``path``; its id."""
        source = Source(len(self.sources), width, path, kind, frozen)
        self.sources.append(source)
        self.parent.append(source.id)
        self.touched[source.id] = [path] if path else []
        return source.id

    def find(self, source: int) -> int:
        while self.parent[source] != source:
            self.parent[source] = self.parent[self.parent[source]]
            source = self.parent[source]
        return source

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)

    def freeze(self, channels: Channels, reason: str) -> None:
        for segment in channels.segments:
            source = self.sources[segment.source]
            source.frozen = source.frozen or reason

    def touch(self, channels: Channels, path: str) -> None:
        for segment in channels.segments:
            members = self.touched[segment.source]
            if path not in members:
                members.append(path)

    def full(self, source: int) -> Channels:
        return Channels((Segment(source, 0, self.sources[source].width),))

    # -- groups ------------------------------------------------------------------------
    def groups(self) -> list[Group]:
        """The coupled groups, in order of their first source (deterministic)."""
        by_root: dict[int, Group] = {}
        for source in self.sources:
            root = self.find(source.id)
            group = by_root.setdefault(
                root, Group(len(by_root), source.kind, source.width, [], [], [])
            )
            group.sources.append(source.id)
            if source.path and source.path not in group.producers:
                group.producers.append(source.path)
            group.members += [m for m in self.touched[source.id] if m not in group.members]
            if source.frozen and source.frozen not in group.frozen:
                group.frozen.append(source.frozen)
        return list(by_root.values())

    def group_of(self) -> dict[int, int]:
        """source id -> group id (the index in ``groups()``)."""
        return {s: group.id for group in self.groups() for s in group.sources}


def build(model: Any, heads: bool = True) -> Graph:
    """The coupling graph of ``model``. Raises ConfigError for a subclassed model, whose
    layer graph Keras does not record (there is nothing to follow)."""
    graph = Graph(heads)
    inputs = inputs_of(model)
    channels = {
        id(t): graph.full(graph.new_source(_width(t), "", frozen="model input")) for t in inputs
    }
    outputs = _trace(graph, model, channels, prefix="")
    for channel in outputs:
        graph.freeze(channel, "model output (its width is the model's contract)")
        graph.output_layers |= {graph.sources[s.source].path for s in channel.segments}
    return graph


def inputs_of(model: Any) -> list[Any]:
    """The model's symbolic inputs; ConfigError naming the reason when it has no layer
    graph (a subclassed model)."""
    kind = type(model).__name__
    if not _has_graph(model):
        raise ConfigError(
            f"prune.granularity channel needs a Sequential or Functional model: "
            f"{model.name!r} is a subclassed model ({kind}), whose layer graph Keras does not "
            "record, so coupled channels cannot be found"
        )
    return list(model.inputs)


def _has_graph(model: Any) -> bool:
    """Whether Keras recorded ``model``'s layer graph: Sequential, Functional, and classes
    built functionally (``super().__init__(inputs, outputs)``, as keras_hub's are)."""
    try:  # a subclassed model has no inputs, or raises when asked for them
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError, TypeError):
        return False
    return bool(inputs and outputs) and all(compat.is_symbolic(t) for t in inputs + outputs)


def _width(tensor: Any) -> int:
    last = tensor.shape[-1] if len(tensor.shape) > 1 else 1
    return int(last) if last is not None else 0


def _trace(graph: Graph, model: Any, known: dict[int, Channels], prefix: str) -> list[Channels]:
    """Channels of ``model``'s outputs, ``known`` holding its inputs'; fills ``graph``.

    Iterative post-order from the outputs (ResNet50 is deeper than Python's recursion limit
    would comfortably allow)."""
    stack: list[Any] = list(model.outputs)
    while stack:
        tensor = stack[-1]
        if id(tensor) in known:
            stack.pop()
            continue
        operation, node_index, _ = compat.producer(tensor)
        waiting = [t for t in compat.node_inputs(operation, node_index) if id(t) not in known]
        if waiting:
            stack.extend(waiting)
            continue
        stack.pop()
        ins = [known[id(t)] for t in compat.node_inputs(operation, node_index)]
        outs = compat.node_outputs(operation, node_index)
        produced = _call(graph, operation, node_index, ins, outs, prefix)
        for out, channel in zip(outs, produced, strict=True):
            known[id(out)] = channel
    return [known[id(t)] for t in model.outputs]


def _call(
    graph: Graph, layer: Any, node: int, ins: list[Channels], outs: list[Any], prefix: str
) -> list[Channels]:
    """Apply ``layer``'s rule (nested models are traced inline)."""
    path = f"{prefix}{layer.name}"
    if _has_graph(layer):  # a nested model: traced inline
        tensors = inputs_of(layer)
        for tensor, channel in zip(tensors, ins, strict=True):
            entry = f"{path}/{compat.producer(tensor)[0].name}"
            graph.inner_inputs[entry] = (tuple(tensor.shape), channel)
        inner = dict(zip((id(t) for t in tensors), ins, strict=True))
        return _trace(graph, layer, inner, prefix=f"{path}/")
    shapes = (
        tuple(tuple(t.shape) for t in compat.node_inputs(layer, node)),
        tuple(tuple(t.shape) for t in outs),
    )
    kind = type(layer).__name__
    rule = _rule_of(layer, kind, shapes[0][0] if shapes[0] else ())
    graph.calls.append((path, layer, shapes))
    problem = _unsupported(layer, kind, rule, shapes[0][0] if shapes[0] else ())
    use = Use(path, layer, rule or "frozen", node, tuple(ins), shapes=shapes)
    if path in graph.uses:  # called again: both calls share one set of weights
        problem = f"{path} is called more than once (shared weights)"
        _unshare(graph, graph.uses[path], problem)
    graph.uses.setdefault(path, use)
    for channel in ins:
        graph.touch(channel, path)
    if problem is not None:
        return _frozen(graph, use, outs, problem)
    return getattr(_Rules, rule)(graph, use, outs)


def _rule_of(layer: Any, kind: str, shape: tuple[Any, ...]) -> str | None:
    """The layer's rule; a convolution with ``groups`` equal to its input and output
    channels is a depthwise one (ConvNeXt writes its 7x7 depthwise conv as
    ``Conv2D(96, groups=96)``): channel k is made from channel k alone, so it passes
    channels through like ``DepthwiseConv2D``."""
    rule = RULES.get(kind)
    if rule == "producer" and kind.startswith("Conv") and not kind.endswith("Transpose"):
        config = layer.get_config()
        groups = config.get("groups", 1)
        if groups > 1 and shape and groups == shape[-1] == config.get("filters"):
            return "depthwise"
    return rule


def _unsupported(layer: Any, kind: str, rule: str | None, shape: tuple[Any, ...]) -> str | None:
    """Why the graph cannot follow channels through this layer (None when it can);
    ``shape`` is its first input's."""
    rank = len(shape)
    if rule is None:
        return f"{kind} has no channel rule (the graph cannot follow it)"
    config = layer.get_config()
    if config.get("data_format", "channels_last") != "channels_last":
        return f"{kind} with data_format {config['data_format']}"
    if kind == "Activation" and config.get("activation") in _MIXING_ACTIVATIONS:
        return f"{kind}({config['activation']}) mixes the channels it normalises over"
    if kind == "Rescaling" and any(
        isinstance(config.get(key), list | tuple) for key in ("scale", "offset")
    ):
        return f"{kind} with per-channel scale or offset (not a width key to slice)"
    if rule == "norm" and not _last_axis(config.get("axis"), rank):
        return f"{kind} normalises over axis {config.get('axis')}, not the channel axis"
    if kind == "GroupNormalization" and not _per_channel(config, shape):
        return (
            f"{kind} with groups={config.get('groups')} normalises channels together "
            "(only groups equal to the channels, or -1, is one channel per group)"
        )
    if kind == "LayerScale" and not _layer_scale(layer, config, shape):
        return f"{kind} other than ConvNeXt's (projection_dim and one gamma per channel)"
    if rule == "producer" and config.get("groups", 1) != 1:
        return f"{kind} with groups={config['groups']} mixes channels by group"
    if rule in ("depthwise", "separable") and config.get("depth_multiplier", 1) != 1:
        return f"{kind} with depth_multiplier {config['depth_multiplier']}"
    if rule == "mha" and config.get("use_gate"):
        return f"{kind} with use_gate has no head rule yet"
    return None


def _layer_scale(layer: Any, config: dict[str, Any], shape: tuple[Any, ...]) -> bool:
    """keras.applications ConvNeXt's LayerScale (matched by name, so checked): its
    ``projection_dim`` is the channels and its one weight a gamma of that length."""
    width = shape[-1] if shape else None
    weights = [tuple(w.shape) for w in layer.weights]
    return config.get("projection_dim") == width and weights == [(width,)]


def _per_channel(config: dict[str, Any], shape: tuple[Any, ...]) -> bool:
    """GroupNormalization over the last axis with one channel per group (instance norm):
    removing a channel leaves every other channel's statistics as they were."""
    if not _last_axis(config.get("axis", -1), len(shape)):
        return False
    return config.get("groups") in (-1, shape[-1])


def _last_axis(axis: Any, rank: int) -> bool:
    axes = axis if isinstance(axis, list | tuple) else [axis]
    return len(axes) == 1 and axes[0] in (-1, rank - 1)


def _unshare(graph: Graph, first: Use, reason: str) -> None:
    """Freeze everything the first call of a shared layer touched."""
    first.rule = "frozen"
    for channel in first.inputs:
        graph.freeze(channel, reason)
    for source in (first.output, first.heads):
        if source is not None:
            graph.sources[source].frozen = graph.sources[source].frozen or reason


def _frozen(graph: Graph, use: Use, outs: list[Any], reason: str) -> list[Channels]:
    """A call the graph cannot follow: its inputs keep their width, its outputs are new
    frozen sources."""
    use.rule = "frozen"
    for channel in use.inputs:
        graph.freeze(channel, f"read by {use.path}: {reason}")
    return [
        graph.full(graph.new_source(_width(t), use.path, frozen=f"made by {use.path}: {reason}"))
        for t in outs
    ]


class _Rules:
    """One static method per rule name in ``RULES``: (graph, use, outputs) -> channels."""

    @staticmethod
    def passthrough(graph: Graph, use: Use, outs: list[Any]) -> list[Channels]:
        return [use.inputs[0]]

    norm = depthwise = channelwise = passthrough

    @staticmethod
    def producer(graph: Graph, use: Use, outs: list[Any]) -> list[Channels]:
        use.output = graph.new_source(_width(outs[0]), use.path)
        return [graph.full(use.output)]

    separable = producer

    @staticmethod
    def merge(graph: Graph, use: Use, outs: list[Any]) -> list[Channels]:
        """Element-wise merges: channel k of every input is combined with channel k of the
        others, so their sources are one group. A width-1 input broadcasts (couples none)."""
        wide = [c for c in use.inputs if c.width > 1] or list(use.inputs)
        first = wide[0]
        aligned = all(
            c.spatial == first.spatial
            and [s.width for s in c.segments] == [s.width for s in first.segments]
            and all(_whole(graph, s) for s in (*c.segments, *first.segments))
            for c in wide
        )
        if not aligned:
            split = " vs ".join("+".join(str(s.width) for s in c.segments) for c in wide)
            return _frozen(
                graph,
                use,
                outs,
                f"its inputs' channels do not line up one to one ({split} channels from "
                "different layers)",
            )
        for channel in wide[1:]:
            for mine, theirs in zip(channel.segments, first.segments, strict=True):
                graph.union(mine.source, theirs.source)
        return [first]

    @staticmethod
    def concat(graph: Graph, use: Use, outs: list[Any]) -> list[Channels]:
        rank = len(outs[0].shape)
        axis = use.layer.get_config().get("axis", -1)
        if axis not in (-1, rank - 1):
            return _Rules.merge(graph, use, outs)  # positions line up like an Add
        if any(c.spatial != 1 for c in use.inputs):
            return _frozen(graph, use, outs, "concatenates flattened tensors")
        return [Channels(tuple(s for c in use.inputs for s in c.segments))]

    @staticmethod
    def flatten(graph: Graph, use: Use, outs: list[Any]) -> list[Channels]:
        inner = use.shapes[0][0][1:-1]
        if any(d is None for d in inner):
            return _frozen(graph, use, outs, "flattens an axis of unknown size")
        channel = use.inputs[0]
        return [Channels(channel.segments, channel.spatial * math.prod(inner))]

    @staticmethod
    def reshape(graph: Graph, use: Use, outs: list[Any]) -> list[Channels]:
        """Keeping the last axis passes channels through; reshaping to one axis flattens;
        anything else mixes channel positions, so it freezes."""
        source_shape, target = use.shapes[0][0][1:], tuple(outs[0].shape[1:])
        if use.inputs[0].spatial == 1 and target[-1] == source_shape[-1] and len(target) > 1:
            return [use.inputs[0]]
        if len(target) == 1:
            return _Rules.flatten(graph, use, outs)
        return _frozen(graph, use, outs, f"reshapes {source_shape} to {target}, mixing channels")

    @staticmethod
    def mha(graph: Graph, use: Use, outs: list[Any]) -> list[Channels]:
        """Query, value and key rows are consumers; the output projection is a producer;
        the heads are their own group (removing head h drops its q/k/v columns and its
        rows of the output projection)."""
        config = use.layer.get_config()
        args, kwargs = compat.node_arguments(use.layer, use.node)
        tensors = compat.node_inputs(use.layer, use.node)
        known = dict(zip((id(t) for t in tensors), use.inputs, strict=True))
        query = kwargs.get("query", args[0] if args else None)
        value = kwargs.get("value", args[1] if len(args) > 1 else None)
        key = kwargs.get("key", args[2] if len(args) > 2 else None)
        key = value if key is None else key
        use.inputs = tuple(known[id(t)] for t in (query, value, key))
        frozen = None if graph.heads else "prune.heads is false"
        use.heads = graph.new_source(config["num_heads"], use.path, "heads", frozen)
        return _Rules.producer(graph, use, outs[:1]) + [
            graph.full(graph.new_source(_width(t), use.path, frozen="attention scores"))
            for t in outs[1:]
        ]


def _whole(graph: Graph, segment: Segment) -> bool:
    return segment.start == 0 and segment.stop == graph.sources[segment.source].width
