"""Batch-1 CPU inference latency: what one forward pass costs, with the least framework
overhead around it.

Measured the same way before and after pruning, in the same process with the same thread
settings, so the two numbers compare; the absolute values depend on the machine.

Why a compiled loop: on a small model the framework, not the arithmetic, dominates a
single call. ``benchmarks/latency_floor.py`` measures it on the ResNet-style sample model
(``benchmarks/models.py`` ``residual_cnn``, 2M MACs; 1 thread, process CPU time per
inference, dense -> 50% channels; its last run):

    tf.function called with a numpy batch        0.271 -> 0.261 ms  (1.04x)
    concrete function, pre-built tf.constant     0.159 -> 0.144 ms  (1.11x)
    the same with jit_compile (XLA)              0.109 -> 0.089 ms  (1.23x)
    100 runs in one graph while_loop, / 100      0.073 -> 0.060 ms  (1.22x)
    100 runs in one XLA while_loop, / 100        0.048 -> 0.032 ms  (1.53x)
    an identity tf.function (x + 1)              0.088 ms

Argument conversion, dispatch and the call into the runtime cost more than the model's own
arithmetic, and none of it shrinks with the model. So ``latency_ms`` is the time of one
batch-1 inference inside a compiled loop: the model runs ``n`` times back to back in one
compiled ``tf.while_loop`` (each run's input depends on the previous run's output, so runs
neither overlap nor fold away), the call's time divided by ``n`` (the loop's own cost is
~1 us per inference). ``n`` makes one call last about ``LOOP_MS`` (1 for a large model,
whose single call has no overhead worth the name). The loop is compiled as a plain graph
and, for a small model, with XLA too; the faster is kept (``Timer``) and ``backend`` says
which. ``call_ms`` is the other view: one call of the same compiled function running one
inference, what a caller pays per request.

What is left is the kernels' own cost, which at a few channels does not shrink with them:
per layer in the XLA loop, ``residual_cnn``'s 3x3 convolutions at 14x14 take 9.7-10.2 ->
7.1-7.3 us for 4x fewer MACs (16 -> 8 channels), the 1-channel stem 8.0 -> 7.1 us; at 7x7
with 32 -> 16 channels 6.4 -> 2.7-3.4 us.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

WARMUP = 3  # calls before a compiled form's first timing
REWARM = 1  # before each later timing of a form already compiled and warm
RUNS = 30
BUDGET_S = 0.5  # stop timing early past this (a large model still gets >= 5 runs)
LOOP_MS = 10.0  # one timed loop call lasts about this long
MAX_LOOP = 1000
XLA_BELOW_MS = 1.0  # XLA is tried when one plain-graph inference is shorter than this
BACKEND = (
    "tensorflow (CPU, batch 1, per inference of back-to-back runs in one compiled "
    "while_loop; the faster of XLA and the plain graph)"
)
XLA = "tensorflow XLA (CPU, batch 1, per inference of back-to-back runs in one while_loop)"
GRAPH = "tensorflow graph (CPU, batch 1, per inference of back-to-back runs in one while_loop)"

Timing = tuple[float, float]  # (median wall ms, median process CPU ms)


class Timers:
    """One run's timers, one per model object: the model measured before pruning and,
    unchanged in structure (unstructured masks are assigned into its variables), after
    it is timed by the same compiled loop, which reads the variables' current values.
    The second measurement then costs only its timed calls, not another trace, compile
    and probe (seconds at ResNet50 size), and both sides run the same backend."""

    def __init__(self) -> None:
        self._made: list[tuple[Any, Timer | None]] = []

    def of(self, model: Any) -> Timer | None:
        for known, timer in self._made:
            if known is model:
                return timer
        timer = Timer.of(model)
        self._made.append((model, timer))
        return timer


def performance(model: Any, timers: Timers | None = None) -> dict[str, Any]:
    """The report's ``flops`` and ``latency_ms`` of ``model`` (either None when it cannot
    be measured: a SavedModel's signature has no layer shapes; a failed timing run must
    not fail a prune run whose outputs are otherwise fine)."""
    from prunecli.formats import savedmodel
    from prunecli.reporting import flops

    opaque = savedmodel.signature_layer(model) is not None
    try:
        timer = (timers or Timers()).of(model)
        timed = None if timer is None else timer.inference()[0]
    except Exception:  # timing is informative only: never the reason a run fails
        timed = None
    try:
        counted = None if opaque else flops.count(model)
    except Exception:  # a graph the counter cannot follow (informative only, as above)
        counted = None
    return {"flops": counted, "latency_ms": timed}


def measure(model: Any, runs: int = RUNS, budget_s: float = BUDGET_S) -> dict[str, Any]:
    """``{"latency_ms", "cpu_ms", "call_ms", "call_cpu_ms", "loop", "backend"}``: median
    wall-clock and process CPU milliseconds of one batch-1 inference inside the compiled
    loop, the same of one call running one inference, and the loop's length (all None when
    an input has a variable size other than batch: no single batch-1 input to time). On a
    machine shared with other work, CPU time of single-threaded runs is the steadier
    figure: being descheduled costs wall-clock time, not CPU time."""
    timer = Timer.of(model)
    if timer is None:
        keys = ("latency_ms", "cpu_ms", "call_ms", "call_cpu_ms", "loop")
        return dict.fromkeys(keys) | {"backend": BACKEND}
    (wall, cpu), (call, call_cpu) = timer.inference(runs, budget_s), timer.call(runs, budget_s)
    return {"latency_ms": wall, "cpu_ms": cpu, "call_ms": call, "call_cpu_ms": call_cpu,
            "loop": timer.loop, "backend": timer.backend, "probed": timer.probed}  # fmt: skip


class Timer:
    """One model compiled once for timing; ``inference`` and ``call`` may alternate with
    another model's timer (a benchmark compares before and after side by side).

    Two compiled forms compete: the plain graph (TensorFlow's own kernels, oneDNN on x86)
    and, when one graph inference is short enough for overhead to matter
    (``XLA_BELOW_MS``), XLA (fused, no per-op dispatch). The faster per inference is
    kept, ``backend`` names it and ``probed`` holds each one's per-inference CPU ms: XLA
    wins on small dense CNNs (0.049 vs 0.074 ms on ``residual_cnn``) but loses 10x on
    depthwise convolutions (MobileNetV2 at 224: 96 vs 9 ms), so neither alone is the
    model's honest cost."""

    def __init__(self, model: Any, batch: list[np.ndarray]) -> None:
        import tensorflow as tf

        with tf.device("/CPU:0"):
            self.feed = [tf.constant(x) for x in batch]
            forms = {GRAPH: looped(model, self.feed, jit=False)}
            first = {GRAPH: timed(lambda: forms[GRAPH](1), runs=5, budget_s=1.0)}
            if first[GRAPH][1] < XLA_BELOW_MS:
                try:
                    forms[XLA] = looped(model, self.feed, jit=True)
                    forms[XLA](1)  # XLA compiles on the first call: refused ops show here
                    first[XLA] = timed(lambda: forms[XLA](1), runs=5, budget_s=1.0)
                except Exception:  # an op XLA lacks: the plain graph stays the only form
                    forms.pop(XLA, None)
            self.probed: dict[str, float] = {}
            loops: dict[str, int] = {}
            for name, run in forms.items():
                loops[name] = max(1, min(MAX_LOOP, math.ceil(LOOP_MS / max(first[name][0], 1e-3))))
                # a large model's loop is the one call just timed: no second probe (each
                # ResNet50 call is ~0.1 s, and the report times two models)
                cpu = first[name][1] if loops[name] == 1 else self._probe(run, loops[name])
                self.probed[name] = round(cpu / loops[name], 4)
        self.backend = min(self.probed, key=self.probed.__getitem__)
        self.run, self.loop = forms[self.backend], loops[self.backend]

    @staticmethod
    def _probe(run: Callable[[int], None], loop: int) -> float:
        """Median CPU ms of one ``loop``-long call of a form already warm."""
        return timed(lambda: run(loop), runs=5, budget_s=1.0, warmup=REWARM)[1]

    @classmethod
    def of(cls, model: Any) -> Timer | None:
        """A timer for ``model``, None when an input has a variable non-batch size."""
        shapes = [tuple(t.shape[1:]) for t in model.inputs] if _has_inputs(model) else []
        if not shapes or any(d is None for s in shapes for d in s):
            return None
        rng = np.random.default_rng(0)
        return cls(model, [rng.random((1, *s)).astype(np.float32) for s in shapes])

    def inference(self, runs: int = RUNS, budget_s: float = BUDGET_S) -> Timing:
        """Median (wall, CPU) ms of one inference inside the loop."""
        wall, cpu = timed(lambda: self.run(self.loop), runs, budget_s, REWARM)
        return round(wall / self.loop, 4), round(cpu / self.loop, 4)

    def call(self, runs: int = RUNS, budget_s: float = BUDGET_S) -> Timing:
        """Median (wall, CPU) ms of one call that runs one inference."""
        return timed(lambda: self.run(1), runs, budget_s, REWARM)


def looped(model: Any, feed: list[Any], jit: bool) -> Callable[[int], None]:
    """``run(n)``: ``model`` applied ``n`` times in one compiled call, the result waited
    for. Each run's inputs are the previous run's plus ``0 * sum(outputs)``: a true data
    dependency (IEEE ``0 * x`` is not folded), so runs are sequential and none is dropped."""
    import tensorflow as tf

    single = len(feed) == 1
    counts: dict[int, Any] = {}

    @tf.function(jit_compile=jit)
    def loop(count: Any, *inputs: Any) -> Any:
        def body(i: Any, *xs: Any) -> Any:
            outputs = model(xs[0] if single else list(xs), training=False)
            flat = tf.nest.flatten(outputs)
            total = tf.add_n([tf.reduce_sum(tf.cast(y, tf.float32)) for y in flat])
            return (i + 1, *[x + tf.cast(0.0 * total, x.dtype) for x in xs])

        return tf.while_loop(lambda i, *xs: i < count, body, (tf.constant(0), *inputs))[1]

    specs = [tf.TensorSpec(x.shape, x.dtype) for x in feed]
    concrete = loop.get_concrete_function(tf.TensorSpec((), tf.int32), *specs)

    def run(n: int) -> None:
        count = counts.setdefault(n, tf.constant(n))
        np.asarray(concrete(count, *feed))  # waits for the result

    return run


def timed(
    call: Callable[[], Any], runs: int = RUNS, budget_s: float = BUDGET_S, warmup: int = WARMUP
) -> Timing:
    """(median wall ms, median process CPU ms) of ``call()`` after ``warmup`` calls; at
    most ``runs`` calls, fewer past ``budget_s`` seconds (never fewer than 5)."""
    for _ in range(warmup):
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


def speedup(before: float | None, after: float | None) -> float | None:
    """before / after latency (2.0 = twice as fast), None when either is unknown."""
    if not before or not after:
        return None
    return round(before / after, 4)
