"""The three defects of issue 11, each reproduced on real files before it was fixed.

- a Keras 3 ``.h5`` compiled with ``"mse"``: the ``.h5`` prunecli wrote failed
  ``keras.models.load_model`` in a clean process ("Could not deserialize 'keras.metrics.mse'");
- a Keras 2 SavedModel written back as a SavedModel: ``serving_default`` outputs were named
  ``output_0`` instead of the input's output name;
- TFRecord with an ``int64`` image feature and an explicit ``data.rescale``: the rescale was
  not applied.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from helpers import example, synthetic_images, tfrecord, write_shards

from prunecli import data

# Loads each path with plain Keras in a process that never imports prunecli.
CHILD = """
import json, sys
import keras, numpy as np
out = {}
for path in sys.argv[1:]:
    model = keras.models.load_model(path)
    out[path] = {"loss": getattr(model.loss, "__name__", str(model.loss)),
                 "zeros": sum(int(np.sum(np.asarray(w) == 0)) for w in model.weights)}
out["prunecli"] = any(m.startswith("prunecli") for m in sys.modules)
print(json.dumps(out))
"""


def _regression(tmp_path: Path) -> tuple[Path, Path]:
    """A Keras 3 ``.h5`` regressor compiled with the alias ``"mse"``, and its data."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(16, name="d1"), keras.layers.Dense(1, name="d2")]
    )
    model.compile(optimizer="adam", loss="mse")
    path = tmp_path / "reg.h5"
    model.save(path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    np.savez(tmp_path / "reg.npz", x=x, y=x.sum(axis=1).astype(np.float32))
    return path, tmp_path / "reg.npz"


def test_h5_compiled_with_mse_writes_an_h5_plain_keras_loads(cli, tmp_path: Path) -> None:
    model, train = _regression(tmp_path)
    outputs = {"tuned": tmp_path / "tuned.h5", "one_shot": tmp_path / "one_shot.h5"}
    for name, epochs in (("tuned", "1"), ("one_shot", "0")):
        result = cli(
            "prune", model, "-o", outputs[name], "--epochs", epochs, "--sparsity", "0.5",
            "--set", f"data.train={train}", "--quiet", "--json",
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, outputs.values())],
        capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found.pop("prunecli") is False
    for path in outputs.values():
        assert found[str(path)]["loss"] == "mean_squared_error"  # the same loss, spelled out
        assert found[str(path)]["zeros"] >= (6 * 16 + 16) // 2  # half of each kernel pruned


def test_tfrecord_int64_pixels_take_an_explicit_rescale(tmp_path: Path) -> None:
    pixels, labels = synthetic_images(24, 7)  # uint8, stored as an int64 list
    records = [
        example({"image": ("int", image.reshape(-1).tolist()), "label": ("int", [int(label)])})
        for image, label in zip(pixels, labels, strict=True)
    ]
    pattern = write_shards(tmp_path / "shards", records)
    spec = {"image": {"dtype": "int64", "shape": [8, 8, 1]}, "label": {"dtype": "int64"}}
    settings = tfrecord(pattern, spec, validation_split=0, rescale=1 / 255)
    x, y = data.materialize(data.load(settings, (8, 8, 1), seed=0).train)
    expected = pixels.astype(np.float32)[..., None] * np.float32(1 / 255)
    np.testing.assert_allclose(x, expected, rtol=1e-6)
    assert x.max() <= 1.0 and x.max() > 0.5
    np.testing.assert_array_equal(y, labels)
    # without data.rescale a list of values is taken as is (today's behaviour kept)
    plain = tfrecord(pattern, spec, validation_split=0)
    raw, _ = data.materialize(data.load(plain, (8, 8, 1), seed=0).train)
    np.testing.assert_array_equal(raw, pixels.astype(np.float32)[..., None])


# Builds a tf.keras (Keras 2) SavedModel whose output layer is "head": argv[1] the folder,
# argv[2] an .npz of a few inputs and the model's outputs on them.
KERAS2_SAVEDMODEL = """
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tf_keras as k
k.utils.set_random_seed(0)
model = k.Sequential([k.Input((6,), name="features"),
                      k.layers.Dense(8, activation="relu", name="hidden"),
                      k.layers.Dense(3, activation="softmax", name="head")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
model.save(sys.argv[1])
x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
np.savez(sys.argv[2], x=x, y=model.predict(x, verbose=0))
"""


def _serving(folder: Path) -> tuple[Any, list[str], list[str]]:
    import tensorflow as tf

    signature = tf.saved_model.load(str(folder)).signatures["serving_default"]
    inputs = sorted(signature.structured_input_signature[1])
    return signature, inputs, sorted(signature.structured_outputs)


def test_keras2_savedmodel_written_back_keeps_its_signature_names(cli, tmp_path: Path) -> None:
    import tensorflow as tf

    source, probe = tmp_path / "k2_sm", tmp_path / "probe.npz"
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", KERAS2_SAVEDMODEL, str(source), str(probe)],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    target = tmp_path / "pruned_sm/"
    result = cli("prune", source, "-o", f"{target}/", "--epochs", "0", "--sparsity", "0",
                 "--quiet", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["input"]["format"] == "savedmodel-keras2"
    _, source_inputs, source_outputs = _serving(source)
    signature, inputs, outputs = _serving(target)
    assert source_outputs == outputs == ["head"]  # not output_0
    assert source_inputs == inputs
    arrays = np.load(probe)
    served = signature(**{inputs[0]: tf.constant(arrays["x"])})["head"]
    np.testing.assert_allclose(np.asarray(served), arrays["y"], rtol=1e-5, atol=1e-6)
