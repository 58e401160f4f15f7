"""``data.rescale: auto``: leave pixels alone when the model scales them itself.

keras.applications models built with their preprocessing (EfficientNet, MobileNetV3,
ConvNeXt: ``include_preprocessing=True``) begin with a ``Rescaling`` or ``Normalization``
layer that expects raw 0..255 pixels; scaling by 1/255 first would feed them near-black
images. ``auto`` gives 1 for such a model and 1/255 for any other.

Example: ``keras.applications.MobileNetV3Small(weights=None)`` begins with
``Rescaling(1/255)``: ``rescale_for(model)`` is 1.0.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from prunecli import compat
from prunecli.config import Data
from prunecli.data.inputs import InputSpec
from prunecli.data.source import Source
from prunecli.errors import DataError

_OWN_SCALING = ("Rescaling", "Normalization")
_PASSIVE = ("InputLayer", "Cast", "Reshape", "Permute", "ZeroPadding2D")


def rescale_for(model: Any) -> float:
    """1.0 when the first layer that computes anything is a Rescaling/Normalization
    (looked for through nested models), else 1/255."""
    first = _first_active(model)
    names = {cls.__name__ for cls in type(first).__mro__} if first is not None else set()
    return 1.0 if names & set(_OWN_SCALING) else 1.0 / 255.0


def _first_active(layer: Any) -> Any:
    for child in compat.sublayers(layer):
        if type(child).__name__ in _PASSIVE:
            continue
        if compat.sublayers(child) and hasattr(child, "inputs"):  # a nested model
            return _first_active(child)
        return child
    return None


def resolve(settings: Data, model: Any) -> Data:
    """``settings`` with ``rescale`` a number: ``auto`` (and an unset value) decided by the
    model, an explicit number kept."""
    if settings.rescale not in (None, "auto"):
        return settings
    # still "not set by the user" afterwards: a TFRecord list of numbers is rescaled only
    # when the user asked for it (tfrecord.py), never by an automatic choice made for images
    values = dict(settings) | {"rescale": rescale_for(model)}
    unset = settings.model_fields_set - {"rescale"}
    return type(settings).model_construct(_fields_set=unset, **values)


def explicit(settings: Data) -> float | None:
    """The number the user set ``data.rescale`` to (None for ``auto`` or unset; ``resolve``
    keeps an automatic choice out of ``model_fields_set``)."""
    chosen = "rescale" in settings.model_fields_set and settings.rescale not in (None, "auto")
    return float(settings.rescale) if chosen else None


def apply_to_arrays(
    source: Source, path: Path, settings: Data, specs: tuple[InputSpec, ...]
) -> Source:
    """An ``.npz`` or ``.csv`` source whose float inputs are multiplied by an explicitly set
    ``data.rescale`` (``auto`` leaves arrays as they are: rescale 1). Integer inputs (token
    ids) are never scaled; a rescale with no float input to apply to is refused.

    Example: ``rescale: 0.5`` on an ``.npz`` with ``x = [[2., 4.]]`` feeds ``[[1., 2.]]``
    and the report's ``data.rescale`` is 0.5.
    """
    scale = explicit(settings)
    if scale is None:
        return replace(source, rescale=1.0)
    floats = [spec for spec in specs if not spec.integer] if specs else None
    if floats == []:
        names = ", ".join(f"{spec.name!r} ({spec.dtype})" for spec in specs)
        raise DataError(
            f"{path}: data.rescale {scale:g} cannot apply: the model's input(s) {names} "
            "are integers, which are never scaled; remove data.rescale"
        )
    decode = source.decode

    def scaled(key: Any) -> Any:
        import tensorflow as tf

        def times(value: Any) -> Any:
            return value * tf.constant(scale, value.dtype) if value.dtype.is_floating else value

        return tf.nest.map_structure(times, decode(key))

    return replace(source, decode=scaled, rescale=scale)


def tfrecord_rescale(settings: Data) -> float | None:
    """The rescale a TFRecord source is read with (``tfrecord.py``): an encoded-image
    feature's pixels take ``data.rescale`` as resolved; lists of numbers only a number the
    user set, else they are taken as is (1)."""
    label = settings.label_column
    features = settings.tfrecord.features if settings.tfrecord is not None else {}
    if any(f.dtype == "string" for name, f in features.items() if name != label):
        return None if settings.rescale in (None, "auto") else float(settings.rescale)
    scale = explicit(settings)
    return 1.0 if scale is None else scale
