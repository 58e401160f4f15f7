"""Input formats beyond Keras 3 files: tf.keras/tf_keras ``.h5`` and SavedModel folders,
tfmot-wrapped ``.h5``, Keras 3 ``.h5`` compiled with string losses, and ``finetune.loss``.

The Keras 2 files are built once per module by tests/formats/legacy_models.py in its own process
(tfmot needs ``TF_USE_LEGACY_KERAS=1`` before TensorFlow loads), with reference predictions
to compare what prunecli rebuilds against.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import load_model, prune_report, scaled, synthetic_images, write_config, write_npz

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("legacy")
    x, y = synthetic_images(90, 5)
    write_npz(folder / "train.npz", scaled(x), y)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, str(HERE / "legacy_models.py"), str(folder), str(folder / "train.npz")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def reference(legacy: Path) -> dict:
    return json.loads((legacy / "reference.json").read_text())


def kernels_by_layer(path: Path) -> dict[str, np.ndarray]:
    """Every kernel of a saved model keyed "layer/kernel"."""
    model = load_model(path)
    # keyed "layer/kernel": Keras 3 paths of a nested model's weights vary by how it was built
    return {
        "/".join(w.path.split("/")[-2:]): np.asarray(w)
        for w in model.weights
        if w.path.endswith("kernel")
    }


def prune_forced(cli, model: Path, out: Path, *args: str) -> dict:
    """``prune MODEL -o OUT --quiet --force ARGS``: the report of a run that must succeed."""
    return prune_report(cli, model, "-o", out, "--quiet", "--force", *args)


# --- rebuilt models match what tf_keras computed --------------------------------------------


@pytest.mark.parametrize(("name", "fmt"), [("k2.h5", "h5-keras2"), ("k2_sm", "savedmodel-keras2")])
def test_keras2_nested_model_rebuilt_with_weights_and_compile_config(legacy, reference, name, fmt):
    from prunecli.formats import model_io

    model, found = model_io.load(legacy / name)
    assert found.name == fmt
    x = np.load(legacy / "train.npz")["x"][:4]
    np.testing.assert_allclose(model.predict(x, verbose=0), reference["k2"], atol=1e-5)
    assert [layer.name for layer in model.get_layer("base").layers] == [
        "conv", "bn", "pool", "flat",
    ]  # fmt: skip
    compiled = model_io.compile_config(model)
    assert compiled["loss"] == "sparse_categorical_crossentropy"
    assert compiled["metrics"] == ["accuracy"]
    assert compiled["optimizer"]["config"]["learning_rate"] == pytest.approx(1e-2)


@pytest.mark.parametrize("name", ["k2_mixed16.h5", "k2_mixed16_sm"])
def test_keras2_mixed_float16_model_keeps_its_policy_and_prunes(cli, legacy, reference, name):
    """tf_keras writes each layer's policy as a Keras 2 ``Policy`` object: was exit 2
    ("'str' object has no attribute 'quantization_mode'")."""
    from prunecli.formats import model_io

    model, _ = model_io.load(legacy / name)
    assert model.get_layer("hidden").dtype_policy.name == "mixed_float16"
    assert model.get_layer("probs").dtype_policy.name == "float32"
    probe = np.eye(6, dtype=np.float32)
    np.testing.assert_allclose(model.predict(probe, verbose=0), reference["k2_mixed16"], atol=1e-3)
    out = legacy / f"{name.split('.')[0]}.pruned.keras"
    prune_forced(cli, legacy / name, out, "--epochs", "0", "--sparsity", "0.5")
    kernels = kernels_by_layer(out)
    assert set(kernels) == {"hidden/kernel", "logits/kernel"}
    assert [int((kernel == 0).sum()) for kernel in kernels.values()] == [24, 12]


def test_keras2_rnn_h5_rebuilt(legacy, reference):
    from prunecli.formats import model_io

    model, fmt = model_io.load(legacy / "k2_rnn.h5")
    assert fmt.name == "h5-keras2"
    tokens = np.array(reference["k2_rnn"]["x"])
    np.testing.assert_allclose(
        model.predict(tokens, verbose=0), reference["k2_rnn"]["y"], atol=1e-5
    )
    loss = model_io.compile_config(model)["loss"]
    assert loss["class_name"] == "SparseCategoricalCrossentropy"
    assert loss["config"]["from_logits"] is True


def test_tfmot_h5_unwrapped_like_strip_pruning(legacy, reference):
    from prunecli.formats import model_io

    model, fmt = model_io.load(legacy / "tfmot.h5")
    assert fmt.name == "h5-tfmot"
    assert [layer.name for layer in model.layers] == reference["tfmot"]["layers"]
    x = np.load(legacy / "train.npz")["x"][:4]
    np.testing.assert_allclose(
        model.predict(x, verbose=0), reference["tfmot"]["predictions"], atol=1e-5
    )
    assert not any("PruneLowMagnitude" in type(layer).__name__ for layer in model.layers)


# --- end to end through the CLI -------------------------------------------------------------


@pytest.mark.parametrize("name", ["k2.h5", "k2_sm"])
def test_prune_keras2_inputs_end_to_end(cli, legacy, image_data, tmp_path, name):
    out = tmp_path / "pruned.keras"
    report = prune_forced(cli, legacy / name, out, "--data", image_data, "--epochs", "1",
                    "--sparsity", "0.6")  # fmt: skip
    assert report["input"]["format"] == ("h5-keras2" if name == "k2.h5" else "savedmodel-keras2")
    assert report["after"]["accuracy"] is not None
    kernels = kernels_by_layer(out)
    assert set(kernels) == {"conv/kernel", "hidden/kernel", "out/kernel"}
    for path, kernel in kernels.items():
        assert np.mean(kernel == 0) == pytest.approx(0.6, abs=0.02), path


def test_tfmot_convert_keeps_existing_zeros(cli, legacy, reference, tmp_path):
    out = tmp_path / "stripped.keras"
    report = prune_forced(cli, legacy / "tfmot.h5", out, "--epochs", "0", "--sparsity", "0")
    assert report["input"]["format"] == "h5-tfmot"
    # Loaded in a process that never imports prunecli (nor tfmot): a plain Keras 3 model.
    code = (
        "import json, sys, keras, numpy as np\n"
        "m = keras.saving.load_model(sys.argv[1])\n"
        "print(json.dumps({'layers': [l.name for l in m.layers], 'zeros': {"
        "'/'.join(w.path.split('/')[-2:]): "
        "np.flatnonzero(np.asarray(w) == 0).tolist() for w in m.weights "
        "if w.path.endswith('kernel')}}))"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True,
                          text=True, env=env, timeout=120, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    written = json.loads(done.stdout.strip().splitlines()[-1])
    assert written["layers"] == reference["tfmot"]["layers"]
    expected = {name.split(":")[0]: zeros for name, zeros in reference["tfmot"]["zeros"].items()}
    assert written["zeros"] == expected
    assert all(len(zeros) > 0 for zeros in expected.values())


def test_tfmot_prune_further_with_finetuning(cli, legacy, image_data, tmp_path):
    out = tmp_path / "pruned.h5"
    report = prune_forced(cli, legacy / "tfmot.h5", out, "--data", image_data, "--epochs", "1",
                    "--sparsity", "0.8")  # fmt: skip
    assert report["finetune"]["epochs"] == 1
    kernels = kernels_by_layer(out)
    assert set(kernels) == {"conv/kernel", "hidden/kernel", "out/kernel"}
    for path, kernel in kernels.items():
        assert np.mean(kernel == 0) == pytest.approx(0.8, abs=0.03), path


def test_keras3_h5_with_string_losses_keeps_its_compile_config(cli, tmp_path):
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 6)).astype(np.float32)
    y = (x[:, :3] * 0.5 + 0.1).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, name="d1"),
                              keras.layers.Dense(3, name="d2")])  # fmt: skip
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    model.fit(x, y, epochs=1, verbose=0)
    source = tmp_path / "mse.h5"
    model.save(source)
    np.savez(tmp_path / "reg.npz", x=x, y=y)
    out = tmp_path / "pruned.keras"
    report = prune_forced(
        cli, source, out, "--set", f"data.train={tmp_path / 'reg.npz'}", "--epochs", "1"
    )
    assert report["input"]["format"] == "h5"
    assert report["data"]["task"] == "regression"
    written = keras.saving.load_model(out)
    # the same loss, its alias spelled out: Keras 3.15 cannot read "mse" back from an .h5
    assert written.get_compile_config()["loss"] == "mean_squared_error"
    assert written.get_compile_config()["metrics"] == ["mae"]


# --- finetune.loss / finetune.metrics ---------------------------------------------------------


def _regression_npz(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 6)).astype(np.float32)
    np.savez(tmp_path / "reg.npz", x=x, y=(x[:, :3] + 0.25).astype(np.float32))
    return tmp_path / "reg.npz"


def test_finetune_loss_wins_for_uncompiled_keras2_model(cli, legacy, tmp_path):
    import keras

    cfg = write_config(tmp_path / "cfg.yaml", "finetune:\n  loss: mae\n  metrics: [mse]\n")
    out = tmp_path / "pruned.keras"
    data = _regression_npz(tmp_path)
    report = prune_forced(cli, legacy / "k2_plain.h5", out, "--config", cfg,
                    "--set", f"data.train={data}", "--epochs", "1")  # fmt: skip
    assert report["input"]["format"] == "h5-keras2"
    compiled = keras.saving.load_model(out).get_compile_config()
    assert compiled["loss"] == "mean_absolute_error"  # "mae", spelled out so any file loads
    assert report["finetune"]["loss"] == "mae"  # the report names the loss as configured
    # finetune.run compiles the loss only (metrics cost time per step), so the metrics are
    # validated but not saved: the saved compile config is the fine-tuning one.
    # The report's loss is the one asked for: mean absolute error on the validation split.
    assert report["after"]["loss"] is not None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("loss", "msee", "finetune.loss: unknown Keras loss 'msee'"),
     ("metrics", "[maee]", "finetune.metrics: unknown Keras metric 'maee'")],
)  # fmt: skip
def test_unknown_finetune_loss_or_metric_is_a_config_error(
    cli, legacy, tmp_path, key, value, message
):
    data = _regression_npz(tmp_path)
    result = cli("prune", legacy / "k2_plain.h5", "--set", f"data.train={data}",
                 "--set", f"finetune.{key}={value}", "-o", tmp_path / "o.keras")  # fmt: skip
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "o.keras").exists()


def test_no_known_loss_when_finetuning_names_finetune_loss():
    from prunecli import config
    from prunecli.errors import ConfigError
    from prunecli.formats import compiling

    settings = config.load(None, {"finetune.epochs": 1})
    with pytest.raises(ConfigError, match=r"set finetune\.loss"):
        compiling.training_args({}, None, settings.finetune)
    explicit = config.load(None, {"finetune.epochs": 1, "finetune.loss": "huber"})
    assert compiling.training_args({}, None, explicit.finetune) == {"loss": "huber"}


# --- inspect and safe mode --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("k2.h5", "h5-keras2"), ("k2_sm", "savedmodel-keras2"), ("tfmot.h5", "h5-tfmot"),
     ("k2_rnn.h5", "h5-keras2")],
)  # fmt: skip
def test_inspect_json_format_and_supports(cli, legacy, name, fmt):
    result = cli("inspect", legacy / name, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["format"] == fmt
    assert summary["supports"] == ["unstructured", "structured", "layer_selection", "finetune"]
    assert any(row["prunable"] for row in summary["layers"])


def test_inspect_json_keras3_kinds(cli, make_model):
    for suffix, fmt in ((".keras", "keras"), (".h5", "h5")):
        result = cli("inspect", make_model("cnn", suffix, train=False), "--json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["format"] == fmt
        assert "finetune" in json.loads(result.stdout)["supports"]


@pytest.mark.parametrize("name", ["k2_lambda.h5", "k2_lambda_sm"])
def test_lambda_in_keras2_inputs_refused_in_safe_mode(cli, legacy, name):
    result = cli("inspect", legacy / name, "--json")
    assert result.exit_code == 2
    assert "Lambda" in result.stderr and "--no-safe-mode" in result.stderr


def test_savedmodel_without_keras_metadata_is_read_by_its_signatures(cli, legacy, tmp_path):
    """No Keras architecture to rebuild: the folder is a signature-only SavedModel."""
    folder = tmp_path / "signatures_only"
    shutil.copytree(legacy / "k2_sm", folder)
    (folder / "keras_metadata.pb").unlink()
    result = cli("inspect", folder, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["format"] == "savedmodel"
