"""Load and save Keras models: find the input's kind, hand it to that kind's adapter.

Kinds (``input.format`` in the report, ``inspect --json``'s ``format``): ``keras`` (zip),
``h5`` (Keras 3 HDF5), ``h5-keras2`` (tf.keras / tf_keras HDF5), ``h5-tfmot`` (tfmot
wrappers not stripped), ``savedmodel-keras2`` (a tf.keras SavedModel folder, with
``keras_metadata.pb``) and ``savedmodel`` (signatures only). The kind is read from the
content, never the suffix.

Loading is safe by default: before Keras deserializes anything, the stored config is read
and a ``Lambda`` layer (arbitrary Python code) is refused unless the user passes
``--no-safe-mode``; Keras's own ``safe_mode`` stays on as well.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import h5py

from prunecli import compat
from prunecli.data import inputs
from prunecli.errors import ModelLoadError, OutputError, first_line, os_message
from prunecli.formats import legacy, libraries, safety, savedmodel, signatures
from prunecli.formats.base import InputFormat, load_failure


class _KerasFile(InputFormat):
    """A kind whose file stores a Keras architecture: checked for Lambda layers first."""

    def load(self, path: Path, safe_mode: bool) -> Any:
        if safe_mode and _has_lambda(self.stored_config(path)):
            raise ModelLoadError(
                f"{path}: contains a Lambda layer, whose code would run on load; refusing in "
                "safe mode. If you trust this file, pass --no-safe-mode"
            )
        try:
            model = self._load(path, safe_mode)
        except ModelLoadError:
            raise
        except Exception as exc:  # Keras raises many types for a bad file: "cannot load"
            missing = libraries.explain(path, exc)  # an unknown class, named
            raise (ModelLoadError(missing) if missing else load_failure(path, exc)) from None
        if not hasattr(model, "layers"):
            raise ModelLoadError(f"{path}: loaded object is not a Keras model")
        return model

    def stored_config(self, path: Path) -> dict[str, Any]:
        """The model architecture stored in the file, read without Keras."""
        try:
            return self._stored_config(path)
        except ModelLoadError:
            raise
        except (KeyError, OSError, ValueError, zipfile.BadZipFile, ImportError) as exc:
            raise ModelLoadError(f"{path}: damaged or not a Keras model file ({exc})") from None

    def _stored_config(self, path: Path) -> dict[str, Any]:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
            if raw is None:
                raise ModelLoadError(f"{path}: HDF5 file holds weights only, not a whole model")
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw)

    def _load(self, path: Path, safe_mode: bool) -> Any:
        raise NotImplementedError


class KerasZip(_KerasFile):
    name = "keras"

    def _stored_config(self, path: Path) -> dict[str, Any]:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))

    def _load(self, path: Path, safe_mode: bool) -> Any:
        import keras

        return keras.saving.load_model(path, compile=True, safe_mode=safe_mode)


class KerasH5(_KerasFile):
    """Keras 3 reads its own ``.h5``; when it cannot read the compile config (Keras 3.15
    fails on its own ``loss="mse"``), ``legacy.compile_h5`` does."""

    name = "h5"

    def _load(self, path: Path, safe_mode: bool) -> Any:
        import keras

        try:
            return keras.saving.load_model(path, compile=True, safe_mode=safe_mode)
        except (ValueError, TypeError):  # its compile config; a broken file fails again below
            model = keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
            legacy.compile_h5(model, path)
            return model


class Keras2H5(_KerasFile):
    """tf.keras ``.h5``: the stored config rewritten for Keras 3 (``legacy``), built by
    Keras's own deserializer under safe mode."""

    name = "h5-keras2"

    def _load(self, path: Path, safe_mode: bool) -> Any:
        with compat.safe_mode_scope(safe_mode):
            return legacy.load_h5(path)


class TfmotH5(Keras2H5):
    """A tfmot ``.h5`` saved without ``strip_pruning``: wrappers removed, masks applied."""

    name = "h5-tfmot"


class Keras2SavedModel(_KerasFile):
    name = "savedmodel-keras2"

    def _stored_config(self, path: Path) -> dict[str, Any]:
        return legacy.savedmodel_config(path)

    def _load(self, path: Path, safe_mode: bool) -> Any:
        with compat.safe_mode_scope(safe_mode):
            model = legacy.load_savedmodel(path)
        signatures.remember(model, signatures.read(path))  # written back with its names
        return model

    def export_savedmodel(self, model: Any, path: Path) -> None:
        """With the input's ``serving_default`` input and output names (tf.keras names the
        outputs after their layers, e.g. ``head``; Keras 3 would say ``output_0``)."""
        names = signatures.names_of(model)
        if names is None:
            super().export_savedmodel(model, path)
            return
        try:
            signatures.export(model, path, names)
        except OSError as exc:
            raise OutputError(os_message(exc, path)) from exc
        except Exception as exc:
            raise OutputError(f"cannot export a SavedModel to {path}: {first_line(exc)}") from exc


INPUT_FORMATS: dict[str, InputFormat] = {
    adapter.name: adapter
    for adapter in (
        KerasZip(),
        KerasH5(),
        Keras2H5(),
        TfmotH5(),
        Keras2SavedModel(),
        savedmodel.SignatureSavedModel(),
    )
}


def detect(path: Path) -> InputFormat:
    """The adapter of the input at ``path``, by content; raises ModelLoadError otherwise."""
    return INPUT_FORMATS[detect_format(path)]


def detect_format(path: Path) -> str:
    """The input kind's name (see the module docstring)."""
    if not path.exists():
        raise ModelLoadError(f"{path}: model file not found")
    safety.regular_input(path)
    if savedmodel.is_savedmodel(path):
        return savedmodel.FORMAT
    if path.is_dir():
        if (path / "saved_model.pb").exists():  # with keras_metadata.pb: tf.keras wrote it
            return Keras2SavedModel.name
        raise ModelLoadError(f"{path}: is a folder, expected a .keras or .h5 model file")
    try:
        if zipfile.is_zipfile(path):
            return KerasZip.name
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as handle:
                return legacy.h5_format(handle.attrs)
    except (OSError, ValueError, TypeError) as exc:  # ValueError: a non-text model_config
        raise ModelLoadError(f"{path}: damaged or unreadable model file ({exc})") from None
    raise ModelLoadError(
        f"{path}: not a Keras model (expected a .keras zip archive or an .h5 HDF5 file)"
    )


def load(
    path: Path, safe_mode: bool = True, imports: list[str] | tuple[str, ...] = ()
) -> tuple[Any, InputFormat]:
    """(model, its input kind's adapter). The file is only read, never written.
    ``imports``: the user's modules to import first (``--import``); a Keras file's own
    library packages are imported too and its custom classes checked (``libraries``)."""
    fmt = detect_format(path)
    safety.check(path, fmt, safe_mode)  # structure, sizes, code and I/O: before any loader
    adapter = INPUT_FORMATS[fmt]
    if isinstance(adapter, _KerasFile):
        libraries.prepare(path, adapter.stored_config(path), imports)
    else:
        libraries.import_modules(imports)
    model = adapter.load(path, safe_mode)
    inputs.signature(model, path)  # a model saved unbuilt is refused here, naming the file
    libraries.detach_preprocessor(model)  # a keras_hub task's tokenizer: back when saved
    return model, adapter


def compile_config(model: Any) -> dict[str, Any]:
    """The model's serialized compile config ({} when it was never compiled)."""
    return model.get_compile_config() if getattr(model, "compiled", False) else {}


def save(model: Any, path: Path) -> None:
    """Write ``model`` to ``path`` (a temporary name: callers rename it into place)."""
    try:
        with libraries.preprocessor_attached(model):
            if path.suffix == ".h5":  # HDF5 built in memory: a full disk is a plain OSError
                path.write_bytes(compat.h5_image(model))
            else:
                model.save(path)
    except OSError as exc:
        raise OutputError(os_message(exc, path)) from exc
    except Exception as exc:
        raise OutputError(f"cannot save model to {path}: {first_line(exc)}") from exc


def _has_lambda(node: Any) -> bool:
    if isinstance(node, dict):
        return node.get("class_name") == "Lambda" or any(_has_lambda(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_lambda(v) for v in node)
    return False
