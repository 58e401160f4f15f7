"""Load and save Keras models: ``.keras`` (zip), ``.h5`` (HDF5, Keras 3, Keras 2 or
tfmot-wrapped) and tf.keras SavedModel folders (with ``keras_metadata.pb``).

Loading is safe by default: before Keras deserializes anything, the stored config is read
and a ``Lambda`` layer (arbitrary Python code) is refused unless the user passes
``--no-safe-mode``; Keras's own ``safe_mode`` stays on as well. Saving strips what
fine-tuning added (optimizer state), so the size on disk compares like with like.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import h5py

from prunecli.errors import ModelLoadError, first_line
from prunecli.formats import compiling, legacy, savedmodel, signatures

FORMATS = {".keras": "keras", ".h5": "h5", ".hdf5": "h5"}

# What prunecli can do with an input: every Keras model supports everything. An input kind
# that is not a Keras model (a signature-only SavedModel) lists less here.
FULL_SUPPORT = ("unstructured", "structured", "layer_selection", "finetune")
SUPPORTS: dict[str, tuple[str, ...]] = dict.fromkeys(
    ("keras", "h5", "h5-keras2", "h5-tfmot", "savedmodel-keras2"), FULL_SUPPORT
) | {savedmodel.FORMAT: savedmodel.SUPPORTS}


def supports(fmt: str) -> list[str]:
    """What prunecli can do with an input of format ``fmt`` (``inspect --json``'s list)."""
    return list(SUPPORTS.get(fmt, ()))


def detect_format(path: Path) -> str:
    """The input kind by content (the suffix can lie): ``keras``, ``h5`` (Keras 3),
    ``h5-keras2`` (tf.keras / tf_keras), ``h5-tfmot`` (tfmot wrappers not stripped),
    ``savedmodel-keras2`` (a tf.keras SavedModel folder) or ``savedmodel`` (signatures only:
    Keras 3 ``export`` or a plain ``tf.Module``); raises ModelLoadError otherwise."""
    if not path.exists():
        raise ModelLoadError(f"{path}: model file not found")
    if savedmodel.is_savedmodel(path):
        return savedmodel.FORMAT
    if path.is_dir():
        if (path / "saved_model.pb").exists():  # with keras_metadata.pb: tf.keras wrote it
            return "savedmodel-keras2"
        raise ModelLoadError(f"{path}: is a folder, expected a .keras or .h5 model file")
    if zipfile.is_zipfile(path):
        return "keras"
    if h5py.is_hdf5(path):
        try:
            with h5py.File(path, "r") as handle:
                return legacy.h5_format(handle.attrs)
        except OSError as exc:
            raise ModelLoadError(f"{path}: damaged HDF5 file ({exc})") from None
    raise ModelLoadError(
        f"{path}: not a Keras model (expected a .keras zip archive or an .h5 HDF5 file)"
    )


def stored_config(path: Path, fmt: str) -> dict[str, Any]:
    """The model architecture stored in the file, read without Keras."""
    try:
        if fmt == "savedmodel-keras2":
            return legacy.savedmodel_config(path)
        if fmt == "keras":
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
            if raw is None:
                raise ModelLoadError(f"{path}: HDF5 file holds weights only, not a whole model")
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except ModelLoadError:
        raise
    except (KeyError, OSError, ValueError, zipfile.BadZipFile, ImportError) as exc:
        raise ModelLoadError(f"{path}: damaged or not a Keras model file ({exc})") from None


def load(path: Path, safe_mode: bool = True) -> tuple[Any, str]:
    """(model, format). The file is only read, never written.

    A SavedModel holds graphs, not Python: loading it runs no user code, so safe mode has
    nothing to refuse there.
    """
    fmt = detect_format(path)
    if fmt == savedmodel.FORMAT:
        return savedmodel.load(path), fmt
    if safe_mode and _has_lambda(stored_config(path, fmt)):
        raise ModelLoadError(
            f"{path}: contains a Lambda layer, whose code would run on load; refusing in safe "
            "mode. If you trust this file, pass --no-safe-mode"
        )
    try:
        model = _load(path, fmt, safe_mode)
    except ModelLoadError:
        raise
    except Exception as exc:  # Keras raises many types for a bad file; all mean "cannot load"
        raise ModelLoadError(f"{path}: cannot load model: {first_line(exc)}") from None
    if not hasattr(model, "layers"):
        raise ModelLoadError(f"{path}: loaded object is not a Keras model")
    return model, fmt


def _load(path: Path, fmt: str, safe_mode: bool) -> Any:
    """Keras 3 reads ``.keras`` and Keras 3 ``.h5`` itself; when it cannot read an ``.h5``'s
    compile config (Keras 3.15 fails on its own ``loss="mse"``), ``compiling`` does. Keras 2
    kinds go through ``legacy``, their configs checked for Lambda layers first (``load``)."""
    import keras

    if fmt == "keras":
        return keras.saving.load_model(path, compile=True, safe_mode=safe_mode)
    if fmt == "h5":
        try:
            return keras.saving.load_model(path, compile=True, safe_mode=safe_mode)
        except (ValueError, TypeError):  # its compile config; a broken file fails again below
            model = keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
            legacy.compile_h5(model, path)
            return model
    from keras.src.saving.serialization_lib import SafeModeScope

    with SafeModeScope(safe_mode):  # legacy configs are built by Keras's own deserializer
        if fmt == "savedmodel-keras2":
            model = legacy.load_savedmodel(path)
            signatures.remember(model, signatures.read(path))  # written back with its names
            return model
        return legacy.load_h5(path)


def compile_config(model: Any) -> dict[str, Any]:
    """The model's serialized compile config ({} when it was never compiled)."""
    return model.get_compile_config() if getattr(model, "compiled", False) else {}


def reset_training_state(model: Any, config: dict[str, Any]) -> None:
    """Recompile from ``config`` with a fresh, unbuilt optimizer: no optimizer state is saved.

    The user's compile config (optimizer settings, loss, metrics) is what the saved file
    keeps; the slot variables fine-tuning built would otherwise triple the file size.
    """
    if not config or savedmodel.signature_layer(model) is not None:
        return  # a SavedModel output is its own graphs and variables: no optimizer in it
    import keras

    args = keras.saving.deserialize_keras_object(config)
    if "loss" in args:  # "mse" as written would make a saved .h5 unreadable to Keras 3.15
        args["loss"] = compiling.portable_loss(args["loss"])
    model.compile(**args)


def save(model: Any, path: Path) -> None:
    """Write ``model`` to ``path`` (a temporary name: callers rename it into place)."""
    try:
        model.save(path)
    except Exception as exc:
        raise OSError(f"cannot save model to {path}: {first_line(exc)}") from exc


def _has_lambda(node: Any) -> bool:
    if isinstance(node, dict):
        return node.get("class_name") == "Lambda" or any(_has_lambda(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_lambda(v) for v in node)
    return False
