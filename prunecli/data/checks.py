"""Checks that keep broken or hostile data out of a run, each a ``DataError`` naming the
file: non-finite values, paths that are not regular files (a FIFO blocks, ``/dev/zero``
never ends), ``.npz`` headers that declare more than the file holds, images beyond a
pixel budget or with damaged compressed data, and CSV cells that Python's ``float``
accepts but TensorFlow's CSV decoder does not (``1_000``, ``٣``, ``nan``).

Nothing here imports TensorFlow; every check reads headers or streams, never decoding a
whole file into memory.
"""

from __future__ import annotations

import glob
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from prunecli.config import MAX_PIXELS, quote
from prunecli.errors import DataError
from prunecli.formats import safety

# One image may hold at most MAX_PIXELS (a 8192 x 8192 photo; config.py bounds
# data.image_size by it too): a PNG of a few KB can declare 100,000 x 100,000 pixels,
# which tf.io.decode_image would allocate (40 GB).
# The syntax TensorFlow's CSV decoder reads as a finite float: ASCII digits only, no "_",
# no nan/inf (Python's float() takes all of those).
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", re.ASCII)
_MAX_CELL = 64  # characters in one numeric cell; more is not a number


def require_regular(path: Path) -> None:
    """``path`` (through symlinks) is a regular file or a folder; for a glob
    (``shards/*.tfrecord``), every file it matches."""
    if glob.has_magic(str(path)):
        for match in glob.glob(str(path)):
            require_regular(Path(match))
        return
    try:
        safety.regular_input(path, DataError)
    except FileNotFoundError:
        raise DataError(f"{path}: data not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read data ({exc.strerror})") from None


def finite(path: Path, values: np.ndarray, what: str) -> None:
    """No NaN or inf in ``values`` (array ``what`` of ``path``): they would train NaN into
    every weight, and prunecli would save it."""
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        bad = np.argwhere(~np.isfinite(values))[0]
        value = values[tuple(bad)]
        raise DataError(
            f"{path}: {what} holds {value} at index {tuple(int(i) for i in bad)}; "
            "every value must be a finite number"
        )


def cell_value(cell: str) -> float:
    """A CSV cell as a finite float in the syntax TensorFlow reads (ValueError otherwise)."""
    if len(cell) > _MAX_CELL or not _NUMBER.fullmatch(cell):
        raise ValueError(cell)
    return float(cell)


def cell_error(path: Path, line: int, column: str, cell: str) -> DataError:
    return DataError(f"{path}:{line}: column {column!r} is not a number: {quote(repr(cell))}")


def npz(path: Path) -> None:
    """Before ``np.load``: not empty, every zip member plain and believable, every array's
    header within the bytes its member stores (a 1 KB file can declare 10**18 floats)."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file, expected an .npz with arrays x and y")
    if not zipfile.is_zipfile(path):
        with path.open("rb") as handle:
            if handle.read(6) != b"\x93NUMPY":  # np.load would call it "pickled data"
                raise DataError(
                    f"{path}: not a readable .npz (not a zip archive; numpy.savez writes "
                    "a zip of .npy arrays x and y)"
                )
        return  # a lone .npy: np.load names it
    try:
        with zipfile.ZipFile(path) as archive:
            safety.check_zip(path, archive, DataError)
            for info in archive.infolist():
                if info.filename.endswith(".npy"):
                    with archive.open(info) as member:
                        _npy_header(path, info, member)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{path}: damaged .npz ({exc})") from None


def _npy_header(path: Path, info: zipfile.ZipInfo, member: object) -> None:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(member)
        reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = reader(member)
    except (ValueError, OSError, struct.error) as exc:
        raise DataError(f"{path}: array {info.filename} has a damaged header ({exc})") from None
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > info.file_size:
        raise DataError(
            f"{path}: array {info.filename} declares shape {shape} ({safety.human(declared)}) "
            f"but stores {safety.human(info.file_size)}"
        )


def image(path: Path, size: tuple[int, int], fmt: str | None) -> None:
    """An image of at most ``MAX_PIXELS``; a PNG's compressed pixel data decompresses
    (its chunk checksums can be right while the zlib stream inside is broken)."""
    width, height = size
    if width * height > MAX_PIXELS:
        raise DataError(
            f"{path}: image of {width} x {height} pixels, more than the limit of "
            f"{MAX_PIXELS:,} (a decompression bomb, or resize it first)"
        )
    if fmt == "PNG":
        _png_stream(path)


def _png_stream(path: Path) -> None:
    """Decompress every IDAT chunk's data in bounded pieces, keeping nothing."""
    inflate = zlib.decompressobj()
    try:
        with path.open("rb") as handle:
            handle.read(8)  # the signature Pillow already checked
            while header := handle.read(8):
                length, kind = struct.unpack(">I4s", header)
                data = handle.read(length)
                handle.read(4)  # CRC, already verified by Pillow
                if kind == b"IDAT":
                    while data:
                        inflate.decompress(data, 2**20)
                        data = inflate.unconsumed_tail
                if kind == b"IEND":
                    break
    except (zlib.error, struct.error) as exc:
        raise DataError(f"{path}: cannot decode image (damaged PNG pixel data: {exc})") from None
    if not inflate.eof:
        raise DataError(f"{path}: cannot decode image (PNG pixel data is truncated)")
