"""Dataset folders and files -> streamed ``tf.data`` sources checked against the model.

Four inputs: a folder of class sub-folders of images (class ids in sorted folder-name
order, as Keras's ``image_dataset_from_directory`` gives them), a ``.npz`` with arrays
``x`` and ``y``, a ``.csv`` whose ``label_column`` is the label and every other column a
numeric feature, or TFRecord shards of ``tf.train.Example`` (a glob, with
``data.tfrecord``). Every problem is a ``DataError`` naming the file and what was expected.

Only the labels are read up front (a small numpy array: they give the task, the sample
count and validation accuracy); samples are decoded by ``tf.data`` while they are iterated
(parallel map, prefetch), so an image folder or a CSV larger than memory is never loaded
whole. TensorFlow is imported lazily: importing this module loads none.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from prunecli.config import Data
from prunecli.data import checks, images, preprocessing, tabular, tfrecord
from prunecli.data.inputs import InputSpec
from prunecli.data.source import Source, Splits, from_arrays, head, materialize, numpy_batch
from prunecli.errors import DataError

__all__ = [
    "Source",
    "Splits",
    "for_model",
    "from_arrays",
    "head",
    "load",
    "materialize",
    "numpy_batch",
    "rescale_used",
    "split_dir",
]  # fmt: skip


def split_dir(directory: Path) -> tuple[Path, Path | None]:
    """``--data DIR``: DIR/train and DIR/val (or DIR/validation) when present, else DIR;
    ``--data FILE`` (an ``.npz``, ``.csv`` or TFRecord file): the training set itself, as
    ``data.train`` would take it, with ``validation_split`` held out."""
    if directory.is_file():
        return directory, None
    if not directory.is_dir():
        if directory.exists():  # a device or FIFO: say what it is, not "not found"
            checks.require_regular(directory)
        raise DataError(f"{directory}: data folder not found")
    if (directory / "train").is_dir():
        val = next((directory / n for n in ("val", "validation") if (directory / n).is_dir()), None)
        return directory / "train", val
    return directory, None


def for_model(settings: Data, model: Any, seed: int) -> tuple[Splits, Data]:
    """The data as ``model`` reads it, the one way ``prune`` and ``analyze`` both use:
    each input fed by name in its dtype, ``data.rescale: auto`` decided by the model (a
    model with its own ``Rescaling`` gets raw pixels); with the settings so resolved."""
    from prunecli.data import inputs

    resolved = preprocessing.resolve(settings, model)
    return load(resolved, inputs.signature(model), seed), resolved


def load(settings: Data, input_shape: tuple[Any, ...], seed: int) -> Splits:
    """Train and validation sources for a model whose input is ``(batch, *input_shape)``,
    or whose inputs are ``input_shape`` when it is a signature (``inputs.InputSpec``s,
    ``inputs.signature(model)``): several inputs are fed by name, each in its dtype.

    Without ``data.validation``, a seeded ``validation_split`` of train is held out.
    """
    train = _read(settings.train, "train", settings, input_shape) if settings.train else None
    if settings.validation is not None:
        validation = _read(settings.validation, "validation", settings, input_shape)
        if train is not None and train.classes and validation.classes != train.classes:
            raise DataError(
                f"{settings.validation}: class folders {list(validation.classes)} differ from "
                f"those of {settings.train}: {list(train.classes)}"
            )
        return Splits(train, validation)
    if train is None or settings.validation_split == 0:
        return Splits(train, None)
    order = np.random.default_rng(seed).permutation(len(train))
    held = max(1, round(settings.validation_split * len(order)))
    if held >= len(order):
        raise DataError(f"{settings.train}: too few samples ({len(order)}) to hold out a split")
    keep, hold = np.sort(order[held:]), np.sort(order[:held])
    return Splits(train.subset(keep, "train"), train.subset(hold, "validation"))


def _read(path: Path, name: str, settings: Data, input_shape: tuple[Any, ...]) -> Source:
    checks.require_regular(path)  # a FIFO or /dev/zero would block or never end
    specs: tuple[InputSpec, ...] = ()
    if input_shape and isinstance(input_shape[0], InputSpec):
        specs, input_shape = input_shape, input_shape[0].shape
    if len(specs) > 1:
        return replace(_read_multi(path, settings, specs), name=name, cache=settings.cache)
    if settings.tfrecord is not None and not path.is_dir() and path.suffix.lower() != ".npz":
        source = tfrecord.read(path, settings)
        source = replace(source, rescale=preprocessing.tfrecord_rescale(settings))
    elif path.is_dir():
        source = images.read(path, settings, input_shape, training=name == "train")
    elif not path.exists():
        raise DataError(f"{path}: data not found")
    elif path.suffix.lower() == ".npz":
        source = preprocessing.apply_to_arrays(tabular.read_npz(path, specs), path, settings, specs)
    elif path.suffix.lower() == ".csv":
        source = tabular.read_csv(path, settings.label_column)
        source = preprocessing.apply_to_arrays(source, path, settings, specs)
    else:
        raise DataError(
            f"{path}: unsupported data; expected a folder of class sub-folders, a .npz, a .csv "
            "or TFRecord files (with data.tfrecord)"
        )
    _check_shape(path, source.shape, input_shape)
    return replace(source, name=name, cache=settings.cache)


def _read_multi(path: Path, settings: Data, specs: tuple[InputSpec, ...]) -> Source:
    """A multi-input model's data: an ``.npz`` with one array per input, or TFRecords
    whose features are named after the inputs."""
    if settings.tfrecord is not None and not path.is_dir() and path.suffix.lower() != ".npz":
        source = tfrecord.read(path, settings, specs)
        return replace(source, rescale=preprocessing.tfrecord_rescale(settings))
    if not path.exists():
        raise DataError(f"{path}: data not found")
    if path.suffix.lower() != ".npz":
        names = ", ".join(spec.name for spec in specs)
        raise DataError(
            f"{path}: the model has {len(specs)} inputs ({names}): give a .npz with one array "
            "per input, named after it, plus y (or TFRecord features named after them)"
        )
    return preprocessing.apply_to_arrays(tabular.read_npz(path, specs), path, settings, specs)


def _check_shape(path: Path, shape: tuple[int, ...], input_shape: tuple[int | None, ...]) -> None:
    fits = len(shape) == len(input_shape) and all(
        want is None or want == got for want, got in zip(input_shape, shape, strict=True)
    )
    if not fits:
        expected = "(" + ", ".join("any" if d is None else str(d) for d in input_shape) + ")"
        raise DataError(
            f"{path}: samples have shape {tuple(shape)} but the model expects {expected}"
        )


def rescale_used(splits: Splits, resolved: float | None) -> float | None:
    """The ``data.rescale`` the samples were read with, for the report: what the reader
    applied (an ``.npz`` or ``.csv`` under ``auto`` is taken as is: 1), else ``resolved``
    (``data.rescale`` after ``auto``: images)."""
    for source in (splits.train, splits.validation):
        if source is not None and source.rescale is not None:
            return source.rescale
    return resolved
