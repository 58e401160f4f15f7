"""Measurements of written files: digests, sizes (raw and gzipped), and deployable
artifacts (SavedModel, TFLite) run for accuracy and batch-1 latency.

Digests and sizes are pure file reads, safe beside the main thread: hashlib and zlib
release the GIL.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from prunecli.data.source import Source, head, numpy_batch
from prunecli.formats import runners
from prunecli.reporting import sizes as sizes_module

WARMUP_RUNS = 5
TIMED_RUNS = 30
_EVAL_BATCH = 64


# Digests and sizes live in ``sizes`` (gzip level 6, parallel blocks, the input's cache).
sha256, sizes, files = sizes_module.sha256, sizes_module.sizes, sizes_module.files
litert_interpreter = runners.litert_interpreter  # LiteRT, its XNNPack line kept off stderr


def artifact(fmt: str, path: Path, samples: Source | None, task: Any) -> dict[str, Any]:
    """``{size_bytes, size_gzip_bytes, accuracy, latency_ms}`` of the ``fmt`` (savedmodel,
    tflite) artifact at ``path``,
    measured by running it: accuracy over ``samples`` streamed in batches (None without
    samples or a classification task), latency the median batch-1 CPU call after warm-up."""
    from prunecli.reporting import evaluate

    size, gzipped = sizes(path)
    runner = runners.multi_input(fmt, path) or (  # several inputs: fed by name
        _tflite_runner(path) if fmt == "tflite" else _savedmodel_runner(path)
    )
    accuracy = sample = None
    if samples is not None and len(samples):
        batches = (numpy_batch(x) for x, _ in samples.dataset(_EVAL_BATCH, cache=False))
        if task is None:  # nothing to score: one sample times the artifact
            sample = head(next(batches))
        else:
            predictions = []
            for batch in batches:
                sample = head(batch) if sample is None else sample
                predictions.append(runner(batch))
            accuracy = evaluate.accuracy(np.concatenate(predictions), samples.y, task)
    return {
        "size_bytes": size,
        "size_gzip_bytes": gzipped,
        "accuracy": accuracy,
        "latency_ms": _timed(runner, sample),
    }


def _timed(runner: Callable[[np.ndarray], np.ndarray], sample: np.ndarray | None) -> float | None:
    """``latency_ms`` with background deflation held (the timing uses every core)."""
    with sizes_module.paused():
        return latency_ms(runner, sample)


def _tflite_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Runs a batch through the interpreter, resizing its batch dimension as needed."""
    interpreter = runners.litert_interpreter(path.read_bytes())
    source = interpreter.get_input_details()[0]
    target = interpreter.get_output_details()[0]["index"]
    shape = [tuple(source["shape"])]

    def run(batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=source["dtype"])
        if batch.shape != shape[0]:
            interpreter.resize_tensor_input(source["index"], batch.shape)
            interpreter.allocate_tensors()
            shape[0] = batch.shape
        interpreter.set_tensor(source["index"], batch)
        interpreter.invoke()
        return interpreter.get_tensor(target).copy()

    return run


def _savedmodel_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Calls ``serving_default`` with the batch as its one input; the first output back."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    (name, spec), *_ = signature.structured_input_signature[1].items()

    def run(batch: np.ndarray) -> np.ndarray:
        result = signature(**{name: tf.constant(batch, dtype=spec.dtype)})
        return np.asarray(result[sorted(result)[0]])

    return run


def latency_ms(run: Callable[[np.ndarray], np.ndarray], sample: np.ndarray | None) -> float | None:
    """Median milliseconds of a batch-1 call after warm-up (None without a sample)."""
    if sample is None:
        return None
    for _ in range(WARMUP_RUNS):
        run(sample)
    times = []
    for _ in range(TIMED_RUNS):
        start = time.perf_counter()
        run(sample)
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 4)
