"""Signature-only SavedModel inputs: Keras 3 ``model.export`` and a plain ``tf.Module``.

Each is pruned end to end through the CLI; the written SavedModel is read back in a
process that never imports prunecli, and compared with the input's signatures and with
prunecli's own in-process view of the output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import last_json_line, prune_report, run_python, train_cnn, write_config

# Reads SavedModels with TensorFlow alone: signatures (names, input and output specs),
# the sparsity of every rank >= 2 variable, and the serving_default predictions on x.
READER = textwrap.dedent(
    """
    import json, sys
    import numpy as np, tensorflow as tf

    def describe(folder):
        loaded = tf.saved_model.load(folder)
        signatures = {}
        for name, fn in loaded.signatures.items():
            signatures[name] = {
                "inputs": {k: [s.shape.as_list(), s.dtype.name]
                           for k, s in fn.structured_input_signature[1].items()},
                "outputs": {k: [s.shape.as_list(), s.dtype.name]
                            for k, s in fn.structured_outputs.items()},
            }
        serving = loaded.signatures["serving_default"]
        sparsity = {v.name: float(np.mean(v.numpy() == 0))
                    for v in serving.variables if len(v.shape) >= 2}
        return loaded, signatures, sparsity

    source, output, x_path = sys.argv[1:]
    x = np.load(x_path)
    _, before, _ = describe(source)
    loaded, after, sparsity = describe(output)
    fn = loaded.signatures["serving_default"]
    (name,) = fn.structured_input_signature[1]
    (result,) = fn(**{name: tf.constant(x)}).values()
    print(json.dumps({
        "before": before, "after": after, "sparsity": sparsity,
        "predictions": result.numpy().tolist(),
        "has_serve": hasattr(loaded, "serve"),
        "modules": sorted(m for m in sys.modules if m.startswith("prunecli")),
    }))
    """
)


def read_clean(source: Path, output: Path, x: np.ndarray, tmp_path: Path) -> dict:
    """Run READER in a fresh interpreter (no prunecli on its path)."""
    x_path = tmp_path / "x.npy"
    np.save(x_path, x)
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
    done = run_python(READER, source, output, x_path, env=env, cwd=tmp_path, check=True)
    return last_json_line(done.stdout)


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    """(a) A trained Keras 3 CNN written by ``model.export(dir)``."""
    folder = tmp_path / "models" / "exported"
    train_cnn(batch_size=32).export(folder, verbose=False)
    return folder


@pytest.fixture
def module_dir(tmp_path: Path) -> Path:
    """(c) A plain tf.Module MLP, 64 -> 16 -> 3 softmax, with two signatures."""
    import tensorflow as tf

    rng = np.random.default_rng(0)

    class MLP(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w1 = tf.Variable(0.3 * rng.normal(size=(64, 16)).astype("f4"), name="dense/kernel")
            self.b1 = tf.Variable(np.zeros(16, "f4"), name="dense/bias")
            self.w2 = tf.Variable(0.3 * rng.normal(size=(16, 3)).astype("f4"), name="out/kernel")
            self.b2 = tf.Variable(np.zeros(3, "f4"), name="out/bias")
            self.temperature = tf.Variable(1.0, name="temperature")

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="image")])
        def logits(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
            hidden = tf.nn.relu(tf.reshape(image, [-1, 64]) @ self.w1 + self.b1)
            return {"logits": hidden @ self.w2 + self.b2}

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="image")])
        def probs(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"probs": tf.nn.softmax(self.logits(image)["logits"] / self.temperature)}

    module = MLP()
    folder = tmp_path / "models" / "module"
    signatures = {"serving_default": module.probs, "logits": module.logits}
    tf.saved_model.save(module, str(folder), signatures=signatures)
    return folder


def _x(npz: Path) -> np.ndarray:
    return np.load(npz)["x"][:12]


def _prune_and_check(
    cli: Callable, source: Path, npz: Path, tmp_path: Path, *extra: str
) -> tuple[dict, dict, Path]:
    from prunecli.reporting import measure

    output = tmp_path / "out" / "pruned"
    output.parent.mkdir()
    source_sha = measure.sha256(source)
    report = prune_report(
        cli, source, "--set", f"data.train={npz}", "--epochs", "1", "--sparsity", "0.6",
        "-o", output, "-q", *extra,
    )  # fmt: skip
    assert report["input"]["format"] == "savedmodel"
    assert report["input"]["sha256"] == source_sha == measure.sha256(source)  # input untouched
    assert report["output"] == {
        "path": str(output),
        "format": "savedmodel",
        "sha256": report["output"]["sha256"],
    }
    assert (output / "saved_model.pb").is_file()
    assert not [p for p in output.parent.iterdir() if p.name.startswith(".")]  # no temp left
    clean = read_clean(source, output, _x(npz), tmp_path)
    assert clean["modules"] == []
    assert clean["after"] == clean["before"]  # every signature, names and specs, unchanged
    # prunecli's in-process view of the written folder predicts what plain TF does.
    from prunecli.formats import model_io

    model, fmt = model_io.load(output)
    assert fmt.name == "savedmodel"
    np.testing.assert_allclose(
        model.predict(_x(npz), verbose=0), np.array(clean["predictions"]), atol=1e-5
    )
    return report, clean, output


def test_keras_export_is_pruned_and_keeps_its_signatures(
    cli: Callable, exported: Path, npz_data: Path, tmp_path: Path
) -> None:
    report, clean, output = _prune_and_check(cli, exported, npz_data, tmp_path)
    kernels = {k: v for k, v in clean["sparsity"].items() if k.endswith("kernel:0")}
    assert sorted(kernels) == [
        "tiny_cnn/conv/kernel:0",
        "tiny_cnn/hidden/kernel:0",
        "tiny_cnn/out/kernel:0",
    ]
    for name, sparsity in kernels.items():
        assert sparsity == pytest.approx(0.6, abs=0.02), name
    assert set(clean["after"]) == {"serving_default", "serve"} and clean["has_serve"]
    rows = {row["path"]: row for row in report["layers"]}
    assert set(rows) == {"tiny_cnn/conv", "tiny_cnn/hidden", "tiny_cnn/out"}
    assert all(row["pruned"] for row in rows.values())
    assert report["after"]["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert report["before"]["accuracy"] is not None  # softmax output: a classifier
    assert report["after"]["size_bytes"] > 0
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "saved_model_cli"), "show", "--dir", str(output),
         "--tag_set", "serve", "--signature_def", "serving_default"],
        capture_output=True, text=True, check=True, env={"TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert "output_0" in shown.stdout and "(-1, 8, 8, 1)" in shown.stdout


def test_tf_module_is_pruned_and_keeps_all_signatures(
    cli: Callable, module_dir: Path, npz_data: Path, tmp_path: Path
) -> None:
    report, clean, _ = _prune_and_check(cli, module_dir, npz_data, tmp_path)
    assert set(clean["after"]) == {"serving_default", "logits"}
    assert clean["after"]["serving_default"]["inputs"] == {"image": [[None, 8, 8, 1], "float32"]}
    assert clean["after"]["serving_default"]["outputs"] == {"probs": [[None, 3], "float32"]}
    assert clean["sparsity"]["dense/kernel:0"] == pytest.approx(0.6, abs=0.01)
    assert clean["sparsity"]["out/kernel:0"] == pytest.approx(0.6, abs=0.05)
    assert [row["path"] for row in report["layers"]] == ["dense", "out", "temperature"]
    assert [row["pruned"] for row in report["layers"]] == [True, True, False]
    assert report["data"]["task"] == "sparse"
    assert report["finetune"]["steps"] > 0


def test_inspect_lists_variables_and_supports(cli: Callable, module_dir: Path) -> None:
    result = cli("inspect", module_dir, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["format"] == "savedmodel"
    assert summary["supports"] == ["unstructured", "structured", "finetune"]
    assert summary["params_total"] == 64 * 16 + 16 + 16 * 3 + 3 + 1
    rows = {row["path"]: row for row in summary["layers"]}
    assert rows["dense"]["prunable"] and rows["dense"]["params"] == 64 * 16 + 16
    assert rows["out"]["prunable"]
    assert not rows["temperature"]["prunable"]
    assert rows["temperature"]["reason"] == (
        "no kernel among its variables (temperature: rank 0, a kernel has at least 2 axes)"
    )


def test_nm_pattern_on_savedmodel_kernels(cli: Callable, module_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "nm"
    rows = prune_report(
        cli, module_dir, "--epochs", "0", "--set", 'prune.granularity="2:4"', "-o", output, "-q",
    )["layers"]  # fmt: skip
    assert [row["pattern_ok"] for row in rows] == [True, True, None]
    assert [row["sparsity"] for row in rows] == [0.5, 0.5, None]


def test_force_replaces_a_savedmodel_folder_only(
    cli: Callable, module_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "again"
    assert cli("prune", module_dir, "--epochs", "0", "-o", output, "-q").exit_code == 0
    again = cli("prune", module_dir, "--epochs", "0", "-o", output, "-q")
    assert again.exit_code == 2 and "already exists; pass --force" in again.stderr
    forced = cli("prune", module_dir, "--epochs", "0", "-o", output, "-q", "--force")
    assert forced.exit_code == 0, forced.stderr
    assert (output / "saved_model.pb").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    other = tmp_path / "notes"
    (other / "keep.txt").parent.mkdir()
    (other / "keep.txt").write_text("mine")
    refused = cli("prune", module_dir, "--epochs", "0", "-o", other, "-q", "--force")
    assert refused.exit_code == 2 and "is a folder" in refused.stderr
    assert (other / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--set", "prune.layers.exclude=[dense]"), "prune.layers: "),
        (("--set", "prune.layers.include=[dense]"), "has no layers"),
        (("--set", "prune.layers.overrides={out: 0.2}"), "cannot pick one"),
        (("-o", "{tmp}/pruned.keras"), "no Keras architecture to save as keras"),
        (("-o", "{tmp}/pruned.h5"), "output.path without a suffix"),
        (("--set", "output.export=[keras]"), "drop keras/h5 from output.export"),
    ],
)
def test_unsupported_requests_exit_2(
    cli: Callable, module_dir: Path, tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    args = tuple(a.replace("{tmp}", str(tmp_path)) for a in args)
    result = cli("prune", module_dir, "--epochs", "0", "-q", *args)
    assert result.exit_code == 2
    assert expected in result.stderr and "signature-only SavedModel" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "models" / "module_pruned").exists()


def test_config_file_default_output_is_a_folder(
    cli: Callable, module_dir: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "cfg.yaml", "finetune:\n  epochs: 0\n")
    result = cli("prune", module_dir, "-c", config, "-q")
    assert result.exit_code == 0, result.stderr
    output = module_dir.with_name("module_pruned")
    assert (output / "saved_model.pb").is_file()
    assert output.with_name("module_pruned.report.json").is_file()


def test_masks_hold_inside_the_train_step_on_savedmodel_variables(
    module_dir: Path, npz_data: Path
) -> None:
    """The mask constraint works on TFSMLayer's weights: after fit, before any re-masking,
    every pruned weight is still exactly 0 while the kept ones have moved."""
    import keras

    from prunecli.config import Prune
    from prunecli.core.schedules import Plan, build
    from prunecli.formats import model_io
    from prunecli.pruning import selection
    from prunecli.pruning.pruner import Pruner

    model, _ = model_io.load(module_dir)
    layers = selection.select(model, Prune(sparsity=0.5))
    pruner = Pruner(layers, Prune(sparsity=0.5), lambda s: build("one_shot", s, plan=Plan(3, 3)))
    pruner.update(0)
    start = {key: np.asarray(v).copy() for key, v in pruner.kernels.items()}
    data = np.load(npz_data)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    pruner.attach()
    model.fit(data["x"], data["y"], epochs=1, batch_size=32, verbose=0)
    pruner.detach()
    for key, variable in pruner.kernels.items():
        now, mask = np.asarray(variable), np.asarray(pruner.masks[key])
        assert np.all(now[mask == 0] == 0), key
        assert np.abs(now - start[key])[mask == 1].max() > 1e-4, key


@pytest.fixture
def odd_savedmodels(tmp_path: Path) -> Path:
    """SavedModels prunecli cannot train through, and a damaged one."""
    import tensorflow as tf

    class Two(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(np.ones((4, 2), "f4"), name="d/kernel")

        @tf.function(input_signature=[tf.TensorSpec([None, 4], name=n) for n in ("a", "b")])
        def two(self, a: tf.Tensor, b: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": (a + b) @ self.w}

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="a")])
        def one(self, a: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": a @ self.w}

    module = Two()
    tf.saved_model.save(module, str(tmp_path / "two"), signatures={"serving_default": module.two})
    tf.saved_model.save(module, str(tmp_path / "other"), signatures={"predict": module.one})
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "saved_model.pb").write_bytes(b"not a protobuf")
    return tmp_path


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("two", "signature serving_default takes ['a', 'b'] and returns ['y']; prunecli trains"),
        ("other", "has no serving_default signature (it has: predict)"),
        ("broken", "saved_model.pb is damaged or not a SavedModel"),
    ],
)
def test_savedmodels_that_cannot_be_trained_exit_2(
    cli: Callable, odd_savedmodels: Path, folder: str, expected: str
) -> None:
    result = cli("inspect", odd_savedmodels / folder)
    assert result.exit_code == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_distillation_from_the_unpruned_savedmodel(
    cli: Callable, module_dir: Path, npz_data: Path, tmp_path: Path
) -> None:
    output = tmp_path / "distilled"
    report = prune_report(
        cli, module_dir, "--set", f"data.train={npz_data}", "--set", "finetune.distill={}",
        "--epochs", "1", "-o", output, "-q",
    )  # fmt: skip
    assert report["finetune"]["distill"] == {"alpha": 0.5, "temperature": 4.0}
    assert (output / "saved_model.pb").is_file()


def test_savedmodel_input_to_tflite_keeps_the_pruned_zeros(
    cli: Callable, module_dir: Path, npz_data: Path, tmp_path: Path
) -> None:
    """A signature-only input converts to .tflite: through its re-saved signatures."""
    output = tmp_path / "pruned.tflite"
    report = prune_report(
        cli, module_dir, "--epochs", "0", "--sparsity", "0.6", "--set", f"data.train={npz_data}",
        "--set", "output.tflite.sparse=false", "-o", output, "-q",
    )  # fmt: skip
    [export] = report["exports"]
    assert export["format"] == "tflite" and export["size_bytes"] == output.stat().st_size
    assert abs(export["accuracy"] - report["after"]["accuracy"]) <= 0.01
