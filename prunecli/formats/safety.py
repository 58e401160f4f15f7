"""What a model file may hold before any loader touches it: no code, no file I/O, no bombs.

Keras 3's ``safe_mode`` guards only Keras 3's own deserializer. prunecli also reads Keras 2
files (tf_keras rebuilds every layer of a SavedModel from its own metadata node), HDF5
files it reads itself, and signature-only SavedModels whose graphs it calls. Each check
here reads the file's structure only, never its tensors, and raises ``ModelLoadError``
naming the file and the offending entry::

    model.keras: member config.json declares 6.0 GiB uncompressed (limit 64.0 MiB)
    model.h5: dataset /model_weights/dense/kernel:0 uses HDF5 external storage
    exported/: function __inference_serve_12 uses op WriteFile, which is not a pure
        compute op; refusing in safe mode (pass --no-safe-mode if you trust this file)

Checks that bound cost (zip members, HDF5 dataset sizes, JSON depth) run in every mode;
checks that refuse code or I/O (Lambda layers, graph ops) only in safe mode.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py

from prunecli.errors import ModelLoadError, PruneError

# A .keras archive's JSON members (config.json, metadata.json) are a few KB to a few MB.
JSON_MEMBER_LIMIT = 64 * 2**20
# Deflate cannot compress better than about 1032:1: a member declaring more is lying.
# Real weights compress far less; 200:1 beyond 64 MB is what a zip bomb looks like.
BOMB_RATIO = 200
BOMB_FLOOR = 64 * 2**20
# A dataset holding fewer bytes than its shape needs reads as fill values: HDF5 would
# allocate the whole shape. Allow compression up to deflate's limit, plus small tensors.
STORED_RATIO = 1100
STORED_FLOOR = 2**20
JSON_DEPTH_LIMIT = 200
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def human(size: float) -> str:
    """``human(6 * 2**30)`` -> ``'6.0 GiB'``: sizes in messages."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TiB"


def check(path: Path, fmt: str, safe_mode: bool) -> None:
    """Every check for an input of format ``fmt`` (``model_io.detect_format``'s names)."""
    if fmt == "keras":
        keras_archive(path, safe_mode)
    elif fmt == "savedmodel-keras2":
        keras2_savedmodel(path, safe_mode)
    elif fmt == "savedmodel":
        if safe_mode:
            graph_ops(path)
    else:  # the .h5 kinds
        check_h5_file(path)
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
            config = None if raw is None else parse_json(path, h5_text(path, raw, "model_config"))
        if safe_mode and config is not None:
            refuse_code(path, config)


def regular_input(path: Path, error: type[PruneError] = ModelLoadError) -> None:
    """``path`` (through symlinks) is a regular file or a folder: a FIFO blocks the first
    read, ``/dev/zero`` never ends (``zipfile.is_zipfile`` reads it until memory runs out),
    so neither is opened. Raises ``error`` (a model's input by default; data passes
    ``DataError``); ``os.stat``'s own OSError passes through."""
    mode = os.stat(path).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise error(f"{path}: not a regular file or folder (a device, FIFO or socket)")


def finite_weights(model: Any, path: Path) -> None:
    """Every weight of the loaded ``model`` is a finite number: a NaN or inf kernel (a
    diverged training run, a damaged export) prunes into garbage, ReLU hides it from the
    loss, and the saved output would carry it on. Raises ``ModelLoadError`` naming the
    first such weight, e.g. ``m.keras: weight dense/kernel holds 3 NaN/inf values``."""
    import numpy as np

    for weight in model.weights:
        values = np.asarray(weight.numpy() if hasattr(weight, "numpy") else weight)
        if values.dtype.kind not in "fc" and "float" in values.dtype.name:
            values = values.astype(np.float32)  # bfloat16 / float8 (ml_dtypes): kind 'V'
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            bad = int(values.size - np.isfinite(values).sum())
            name = getattr(weight, "path", None) or weight.name
            raise ModelLoadError(
                f"{path}: weight {name} holds {bad:,} NaN/inf values; prunecli prunes only "
                "models whose weights are all finite (retrain or re-export it)"
            )


def check_zip(
    path: Path, archive: zipfile.ZipFile, error: type[PruneError] = ModelLoadError
) -> None:
    """Every member readable by plain zipfile and of a believable size, before reading one
    (raises ``error``: a ``.npz`` is data, a ``.keras`` a model).

    zipfile trusts a member's declared size (it stops decompressing there), so checking the
    declared sizes bounds what reading the archive can cost.
    """
    for info in archive.infolist():
        where = f"{path}: member {info.filename}"
        if _escapes(info.filename):
            raise error(f"{where} names a place outside the archive (.. or an absolute path)")
        if info.flag_bits & 0x1:
            raise error(f"{where} is encrypted; prunecli reads only plain archives")
        if info.compress_type not in _ZIP_METHODS:
            raise error(
                f"{where} uses zip compression method {info.compress_type}; "
                "expected stored or deflated (as Keras writes)"
            )
        if info.filename.endswith(".json") and info.file_size > JSON_MEMBER_LIMIT:
            raise error(
                f"{where} declares {human(info.file_size)} uncompressed "
                f"(limit {human(JSON_MEMBER_LIMIT)}): not a Keras config"
            )
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size > BOMB_FLOOR and ratio > BOMB_RATIO:
            raise error(
                f"{where} expands {ratio:.0f}:1 to {human(info.file_size)}: a zip bomb, refusing"
            )


def _escapes(name: str) -> bool:
    """A member name that extracting would write outside the target folder:
    ``../x``, ``a/../../x``, ``/etc/x``, ``C:/x`` (zip names use ``/``; ``\\`` too on
    Windows). Keras and numpy never write one."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":")


def keras_archive(path: Path, safe_mode: bool) -> dict[str, Any]:
    """Check a ``.keras`` zip (members, config JSON, weights file) and return its config."""
    try:
        with zipfile.ZipFile(path) as archive:
            check_zip(path, archive)
            config = parse_json(path, archive.read("config.json"))
            if "model.weights.h5" in archive.namelist():
                member = _member(path, archive, "model.weights.h5")
                with member as raw, h5py.File(raw, "r") as handle:
                    check_h5(path, handle)
    except ModelLoadError:
        raise
    except (KeyError, OSError, ValueError, zipfile.BadZipFile, RuntimeError) as exc:
        raise ModelLoadError(f"{path}: damaged or not a Keras model file ({_first(exc)})") from None
    if safe_mode:
        refuse_code(path, config)
    return config


@contextlib.contextmanager
def _member(path: Path, archive: zipfile.ZipFile, name: str) -> Iterator[Any]:
    """A seekable file object over one member. A stored member is read in place (zipfile's
    own reader rewinds to the member's start on every backward seek, and HDF5 seeks a lot:
    0.83 s instead of 0.013 s to scan a 48 MB weights file); a deflated one through zipfile."""
    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        with archive.open(info) as member:
            yield member
        return
    with path.open("rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
        if local[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"bad local header for {name}")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_length + extra_length
        yield _Window(handle, start, info.file_size)


class _Window(io.RawIOBase):
    """Bytes ``start`` .. ``start + size`` of an open file, as a file of their own."""

    def __init__(self, handle: Any, start: int, size: int) -> None:
        super().__init__()
        self._handle, self._start, self._size, self._pos = handle, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        count = max(0, min(len(buffer), self._size - self._pos))
        self._handle.seek(self._start + self._pos)
        data = self._handle.read(count)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def parse_json(path: Path, raw: bytes | str, what: str = "config") -> Any:
    """JSON of bounded nesting: a config nested 100k deep is an error, not a RecursionError."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    depth = _max_depth(text)
    if depth > JSON_DEPTH_LIMIT:
        raise ModelLoadError(
            f"{path}: {what} JSON is nested {depth} levels deep (limit {JSON_DEPTH_LIMIT})"
        )
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ModelLoadError(f"{path}: {what} is not valid JSON ({_first(exc)})") from None


def _max_depth(text: str) -> int:
    """The deepest ``[``/``{`` nesting, ignoring brackets inside strings (one linear pass)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def h5_text(path: Path, value: Any, what: str) -> str:
    """An HDF5 string attribute (``model_config``), refusing anything that is not text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    raise ModelLoadError(
        f"{path}: attribute {what} is {type(value).__name__}, expected a JSON string"
    )


def check_h5_file(path: Path) -> None:
    """``check_h5`` on a whole ``.h5`` file."""
    try:
        with h5py.File(path, "r") as handle:
            check_h5(path, handle)
    except ModelLoadError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{path}: damaged HDF5 file ({_first(exc)})") from None


def check_h5(path: Path, handle: h5py.File) -> None:
    """No external links, external storage or virtual datasets (each reads another file),
    and no dataset declaring more bytes than it stores (it would allocate the difference)."""
    for name, link, item in _walk(handle):
        where = f"{path}: {name}"
        if isinstance(link, h5py.ExternalLink):
            raise ModelLoadError(f"{where} is an HDF5 external link to {link.filename}; refusing")
        if not isinstance(item, h5py.Dataset):
            continue
        if item.is_virtual:
            raise ModelLoadError(f"{where} is an HDF5 virtual dataset (reads other files)")
        if item.id.get_create_plist().get_external_count() > 0:
            raise ModelLoadError(f"{where} uses HDF5 external storage (reads another file)")
        declared = item.size * item.dtype.itemsize
        stored = item.id.get_storage_size()
        if declared > STORED_FLOOR and declared > STORED_RATIO * stored:
            raise ModelLoadError(
                f"{where} declares shape {item.shape} ({human(declared)}) but stores "
                f"{human(stored)}; refusing to allocate it"
            )


def _walk(group: h5py.Group, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, link, object) of every entry, links inspected before they are followed;
    soft links are not followed (their target is walked where it lives)."""
    pending = [(prefix, group)]
    while pending:
        base, current = pending.pop()
        for key in current:
            name = f"{base}/{key}"
            link = current.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink | h5py.SoftLink):
                yield name, link, None
                continue
            item = current[key]
            yield name, link, item
            if isinstance(item, h5py.Group):
                pending.append((name, item))


def refuse_code(path: Path, config: Any) -> None:
    """Refuse a config with a ``Lambda`` layer (or a serialized Python function) anywhere."""
    found = _code_entry(config)
    if found is not None:
        raise ModelLoadError(
            f"{path}: contains a {found}, whose code would run on load; refusing in safe "
            "mode. If you trust this file, pass --no-safe-mode"
        )


def _code_entry(config: Any) -> str | None:
    """What holds code (``Lambda layer``, ``serialized Python function``) or None;
    iterative, so a deep config cannot overflow the stack."""
    pending = [config]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if node.get("class_name") in ("Lambda", "__lambda__"):
                return "Lambda layer"
            if node.get("function_type") == "lambda" or "__lambda__" in node:
                return "serialized Python function"
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return None


def keras2_savedmodel(folder: Path, safe_mode: bool) -> None:
    """Every node of ``keras_metadata.pb`` checked, not only the root: tf_keras rebuilds each
    layer from its own node, so a Lambda renamed in the root config still runs."""
    from tf_keras.protobuf import saved_metadata_pb2

    metadata = saved_metadata_pb2.SavedMetadata()
    try:
        metadata.ParseFromString((folder / "keras_metadata.pb").read_bytes())
    except Exception as exc:  # protobuf's DecodeError, or an unreadable file
        raise ModelLoadError(f"{folder}: keras_metadata.pb is damaged ({_first(exc)})") from None
    for node in metadata.nodes:
        config = parse_json(folder, node.metadata, f"keras_metadata.pb node {node.node_path}")
        if safe_mode:
            refuse_code(folder, config)
    if safe_mode:
        graph_ops(folder)


def _first(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def graph_ops(folder: Path) -> None:
    """Refuse a SavedModel whose functions use an op outside ``graphops.PURE``.

    Read from ``saved_model.pb`` before anything is loaded or called. The functions that
    ``saver_def`` points at (TensorFlow's own checkpoint save/restore, never called by a
    load or a signature call) may also use the checkpoint ops.
    """
    from prunecli.formats import graphops

    proto = graphops.read_proto(folder)
    for graph in proto.meta_graphs:
        bad = graphops.first_unsafe(graph)
        if bad is not None:
            where, ops = bad
            raise ModelLoadError(
                f"{folder}: {where} uses op {', '.join(ops)}, not pure compute ops (they may "
                "run code or read and write files); refusing in safe mode. If you trust this "
                "model, pass --no-safe-mode"
            )


__all__ = [
    "check",
    "check_h5",
    "check_h5_file",
    "check_zip",
    "graph_ops",
    "h5_text",
    "keras2_savedmodel",
    "keras_archive",
    "parse_json",
    "refuse_code",
]
