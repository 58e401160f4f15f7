"""A model's input signature, and data arrays checked against it one input at a time.

A multi-input (or dict-input) model, such as keras_hub's ``BertClassifier`` with its
``token_ids``, ``segment_ids`` and ``padding_mask``, is fed a dict keyed by input name;
each input keeps its own dtype (int32 token ids stay integers). A single-input model keeps
its one array (``x`` in an ``.npz``). Every mismatch is one ``DataError`` naming the input,
what it expects and what was found, e.g.::

    data.npz: input 'token_ids' expects int32 of shape (any, 8), found float64 of shape (90, 9)

TensorFlow is not imported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prunecli.errors import DataError, ModelLoadError


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, its shape without the batch axis (None: any) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    @property
    def integer(self) -> bool:
        return np.dtype(self.dtype).kind in "iub"

    def describe(self) -> str:
        dims = ", ".join("any" if d is None else str(d) for d in (None, *self.shape))
        return f"{self.dtype} of shape ({dims})"


def signature(model: Any, path: Path | None = None) -> tuple[InputSpec, ...]:
    """The model's inputs in order (``model.inputs``; a model without symbolic inputs, such
    as a SavedModel's signature layer or a subclassed model built on one batch, gives one
    float32 input of ``input_shape`` or of its build config's). A model that never saw an
    input (a ``Sequential`` saved without ``Input``, unbuilt) has nothing to prune and no
    shape to feed: a ModelLoadError saying so (naming ``path`` when given)."""
    tensors = getattr(model, "inputs", None) or []
    if tensors:
        return tuple(
            InputSpec(_name(tensor, i), tuple(tensor.shape[1:]), _dtype(tensor))
            for i, tensor in enumerate(tensors)
        )
    shape = _declared_shape(model)
    if shape is None:
        where = f"{path}: " if path else ""
        raise ModelLoadError(
            f"{where}model {getattr(model, 'name', '')!r} has no input shape: it was saved "
            "before it was built (a Sequential without keras.Input), so it holds no weights "
            "to prune; "
            "build it (keras.Input(shape) first, or call it on a batch) and save it again"
        )
    return (InputSpec("x", shape[1:], "float32"),)


def _declared_shape(model: Any) -> tuple[int | None, ...] | None:
    """``model.input_shape``, else the one input shape its build config records (a
    subclassed model built by calling it: ``{"input_shape": [1, 6]}``), else None."""
    try:
        return tuple(model.input_shape)
    except (AttributeError, ValueError):
        pass
    build = model.get_build_config() if hasattr(model, "get_build_config") else None
    shape = (build or {}).get("input_shape")
    if isinstance(shape, list | tuple) and all(d is None or isinstance(d, int) for d in shape):
        return tuple(shape)
    return None


def _name(tensor: Any, index: int) -> str:
    name = str(getattr(tensor, "name", "") or f"input_{index}")
    return name.split(":")[0]


def _dtype(tensor: Any) -> str:
    dtype = getattr(tensor, "dtype", "float32")
    return str(getattr(dtype, "name", dtype))


def conform(path: Path, spec: InputSpec, values: np.ndarray) -> np.ndarray:
    """``values`` (all samples of one input) checked against ``spec`` and cast to its
    dtype: integers may feed a float input (pixels), floats never an integer one."""
    values = np.asarray(values)
    fits = values.ndim == len(spec.shape) + 1 and all(
        want is None or want == got for want, got in zip(spec.shape, values.shape[1:], strict=False)
    )
    if values.dtype.kind not in "iubf" or (spec.integer and values.dtype.kind == "f") or not fits:
        raise DataError(
            f"{path}: input {spec.name!r} expects {spec.describe()}, found "
            f"{values.dtype} of shape {values.shape}"
        )
    return values.astype(spec.dtype, copy=False)


def arrays_for(path: Path, archive: Any, specs: tuple[InputSpec, ...]) -> dict[str, np.ndarray]:
    """One array per input from an ``.npz`` (``archive``: its open NpzFile), by name."""
    missing = [spec for spec in specs if spec.name not in archive.files]
    if missing:
        wanted = ", ".join(f"{s.name} ({s.describe()})" for s in missing)
        raise DataError(
            f"{path}: no array for model input(s) {wanted}; a multi-input model needs one "
            f"array per input, named after it, plus y (found: {', '.join(archive.files)})"
        )
    return {spec.name: conform(path, spec, archive[spec.name]) for spec in specs}
