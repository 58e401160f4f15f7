"""Multi-input models exported to SavedModel and TFLite (float and int8): every input fed
in its own dtype and shape, the signature keeping the input names.

Two models: keras_hub's tiny BertClassifier (three int32 inputs of shape (batch, None))
and a plain functional model with a float input ``a`` (4,) and an int32 input ``b`` (3,).
Each is pruned by the CLI with ``.keras``, SavedModel and TFLite artifacts; a process
that never imports prunecli reloads each artifact, feeds it the same probe inputs by name
and compares with the pruned Keras model's outputs there, and counts the kernels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import real_models
from helpers import last_json_line, run_python
from real_models import kernel_scope

pytest.importorskip("keras_hub")

SPARSITY = 0.5

# Runs in a clean interpreter: the pruned .keras, its SavedModel and TFLite files, each fed
# the probe's arrays by input name; outputs, signatures and the .keras weights back as JSON.
CHILD = r"""
import json, sys
import numpy as np
import keras, keras_hub, tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

spec = json.loads(sys.argv[1])
probe = dict(np.load(spec["probe"]))
model = keras.saving.load_model(spec["keras"])
found = {"keras": np.asarray(model.predict(probe, verbose=0)).tolist(),
         "weights": [[w.path, list(w.shape), int((keras.ops.convert_to_numpy(w) == 0).sum())]
                     for w in model.weights]}
signature = tf.saved_model.load(spec["savedmodel"]).signatures["serving_default"]
specs = signature.structured_input_signature[1]
found["savedmodel_inputs"] = {k: s.dtype.name for k, s in specs.items()}
result = signature(**{k: tf.constant(probe[k], dtype=s.dtype) for k, s in specs.items()})
found["savedmodel"] = np.asarray(result[sorted(result)[0]]).tolist()
for key in ("tflite", "int8"):
    runner = Interpreter(model_path=spec[key]).get_signature_runner("serving_default")
    details = runner.get_input_details()
    found[key + "_inputs"] = {k: np.dtype(d["dtype"]).name for k, d in details.items()}
    out = runner(**{k: probe[k].astype(d["dtype"]) for k, d in details.items()})
    found[key] = np.asarray(out[sorted(out)[0]]).tolist()
found["prunecli"] = any(m.startswith("prunecli") for m in sys.modules)
print(json.dumps(found))
"""


def two_inputs(root: Path) -> tuple[Path, Path, dict[str, str]]:
    """A functional model of a float input ``a`` and an int32 input ``b`` (embedded), its
    data (``a``, ``b``, ``y``), and the dtype of each input."""
    import keras

    keras.utils.set_random_seed(0)
    a = keras.Input((4,), name="a")
    b = keras.Input((3,), dtype="int32", name="b")
    tokens = keras.layers.Flatten()(keras.layers.Embedding(10, 4, name="embed")(b))
    hidden = keras.layers.Concatenate()([keras.layers.Dense(16, name="dense_a")(a), tokens])
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(hidden)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(hidden)
    model = keras.Model([a, b], outputs, name="two_inputs")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.save(root / "two.keras")
    rng = np.random.default_rng(0)
    y = np.arange(96) % 3
    data = {"a": rng.normal(size=(96, 4)).astype(np.float32),
            "b": rng.integers(0, 10, (96, 3)).astype(np.int32)}  # fmt: skip
    data["a"][:, 0] += 2 * y  # something to learn
    np.savez(root / "two.npz", **data, y=y)
    return root / "two.keras", root / "two.npz", {"a": "float32", "b": "int32"}


def bert(root: Path) -> tuple[Path, Path, dict[str, str]]:
    names = ("padding_mask", "segment_ids", "token_ids")
    return (
        real_models.bert(root / "bert.keras"),
        real_models.token_data(root / "tokens.npz"),
        dict.fromkeys(names, "int32"),
    )


@pytest.fixture(scope="module", params=["two_inputs", "bert"])
def exported(request, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One model pruned with .keras + SavedModel + float TFLite, then again to an int8
    TFLite; the report and what a clean process finds in each artifact."""
    from click.testing import CliRunner

    from prunecli.cli.commands import main

    root = tmp_path_factory.mktemp(request.param)
    model, data, dtypes = {"two_inputs": two_inputs, "bert": bert}[request.param](root)
    common = [str(model), "--set", f"data.train={data}", "--sparsity", str(SPARSITY)]
    common += ["--epochs", "1", "--seed", "0", "--json", "--quiet"]
    args = ["-o", str(root / "out.keras"), "--set", "output.export=[savedmodel, tflite]"]
    result = CliRunner().invoke(main, ["prune", *common, *args])
    assert result.exit_code == 0, result.stderr
    int8_args = ["-o", str(root / "int8.tflite"), "--set", "output.tflite.quantize=int8"]
    int8 = CliRunner().invoke(main, ["prune", *common, *int8_args])
    assert int8.exit_code == 0, int8.stderr
    probe = dict(np.load(data))
    np.savez(root / "probe.npz", **{k: v[:16] for k, v in probe.items() if k != "y"})
    spec = {"probe": str(root / "probe.npz"), "keras": str(root / "out.keras"),
            "savedmodel": str(root / "out.savedmodel"), "tflite": str(root / "out.tflite"),
            "int8": str(root / "int8.tflite")}  # fmt: skip
    done = run_python(CHILD, json.dumps(spec), timeout=300, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    found = last_json_line(done.stdout)
    assert found.pop("prunecli") is False
    return {"report": json.loads(result.stdout), "int8": json.loads(int8.stdout),
            "found": found, "dtypes": dtypes}  # fmt: skip


def test_artifacts_agree_with_the_keras_model_input_by_input(exported):
    found = exported["found"]
    reference = np.asarray(found["keras"])
    assert reference.shape == (16, 3)
    np.testing.assert_allclose(np.asarray(found["savedmodel"]), reference, atol=1e-5)
    np.testing.assert_allclose(np.asarray(found["tflite"]), reference, atol=1e-4)
    int8 = np.asarray(found["int8"])  # quantised: the same shape, mostly the same classes
    assert int8.shape == reference.shape
    agree = np.mean(np.argmax(int8, -1) == np.argmax(reference, -1))
    assert agree >= 0.75, agree


def test_signatures_keep_the_input_names_and_dtypes(exported):
    found, dtypes = exported["found"], exported["dtypes"]
    assert found["savedmodel_inputs"] == dtypes  # int32 token ids stay integers
    assert found["tflite_inputs"] == dtypes
    assert found["int8_inputs"] == dtypes


def test_kernels_on_target_and_exports_measured_like_single_input(exported):
    report, found = exported["report"], exported["found"]
    total, in_scope, off = kernel_scope(found["weights"], SPARSITY)
    assert off == 0 and in_scope == report["after"]["prunable_params"]
    assert in_scope / total >= 0.9  # kernels anywhere, the transformer's included
    entries = {entry["format"]: entry for entry in report["exports"]}
    assert set(entries) == {"savedmodel", "tflite"}
    for entry in [*entries.values(), *exported["int8"]["exports"]]:
        assert entry["size_bytes"] > 0 and entry["size_gzip_bytes"] > 0
        assert entry["accuracy"] is not None and entry["latency_ms"] > 0
        assert entry["before"]["size_bytes"] > 0 and entry["before"]["accuracy"] is not None
        if entry["size_bytes"] > entry["before"]["size_bytes"]:
            assert "larger than the input exported the same way" in entry["note"]
    # the artifact runs the same function as the Keras model: the same validation accuracy
    assert entries["savedmodel"]["accuracy"] == pytest.approx(report["after"]["accuracy"])
    assert entries["tflite"]["accuracy"] == pytest.approx(report["after"]["accuracy"])
    (int8,) = exported["int8"]["exports"]
    assert int8["format"] == "tflite" and int8["path"].endswith("int8.tflite")
