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

import csv
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from prunecli.config import Data
from prunecli.errors import DataError, first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_COLOR_CHANNELS = {"grayscale": 1, "rgb": 3, "rgba": 4}
CHANNEL_MODES = {1: "grayscale", 3: "rgb", 4: "rgba"}
# Streamed sources (csv, tfrecord) cannot be read out of order: they shuffle through a
# buffer of decoded samples this long (file lists and in-memory arrays shuffle whole).
SHUFFLE_BUFFER = 4096


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class Source:
    """One split of the data: labels in memory, samples decoded on demand by ``tf.data``.

    ``_keys(rows)`` gives one cheap element per sample of ``rows`` (sorted indices into the
    whole file), in order: a file name (images), a CSV line, a serialized Example, or the
    sample itself (npz); ``_decode`` turns a key into the model's input. When keys are
    cheap to hold (``_random_access``), training shuffles the keys and decodes after, so
    a sorted class folder is shuffled whole at the cost of a list of file names.
    """

    name: str  # "train" / "validation": the cache file prefix
    y: np.ndarray
    shape: tuple[int, ...]
    classes: tuple[str, ...] = ()
    cache: bool | Path = False
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _keys: Callable[[np.ndarray], Any] | None = None
    _decode: Callable[[Any], Any] | None = None
    _random_access: bool = True

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, positions: np.ndarray, name: str) -> Source:
        """The samples at ``positions`` (sorted indices into this source), in order."""
        return replace(self, name=name, y=self.y[positions], rows=self.rows[positions])

    def dataset(
        self,
        batch_size: int,
        *,
        targets: np.ndarray | None = None,
        seed: int | None = None,
        cache: bool = True,
    ) -> Any:
        """Batches of ``(x, target)``; ``targets`` (one row per sample, default the labels)
        travel with their samples through the shuffle. ``seed`` None keeps file order
        (prediction); otherwise a seeded shuffle, new each epoch. ``cache`` False skips
        ``data.cache`` (a partly read cache is thrown away, so a few batches skip it)."""
        import tensorflow as tf

        autotune = tf.data.AUTOTUNE
        rows, targets = self.rows, self.y if targets is None else targets
        cached = cache and self.cache is not False
        if seed is not None and self._random_access and cached:
            # a cache fixes the order it was written in: shuffle the (cheap) keys once,
            # so a sorted class folder is not cached class by class
            order = np.random.default_rng(seed).permutation(len(self))
            rows, targets = rows[order], targets[order]
        labels = tf.data.Dataset.from_tensor_slices(targets)
        keys = self._keys(rows)
        if seed is not None and self._random_access and not cached:
            pairs = tf.data.Dataset.zip(keys, labels).shuffle(
                len(self), seed=seed, reshuffle_each_iteration=True
            )
            samples = pairs.map(
                lambda key, target: (self._decode(key), target), num_parallel_calls=autotune
            )
        else:
            features = keys.map(self._decode, num_parallel_calls=autotune)
            if cached:
                features = features.cache(self._cache_file(rows))
            samples = tf.data.Dataset.zip(features, labels)
            if seed is not None:
                buffer = len(self) if self.cache is True else min(len(self), SHUFFLE_BUFFER)
                samples = samples.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        # the count is known from the labels; telling tf.data lets Keras size its epochs
        samples = samples.apply(tf.data.experimental.assert_cardinality(len(self)))
        return samples.batch(batch_size).prefetch(autotune)

    def epochs(
        self,
        batch_size: int,
        *,
        seed: int,
        first: int,
        stop: int,
        skip: int = 0,
        targets: np.ndarray | None = None,
    ) -> Any:
        """Training batches of epochs ``first`` .. ``stop - 1``, back to back; ``skip`` drops
        that many batches of the first (a resume mid-epoch).

        Each epoch's order is fixed by ``(seed, epoch)`` alone, never by a shuffle's hidden
        iteration state: a resumed run, or one under a distribution strategy (which rebuilds
        the input pipeline), sees exactly the batches an uninterrupted one-device run sees.
        """
        import tensorflow as tf

        targets = self.y if targets is None else targets
        cached = self.cache is not False
        if self._random_access and not cached:  # a fresh permutation of the keys each epoch

            def epoch(number: int) -> Any:
                order = _rng(seed, number).permutation(len(self))
                return self._samples(self.rows[order], targets[order], cached=False)

        else:  # decoded (and cached) once; each epoch shuffles through a seeded buffer
            order = np.random.default_rng(seed).permutation(len(self))
            if not self._random_access:
                order = np.arange(len(self))
            base = self._samples(self.rows[order], targets[order], cached=cached)
            buffer = len(self) if self.cache is True else min(len(self), SHUFFLE_BUFFER)

            def epoch(number: int) -> Any:
                mixed = int(_rng(seed, number).integers(2**31 - 1))
                return base.shuffle(buffer, seed=mixed, reshuffle_each_iteration=False)

        parts = [
            epoch(number)
            .apply(tf.data.experimental.assert_cardinality(len(self)))
            .batch(batch_size)
            .skip(skip if number == first else 0)
            for number in range(first, stop)
        ]
        joined = parts[0]
        for part in parts[1:]:
            joined = joined.concatenate(part)
        return joined.prefetch(tf.data.AUTOTUNE)

    def _samples(self, rows: np.ndarray, targets: np.ndarray, cached: bool) -> Any:
        """Unbatched ``(x, target)`` of ``rows`` in that order, decoded in parallel."""
        import tensorflow as tf

        features = self._keys(rows).map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)
        if cached:
            features = features.cache(self._cache_file(rows))
        return tf.data.Dataset.zip(features, tf.data.Dataset.from_tensor_slices(targets))

    def _cache_file(self, rows: np.ndarray) -> str:
        """Memory ("") or ``<data.cache>/<split>-<digest of the rows, in order>``: tf.data
        reuses any complete cache of that name, so another split or order gets its own."""
        if self.cache is True:
            return ""
        folder = Path(self.cache)
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha1(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()
        return str(folder / f"{self.name}-{digest[:12]}")


def _rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of one epoch's order: a function of (seed, epoch) alone."""
    return np.random.default_rng([seed % 2**32, epoch])


@dataclass(frozen=True)
class Splits:
    train: Source | None
    validation: Source | None


def from_arrays(
    x: np.ndarray, y: np.ndarray, classes: tuple[str, ...] = (), name: str = "train"
) -> Source:
    """A source over arrays already in memory (a ``.npz``; tests and benchmarks)."""
    x = np.asarray(x, dtype=np.float32)

    def keys(rows: np.ndarray) -> Any:
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices(x[rows])

    return Source(
        name, np.asarray(y), tuple(x.shape[1:]), classes, rows=np.arange(len(y)),
        _keys=keys, _decode=_identity,
    )  # fmt: skip


def materialize(source: Source) -> tuple[np.ndarray, np.ndarray]:
    """All samples and labels as arrays, in order: only for data known to be small."""
    batches = [np.asarray(x) for x, _ in source.dataset(256, cache=False)]
    x = np.concatenate(batches) if batches else np.zeros((0, *source.shape), np.float32)
    return x, source.y


def split_dir(directory: Path) -> tuple[Path, Path | None]:
    """``--data DIR``: DIR/train and DIR/val (or DIR/validation) when present, else DIR."""
    if not directory.is_dir():
        raise DataError(f"{directory}: data folder not found")
    if (directory / "train").is_dir():
        val = next((directory / n for n in ("val", "validation") if (directory / n).is_dir()), None)
        return directory / "train", val
    return directory, None


def load(settings: Data, input_shape: tuple[int | None, ...], seed: int) -> Splits:
    """Train and validation sources for a model whose input is ``(batch, *input_shape)``.

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


def _read(path: Path, name: str, settings: Data, input_shape: tuple[int | None, ...]) -> Source:
    if settings.tfrecord is not None and not path.is_dir() and path.suffix.lower() != ".npz":
        from prunecli.data import tfrecord  # it builds on this module

        source = tfrecord.read(path, settings)
    elif path.is_dir():
        source = _read_images(path, settings, input_shape)
    elif not path.exists():
        raise DataError(f"{path}: data not found")
    elif path.suffix.lower() == ".npz":
        source = _read_npz(path)
    elif path.suffix.lower() == ".csv":
        source = _read_csv(path, settings.label_column)
    else:
        raise DataError(
            f"{path}: unsupported data; expected a folder of class sub-folders, a .npz, a .csv "
            "or TFRecord files (with data.tfrecord)"
        )
    _check_shape(path, source.shape, input_shape)
    return replace(source, name=name, cache=settings.cache)


def _identity(value: Any) -> Any:
    return value


# --- image folders -----------------------------------------------------------------------


def _read_images(root: Path, settings: Data, input_shape: tuple[int | None, ...]) -> Source:
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
    size, channels = _image_format(settings, input_shape)
    scale = 1.0 / 255.0 if settings.rescale is None else settings.rescale
    for _, path in files:
        _verify(path)
    names = np.array([str(f) for _, f in files])

    def keys(rows: np.ndarray) -> Any:
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices(names[rows])

    def decode(path: Any) -> Any:
        import tensorflow as tf

        return decode_image(tf.io.read_file(path), size, channels, scale)

    y = np.array([label for label, _ in files], dtype=np.int64)
    return Source(
        "", y, (*size, channels), tuple(classes), rows=np.arange(len(y)), _keys=keys,
        _decode=decode,
    )  # fmt: skip


def _verify(path: Path) -> None:
    """Check a file is a whole image of a known format without decoding its pixels (Pillow
    reads the header and, for PNG, every chunk's checksum): a bad file is named before
    training starts rather than failing inside ``tf.data``'s C++ mid-epoch."""
    try:
        with Image.open(path) as image:
            image.verify()
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


# --- npz ---------------------------------------------------------------------------------


def _read_npz(path: Path) -> Source:
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
        return from_arrays(x.astype(np.float32), labels_of(y))
    except DataError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(
            f"{path}: not a readable .npz of numeric arrays x and y ({first_line(exc)})"
        ) from None


# --- csv ---------------------------------------------------------------------------------


def _read_csv(path: Path, label_column: str) -> Source:
    """One streaming pass in Python checks every cell and keeps only the labels (so errors
    name the line and column); ``tf.data`` then re-reads the lines when iterated."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            header, labels = _scan_csv(path, csv.reader(handle), label_column)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read csv ({exc})") from None
    label = header.index(label_column)
    features = [i for i in range(len(header)) if i != label]
    defaults = [[0.0]] * len(features)
    filename = str(path)

    def keys(rows: np.ndarray) -> Any:
        import tensorflow as tf

        lines = tf.data.TextLineDataset(filename).skip(1)
        return pick_rows(lines, rows, len(labels))

    def decode(line: Any) -> Any:
        import tensorflow as tf

        line = tf.strings.regex_replace(line, "\r$", "")
        cells = tf.io.decode_csv(line, record_defaults=defaults, select_cols=features)
        return tf.stack(cells)

    return Source(
        "", labels_of(np.array(labels, dtype=np.float64)), (len(features),),
        rows=np.arange(len(labels)), _keys=keys, _decode=decode, _random_access=False,
    )  # fmt: skip


def _scan_csv(path: Path, reader: Any, label_column: str) -> tuple[list[str], list[float]]:
    header_row = next(reader, None)
    header = [name.strip() for name in header_row or []]
    labels: list[float] = []
    if header and label_column not in header:
        raise DataError(
            f"{path}: no label column {label_column!r} (columns: {', '.join(header)}); "
            "set data.label_column"
        )
    label = header.index(label_column) if header else 0
    for number, row in enumerate(reader, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}:{number}: expected {len(header)} cells, got {len(row)}")
        for column, cell in enumerate(row):
            try:
                value = float(cell)
            except ValueError:
                raise DataError(
                    f"{path}:{number}: column {header[column]!r} is not a number: {cell!r}"
                ) from None
            if column == label:
                labels.append(value)
    if not labels:
        raise DataError(f"{path}: expected a header row and at least one data row")
    return header, labels


def pick_rows(records: Any, rows: np.ndarray, total: int) -> Any:
    """The records at ``rows`` (sorted), in order, by enumerate + filter: streamed files
    cannot seek, so a split reads the file and keeps its own rows."""
    import tensorflow as tf

    if len(rows) == total:
        return records
    keep = np.zeros(total, dtype=bool)
    keep[rows] = True
    wanted = tf.constant(keep)
    return (
        records.enumerate()
        .filter(lambda index, _: tf.gather(wanted, index))
        .map(lambda _, record: record)
    )


# --- shared ------------------------------------------------------------------------------


def labels_of(y: np.ndarray) -> np.ndarray:
    """Whole-number labels become int64 class ids; anything else stays float (regression)."""
    y = np.asarray(y)
    if y.dtype.kind in "iub" or (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        return y.astype(np.int64)
    return y.astype(np.float32)


def _check_shape(path: Path, shape: tuple[int, ...], input_shape: tuple[int | None, ...]) -> None:
    fits = len(shape) == len(input_shape) and all(
        want is None or want == got for want, got in zip(input_shape, shape, strict=True)
    )
    if not fits:
        expected = "(" + ", ".join("any" if d is None else str(d) for d in input_shape) + ")"
        raise DataError(
            f"{path}: samples have shape {tuple(shape)} but the model expects {expected}"
        )
