"""FLOPs (multiply-accumulates at batch 1) against an independent count from a saved
model's layer shapes, and against the papers' published figures."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import STRUCTURED_BUILDERS, hand_plan, independent_macs

from prunecli.reporting import flops
from prunecli.structured import graph, rebuild


@pytest.mark.parametrize(
    "name", ["seq_cnn", "residual", "concat", "transformer", "ops_nodes", "convnext", "mobilenet"]
)
def test_flops_match_an_independent_count_of_the_saved_rebuilt_model(name, tmp_path):
    import keras

    model = STRUCTURED_BUILDERS[name]()
    narrow = rebuild.rebuild(model, hand_plan(graph.build(model), lambda w: list(range(0, w, 2))))
    path = tmp_path / f"{name}.keras"
    narrow.save(path)
    saved = keras.models.load_model(path)
    expected = independent_macs(saved)
    assert expected > 0
    assert abs(flops.count(saved) - expected) <= 0.02 * expected
    assert flops.count(saved) < flops.count(model)  # fewer channels, fewer MACs


def test_flops_of_a_rebuilt_resnet50_match_the_independent_count():
    """In memory (saving 6M weights to disk would only slow the suite down)."""
    model = STRUCTURED_BUILDERS["resnet50"]()
    narrow = rebuild.rebuild(model, hand_plan(graph.build(model), lambda w: list(range(0, w, 2))))
    expected = independent_macs(narrow)
    assert abs(flops.count(narrow) - expected) <= 0.02 * expected
    assert flops.count(narrow) < 0.3 * flops.count(model)  # half the channels: ~1/4 MACs


def test_flops_of_the_papers_models():
    """MobileNetV2 1.0 at 224: 300M multiply-adds (Sandler et al. 2018, Table 3); ResNet50:
    3.8 x 10^9 (He et al. 2016, Table 1)."""
    import keras

    mobilenet = flops.count(keras.applications.MobileNetV2(weights=None))
    assert abs(mobilenet - 300e6) < 0.02 * 300e6
    resnet = flops.count(keras.applications.ResNet50(weights=None))
    assert abs(resnet - 3.8e9) < 0.02 * 3.8e9


def test_a_conv_counts_output_positions_times_kernel():
    import keras

    inputs = keras.Input((32, 32, 8))
    outputs = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    assert flops.count(keras.Model(inputs, outputs)) == 32 * 32 * 3 * 3 * 8 * 16


def test_unknown_sizes_give_none():
    import keras

    inputs = keras.Input((None, 4))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert flops.count(model) is None
    assert np.isfinite(flops.count(STRUCTURED_BUILDERS["seq_cnn"]()))


def test_why_flops_are_unknown_names_the_layer_and_the_cause():
    import keras

    inputs = keras.Input((None, None, 3))  # keras.applications without input_shape
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs))
    expected = "conv has an axis of variable size (None, None, None, 3)"
    assert flops.measured(model) == (None, expected)

    class Scale(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1],), name="w")

        def call(self, x):
            return x * self.w

    inputs = keras.Input((4,))
    custom = keras.Model(inputs, Scale(name="scale")(inputs))
    assert flops.measured(custom) == (None, "scale (Scale) has weights but no MAC count")
    assert flops.measured(STRUCTURED_BUILDERS["seq_cnn"]())[1] is None


def test_a_run_on_a_model_of_variable_input_size_says_why_flops_and_latency_are_null(cli, tmp_path):
    """MobileNetV3Small(weights=None) has input (None, None, None, 3): both were null in
    the report with no word why."""
    import json

    import keras
    from helpers import write_npz

    inputs = keras.Input((None, None, 2))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    path = tmp_path / "m.keras"
    keras.Model(inputs, keras.layers.Dense(3, name="out")(pooled)).save(path)
    data = write_npz(tmp_path / "d.npz", np.ones((8, 5, 5, 2), np.float32), np.arange(8) % 3)
    result = cli("prune", path, "--data", data, "-o", tmp_path / "p.keras", "--json", "--quiet",
                 "--epochs", "0")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["before"]["flops"] is None and report["before"]["latency_ms"] is None
    (note,) = [w for w in report["warnings"] if "flops" in w]
    assert note.startswith("flops and latency_ms are null: the model's input (None, None, None, 2)")


def test_a_sequence_of_variable_length_is_no_warning():
    """A text model's cost depends on its input's length: nothing for the user to fix."""
    import keras

    inputs = keras.Input((None,), dtype="int32")
    hidden = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(10, 4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    assert flops.null_note(model, {"flops": None, "latency_ms": None}) is None
    assert flops.null_note(model, {"flops": 5, "latency_ms": 1.0}) is None
