"""formats/runners.py: a multi-input artifact fed by name, each input in its dtype."""

from __future__ import annotations

import numpy as np
import pytest

from prunecli.errors import OutputError
from prunecli.formats import runners


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """A model of int32 ``ids`` (open length) and float ``extra`` as SavedModel and TFLite,
    a batch for it and the Keras model's outputs on it."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    ids = keras.Input((None,), dtype="int32", name="ids")
    extra = keras.Input((2,), name="extra")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(10, 4)(ids))
    outputs = keras.layers.Dense(3)(keras.layers.Concatenate()([pooled, extra]))
    model = keras.Model([ids, extra], outputs)
    root = tmp_path_factory.mktemp("runners")
    model.export(str(root / "sm"), format="tf_saved_model", verbose=False)
    (root / "m.tflite").write_bytes(
        tf.lite.TFLiteConverter.from_saved_model(str(root / "sm")).convert()
    )
    rng = np.random.default_rng(0)
    batch = {"ids": rng.integers(0, 10, (5, 6)).astype(np.int32),
             "extra": rng.normal(size=(5, 2)).astype(np.float32)}  # fmt: skip
    expected = np.asarray(model([batch["ids"], batch["extra"]]))
    return {"savedmodel": root / "sm", "tflite": root / "m.tflite"}, {
        "batch": batch,
        "expected": expected,
    }


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite"])
def test_multi_input_artifact_is_fed_by_name(artifacts, fmt):
    paths, probe = artifacts
    run = runners.multi_input(fmt, paths[fmt])
    assert run is not None
    np.testing.assert_allclose(run(probe["batch"]), probe["expected"], atol=1e-5)
    with pytest.raises(OutputError, match="not named after the model's inputs"):
        run({"token_ids": probe["batch"]["ids"], "extra": probe["batch"]["extra"]})


def test_zeros_run_gives_open_dimensions_a_fixed_length(artifacts):
    paths, _ = artifacts
    interpreter = runners.litert_interpreter(paths["tflite"].read_bytes())
    runners.zeros_run(interpreter)  # ids: int32 (1, FIXED_LENGTH), extra: float32 (1, 2)
    shapes = {d["name"]: tuple(d["shape"]) for d in interpreter.get_input_details()}
    assert (1, runners.FIXED_LENGTH) in shapes.values() and (1, 2) in shapes.values()


def test_representative_keeps_integer_inputs_integers():
    samples = {"ids": np.arange(12, dtype=np.int32).reshape(4, 3), "x": np.ones((4, 2))}
    batches = list(runners.representative(samples, count=3)())
    assert len(batches) == 3
    assert batches[0]["ids"].dtype == np.int32 and batches[0]["x"].dtype == np.float32
    np.testing.assert_array_equal(batches[2]["ids"], [[6, 7, 8]])
