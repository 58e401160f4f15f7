"""Labels that do not match the model's loss, made to match (or refused in one line).

One-hot (or soft) labels are inferred as the ``categorical`` task (categorical
cross-entropy). A model compiled with a sparse loss and given one-hot labels is fine-tuned
on the class ids those labels name (``argmax``): the same targets in the form its loss
reads, so the saved compile config stays the user's. Soft labels (rows that are not one-hot)
cannot become ids without losing information, so they are refused with the loss to set.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from prunecli.data import Splits
from prunecli.errors import ConfigError
from prunecli.reporting.evaluate import Task


def loss_name(loss: Any) -> str | None:
    """A readable name for a Keras loss given as a name, an object or a function."""
    if loss is None or isinstance(loss, str):
        return loss
    if isinstance(loss, dict):  # a serialized loss
        return str(loss.get("config", {}).get("name") or loss.get("class_name"))
    return str(getattr(loss, "name", None) or getattr(loss, "__name__", type(loss).__name__))


def _sparse(loss: Any) -> bool:
    name = (loss_name(loss) or "").lower()
    return "sparse_categorical" in name or "sparsecategorical" in name


def reconcile(
    splits: Splits, task: Task | None, compile_args: dict[str, Any]
) -> tuple[Splits, Task | None]:
    """One-hot labels turned into class ids when the loss to train with is sparse."""
    if task is None or task.kind != "categorical" or not _sparse(compile_args.get("loss")):
        return splits, task
    parts = [source for source in (splits.train, splits.validation) if source is not None]
    if not all(_one_hot(source.y) for source in parts):
        raise ConfigError(
            "the model's loss is sparse categorical cross-entropy (class ids) but the labels "
            "are soft (rows that are not one-hot): set finetune.loss: categorical_crossentropy"
        )

    def ids(source: Any) -> Any:
        return source and replace(source, y=np.argmax(source.y, axis=-1).astype(np.int64))

    return Splits(ids(splits.train), ids(splits.validation)), Task("sparse", task.from_logits)


def _one_hot(y: np.ndarray) -> bool:
    return bool(np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=-1) == 1))
