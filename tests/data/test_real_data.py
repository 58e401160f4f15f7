"""Labels, frozen layers and exports as real users bring them: one-hot labels, a frozen
transfer-learning base, and an int8 export of a model whose input is int32 token ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import build_nested, synthetic_images
from real_models import load_elsewhere, token_data


def prune_json(cli, *args) -> dict:
    result = cli("prune", *args, "--json", "--quiet", "--force")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def one_hot(tmp_path: Path) -> Path:
    x, y = synthetic_images(90, 3)
    path = tmp_path / "one_hot.npz"
    np.savez(path, x=(x / 255.0).astype(np.float32)[..., None], y=np.eye(3)[y])
    return path


@pytest.mark.parametrize(
    ("compiled", "loss"),
    [(True, "sparse_categorical_crossentropy"), (False, "categorical_crossentropy")],
)
def test_one_hot_labels(cli, make_model, tmp_path, one_hot, compiled, loss):
    """A sparse-compiled model trains on the ids the one-hot rows name; an uncompiled one
    gets categorical cross-entropy (not regression); accuracy is the argmax match."""
    model = make_model("cnn", ".keras", compiled=compiled)
    report = prune_json(
        cli, model, "-o", tmp_path / "out.keras", "--epochs", "1", "--set", f"data.train={one_hot}"
    )
    assert report["finetune"]["loss"] == loss
    assert report["data"]["task"] == ("sparse" if compiled else "categorical")
    assert report["before"]["accuracy"] is not None and report["after"]["accuracy"] is not None


def test_soft_labels_with_a_sparse_loss_are_refused_in_one_line(cli, make_model, tmp_path):
    x, y = synthetic_images(30, 3)
    soft = np.full((30, 3), 0.1) + 0.7 * np.eye(3)[y]
    data = tmp_path / "soft.npz"
    np.savez(data, x=(x / 255.0).astype(np.float32)[..., None], y=soft)
    result = cli("prune", make_model("cnn", ".keras"), "--epochs", "1", "--set",
                 f"data.train={data}", "-o", tmp_path / "o.keras")  # fmt: skip
    assert result.exit_code == 2
    assert "finetune.loss: categorical_crossentropy" in result.stderr


def _frozen_base(tmp_path: Path) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    model = build_nested()
    model.get_layer("base").trainable = False
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    path = tmp_path / "frozen.keras"
    model.save(path)
    return path


def test_frozen_layers_are_reported_warned_and_trained_on_request(cli, tmp_path, npz_data):
    import keras

    model = _frozen_base(tmp_path)
    common = ["--epochs", "1", "--set", f"data.train={npz_data}"]
    left = prune_json(cli, model, "-o", tmp_path / "left.keras", *common)
    rows = {row["path"]: row for row in left["layers"]}
    assert rows["base/conv"]["trainable"] is False and rows["hidden"]["trainable"] is True
    assert any("frozen" in w and "base/conv" in w for w in left["warnings"])
    trained = prune_json(cli, model, "-o", tmp_path / "trained.keras", *common,
                         "--set", "finetune.train_frozen=true")  # fmt: skip
    assert trained["warnings"] == [] and trained["finetune"]["train_frozen"] is True

    def conv(name: str) -> np.ndarray:
        return np.asarray(keras.saving.load_model(tmp_path / name).get_layer("base").weights[0])

    # same masks (magnitude on the same input), but only train_frozen moved the survivors
    assert np.array_equal(conv("left.keras") == 0, conv("trained.keras") == 0)
    assert not np.allclose(conv("left.keras"), conv("trained.keras"))
    found = load_elsewhere([model, tmp_path / "trained.keras"])
    assert found[str(tmp_path / "trained.keras")]["frozen"] == found[str(model)]["frozen"]
    assert {"conv", "bn"} <= set(found[str(model)]["frozen"])  # saved back frozen as it came


def test_int32_token_model_exports_int8_calibrated_on_int_inputs(cli, tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(100, 16, name="embed")(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.save(tmp_path / "tokens.keras")
    data = token_data(tmp_path / "tokens.npz", names=False)
    report = prune_json(
        cli, tmp_path / "tokens.keras", "-o", tmp_path / "tokens.tflite", "--epochs", "0",
        "--set", f"data.train={data}", "--set", "output.tflite.quantize=int8",
    )  # fmt: skip
    (entry,) = report["exports"]
    assert entry["format"] == "tflite" and entry["accuracy"] is not None
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tmp_path / "tokens.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.int32


@pytest.mark.parametrize("quantize", ["none", "dynamic"])
def test_export_notes_say_when_a_file_is_larger_than_it_should_be(
    cli, make_model, tmp_path, npz_data, quantize
):
    """Low sparsity, sparse storage: whenever the artifact is larger than the input exported
    the same way its note says so."""
    report = prune_json(
        cli, make_model("cnn", ".keras"), "-o", tmp_path / "out.tflite", "--epochs", "0",
        "--sparsity", "0.1", "--set", f"data.train={npz_data}",
        "--set", f"output.tflite.quantize={quantize}",
    )  # fmt: skip
    (entry,) = report["exports"]
    note = entry["note"] or ""
    larger = entry["size_bytes"] > entry["before"]["size_bytes"]
    assert ("larger than the input exported the same way" in note) == larger


def test_larger_note_names_both_sizes_and_the_reason():
    from prunecli.config import TFLite
    from prunecli.formats.exporting import larger_note

    entry = {"format": "tflite", "size_bytes": 1200}
    assert larger_note(entry, {"size_bytes": 1300}, TFLite()) is None
    note = larger_note(entry, {"size_bytes": 1000}, TFLite())
    assert note.startswith("1,200 bytes, larger than the input exported the same way (1,000")
    assert "index arrays" in note


def _specs():
    from prunecli.data.inputs import InputSpec

    return tuple(
        InputSpec(name, (None,), "int32") for name in ("padding_mask", "segment_ids", "token_ids")
    )


def _first_batch(settings, specs):
    from prunecli import data

    splits = data.load(settings, specs, seed=0)
    x, _ = next(iter(splits.train.dataset(4, cache=False)))
    return splits, x


def test_multi_input_npz_and_tfrecord_feed_each_input_by_name_in_its_dtype(tmp_path):
    import tensorflow as tf

    from prunecli.config import Data

    npz = token_data(tmp_path / "tokens.npz", count=12)
    _, x = _first_batch(Data(train=npz, validation_split=0), _specs())
    assert sorted(x) == ["padding_mask", "segment_ids", "token_ids"]
    assert all(x[name].dtype == tf.int32 and x[name].shape == (4, 8) for name in x)
    arrays = np.load(npz)
    np.testing.assert_array_equal(np.asarray(x["token_ids"]), arrays["token_ids"][:4])
    shard = tmp_path / "train.tfrecord"
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for i in range(12):
            feature = {
                name: tf.train.Feature(int64_list=tf.train.Int64List(value=arrays[name][i]))
                for name in ("token_ids", "segment_ids", "padding_mask")
            } | {"label": tf.train.Feature(int64_list=tf.train.Int64List(value=[arrays["y"][i]]))}
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    features = {name: {"dtype": "int64", "shape": [8]} for name in _specs_names()}
    settings = Data(
        train=shard,
        validation_split=0,
        tfrecord={"features": features | {"label": {"dtype": "int64"}}},
    )
    splits, x = _first_batch(settings, _specs())
    assert x["segment_ids"].dtype == tf.int32
    np.testing.assert_array_equal(np.asarray(x["token_ids"]), arrays["token_ids"][:4])
    np.testing.assert_array_equal(splits.train.y, arrays["y"])


def _specs_names() -> list[str]:
    return [spec.name for spec in _specs()]


def test_a_model_library_that_is_not_installed_is_named_with_its_pip_name(tmp_path):
    """Only the package the file names is looked for, never a module path from the file."""
    import importlib.util

    from prunecli.errors import ModelLoadError
    from prunecli.formats import libraries

    if importlib.util.find_spec("keras_cv") is not None:
        pytest.skip("keras_cv is installed here")
    config = {"class_name": "Functional", "config": {"layers": [
        {"module": "keras_cv.src.models.yolo", "class_name": "YOLOV8Backbone",
         "registered_name": "keras_cv>YOLOV8Backbone", "config": {}},
    ]}}  # fmt: skip
    with pytest.raises(
        ModelLoadError, match=r"keras_cv classes; install it \(pip install keras-cv\)"
    ):
        libraries.prepare(tmp_path / "m.keras", config, ())
    unknown = {"class_name": "Mine", "registered_name": "acme>Mine", "module": "acme.layers"}
    with pytest.raises(ModelLoadError, match=r"class 'Mine'.*--import MODULE"):
        libraries.prepare(tmp_path / "m.keras", unknown, ())
    with pytest.raises(ModelLoadError, match="--import no_such_module_here: cannot import"):
        libraries.import_modules(["no_such_module_here"])
