"""Each private Keras/TF touchpoint in ``prunecli.compat`` still works, and is still needed.

A test named ``..._still_needed`` fails the day Keras offers a public way: then the shim
and its test go.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from prunecli import compat


def _lambda_config() -> dict:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x * 2)])
    return keras.saving.serialize_keras_object(model)


def test_safe_mode_scope_refuses_lambda_code() -> None:
    config = _lambda_config()
    with compat.safe_mode_scope(True), pytest.raises(ValueError, match=r"(?i)lambda|unsafe"):
        keras.saving.deserialize_keras_object(config)
    with compat.safe_mode_scope(False):
        assert keras.saving.deserialize_keras_object(config) is not None


def test_safe_mode_scope_still_needed() -> None:
    assert not hasattr(keras.saving, "SafeModeScope")


def test_legacy_model_from_config_builds_keras2_configs() -> None:
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "k2",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 3]}},
                {"class_name": "Dense", "config": {"units": 2, "name": "d"}},
            ],
        },
    }
    model = compat.legacy_model_from_config(config)
    assert model.get_layer("d").units == 2
    assert model.output_shape == (None, 2)


def _tiny_model() -> keras.Model:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_symbolic_build_hooks_exist_on_models() -> None:
    model = _tiny_model()
    batch = (np.zeros((2, 3), np.float32), np.zeros((2, 2), np.float32))
    compat.symbolic_build(model, batch)
    assert model.optimizer.built
    calls = []
    compat.set_symbolic_build(model, lambda iterator=None, data_batch=None: calls.append(1))
    model.fit(*batch, epochs=1, verbose=0)
    assert calls == [1]


def test_distribute_strategy_is_none_by_default() -> None:
    assert compat.distribute_strategy(_tiny_model()) is None


class _Block(keras.layers.Layer):
    """A custom layer holding a Dense of its own (as keras_hub's encoders do)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(4, name="inner")

    def call(self, x):
        return self.inner(x)


def test_all_layers_finds_sub_layers_still_needed() -> None:
    inputs = keras.Input((3,))
    block = _Block(name="block")
    model = keras.Model(inputs, block(inputs))
    names = [layer.name for layer in compat.all_layers(model)]
    assert "block" in names and "inner" in names
    assert "inner" not in [layer.name for layer in model.layers]  # the public list is shallow


def test_sublayers_lists_one_level_of_a_custom_layer_still_needed() -> None:
    inputs = keras.Input((3,))
    block = _Block(name="block")
    model = keras.Model(inputs, block(inputs))
    assert "block" in [layer.name for layer in compat.sublayers(model)]
    assert "inner" not in [layer.name for layer in compat.sublayers(model)]
    assert [layer.name for layer in compat.sublayers(block)] == ["inner"]
    assert not hasattr(block, "layers")  # no public list of a plain Layer's children


def test_tfsm_layer_class_names_weights_and_keeps_the_graph(tmp_path: Path) -> None:
    model = _tiny_model()
    model.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)

    class Single:
        def call(self, inputs, training=False):
            (output,) = self.call_endpoint_fn(inputs).values()
            return output

    layer = compat.tfsm_layer_class(Single)(str(tmp_path / "sm"), call_endpoint="serving_default")
    assert all(":" not in weight.name for weight in layer.weights)
    assert len(layer.original_names) == len(layer.weights) == 2
    assert compat.reloaded_object(layer).signatures["serving_default"] is not None
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(np.asarray(layer(x)), model.predict(x, verbose=0), atol=1e-6)


def test_graph_shims_follow_a_layer_call() -> None:
    inputs = keras.Input((4, 8))
    other = keras.Input((4, 8))
    attention = keras.layers.MultiHeadAttention(2, 4, name="mha")
    outputs = attention(inputs, value=other)
    operation, node, index = compat.producer(outputs)
    assert (operation, index) == (attention, 0)
    assert compat.node_inputs(operation, node) == [inputs, other]
    assert compat.node_outputs(operation, node) == [outputs]
    args, kwargs = compat.node_arguments(operation, node)
    assert args == (inputs,) and kwargs["value"] is other


def test_graph_shims_still_needed() -> None:
    """No public API maps a symbolic tensor to the call that made it."""
    tensor = keras.Input((2,))
    assert not hasattr(tensor, "history") and not hasattr(keras.Operation, "inbound_nodes")


def test_h5_image_is_the_file_model_save_writes(tmp_path: Path) -> None:
    import keras
    import numpy as np

    from prunecli import compat

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    model.compile("adam", "mean_squared_error")
    path = tmp_path / "m.h5"
    path.write_bytes(compat.h5_image(model))
    again = keras.models.load_model(path)
    np.testing.assert_array_equal(again.get_layer("d").kernel, model.get_layer("d").kernel)
    assert again.optimizer is not None  # include_optimizer, as model.save


def test_h5_image_still_needed(tmp_path: Path) -> None:
    """The day keras.saving.save_model takes an open h5py.File, the shim can go."""
    import h5py
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with h5py.File(tmp_path / "m.h5", "w") as file, pytest.raises(ValueError):
        keras.saving.save_model(model, file)
