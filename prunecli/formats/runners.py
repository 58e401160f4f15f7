"""Run a deployable artifact with several inputs: every input fed by name, in its own dtype.

A multi-input model (keras_hub's ``BertClassifier``: ``token_ids``, ``segment_ids``,
``padding_mask``, all int32 of shape ``(batch, sequence)``) is exported with one
``serving_default`` input per model input, named after it, so its batches (a dict by input
name, as ``data`` gives them) go in by name: through the SavedModel's signature, or
LiteRT's signature runner, which resizes each input to the batch it is given. With no data
to take a shape from, a dimension the model leaves open is given ``FIXED_LENGTH``
(sequence length 8) and the batch 1::

    {"token_ids": int32 (1, 8), "segment_ids": int32 (1, 8), "padding_mask": int32 (1, 8)}

A single-input artifact is left to ``reporting.measure``'s runners (``multi_input`` says
None). TensorFlow and LiteRT are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from prunecli.errors import OutputError

SERVING = "serving_default"
FIXED_LENGTH = 8  # an open non-batch dimension, when no data gives one

Feed = dict[str, np.ndarray]


def litert_interpreter(flat: bytes) -> Any:
    """A LiteRT interpreter with its default delegate (XNNPack), allocated; its "Created
    TensorFlow Lite XNNPACK delegate" line is kept off the user's stderr."""
    from ai_edge_litert.interpreter import Interpreter

    from prunecli import runtime

    with runtime.native_stderr_muted():
        interpreter = Interpreter(model_content=flat)
        interpreter.allocate_tensors()
    return interpreter


def multi_input(fmt: str, path: Path) -> Callable[[Feed], np.ndarray] | None:
    """A runner of the ``fmt`` (``savedmodel``, ``tflite``) artifact at ``path`` that takes
    a dict batch and returns its first output (by name), or None when it has one input."""
    if fmt == "tflite":
        interpreter = litert_interpreter(path.read_bytes())
        if len(interpreter.get_input_details()) < 2:
            return None
        return _signature_call(interpreter.get_signature_runner(SERVING), path)
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures[SERVING]
    specs = signature.structured_input_signature[1]
    if len(specs) < 2:
        return None

    def run(batch: Feed) -> np.ndarray:
        _same_names(path, specs, batch)
        result = signature(**{k: tf.constant(batch[k], dtype=s.dtype) for k, s in specs.items()})
        return np.asarray(result[sorted(result)[0]])

    return run


def _signature_call(runner: Any, path: Path) -> Callable[[Feed], np.ndarray]:
    details = runner.get_input_details()

    def run(batch: Feed) -> np.ndarray:
        _same_names(path, details, batch)
        feed = {k: np.ascontiguousarray(batch[k], dtype=d["dtype"]) for k, d in details.items()}
        result = runner(**feed)
        return np.asarray(result[sorted(result)[0]]).copy()

    return run


def _same_names(path: Path, expected: dict[str, Any], batch: Feed) -> None:
    """Raise OutputError when the artifact's inputs are not named as the data's (a tf.keras
    SavedModel input whose signature names differ from its layers')."""
    if set(expected) != set(batch):
        raise OutputError(
            f"{path}: the artifact's inputs ({', '.join(sorted(expected))}) are not named "
            f"after the model's inputs ({', '.join(sorted(batch))}); cannot feed them by name"
        )


def zeros_run(interpreter: Any) -> None:
    """Run one all-zeros sample through every input of a multi-input TFLite model: batch 1,
    each open dimension ``FIXED_LENGTH`` (raises what LiteRT raises when it cannot)."""
    runner = interpreter.get_signature_runner(SERVING)
    feed = {
        name: np.zeros(_fixed(detail["shape_signature"]), detail["dtype"])
        for name, detail in runner.get_input_details().items()
    }
    runner(**feed)


def _fixed(shape: Any) -> tuple[int, ...]:
    """``[-1, -1]`` -> ``(1, FIXED_LENGTH)``: the batch axis 1, any other open one 8."""
    dims = [int(d) for d in shape]
    return tuple((1 if i == 0 else FIXED_LENGTH) if d < 0 else d for i, d in enumerate(dims))


def representative(samples: Feed, count: int) -> Callable[[], Any]:
    """int8 calibration of a multi-input model: the first ``count`` samples, one at a time,
    a dict by input name, each input in its own dtype (int32 token ids stay integers,
    floats go in as float32), with the sequence length the data has."""
    kept = {
        name: values[:count] if values.dtype.kind in "iub" else values[:count].astype(np.float32)
        for name, values in samples.items()
    }
    total = min(len(values) for values in kept.values())

    def batches() -> Any:
        for i in range(total):
            yield {name: values[i : i + 1] for name, values in kept.items()}

    return batches
