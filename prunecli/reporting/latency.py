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
    try:
        counted = None if opaque else flops.count(model)
    except Exception:  # a graph the counter cannot follow (informative only, as above)
        counted = None
    return {"flops": counted, "latency_ms": timed}


def measure(model: Any, runs: int = RUNS, budget_s: float = BUDGET_S) -> dict[str, Any]:
    """``{"latency_ms", "cpu_ms", "backend"}``: the median wall-clock and process CPU
    milliseconds of one batch-1 call (None when an input has a variable size other than
    batch: no single batch-1 input to time). On a machine shared with other work, CPU time
    of single-threaded runs is the steadier figure: being descheduled costs wall-clock
    time, not CPU time."""
    import tensorflow as tf

    shapes = [tuple(t.shape[1:]) for t in model.inputs] if _has_inputs(model) else []
    if not shapes or any(d is None for s in shapes for d in s):
        return {"latency_ms": None, "cpu_ms": None, "backend": BACKEND}
    rng = np.random.default_rng(0)
    batch = [rng.random((1, *s)).astype(np.float32) for s in shapes]
    feed = batch[0] if len(batch) == 1 else batch
    with tf.device("/CPU:0"):
        call = tf.function(lambda x: model(x, training=False))
        wall, cpu = timed(lambda: _block(call(feed)), runs, budget_s)
    return {"latency_ms": wall, "cpu_ms": cpu, "backend": BACKEND}


def timed(call: Any, runs: int = RUNS, budget_s: float = BUDGET_S) -> tuple[float, float]:
    """(median wall ms, median process CPU ms) of ``call()`` after ``WARMUP`` calls; at
    most ``runs`` calls, fewer past ``budget_s`` seconds (never fewer than 5)."""
    for _ in range(WARMUP):
        call()
    wall: list[float] = []
    cpu: list[float] = []
    started = time.perf_counter()
    while len(wall) < runs and (len(wall) < 5 or time.perf_counter() - started < budget_s):
        begin, begin_cpu = time.perf_counter(), time.process_time()
        call()
        wall.append(1000 * (time.perf_counter() - begin))
        cpu.append(1000 * (time.process_time() - begin_cpu))
    return round(statistics.median(wall), 4), round(statistics.median(cpu), 4)


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
