"""formats/legacy.py: the Keras 2 config rewrite (``to_keras3``) on small hand-written
configs: tfmot wrappers unwrapped and renamed, ``time_major`` dropped, a nested model's call
sites renumbered. Pure dict work: no TensorFlow. Real tf_keras files: ``test_model_io.py``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from prunecli.formats import legacy


def dense(name: str, **config: object) -> dict:
    return {"class_name": "Dense", "config": {"name": name, "units": 4, **config}}


def wrapped(layer: dict) -> dict:
    """What tfmot's ``prune_low_magnitude`` stores around ``layer`` in a Sequential."""
    name = f"prune_low_magnitude_{layer['config']['name']}"
    schedule = {"class_name": "PolynomialDecay", "config": {"final_sparsity": 0.5}}
    return {"class_name": "PruneLowMagnitude",
            "config": {"name": name, "layer": layer, "pruning_schedule": schedule}}  # fmt: skip


def functional(layers: list[dict], inputs: list, outputs: list, name: str = "outer") -> dict:
    config = {"name": name, "layers": layers, "input_layers": inputs, "output_layers": outputs}
    return {"class_name": "Functional", "config": config}


def call(layer: dict, *refs: list) -> dict:
    """``layer`` placed in a functional config, called once on each ref in Keras 2 form."""
    name = layer["config"]["name"]
    return {**layer, "name": name, "inbound_nodes": [[[*ref, {}] for ref in refs]]}


INPUT = {"class_name": "InputLayer", "name": "input_1", "inbound_nodes": [],
         "config": {"name": "input_1", "batch_input_shape": [None, 6]}}  # fmt: skip


def test_sequential_tfmot_wrapper_is_replaced_by_the_layer_it_wraps():
    layers = [wrapped(dense("hidden")), dense("out")]
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}
    original = copy.deepcopy(config)
    renames: dict[str, str] = {}
    found = legacy.to_keras3(config, renames)
    assert found["config"]["layers"] == [dense("hidden"), dense("out")]
    assert renames == {"prune_low_magnitude_hidden": "hidden"}
    assert config == original  # pure: the stored config is not touched


def test_functional_wrapper_keeps_its_wiring_and_every_reference_is_renamed():
    hidden = call(wrapped(dense("hidden")), ["input_1", 0, 0])
    hidden["name"] = "prune_low_magnitude_hidden"
    out = call(dense("out"), ["prune_low_magnitude_hidden", 0, 0])
    config = functional(
        [INPUT, hidden, out], [["input_1", 0, 0]], [["prune_low_magnitude_hidden", 0, 0]]
    )
    renames: dict[str, str] = {}
    layers = legacy.to_keras3(config, renames)["config"]
    assert layers["layers"][1] == {
        **dense("hidden"), "name": "hidden", "inbound_nodes": [[["input_1", 0, 0, {}]]],
    }  # fmt: skip
    assert layers["layers"][2]["inbound_nodes"] == [[["hidden", 0, 0, {}]]]
    assert layers["output_layers"] == [["hidden", 0, 0]]
    assert renames == {"prune_low_magnitude_hidden": "hidden"}


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
def test_time_major_is_dropped_from_recurrent_layers_only(kind):
    rnn = {"class_name": kind, "config": {"name": "rnn", "units": 3, "time_major": False}}
    other = dense("out", time_major=False)  # not a Keras 2 RNN argument: left for Keras
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [rnn, other]}}
    layers = legacy.to_keras3(config, {})["config"]["layers"]
    assert layers[0]["config"] == {"name": "rnn", "units": 3}
    assert layers[1] == other


def test_a_wrapped_rnn_is_unwrapped_and_loses_time_major_too():
    rnn = {"class_name": "LSTM", "config": {"name": "lstm", "units": 3, "time_major": False}}
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [wrapped(rnn)]}}
    renames: dict[str, str] = {}
    (layer,) = legacy.to_keras3(config, renames)["config"]["layers"]
    assert layer == {"class_name": "LSTM", "config": {"name": "lstm", "units": 3}}
    assert renames == {"prune_low_magnitude_lstm": "lstm"}


def test_a_nested_models_call_sites_are_renumbered_from_zero():
    # Keras 2 gave the nested "base" a node 0 of its own construction, so the outer model
    # calls it at node 1 (and, shared, at node 2); Keras 3 numbers them 0 and 1.
    base = functional([INPUT, call(dense("conv"), ["input_1", 0, 0])],
                      [["input_1", 0, 0]], [["conv", 0, 0]], name="base")  # fmt: skip
    outer_input = {**INPUT, "name": "image", "config": {"name": "image"}}
    twice = [[["image", 0, 0, {}]], [["image", 0, 0, {}]]]
    first = {**base, "name": "base", "inbound_nodes": twice}
    head = call(dense("head"), ["base", 1, 0], ["base", 2, 0])
    config = functional([outer_input, first, head], [["image", 0, 0]], [["head", 0, 0]])
    found = legacy.to_keras3(config, {})["config"]
    assert found["layers"][2]["inbound_nodes"] == [[["base", 0, 0, {}], ["base", 1, 0, {}]]]
    assert found["output_layers"] == [["head", 0, 0]]
    inner = found["layers"][1]["config"]  # the nested model's own refs: already from 0
    assert inner["layers"][1]["inbound_nodes"] == [[["input_1", 0, 0, {}]]]
    assert inner["output_layers"] == [["conv", 0, 0]]


def test_keras3_style_calls_are_renumbered_as_well():
    history = {"class_name": "__keras_tensor__", "config": {"keras_history": ["base", 1, 0]}}
    head = {**dense("head"), "name": "head", "inbound_nodes": [{"args": [history], "kwargs": {}}]}
    base = {"class_name": "Functional", "name": "base", "inbound_nodes": [], "config": {}}
    config = functional([INPUT, base, head], [["input_1", 0, 0]], [["head", 0, 0]])
    layers = legacy.to_keras3(config, {})["config"]["layers"]
    (node,) = layers[2]["inbound_nodes"]
    assert node["args"][0]["config"]["keras_history"] == ["base", 0, 0]


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"model_config": b'{"class_name": "PruneLowMagnitude"}', "keras_version": b"2.15.0"},
         "h5-tfmot"),
        ({"model_config": '{"class_name": "Dense"}', "keras_version": "2.15.0"}, "h5-keras2"),
        ({"model_config": '{"class_name": "Dense"}', "keras_version": "3.15.0"}, "h5"),
        ({}, "h5"),
    ],
    ids=["tfmot", "keras2", "keras3", "bare"],
)  # fmt: skip
def test_h5_format_from_the_files_attributes(attrs, expected):
    assert legacy.h5_format(attrs) == expected


def op_lambda(name: str, function: str, ref: list, y: object) -> dict:
    """A tf_keras TFOpLambda call as stored: one call, ``[[layer, node, tensor, kwargs]]``."""
    return {"class_name": "TFOpLambda", "name": name,
            "config": {"name": name, "trainable": True, "dtype": "float32", "function": function},
            "inbound_nodes": [[*ref, {"y": y, "name": None}]]}  # fmt: skip


def test_tf_op_lambdas_become_rescaling_or_merge_layers():
    """MobileNetV3's ``x + 3`` and ``x * (1/6)``, RegNet's ``a * b``; an op without a rule
    is left for the load to name."""
    layers = [
        INPUT,
        op_lambda("tf.__operators__.add", "__operators__.add", ["input_1", 0, 0], 3.0),
        op_lambda("tf.math.multiply", "math.multiply", ["tf.__operators__.add", 0, 0], 1 / 6),
        op_lambda(
            "tf.math.multiply_1", "math.multiply", ["input_1", 0, 0], ["tf.math.multiply", 0, 0]
        ),
        op_lambda("tf.math.truediv", "math.truediv", ["input_1", 0, 0], 4.0),
        op_lambda("tf.nn.relu", "nn.relu", ["input_1", 0, 0], None),
    ]
    config = functional(layers, [["input_1", 0, 0]], [["tf.math.multiply_1", 0, 0]])
    found = {layer["name"]: layer for layer in legacy.to_keras3(config, {})["config"]["layers"]}
    add = found["tf.__operators__.add"]
    assert add["class_name"] == "Rescaling"
    assert add["config"] == {"name": "tf.__operators__.add", "trainable": True,
                                 "dtype": "float32", "scale": 1.0, "offset": 3.0}  # fmt: skip
    assert add["inbound_nodes"] == [[["input_1", 0, 0, {}]]]
    assert found["tf.math.multiply"]["config"]["scale"] == pytest.approx(1 / 6)
    assert found["tf.math.truediv"]["config"]["scale"] == 0.25
    product = found["tf.math.multiply_1"]
    assert product["class_name"] == "Multiply"
    assert product["inbound_nodes"] == [[["input_1", 0, 0, {}], ["tf.math.multiply", 0, 0, {}]]]
    assert found["tf.nn.relu"]["class_name"] == "TFOpLambda"


def test_custom_scale_layer_scale_and_stochastic_depth_become_plain_layers():
    """InceptionResNetV2's ``a + b * scale`` -> Rescaling + Add; ConvNeXt's LayerScale takes
    its stored gamma into the config (its weights are then not copied), StochasticDepth is
    a per-sample Dropout."""
    custom = {"class_name": "Custom>CustomScaleLayer", "name": "csl",
              "config": {"name": "csl", "scale": 0.17},
              "inbound_nodes": [[["input_1", 0, 0, {}], ["dense", 0, 0, {}]]]}  # fmt: skip
    scale = call({"class_name": "LayerScale", "config": {"name": "ls", "init_values": 1e-6,
                  "projection_dim": 2}}, ["csl", 0, 0])  # fmt: skip
    drop = call({"class_name": "StochasticDepth", "config": {"name": "sd",
                 "drop_path_rate": 0.1}}, ["ls", 0, 0])  # fmt: skip
    layers = [INPUT, call(dense("dense"), ["input_1", 0, 0]), custom, scale, drop]
    config = functional(layers, [["input_1", 0, 0]], [["sd", 0, 0]])
    absorbed: set[str] = set()
    stored = {"ls": [np.array([0.5, 2.0], np.float32)]}
    rewritten = legacy.to_keras3(config, {}, stored=stored.__getitem__, absorbed=absorbed)
    found = {layer["name"]: layer for layer in rewritten["config"]["layers"]}
    assert found["csl_scale"]["class_name"] == "Rescaling"
    assert found["csl_scale"]["config"]["scale"] == 0.17
    assert found["csl_scale"]["inbound_nodes"] == [[["dense", 0, 0, {}]]]
    assert found["csl"]["class_name"] == "Add"
    assert found["csl"]["inbound_nodes"] == [[["input_1", 0, 0, {}], ["csl_scale", 0, 0, {}]]]
    assert found["ls"]["class_name"] == "Rescaling"
    assert found["ls"]["config"]["scale"] == [0.5, 2.0] and absorbed == {"ls"}
    assert found["sd"]["class_name"] == "Dropout"
    assert found["sd"]["config"]["rate"] == 0.1
    assert found["sd"]["config"]["noise_shape"] == [None, 1, 1, 1]


def test_tensorflow_module_initializers_move_to_keras():
    """EfficientNetV2's bias initializer, as tf_keras wrote it."""
    constant = {"module": "tensorflow.python.ops.init_ops_v2", "class_name": "Constant",
                "config": {"value": 0}, "registered_name": "Constant"}  # fmt: skip
    layers = [INPUT, call(dense("out", bias_initializer=constant), ["input_1", 0, 0])]
    config = functional(layers, [["input_1", 0, 0]], [["out", 0, 0]])
    (_, out) = legacy.to_keras3(config, {})["config"]["layers"]
    assert out["config"]["bias_initializer"] == {
        "module": "keras.initializers", "class_name": "Constant", "config": {"value": 0},
        "registered_name": None,
    }  # fmt: skip


def test_mixed_precision_policies_become_their_names():
    """tf_keras under ``mixed_float16`` writes each layer's dtype as a Keras 2 ``Policy``
    object, which Keras 3 does not read ("'str' object has no attribute
    'quantization_mode'", exit 2); Keras 3 takes the policy's name."""
    policy = {"module": "keras.mixed_precision", "class_name": "Policy",
              "config": {"name": "mixed_float16"}, "registered_name": None}  # fmt: skip
    layers = [INPUT, call(dense("out", dtype=policy), ["input_1", 0, 0])]
    config = functional(layers, [["input_1", 0, 0]], [["out", 0, 0]])
    (_, out) = legacy.to_keras3(config, {})["config"]["layers"]
    assert out["config"]["dtype"] == "mixed_float16"
