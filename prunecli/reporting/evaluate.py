"""What the model is for (from its output and the labels) and how well it does it.

Accuracy and loss are computed here from ``model.predict`` and the loss function, not from
compiled metrics, so they mean the same thing for every model and can be recomputed by
anyone from the saved file and the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np

from prunecli.data import Source
from prunecli.errors import DataError
from prunecli.formats.base import InputFormat

PREDICT_BATCH = 256


@dataclass(frozen=True)
class Task:
    """``sparse``: integer class ids, one output unit per class; ``categorical``: one-hot
    (or soft) label rows, one unit per class; ``binary``: one unit, 0/1 labels;
    ``regression``: anything else (accuracy is then not defined)."""

    kind: Literal["sparse", "categorical", "binary", "regression"]
    from_logits: bool = False

    def compile_args(self) -> dict[str, Any]:
        """Loss and metrics inferred from the data, for a model without a compile config."""
        if self.kind == "sparse":
            return {
                "loss": keras.losses.SparseCategoricalCrossentropy(self.from_logits),
                "metrics": ["accuracy"],
            }
        if self.kind == "categorical":
            return {
                "loss": keras.losses.CategoricalCrossentropy(self.from_logits),
                "metrics": ["accuracy"],
            }
        if self.kind == "binary":
            return {
                "loss": keras.losses.BinaryCrossentropy(self.from_logits),
                "metrics": ["accuracy"],
            }
        return {"loss": keras.losses.MeanSquaredError(), "metrics": []}


def infer_task(
    model: Any, labels: Source, source: Path | None, activation: str | None = None
) -> Task:
    """The task, after checking the labels can be the model's: raises DataError if not.

    ``activation`` is the model's output function as its input kind's adapter names it
    (``InputFormat.output_activation``; read from the layers when not given)."""
    where = f"{source}: " if source else ""
    _single_output(model, where)
    shape = output_shape(model)
    units = shape[-1] if isinstance(shape, tuple) else None
    if activation is None:
        activation = InputFormat().output_activation(model)
    from_logits = activation not in ("softmax", "sigmoid")
    y = labels.y
    _check_one_row_per_sample(shape, y, where)
    if _distributions(y, units):
        return Task("categorical", from_logits)
    _check_label_columns(shape, y, where)
    if y.dtype.kind != "i" or (y.ndim != 1 and not _per_position(y, shape)):
        return Task("regression")
    found = len(labels.classes) if labels.classes else len(np.unique(y))
    if found < 2:
        raise DataError(f"{where}only one class in the labels; classification needs at least 2")
    if units == 1 and set(np.unique(y)) <= {0, 1}:
        return Task("binary", from_logits)
    if labels.classes and len(labels.classes) != units:
        raise DataError(
            f"{where}{len(labels.classes)} classes ({', '.join(labels.classes)}) but the model's "
            f"output has {units} units"
        )
    if units is None or units < 2:
        return Task("regression")
    if y.min() < 0 or y.max() >= units:
        raise DataError(
            f"{where}labels range {y.min()}..{y.max()} but the model's output has {units} units "
            f"(class ids 0..{units - 1})"
        )
    return Task("sparse", from_logits)


def _check_label_columns(shape: Any, y: np.ndarray, where: str) -> None:
    """Rows of labels (one-hot, soft, regression targets) must have one column per output
    unit of a model whose output is ``(batch, units)`` (``shape``): 2 one-hot columns for
    3 classes otherwise fail deep inside the loss as a bug would."""
    if not (isinstance(shape, tuple) and len(shape) == 2 and shape[-1] and y.ndim == 2):
        return
    if y.shape[1] != shape[-1]:
        raise DataError(
            f"{where}labels have {y.shape[1]} columns but the model's output has {shape[-1]} "
            "units: give one column per unit (one-hot), or one class id per sample"
        )


def _check_one_row_per_sample(shape: Any, y: np.ndarray, where: str) -> None:
    """DataError when the labels are one value per sample but the output is more than one
    row per sample: a backbone's feature map (``include_top=False``, output
    ``(None, 1, 1, 1280)``) fed class ids would otherwise fail inside the loss."""
    if y.ndim == 1 and isinstance(shape, tuple) and len(shape) > 2:
        raise DataError(
            f"{where}one label per sample, but the model's output is {shape}, not one row "
            "per sample (a model without its classifier top, such as keras.applications "
            "with include_top=False?): add a head, or give labels of the output's shape"
        )


def _single_output(model: Any, where: str) -> None:
    """A DataError for a model with several outputs (``{"cls": ..., "reg": ...}``): one
    ``y`` cannot label them, nor one loss score them."""
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) > 1:
        names = ", ".join(map(repr, getattr(model, "output_names", None) or []))
        raise DataError(
            f"{where}the model has {len(outputs)} outputs ({names}); fine-tuning, accuracy and "
            "loss take one output and one y: prune it without data (--epochs 0, no "
            "data.train) or save a single-output model"
        )


def output_shape(model: Any) -> Any:
    """``model.output_shape``; a subclassed model has none (no symbolic output), so its
    output is traced once from its input signature: ``(None, 3)`` for one built on (1, 6)."""
    try:
        return model.output_shape
    except AttributeError:
        pass
    from prunecli.data.inputs import signature

    specs = [keras.KerasTensor((None, *s.shape), s.dtype) for s in signature(model)]
    traced = model.compute_output_spec(specs[0] if len(specs) == 1 else specs)
    return tuple(traced.shape) if hasattr(traced, "shape") else None


def _per_position(y: np.ndarray, output_shape: Any) -> bool:
    """Integer labels with one class id per position, ``(samples, length)``, for an output
    ``(samples, length, classes)``: a language model's next tokens, a tagger's tags (scored
    per token: ``accuracy`` compares every position)."""
    if not isinstance(output_shape, tuple) or len(output_shape) != 3 or y.ndim != 2:
        return False
    return output_shape[1] in (None, y.shape[1])


def _distributions(y: np.ndarray, units: int | None) -> bool:
    """One row per sample, one column per output unit, each row >= 0 summing to 1."""
    if y.ndim != 2 or units is None or units < 2 or y.shape[1] != units or not len(y):
        return False
    return bool(np.all(y >= 0) and np.allclose(y.sum(axis=-1), 1.0, atol=1e-3))


def evaluate(model: Any, samples: Source, task: Task, loss: Any) -> tuple[float | None, float]:
    """(accuracy, mean loss) on ``samples``; accuracy None for regression. The samples are
    streamed in order and the predictions (small: one row per sample) compared with the
    labels kept in memory."""
    predictions = model.predict(samples.dataset(PREDICT_BATCH), verbose=0)
    mean_loss = float(np.mean(keras.ops.convert_to_numpy(loss(samples.y, predictions))))
    return accuracy(predictions, samples.y, task), mean_loss


def accuracy(predictions: np.ndarray, y: np.ndarray, task: Task) -> float | None:
    """Fraction of samples whose predicted class is the label."""
    if task.kind == "sparse":
        return float(np.mean(np.argmax(predictions, axis=-1) == y))
    if task.kind == "categorical":
        return float(np.mean(np.argmax(predictions, axis=-1) == np.argmax(y, axis=-1)))
    if task.kind == "binary":
        threshold = 0.0 if task.from_logits else 0.5
        return float(np.mean((predictions.reshape(-1) > threshold) == y))
    return None
