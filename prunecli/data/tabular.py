"""Tabular files -> a ``Source``: ``.npz`` (arrays ``x`` and ``y``, in memory) and
``.csv`` (``label_column`` is the label, every other column a numeric feature; streamed)."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from prunecli.data import checks, inputs
from prunecli.data.inputs import InputSpec
from prunecli.data.source import Source, from_arrays, labels_of, pick_rows
from prunecli.errors import DataError, first_line


def read_npz(path: Path, specs: tuple[InputSpec, ...] = ()) -> Source:
    """Arrays ``x`` and ``y``; for a model with several inputs (``specs``), one array per
    input named after it, plus ``y``. A single input's array keeps an integer dtype when
    the model's input has one (token ids), else it is float32. Header sizes and finite
    values are checked before anything is trusted (``checks``)."""
    checks.npz(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataError(
                    f"{path}: a single .npy array, expected an .npz with arrays x and y"
                )
            if len(specs) > 1:
                return _multi_input(path, archive, specs)
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
        checks.finite(path, x, "x")
        checks.finite(path, y, "y")
        if len(specs) == 1 and specs[0].integer:
            return from_arrays(
                inputs.conform(path, specs[0], x), labels_of(y), dtype=specs[0].dtype
            )
        return from_arrays(x.astype(np.float32), labels_of(y))
    except DataError:
        raise
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{path}: not a readable .npz of numeric arrays x and y ({first_line(exc)})"
        ) from None


def _multi_input(path: Path, archive: Any, specs: tuple[InputSpec, ...]) -> Source:
    if "y" not in archive.files:
        raise DataError(f"{path}: missing array y (the labels; found: {', '.join(archive.files)})")
    arrays, y = inputs.arrays_for(path, archive, specs), archive["y"]
    for name, values in arrays.items():
        if len(values) != len(y):
            raise DataError(f"{path}: input {name!r} has {len(values)} samples but y has {len(y)}")
    return from_arrays(arrays, labels_of(y))


def read_csv(path: Path, label_column: str) -> Source:
    """One streaming pass in Python checks every cell and keeps only the labels (so errors
    name the line and column); ``tf.data`` then re-reads the lines when iterated."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header, labels = _scan_csv(path, reader, label_column)
    except csv.Error as exc:  # a field over csv's limit (128 KiB), a stray NUL byte
        raise DataError(f"{path}:{reader.line_num}: cannot read csv ({first_line(exc)})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read csv ({first_line(exc)})") from None
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
        rows=np.arange(len(labels)), keys=keys, decode=decode, random_access=False,
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
        if reader.line_num != number:  # TensorFlow reads one sample per line
            raise DataError(f"{path}:{number}: a quoted cell holds a line break")
        for column, cell in enumerate(row):
            try:
                value = checks.cell_value(cell)
            except ValueError:
                raise checks.cell_error(path, number, header[column], cell) from None
            if column == label:
                labels.append(value)
    if not labels:
        raise DataError(f"{path}: expected a header row and at least one data row")
    return header, labels
