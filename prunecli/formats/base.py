"""One adapter per input kind: every question about a kind is answered by its adapter.

The pipeline, selection, exporting and evaluation never ask "is this a SavedModel?": they
ask the input's adapter what it supports, where its output goes by default, what it
refuses, how to reset and how to export the loaded model. ``InputFormat`` answers for a
Keras model (the common case); a kind that is not one (a signature-only SavedModel)
overrides what differs. Adding an input kind: a subclass, one entry in
``model_io.INPUT_FORMATS`` and its detection, one test file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from prunecli.errors import ModelLoadError, OutputError, first_line, os_message

# What prunecli can do with an input (``inspect --json``'s ``supports``).
FULL_SUPPORT = ("unstructured", "structured", "layer_selection", "finetune")


class InputFormat:
    """A Keras model file or folder: everything supported, written as ``.keras`` by default."""

    name: ClassVar[str] = ""
    supports: ClassVar[tuple[str, ...]] = FULL_SUPPORT

    def load(self, path: Path, safe_mode: bool) -> Any:
        """The Keras model in ``path`` (read only, never written)."""
        raise NotImplementedError

    def default_output(self, source: Path) -> Path:
        """``<input stem>.pruned.keras`` beside the input."""
        return source.with_name(f"{source.stem}.pruned.keras")

    def check_request(self, source: Path, layers: Any, formats: list[str]) -> None:
        """Refuse, before any work, a request this kind cannot serve (``layers`` is the
        config's ``prune.layers``, ``formats`` those of every planned output)."""
        del source, layers, formats  # a Keras model can do all of it

    def output_activation(self, model: Any) -> str:
        """Name of the function the model's output applies (``softmax``, ``sigmoid``, ...):
        it tells probabilities from logits. A Softmax layer counts as softmax, and a
        nested model as its own last layer."""
        last = model.layers[-1]
        if hasattr(last, "layers") and last.layers:
            return self.output_activation(last)
        if type(last).__name__ == "Softmax":
            return "softmax"
        return getattr(getattr(last, "activation", None), "__name__", "")

    def reset_training_state(self, model: Any, config: dict[str, Any]) -> None:
        """Recompile from ``config`` with a fresh, unbuilt optimizer: no optimizer state is
        saved. The user's compile config (optimizer settings, loss, metrics) is what the
        saved file keeps; the slot variables fine-tuning built would triple its size."""
        if not config:
            return
        import keras

        from prunecli.formats import compiling

        args = keras.saving.deserialize_keras_object(config)
        if "loss" in args:  # "mse" as written would make a saved .h5 unreadable to Keras 3.15
            args["loss"] = compiling.portable_loss(args["loss"])
        model.compile(**args)

    def export_savedmodel(self, model: Any, path: Path) -> None:
        """A SavedModel whose ``serving_default`` takes the model's inputs (names, shapes)."""
        try:
            model.export(str(path), format="tf_saved_model", verbose=False)
        except OSError as exc:
            raise OutputError(os_message(exc, path)) from exc
        except Exception as exc:
            raise OutputError(f"cannot export a SavedModel to {path}: {first_line(exc)}") from exc


def load_failure(path: Path, exc: Exception) -> ModelLoadError:
    """The one-line error for a file Keras (or TF) could not read, whatever it raised."""
    return ModelLoadError(f"{path}: cannot load model: {first_line(exc)}")
