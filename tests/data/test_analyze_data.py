"""``prunecli analyze`` reads its data the way ``prune`` does:

- a multi-input model's ``.npz`` (one array per input, named after it) used to be refused
  ("missing array(s) x; expected arrays named x and y"), though ``prune`` takes it;
- ``data.rescale: auto`` used to be ignored: images were scaled by 1/255 for a model that
  begins with its own ``Rescaling`` (EfficientNet, MobileNetV3), so every sensitivity was
  measured on images 255 times too dark, while ``prune`` fed the raw pixels.
"""

from __future__ import annotations

import json

import keras
import numpy as np

CLASSES = 3


def _analyze(cli, model, *data):
    out = model.parent / f"{model.stem}.scan"
    done = cli("analyze", model, *data, "-o", out, "--json", "--set", "analyze.levels=[0.5]")
    assert done.exit_code == 0, done.stderr
    return json.loads(done.stdout)["baseline"]


def _two_inputs(tmp_path):
    """A two-input model saved, train/val ``.npz`` with one array per input, the model."""
    keras.utils.set_random_seed(0)
    left, right = keras.Input((4,), name="left"), keras.Input((3,), name="right")
    joined = keras.layers.Concatenate()([keras.layers.Dense(4, name="l")(left), right])
    model = keras.Model([left, right], keras.layers.Dense(CLASSES, name="head")(joined))
    model.save(tmp_path / "two.keras")
    rng = np.random.default_rng(0)
    for name, count in (("train", 40), ("val", 20)):
        arrays = {"left": rng.normal(size=(count, 4)), "right": rng.normal(size=(count, 3))}
        np.savez(tmp_path / f"{name}.npz", **arrays, y=np.arange(count) % CLASSES)
    return model


DATA = ["--set", "data.train={}/train.npz", "--set", "data.validation={}/val.npz"]


def test_analyze_feeds_a_two_input_model_by_name(cli, tmp_path):
    model = _two_inputs(tmp_path)
    baseline = _analyze(cli, tmp_path / "two.keras", *[a.format(tmp_path) for a in DATA])
    val = np.load(tmp_path / "val.npz")
    predicted = model.predict({"left": val["left"], "right": val["right"]}, verbose=0)
    assert baseline["accuracy"] == float(np.mean(np.argmax(predicted, -1) == val["y"]))


def test_sparsity_auto_scans_a_two_input_model(cli, tmp_path):
    """The same scan under ``prune --sparsity auto``: was exit 1 (``unhashable type:
    'slice'``, the scan sliced the dict of inputs as one array)."""
    _two_inputs(tmp_path)
    done = cli("prune", tmp_path / "two.keras", *[a.format(tmp_path) for a in DATA],
               "--sparsity", "auto", "--max-accuracy-drop", "0.5", "--set",
               "analyze.levels=[0.5, 0.9]", "--epochs", "0", "--json", "--quiet")  # fmt: skip
    assert done.exit_code == 0, done.stderr
    allocation = json.loads(done.stdout)["auto"]["allocation"]
    assert set(allocation) == {"l", "head"} and set(allocation.values()) <= {0.0, 0.5, 0.9}


def test_analyze_applies_rescale_auto_as_prune_does(cli, tmp_path, image_data):
    """A model that rescales its own pixels: analyze's baseline is prune's 'before'."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    x = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, strides=4, name="conv")(x))
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, name="head")(x))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.save(tmp_path / "scaling.keras")
    baseline = _analyze(cli, tmp_path / "scaling.keras", "--data", image_data)
    done = cli("prune", tmp_path / "scaling.keras", "--data", image_data, "--epochs", "0",
               "-o", tmp_path / "p.keras", "--json", "--quiet")  # fmt: skip
    assert done.exit_code == 0, done.stderr
    before = json.loads(done.stdout)["before"]
    assert json.loads(done.stdout)["data"]["rescale"] == 1.0
    assert abs(baseline["loss"] - before["loss"]) < 1e-5
    assert baseline["accuracy"] == before["accuracy"]
