"""Folders of class sub-folders of images -> a ``Source`` of decoded, rescaled pixels.

Class ids follow sorted folder names, as Keras's ``image_dataset_from_directory`` gives
them; the image size and colour mode come from the model's input unless the config says.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from prunecli.config import Data
from prunecli.data import checks
from prunecli.data.source import Source
from prunecli.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

_COLOR_CHANNELS = {"grayscale": 1, "rgb": 3, "rgba": 4}

CHANNEL_MODES = {1: "grayscale", 3: "rgb", 4: "rgba"}


def _no_empty_class(root: Path, classes: list[str], labelled: set[int]) -> None:
    """A class folder with no images still counts as a class (label ids shift, the class
    count no longer matches the model): name it instead of a count mismatch."""
    empty = [name for label, name in enumerate(classes) if label not in labelled]
    if empty:
        raise DataError(
            f"{root / empty[0]}: class folder holds no "
            f"{'/'.join(s.lstrip('.') for s in IMAGE_SUFFIXES)} images; add some or remove it"
        )


def read(
    root: Path, settings: Data, input_shape: tuple[int | None, ...], training: bool = True
) -> Source:
    """``root/<class>/*.png`` as a source, class ids in sorted folder order. Only the
    training set must hold every class: a rare class may have no validation images (its
    empty folder keeps the ids in line with train's)."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [
        (label, f)
        for label, name in enumerate(classes)
        for f in sorted((root / name).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DataError(
            f"{root}: no images found; expected class sub-folders of "
            f"{'/'.join(s.lstrip('.') for s in IMAGE_SUFFIXES)} files"
        )
    if training:
        _no_empty_class(root, classes, {label for label, _ in files})
    if len(classes) < 2:
        raise DataError(f"{root}: only one class ({classes[0]}); classification needs at least 2")
    size, channels = _image_format(settings, input_shape)
    scale = 1.0 / 255.0 if settings.rescale in (None, "auto") else settings.rescale
    for _, path in files:
        verify(path)
    names = np.array([str(f) for _, f in files])

    def keys(rows: np.ndarray) -> Any:
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices(names[rows])

    def decode(path: Any) -> Any:
        import tensorflow as tf

        return decode_image(tf.io.read_file(path), size, channels, scale)

    y = np.array([label for label, _ in files], dtype=np.int64)
    return Source(
        "", y, (*size, channels), tuple(classes), rows=np.arange(len(y)), keys=keys,
        decode=decode,
    )  # fmt: skip


def verify(path: Path) -> None:
    """Check a file is a whole image of a known format without decoding its pixels (Pillow
    reads the header and, for PNG, every chunk's checksum): a bad file is named before
    training starts rather than failing inside ``tf.data``'s C++ mid-epoch."""
    checks.require_regular(path)
    try:
        with warnings.catch_warnings():  # the pixel budget below says it in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                checks.image(path, image.size, image.format)
                image.verify()
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None


def _image_format(
    settings: Data, input_shape: tuple[int | None, ...]
) -> tuple[tuple[int, int], int]:
    """(height, width) and channel count: from the config, else from the model's input."""
    channels = input_shape[-1] if len(input_shape) == 3 else None
    size = settings.image_size or (
        tuple(input_shape[:2]) if len(input_shape) == 3 and None not in input_shape[:2] else None
    )
    if size is None:
        raise DataError(
            f"cannot infer the image size from the model's input shape {input_shape}; "
            "set data.image_size"
        )
    color = settings.color_mode or CHANNEL_MODES.get(channels or 0)
    if color is None:
        raise DataError(
            f"cannot infer the color mode from input shape {input_shape}; set data.color_mode"
        )
    return (int(size[0]), int(size[1])), _COLOR_CHANNELS[color]


def decode_image(raw: Any, size: tuple[int, int], channels: int, scale: float) -> Any:
    """Encoded PNG/JPEG/BMP/GIF bytes -> float32 ``(height, width, channels)`` * ``scale``.

    Decoded at the file's own channel count and converted here, as Pillow's ``convert``
    did: not every TF decoder converts (GIF only gives RGB, JPEG has no alpha). Resized
    bilinearly with antialiasing (Pillow's BILINEAR when shrinking) only when the size
    differs, so an image already at size keeps its exact pixel values.
    """
    import tensorflow as tf

    image = tf.cond(
        tf.io.is_jpeg(raw),
        # libjpeg's accurate integer IDCT: the pixels Pillow gives (the default differs by
        # up to 4 levels)
        lambda: tf.io.decode_jpeg(raw, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(raw, channels=0, expand_animations=False),
    )
    image = _convert(tf.cast(image, tf.float32), channels)
    image = tf.cond(
        tf.reduce_all(tf.shape(image)[:2] == size),
        lambda: image,
        lambda: tf.image.resize(image, size, method="bilinear", antialias=True),
    )
    image = tf.ensure_shape(image, (*size, channels))
    return image * tf.constant(scale, tf.float32)


def _convert(image: Any, channels: int) -> Any:
    """Gray / gray+alpha / RGB / RGBA -> ``channels`` (1, 3 or 4); alpha is opaque if new."""
    import tensorflow as tf

    found = tf.shape(image)[-1]
    has_alpha = tf.equal(found % 2, 0)
    color = tf.cond(has_alpha, lambda: image[..., :-1], lambda: image)
    alpha = tf.cond(
        has_alpha, lambda: image[..., -1:], lambda: tf.fill(tf.shape(image[..., :1]), 255.0)
    )
    gray = tf.shape(color)[-1] == 1
    if channels == 1:
        # ITU-R 601-2 luma, rounded to whole levels as Pillow's "L" conversion gives them
        return tf.cond(gray, lambda: color, lambda: tf.round(tf.image.rgb_to_grayscale(color)))
    rgb = tf.cond(gray, lambda: tf.tile(color, [1, 1, 3]), lambda: color)
    return rgb if channels == 3 else tf.concat([rgb, alpha], axis=-1)
