"""``data.rescale: auto``: leave pixels alone when the model scales them itself.

keras.applications models built with their preprocessing (EfficientNet, MobileNetV3,
ConvNeXt: ``include_preprocessing=True``) begin with a ``Rescaling`` or ``Normalization``
layer that expects raw 0..255 pixels; scaling by 1/255 first would feed them near-black
images. ``auto`` gives 1 for such a model and 1/255 for any other.

Example: ``keras.applications.MobileNetV3Small(weights=None)`` begins with
``Rescaling(1/255)``: ``rescale_for(model)`` is 1.0.
"""

from __future__ import annotations

from typing import Any

from prunecli import compat
from prunecli.config import Data

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
