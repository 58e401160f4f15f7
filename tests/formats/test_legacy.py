"""formats/legacy.py: the Keras 2 config rewrite (``to_keras3``) on small hand-written
configs: tfmot wrappers unwrapped and renamed, ``time_major`` dropped, a nested model's call
sites renumbered. Pure dict work: no TensorFlow. Real tf_keras files: ``test_model_io.py``.
"""

from __future__ import annotations

import copy

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
