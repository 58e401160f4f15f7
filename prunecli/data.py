"""Dataset folders and files -> numpy arrays checked against the model.

Three inputs: a folder of class sub-folders of images (class ids in sorted folder-name
order, as Keras's ``image_dataset_from_directory`` gives them), a ``.npz`` with arrays
``x`` and ``y``, or a ``.csv`` whose ``label_column`` is the label and every other column a
numeric feature. Every problem is a ``DataError`` naming the file and what was expected.
No TensorFlow here: arrays are what ``model.fit`` and ``model.predict`` take directly.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from prunecli.config import Data
from prunecli.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_PIL_MODES = {"grayscale": "L", "rgb": "RGB", "rgba": "RGBA"}
_CHANNELS = {1: "grayscale", 3: "rgb", 4: "rgba"}


@dataclass(frozen=True)
class Arrays:
    """Features and labels; ``classes`` names the classes of an image folder."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Splits:
    train: Arrays | None
    validation: Arrays | None


def split_dir(directory: Path) -> tuple[Path, Path | None]:
    """``--data DIR``: DIR/train and DIR/val (or DIR/validation) when present, else DIR."""
    if not directory.is_dir():
        raise DataError(f"{directory}: data folder not found")
    if (directory / "train").is_dir():
        val = next((directory / n for n in ("val", "validation") if (directory / n).is_dir()), None)
        return directory / "train", val
    return directory, None


def load(settings: Data, input_shape: tuple[int | None, ...], seed: int) -> Splits:
    """Train and validation arrays for a model whose input is ``(batch, *input_shape)``.

    Without ``data.validation``, a seeded ``validation_split`` of train is held out.
    """
    train = _read(settings.train, settings, input_shape) if settings.train else None
    if settings.validation is not None:
        validation = _read(settings.validation, settings, input_shape)
        if train is not None and train.classes and validation.classes != train.classes:
            raise DataError(
                f"{settings.validation}: class folders {list(validation.classes)} differ from "
                f"those of {settings.train}: {list(train.classes)}"
            )
        return Splits(train, validation)
    if train is None or settings.validation_split == 0:
        return Splits(train, None)
    order = np.random.default_rng(seed).permutation(len(train.y))
    held = max(1, round(settings.validation_split * len(order)))
    if held >= len(order):
        raise DataError(f"{settings.train}: too few samples ({len(order)}) to hold out a split")
    keep, hold = np.sort(order[held:]), np.sort(order[:held])
    return Splits(
        Arrays(train.x[keep], train.y[keep], train.classes),
        Arrays(train.x[hold], train.y[hold], train.classes),
    )


def _read(path: Path, settings: Data, input_shape: tuple[int | None, ...]) -> Arrays:
    if path.is_dir():
        arrays = _read_images(path, settings, input_shape)
    elif not path.exists():
        raise DataError(f"{path}: data not found")
    elif path.suffix.lower() == ".npz":
        arrays = _read_npz(path)
    elif path.suffix.lower() == ".csv":
        arrays = _read_csv(path, settings.label_column)
    else:
        raise DataError(
            f"{path}: unsupported data; expected a folder of class sub-folders, a .npz or a .csv"
        )
    _check_shape(path, arrays.x, input_shape)
    return arrays


def _read_images(root: Path, settings: Data, input_shape: tuple[int | None, ...]) -> Arrays:
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
    if len(classes) < 2:
        raise DataError(f"{root}: only one class ({classes[0]}); classification needs at least 2")
    size, mode = _image_format(settings, input_shape)
    scale = 1.0 / 255.0 if settings.rescale is None else settings.rescale
    x = np.stack([_decode(f, size, mode) for _, f in files]).astype(np.float32) * np.float32(scale)
    if mode == "L":
        x = x[..., np.newaxis]
    y = np.array([label for label, _ in files], dtype=np.int64)
    return Arrays(x, y, tuple(classes))


def _image_format(
    settings: Data, input_shape: tuple[int | None, ...]
) -> tuple[tuple[int, int], str]:
    """(height, width) and Pillow mode: from the config, else from the model's input."""
    channels = input_shape[-1] if len(input_shape) == 3 else None
    size = settings.image_size or (
        tuple(input_shape[:2]) if len(input_shape) == 3 and None not in input_shape[:2] else None
    )
    if size is None:
        raise DataError(
            f"cannot infer the image size from the model's input shape {input_shape}; "
            "set data.image_size"
        )
    color = settings.color_mode or _CHANNELS.get(channels or 0)
    if color is None:
        raise DataError(
            f"cannot infer the color mode from input shape {input_shape}; set data.color_mode"
        )
    return (int(size[0]), int(size[1])), _PIL_MODES[color]


def _decode(path: Path, size: tuple[int, int], mode: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None


def _read_npz(path: Path) -> Arrays:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataError(
                    f"{path}: a single .npy array, expected an .npz with arrays x and y"
                )
            missing = [k for k in ("x", "y") if k not in archive.files]
            if missing:
                raise DataError(
                    f"{path}: missing array(s) {', '.join(missing)}; expected arrays named x and y "
                    f"(found: {', '.join(archive.files) or 'none'})"
                )
            x, y = archive["x"], archive["y"]
        if x.ndim < 1 or y.ndim < 1 or len(x) != len(y):
            raise DataError(
                f"{path}: x has {len(x) if x.ndim else 0} samples but y has "
                f"{len(y) if y.ndim else 0}"
            )
        return Arrays(x.astype(np.float32), _labels(y))
    except DataError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"{path}: not a readable .npz of numeric arrays x and y ({reason})"
        ) from None


def _read_csv(path: Path, label_column: str) -> Arrays:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read csv ({exc})") from None
    if len(rows) < 2:
        raise DataError(f"{path}: expected a header row and at least one data row")
    header = [name.strip() for name in rows[0]]
    if label_column not in header:
        raise DataError(
            f"{path}: no label column {label_column!r} (columns: {', '.join(header)}); "
            "set data.label_column"
        )
    values = np.empty((len(rows) - 1, len(header)), dtype=np.float64)
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{path}:{number}: expected {len(header)} cells, got {len(row)}")
        for column, cell in enumerate(row):
            try:
                values[number - 2, column] = float(cell)
            except ValueError:
                raise DataError(
                    f"{path}:{number}: column {header[column]!r} is not a number: {cell!r}"
                ) from None
    label = header.index(label_column)
    return Arrays(np.delete(values, label, axis=1).astype(np.float32), _labels(values[:, label]))


def _labels(y: np.ndarray) -> np.ndarray:
    """Whole-number labels become int64 class ids; anything else stays float (regression)."""
    y = np.asarray(y)
    if y.dtype.kind in "iub" or (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        return y.astype(np.int64)
    return y.astype(np.float32)


def _check_shape(path: Path, x: np.ndarray, input_shape: tuple[int | None, ...]) -> None:
    shape = x.shape[1:]
    fits = len(shape) == len(input_shape) and all(
        want is None or want == got for want, got in zip(input_shape, shape, strict=True)
    )
    if not fits:
        expected = "(" + ", ".join("any" if d is None else str(d) for d in input_shape) + ")"
        raise DataError(
            f"{path}: samples have shape {tuple(shape)} but the model expects {expected}"
        )
