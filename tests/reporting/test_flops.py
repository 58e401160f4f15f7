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
