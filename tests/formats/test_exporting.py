"""Output formats: .keras, .h5, .tflite (each quantize mode), SavedModel folders, and
``output.export`` extras, each reloaded in a process that never imports prunecli.

TFLite conversion costs seconds, so each prune run is a module-scoped fixture shared by
several tests; one child process per run loads every artifact of that run and reports
predictions and the zeros stored in the artifact itself.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import (
    core_outputs,
    last_json_line,
    run_python,
    scaled,
    synthetic_images,
    train_cnn,
    write_config,
    write_image_splits,
    write_npz,
)

from prunecli.cli.commands import main
from prunecli.errors import OutputError
from prunecli.formats import exporting
from prunecli.reporting import measure

SPARSITY = 0.8

# Runs in a clean interpreter: loads each artifact with TF / Keras / LiteRT only, predicts on
# the probe images, and counts zeros where the artifact stores its weights.
CHILD = r"""
import json, sys
import numpy as np
import keras, tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

spec = json.loads(sys.argv[1])
x = np.load(spec["probe"])["x"]
found, predictions = {}, {}

def keras_stats(path):
    model = keras.saving.load_model(path)
    kernels = [np.asarray(v) for v in model.weights if v.name == "kernel"]
    return model.predict(x, verbose=0), {
        "zeros": sum(int(np.sum(k == 0)) for k in kernels),
        "size": sum(k.size for k in kernels),
    }

def savedmodel_stats(path):
    signature = tf.saved_model.load(path).signatures["serving_default"]
    (name, spec_), = signature.structured_input_signature[1].items()
    result = signature(**{name: tf.constant(x)})
    reader = tf.train.load_checkpoint(path + "/variables/variables")
    kernels = [reader.get_tensor(key) for key, shape in reader.get_variable_to_shape_map().items()
               if key.startswith("variables/") and len(shape) >= 2]
    return np.asarray(result[sorted(result)[0]]), {
        "zeros": sum(int(np.sum(k == 0)) for k in kernels),
        "size": sum(k.size for k in kernels),
        "inputs": {name: [d for d in spec_.shape.as_list()]},
    }

def tflite_stats(path):
    interpreter = Interpreter(model_path=path)  # default delegate (XNNPack)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    stored = {}
    sparse = [d for d in interpreter.get_tensor_details() if d.get("sparsity_parameters")]
    for d in sparse:  # CSR-like: only the kept values are stored
        stored[d["name"]] = [int(np.prod(d["shape"])), int(interpreter.get_tensor(d["index"]).size)]
    weights = set(map(tuple, spec["weight_shapes"]))
    dense = [d for d in interpreter.get_tensor_details()
             if tuple(d["shape"]) in weights and not d.get("sparsity_parameters")
             and d["index"] not in {s["index"] for s in sparse}]
    dense_zeros = 0
    if not sparse:
        for d in dense:
            dense_zeros += int(np.sum(interpreter.get_tensor(d["index"]) == 0))
    interpreter.resize_tensor_input(source["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], x.astype(source["dtype"]))
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return out, {"sparse": stored, "dense_zeros": dense_zeros}

for kind, path in spec["artifacts"]:
    loader = {"keras": keras_stats, "h5": keras_stats, "savedmodel": savedmodel_stats,
              "tflite": tflite_stats}[kind]
    predictions[path], found[path] = loader(path)
np.savez(spec["out"], **{str(i): predictions[p] for i, (_, p) in enumerate(spec["artifacts"])})
found["prunecli"] = any(m.startswith("prunecli") for m in sys.modules)
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained tiny CNN (.h5), its image folders, and 300 probe images (x, y) in .npz."""
    root = tmp_path_factory.mktemp("formats")
    train_cnn().save(root / "cnn.h5")
    write_image_splits(root / "data")
    probe, labels = synthetic_images(300, 9)
    write_npz(root / "probe.npz", scaled(probe), labels)
    return {"root": root, "model": root / "cnn.h5", "data": root / "data"}


def _prune(setup: dict[str, Path], output: str, *args: str) -> tuple[int, str, dict]:
    result = CliRunner().invoke(
        main,
        ["prune", str(setup["model"]), "--data", str(setup["data"]), "-o", output,
         "--sparsity", str(SPARSITY), "--json", "-q", *args],
        catch_exceptions=False,
    )  # fmt: skip
    report = json.loads(result.stdout) if result.exit_code == 0 else {}
    return result.exit_code, result.stderr, report


def _child(setup: dict[str, Path], artifacts: list[tuple[str, Path]]) -> tuple[dict, list]:
    """Run CHILD on ``artifacts``: (stats per path, predictions in artifact order)."""
    out = setup["root"] / f"pred-{len(list(setup['root'].glob('pred-*')))}.npz"
    spec = {
        "probe": str(setup["root"] / "probe.npz"),
        "out": str(out),
        "artifacts": [(kind, str(path)) for kind, path in artifacts],
        "weight_shapes": [[4, 3, 3, 1], [16, 144], [3, 16]],  # TFLite's (out, ..., in) kernels
    }
    done = run_python(CHILD, json.dumps(spec), timeout=240, cwd=setup["root"])
    assert done.returncode == 0, done.stderr[-3000:]
    found = last_json_line(done.stdout)
    assert found.pop("prunecli") is False
    saved = np.load(out)
    return found, [saved[str(i)] for i in range(len(artifacts))]


def _accuracy(predictions: np.ndarray, setup: dict[str, Path]) -> float:
    return float(np.mean(np.argmax(predictions, -1) == np.load(setup["root"] / "probe.npz")["y"]))


# --- one run: .keras main, savedmodel + tflite + h5 extras, sparse float TFLite ---------


@pytest.fixture(scope="module")
def extras(setup: dict[str, Path]) -> dict:
    main_path = setup["root"] / "run" / "pruned.keras"
    main_path.parent.mkdir()
    code, err, report = _prune(
        setup, str(main_path), "--epochs", "1", "--set", "output.export=[savedmodel, tflite, h5]"
    )
    assert code == 0, err
    folder = main_path.parent
    artifacts = [
        ("keras", main_path),
        ("h5", folder / "pruned.h5"),
        ("savedmodel", folder / "pruned.savedmodel"),
        ("tflite", folder / "pruned.tflite"),
    ]
    found, predictions = _child(setup, artifacts)
    return {"report": report, "artifacts": artifacts, "found": found, "predictions": predictions}


def test_every_artifact_predicts_like_the_pruned_keras_model(extras):
    reference, *others = extras["predictions"]
    for (kind, path), predicted in zip(extras["artifacts"][1:], others, strict=True):
        assert np.abs(predicted - reference).max() < 1e-5, (kind, path)


def test_sparsity_is_in_the_artifacts_themselves(extras):
    found = {Path(p).suffix or "": stats for p, stats in extras["found"].items()}
    keras_stats = found[".keras"]
    assert keras_stats["zeros"] / keras_stats["size"] == pytest.approx(SPARSITY, abs=0.01)
    assert found[".h5"]["zeros"] == keras_stats["zeros"]
    saved = found[".savedmodel"]
    assert (saved["zeros"], saved["size"]) == (keras_stats["zeros"], keras_stats["size"])
    sparse = found[".tflite"]["sparse"]  # every kernel stored sparse: only non-zeros kept
    assert sum(dense for dense, _ in sparse.values()) == keras_stats["size"]
    assert sum(dense - kept for dense, kept in sparse.values()) >= keras_stats["zeros"]


def test_savedmodel_signature_matches_the_model_inputs(extras):
    import keras

    model = keras.saving.load_model(extras["artifacts"][0][1], compile=False)
    saved = next(s for p, s in extras["found"].items() if p.endswith(".savedmodel"))
    assert saved["inputs"] == {t.name: [None, 8, 8, 1] for t in model.inputs}
    folder = extras["artifacts"][2][1]
    cli = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run(
        [str(cli), "show", "--dir", str(folder), "--tag_set", "serve",
         "--signature_def", "serving_default"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "shape: (-1, 8, 8, 1)" in shown.stdout


def _expected_sizes(path: Path) -> tuple[int, int]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    raw = [p.read_bytes() for p in files]
    return sum(map(len, raw)), sum(len(gzip.compress(b, compresslevel=6, mtime=0)) for b in raw)


def test_report_exports_are_measured_on_the_written_files(extras, setup):
    report = extras["report"]
    assert report["output"]["format"] == "keras"
    entries = report["exports"]
    assert [e["format"] for e in entries] == ["savedmodel", "tflite"]  # not .keras/.h5
    predictions = dict(
        zip((str(p) for _, p in extras["artifacts"]), extras["predictions"], strict=True)
    )
    for entry in entries:
        path = Path(entry["path"])
        assert (entry["size_bytes"], entry["size_gzip_bytes"]) == _expected_sizes(path)
        assert entry["latency_ms"] > 0 and entry["before"]["latency_ms"] > 0
        if entry["size_bytes"] > entry["before"]["size_bytes"]:  # a SavedModel can gain bytes
            assert "larger than the input exported the same way" in entry["note"]
        else:
            assert entry["note"] is None
        # the artifact's own accuracy on the validation data equals the Keras model's
        assert entry["accuracy"] == pytest.approx(report["after"]["accuracy"], abs=1e-9)
        assert entry["before"]["accuracy"] == pytest.approx(report["before"]["accuracy"])
        assert 0 < _accuracy(predictions[str(path)], setup) <= 1
    tflite = entries[1]
    assert tflite["size_bytes"] < 0.7 * tflite["before"]["size_bytes"]  # sparse storage
    saved = entries[0]
    assert saved["size_gzip_bytes"] < saved["before"]["size_gzip_bytes"]


def test_all_artifacts_renamed_and_no_temporaries_left(extras):
    folder = extras["artifacts"][0][1].parent
    names = core_outputs(folder)
    assert names == [
        "pruned.h5", "pruned.keras", "pruned.report.json", "pruned.report.md",
        "pruned.savedmodel", "pruned.tflite",
    ]  # fmt: skip
    assert oct((folder / "pruned.savedmodel").stat().st_mode & 0o777) != "0o700"
    markdown = (folder / "pruned.report.md").read_text()
    assert f"| {folder / 'pruned.tflite'} (tflite) |" in markdown


# --- TFLite as the main output, each quantize mode ---------------------------------------


MODES = ("dynamic", "float16", "int8")


@pytest.fixture(scope="module")
def quantized(setup: dict[str, Path]) -> dict[str, dict]:
    """One prune run per quantize mode (prune only), all checked by one child process."""
    reports, artifacts = {}, []
    for mode in MODES:
        folder = setup["root"] / f"q-{mode}"
        folder.mkdir()
        code, err, reports[mode] = _prune(
            setup, str(folder / "m.tflite"), "--epochs", "0",
            "--set", f"output.tflite.quantize={mode}", "--set", "output.export=[keras]",
        )  # fmt: skip
        assert code == 0, err
        artifacts += [("keras", folder / "m.keras"), ("tflite", folder / "m.tflite")]
    found, predictions = _child(setup, artifacts)
    return {
        mode: {
            "report": reports[mode],
            "keras": found[str(artifacts[2 * i][1])],
            "tflite": found[str(artifacts[2 * i + 1][1])],
            "predictions": predictions[2 * i : 2 * i + 2],
        }
        for i, mode in enumerate(MODES)
    }


@pytest.mark.parametrize("mode", MODES)
def test_quantized_tflite_runs_and_keeps_accuracy(quantized, setup, mode):
    case = quantized[mode]
    reference, tflite = case["predictions"]
    entry = case["report"]["exports"][0]
    assert case["report"]["output"]["format"] == "tflite"
    assert entry["format"] == "tflite" and entry["path"].endswith("m.tflite")
    if mode == "float16":
        # weights rounded to float16 (relative error <= 2**-11 ~ 4.9e-4 each); summed over
        # <= 144 products and squashed by softmax, outputs in [0, 1] move by well under 1e-3
        assert np.abs(tflite - reference).max() < 1e-3
    else:  # 8-bit weights (and activations for int8): the class decisions must hold
        assert abs(_accuracy(tflite, setup) - _accuracy(reference, setup)) <= 0.01
    assert entry["size_bytes"] < entry["before"]["size_bytes"] * 1.01
    assert abs(entry["accuracy"] - case["report"]["after"]["accuracy"]) <= 0.04


@pytest.mark.parametrize("mode", MODES)
def test_sparse_quantized_tflite_falls_back_to_a_form_that_runs(quantized, mode):
    """XNNPack cannot prepare sparse 8-bit weights (TF 2.21): the file is written dense,
    said in ``note``, and the child process ran it with the default delegate."""
    case = quantized[mode]
    entry, stats = case["report"]["exports"][0], case["tflite"]
    if mode == "float16":
        assert entry["note"] is None
        assert sum(d - k for d, k in stats["sparse"].values()) >= case["keras"]["zeros"]
    else:
        assert "dense" in entry["note"] and "delegate" in entry["note"]
        markdown = Path(entry["path"]).with_name("m.report.md").read_text()
        assert f"note (tflite): {entry['note']}" in markdown
        assert stats["sparse"] == {}
        assert stats["dense_zeros"] >= case["keras"]["zeros"]  # 0.0 quantises to 0


# --- SavedModel folder as the main output ---------------------------------------------


def test_savedmodel_folder_output_trailing_slash_and_force(setup):
    target = setup["root"] / "sm" / "model.v2"
    target.parent.mkdir()
    code, err, report = _prune(
        setup, f"{target}/", "--epochs", "0", "--set", "output.export=[keras]"
    )
    assert code == 0, err
    found, (keras_pred, saved_pred) = _child(
        setup, [("keras", target.parent / "model.v2.keras"), ("savedmodel", target)]
    )
    assert np.abs(saved_pred - keras_pred).max() < 1e-5
    assert found[str(target)]["zeros"] == found[str(target.parent / "model.v2.keras")]["zeros"]
    assert report["output"]["format"] == "savedmodel"
    assert report["output"]["path"] == str(target)
    assert report["output"]["sha256"] == measure.sha256(target)
    assert (target / "saved_model.pb").is_file()
    assert (target.parent / "model.v2.report.json").is_file()
    assert [e["format"] for e in report["exports"]] == ["savedmodel"]
    assert report["before"]["size_bytes"] == report["exports"][0]["before"]["size_bytes"]

    code, err, _ = _prune(setup, f"{target}/", "--epochs", "0")  # the folder exists
    assert code == 2 and "already exists; pass --force" in err
    (target / "stale.txt").write_text("old run")
    code, err, _ = _prune(
        setup, f"{target}/", "--epochs", "0", "--force", "--set", "output.export=[keras]"
    )
    assert code == 0, err
    assert not (target / "stale.txt").exists() and (target / "saved_model.pb").is_file()
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".")] == []


# --- errors, before any TensorFlow work ---------------------------------------------------


def test_int8_without_training_data_is_a_config_error(setup, tmp_path):
    result = CliRunner().invoke(
        main,
        ["prune", str(setup["model"]), "-o", str(tmp_path / "m.tflite"), "--epochs", "0",
         "--set", "output.tflite.quantize=int8"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "output.tflite.quantize int8" in result.stderr and "data.train" in result.stderr


def test_unknown_suffix_names_the_formats(setup, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", "output:\n  path: out.onnx\n")
    result = CliRunner().invoke(main, ["prune", str(setup["model"]), "-c", str(cfg)])
    assert result.exit_code == 2
    assert ".onnx" in result.stderr and ".tflite" in result.stderr
    assert "SavedModel" in result.stderr


def test_existing_export_extra_needs_force(setup, tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"old")
    result = CliRunner().invoke(
        main,
        ["prune", str(setup["model"]), "-o", str(tmp_path / "m.keras"), "--epochs", "0",
         "--set", "output.export=[tflite]"],
    )  # fmt: skip
    assert result.exit_code == 2 and "m.tflite: already exists" in result.stderr
    assert (tmp_path / "m.tflite").read_bytes() == b"old"


# --- pure pieces ---------------------------------------------------------------------------


def test_plan_names_extras_from_the_main_stem():
    plan = exporting.plan(Path("/o/m.keras"), False, ["savedmodel", "keras", "tflite", "tflite"])
    assert [(a.format, str(a.path)) for a in plan] == [
        ("keras", "/o/m.keras"), ("savedmodel", "/o/m.savedmodel"), ("tflite", "/o/m.tflite"),
    ]  # fmt: skip
    assert exporting.plan(Path("/o/m"), False, ["h5"])[1].path == Path("/o/m.h5")
    assert exporting.plan(Path("/o/m.v2"), True, [])[0].format == "savedmodel"
    with pytest.raises(OutputError, match=r"m\.onnx: unsupported output format \.onnx"):
        exporting.plan(Path("/o/m.onnx"), False, [])


def test_without_validation_data_the_artifact_is_timed_but_has_no_accuracy(setup, tmp_path):
    result = CliRunner().invoke(
        main,
        ["prune", str(setup["model"]), "-o", str(tmp_path / "m.tflite"), "--epochs", "0",
         "--set", f"data.train={setup['data'] / 'train'}", "--set", "data.validation_split=0",
         "--json", "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    (entry,) = json.loads(result.stdout)["exports"]
    assert entry["accuracy"] is None and entry["before"]["accuracy"] is None
    assert entry["latency_ms"] > 0 and entry["before"]["latency_ms"] > 0
    assert entry["note"] is None and (tmp_path / "m.tflite").stat().st_size == entry["size_bytes"]
