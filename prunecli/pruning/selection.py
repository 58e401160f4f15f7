"""Which weights are prunable: a walk over every layer, the layer table, then a selection.

The walk descends into every layer the table does not know (nested models, keras_hub's
``TransformerEncoder`` or ``BertBackbone``, a user's ``TransformerBlock``), so a kernel is
found at any depth; the table (``layers.py``) says which weights of a known layer are
kernels. A layer with weights that is neither known nor made of known layers is reported
with its reason, never skipped silently and never a crash.

Layer paths are the layer names from the model down, ``outer/inner``; a kernel's path adds
the owning sub-layer and variable names, e.g.
``bert_backbone/transformer_layer_0/self_attention_layer/query/kernel``. Selection regexes
match either.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prunecli import compat
from prunecli.config import Prune
from prunecli.core import masking
from prunecli.core.granularity import Pattern
from prunecli.errors import ConfigError
from prunecli.pruning import layers

PRUNABLE = layers.TABLE  # the layer table (see layers.py); kept under its old name


@dataclass
class LayerInfo:
    """One layer with weights of its own (or a known layer and its parts), and what
    prunecli will do with it."""

    path: str
    type: str
    params: int
    kernels: dict[str, Any] = field(default_factory=dict)  # attr -> Keras variable
    axes: dict[str, int | None] = field(default_factory=dict)  # attr -> reduction axis
    target: float | None = None  # None: not pruned (see reason)
    reason: str | None = None
    paths: dict[str, str] = field(default_factory=dict)  # attr -> kernel path
    trainable: bool = True  # False: fine-tuning leaves it as pruned (a frozen base)

    @property
    def selected(self) -> bool:
        return self.target is not None

    def kernel_paths(self) -> list[str]:
        """Each kernel's path, e.g. ``enc/attn/query/kernel`` (``<layer>/<attr>`` when the
        walk did not name it)."""
        return [self.paths.get(attr, f"{self.path}/{attr}") for attr in self.kernels]

    def kernel_params(self) -> int:
        return sum(int(np.prod(v.shape)) for v in self.kernels.values())

    def kernel_sparsity(self) -> float | None:
        """Zeros over this layer's kernels now (None for a layer without prunable kernels)."""
        if not self.kernels:
            return None
        return masking.sparsity(np.concatenate([np.ravel(v) for v in self.kernels.values()]))


def walk(model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, layer) for every layer the table knows and every other layer that holds
    weights of its own, descending into all the rest (nested models, composite layers).

    A layer reached twice (shared) is yielded once, at its first path.
    """
    yield from _walk(model, prefix, set())


def _walk(parent: Any, prefix: str, seen: set[int]) -> Iterator[tuple[str, Any]]:
    for layer in compat.sublayers(parent):
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        path = f"{prefix}{layer.name}"
        children = compat.sublayers(layer)
        if layers.lookup(layer) is not None or not _holds_kernels(children):
            yield path, layer  # known, a leaf, or nothing known inside: one row
            continue
        if _own_weights(layer, children):
            yield path, layer
        yield from _walk(layer, f"{path}/", seen)


def _holds_kernels(children: list[Any]) -> bool:
    """Whether a known kernel sits somewhere below (else an unknown layer is one row)."""
    for child in children:
        entry = layers.lookup(child)
        if isinstance(entry, tuple) or (entry is None and _holds_kernels(compat.sublayers(child))):
            return True
    return False


def _own_weights(layer: Any, children: list[Any]) -> list[Any]:
    """The weights ``layer`` holds itself, not through a sub-layer (a ViT class token)."""
    inner = {id(w) for child in children for w in child.weights}
    return [w for w in layer.weights if id(w) not in inner]


def describe(model: Any) -> list[LayerInfo]:
    """Every layer that has weights, with its prunable kernels (nothing selected yet)."""
    infos = []
    counted: set[int] = set()  # a tied weight (shared table) counts once
    trained = {id(w) for w in getattr(model, "trainable_weights", [])}
    for path, layer in walk(model):
        describe_kernels = getattr(layer, "describe_kernels", None)
        if describe_kernels is not None:  # a layer that knows its kernels (a SavedModel's)
            infos.extend(describe_kernels(path))
            continue
        entry = layers.lookup(layer)
        children = compat.sublayers(layer) if entry is None else []
        children = children if _holds_kernels(children) else []
        weights = [w for w in _own_weights(layer, children) if id(w) not in counted]
        counted.update(id(w) for w in weights)
        if sum(int(np.prod(w.shape)) for w in weights):
            infos.append(_info(path, layer, entry, weights, trained))
    return infos


def _info(path: str, layer: Any, entry: Any, weights: list[Any], trained: set[int]) -> LayerInfo:
    """``weights``: the ones this row counts; ``trained``: ids of the variables fine-tuning
    updates (the model's trainable ones)."""
    kind = type(layer).__name__
    info = LayerInfo(path, kind, sum(int(np.prod(w.shape)) for w in weights))
    if entry is None and len(weights) == len(layer.weights):  # a leaf of an unknown class
        entry = layers.kept_by_name(layer, weights)
    if entry is None:
        info.reason = _unknown_reason(kind, weights, composite=len(weights) < len(layer.weights))
    elif isinstance(entry, layers.Kept):
        info.reason = f"{kind} has nothing to prune ({entry.reason})"
    else:
        for attr, axis in entry:
            variable = layers.attribute(layer, attr)
            if variable is not None and hasattr(variable, "shape"):
                info.kernels[attr], info.axes[attr] = variable, axis
                info.paths[attr] = layers.kernel_path(path, layer, attr)
        if not info.kernels:
            info.reason = f"{kind} holds none of its kernels"
    info.trainable = all(id(v) in trained for v in info.kernels.values())
    return info


_EVERY_SAMPLE = re.compile(r"(class|cls|distillation)_?token|position", re.IGNORECASE)


def _unknown_reason(kind: str, weights: list[Any], composite: bool) -> str:
    """Why a layer of a class the table lacks keeps ``weights``. A composite's own weights
    that are all class tokens or learned positions (a ViT's ``class_token``, DeiT's
    ``distillation_token``, ``position_embedding``) are kept by design, as
    ``PositionEmbedding`` is; anything else is not supported yet."""
    names = ", ".join(str(w.name) for w in weights)
    if composite and all(_EVERY_SAMPLE.search(str(w.name)) for w in weights):
        return (
            f"{kind}'s own weights {names} are kept: class tokens and position embeddings "
            "are used by every sample"
        )
    return f"{kind} is not supported for pruning yet" + (
        f" (its own weights {names})" if composite else ""
    )


def select(model: Any, prune: Prune) -> list[LayerInfo]:
    """Describe the model and give each matching prunable layer its target sparsity.

    Exclude wins over include; the first matching override sets a layer's own target. A
    layer whose kernels cannot take the granularity (e.g. 2:4 on 30 input channels) is
    left out with the reason. Raises ConfigError when nothing is selected, since pruning
    nothing is surely a mistake.
    """
    rules = prune.layers
    pattern = prune.pattern
    infos = describe(model)
    skipped: list[tuple[str, str]] = []
    for info in infos:
        if not info.kernels:
            continue
        names = (info.path, *info.kernel_paths())
        excluded = next((rx for rx in rules.exclude if _matches(rx, names)), None)
        if excluded is not None:
            info.reason = f"excluded by prune.layers.exclude {excluded!r}"
        elif not any(_matches(rx, names) for rx in rules.include):
            info.reason = "not matched by prune.layers.include"
        elif reason := _pattern_problem(info, pattern):
            info.reason = reason
            skipped.append((info.path, reason))
        else:
            override = next((s for rx, s in rules.overrides.items() if _matches(rx, names)), None)
            info.target = prune.sparsity if override is None else override
    if not any(info.selected for info in infos):
        prunable = [info.path for info in infos if info.kernels]
        raise ConfigError(
            "no layer selected by prune.layers include/exclude; prunable layers are: "
            + (", ".join(prunable) or "none")
            + "".join(f"; {path}: {why}" for path, why in skipped)
        )
    return infos


def _matches(regex: str, names: tuple[str, ...]) -> bool:
    """A selection regex names a layer by its path or by any of its kernels' paths."""
    return any(re.fullmatch(regex, name) for name in names)


def _pattern_problem(info: LayerInfo, pattern: Pattern) -> str | None:
    for attr, variable in info.kernels.items():
        reason = pattern.unsupported(tuple(variable.shape), info.axes[attr])
        if reason:
            return f"{attr}: {reason}"
    return None
