"""Batch-1 CPU inference latency: the median of timed calls after warm-up.

Measured the same way before and after pruning, in the same process with the same thread
settings, so the two numbers compare; the absolute values depend on the machine. The
model runs as one compiled ``tf.function`` (what serving runs), not eagerly layer by layer,
whose Python overhead would swamp a small model's arithmetic.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

WARMUP = 3
RUNS = 30
BUDGET_S = 2.0  # stop timing early past this (a large model still gets >= 5 runs)
BACKEND = "tensorflow (CPU, batch 1, compiled tf.function)"


def performance(model: Any) -> dict[str, Any]:
    """The report's ``flops`` and ``latency_ms`` of ``model`` (either None when it cannot
    be measured: a SavedModel's signature has no layer shapes; a failed timing run must
    not fail a prune run whose outputs are otherwise fine)."""
    from prunecli.formats import savedmodel
    from prunecli.reporting import flops

    opaque = savedmodel.signature_layer(model) is not None
    try:
        timed = measure(model)["latency_ms"]
    except Exception:  # timing is informative only: never the reason a run fails
        timed = None
    return {"flops": None if opaque else flops.count(model), "latency_ms": timed}


def measure(model: Any, runs: int = RUNS, budget_s: float = BUDGET_S) -> dict[str, Any]:
    """``{"latency_ms": median ms or None, "backend": BACKEND}``; None when an input has a
    variable size other than batch (no single batch-1 input to time)."""
    import tensorflow as tf

    backend = BACKEND
    shapes = [tuple(t.shape[1:]) for t in model.inputs] if _has_inputs(model) else []
    if not shapes or any(d is None for s in shapes for d in s):
        return {"latency_ms": None, "backend": backend}
    rng = np.random.default_rng(0)
    batch = [rng.random((1, *s)).astype(np.float32) for s in shapes]
    feed = batch[0] if len(batch) == 1 else batch
    with tf.device("/CPU:0"):
        call = tf.function(lambda x: model(x, training=False))
        for _ in range(WARMUP):
            _block(call(feed))
        timings: list[float] = []
        started = time.perf_counter()
        while len(timings) < runs and (
            len(timings) < 5 or time.perf_counter() - started < budget_s
        ):
            begin = time.perf_counter()
            _block(call(feed))
            timings.append(1000 * (time.perf_counter() - begin))
    return {"latency_ms": round(statistics.median(timings), 4), "backend": backend}


def _has_inputs(model: Any) -> bool:
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def _block(outputs: Any) -> None:
    """Wait for the result (TensorFlow may return before the work is done)."""
    import tensorflow as tf

    for tensor in tf.nest.flatten(outputs):
        np.asarray(tensor)


def speedup(before: float | None, after: float | None) -> float | None:
    """before / after latency (2.0 = twice as fast), None when either is unknown."""
    if not before or not after:
        return None
    return round(before / after, 4)
