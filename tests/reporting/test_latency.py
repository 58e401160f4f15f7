"""Batch-1 latency: the compiled loop runs the model exactly as often as it divides by,
falls back to a plain graph where XLA cannot compile, and says which it measured.
(No timed assertions: the benchmarks compare numbers.)"""

from __future__ import annotations

import numpy as np
import pytest

from prunecli.reporting import latency


def _counting_model():
    """Dense(2) behind a layer that counts its calls in a variable (one per inference)."""
    import keras

    class Count(keras.layers.Layer):
        def build(self, shape):
            self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False)

        def call(self, x):
            self.calls.assign_add(1.0)
            return x

    inputs = keras.Input((4,))
    counter = Count(name="count")
    return keras.Model(inputs, keras.layers.Dense(2)(counter(inputs))), counter


def test_one_timed_loop_call_runs_the_model_loop_times():
    model, counter = _counting_model()
    timer = latency.Timer.of(model)
    assert set(timer.probed) == {latency.GRAPH, latency.XLA}  # small: both forms compete
    assert timer.backend == min(timer.probed, key=timer.probed.__getitem__)
    assert 1 <= timer.loop <= latency.MAX_LOOP
    before = float(np.asarray(counter.calls))
    timer.run(7)
    assert float(np.asarray(counter.calls)) - before == 7
    before = float(np.asarray(counter.calls))
    timer.inference(runs=5, budget_s=0.0)  # warm-up calls, then 5 timed ones
    assert float(np.asarray(counter.calls)) - before == (latency.REWARM + 5) * timer.loop


def test_measure_reports_per_inference_and_per_call():
    model, _ = _counting_model()
    found = latency.measure(model, runs=5, budget_s=0.0)
    assert found["backend"] in (latency.GRAPH, latency.XLA) and found["loop"] >= 1
    assert all(found[key] > 0 for key in ("latency_ms", "cpu_ms", "call_ms", "call_cpu_ms"))


def test_a_model_xla_cannot_compile_is_timed_in_a_graph_loop():
    import keras
    import tensorflow as tf

    inputs = keras.Input((4,))
    host = keras.layers.Lambda(
        lambda t: tf.ensure_shape(tf.numpy_function(np.sin, [t], tf.float32), (None, 4)),
        output_shape=(4,),
    )  # numpy_function runs in Python: XLA refuses it
    model = keras.Model(inputs, keras.layers.Dense(2)(host(inputs)))
    found = latency.measure(model, runs=5, budget_s=0.0)
    assert found["backend"] == latency.GRAPH and list(found["probed"]) == [latency.GRAPH]
    assert found["latency_ms"] > 0


def test_a_variable_size_input_has_no_latency():
    import keras

    inputs = keras.Input((None, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    found = latency.measure(model)
    assert found["latency_ms"] is None and found["call_ms"] is None
    assert found["backend"] == latency.BACKEND


@pytest.mark.parametrize(("before", "after", "ratio"), [(2.0, 1.0, 2.0), (None, 1.0, None),
                                                        (1.0, 0.0, None)])  # fmt: skip
def test_speedup_is_before_over_after(before, after, ratio):
    assert latency.speedup(before, after) == ratio


def test_a_run_times_one_model_object_with_one_compiled_loop():
    """Before and after unstructured pruning the model object is the same: its second
    measurement reuses the timer (no second trace or probe) and sees the new weights,
    which the compiled loop reads from the variables."""
    model, counter = _counting_model()
    timers = latency.Timers()
    timer = timers.of(model)
    assert timers.of(model) is timer and timers.of(_counting_model()[0]) is not timer
    before = float(np.asarray(counter.calls))
    counter.calls.assign(before + 100.0)  # a variable assigned after the trace
    timer.run(1)
    assert float(np.asarray(counter.calls)) == before + 101
