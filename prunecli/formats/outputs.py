"""What kind of file sits at an output path, so ``--force`` replaces only its own kind.

``--force`` means "replace my previous output", never "replace whatever is there": a
config whose ``output.report`` points at the training data, or a typo in ``-o``, must not
destroy a file prunecli did not write. Each kind is recognised by content, cheaply (a few
bytes, or a small JSON file), not by name::

    model.keras   a zip archive holding config.json         (kind "keras")
    model.h5      an HDF5 file Keras wrote (model_config)  (kind "h5")
    model.tflite  a FlatBuffer with identifier TFL3         (kind "tflite")
    model/        a folder holding saved_model.pb           (kind "savedmodel")
    x.report.json a JSON object with prunecli_version       (kind "report")
    x.report.md   Markdown starting "# prunecli report"     (kind "markdown")
    x.report.png  a PNG tagged Software: prunecli           (kind "png", the report's plots)
    x.html        HTML with <meta name="generator" content="prunecli">   (kind "html")
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from prunecli.errors import OutputError

_MODEL_SUFFIXES = {".keras": "keras", ".h5": "h5", ".hdf5": "h5", ".tflite": "tflite"}
_REPORT_LIMIT = 64 * 2**20
_WHAT = {
    "keras": "a Keras archive",
    "h5": "an HDF5 model",
    "tflite": "a TFLite model",
    "savedmodel": "a SavedModel folder",
    "report": "a prunecli JSON report",
    "markdown": "a prunecli Markdown report",
    "png": "a prunecli plot",
    "html": "a prunecli HTML page",
}
_OWN_MARK = {"png": b"Software\x00prunecli", "html": b'<meta name="generator" content="prunecli">'}


def kind_of(path: Path, folder: bool = False) -> str:
    """The kind written at ``path``: a folder is a SavedModel, ``.md`` a Markdown report,
    a model suffix its model kind, anything else a JSON report."""
    if folder:
        return "savedmodel"
    if path.suffix.lower() == ".md":
        return "markdown"
    if path.suffix.lower() in (".png", ".html"):
        return path.suffix.lower()[1:]
    return _MODEL_SUFFIXES.get(path.suffix.lower(), "report")


def is_kind(path: Path, kind: str) -> bool:
    """Whether the existing ``path`` holds a file (or folder) of ``kind``."""
    try:
        if kind == "savedmodel":
            return path.is_dir() and (path / "saved_model.pb").is_file()
        if not path.is_file():
            return False
        if kind == "keras":
            if not zipfile.is_zipfile(path):
                return False
            with zipfile.ZipFile(path) as archive:
                return "config.json" in archive.namelist()
        with path.open("rb") as handle:
            head = handle.read(64)
        if kind == "h5":
            return head.startswith(b"\x89HDF\r\n\x1a\n") and _is_keras_h5(path)
        if kind == "tflite":
            return head[4:8] == b"TFL3"
        if kind == "markdown":
            return head.startswith(b"# prunecli report")
        if kind in _OWN_MARK:
            with path.open("rb") as handle:
                return _OWN_MARK[kind] in handle.read(4096)
        return _is_report(path)
    except (OSError, zipfile.BadZipFile):
        return False


def require_kind(path: Path, kind: str) -> None:
    """Refuse to replace ``path`` unless it holds ``kind`` (raises OutputError)."""
    if not is_kind(path, kind):
        raise OutputError(
            f"{path}: exists and is not {_WHAT[kind]}; --force replaces only prunecli's own "
            "kind of output there, so move it away or choose another path"
        )


def _is_keras_h5(path: Path) -> bool:
    """An HDF5 file Keras wrote: a whole model (``model_config``) or its weights."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return "model_config" in handle.attrs or "model_weights" in handle
    except OSError:
        return False


def _is_report(path: Path) -> bool:
    if path.stat().st_size > _REPORT_LIMIT:
        return False
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(found, dict) and "prunecli_version" in found and "schema_version" in found
