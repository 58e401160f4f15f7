"""``prunecli prune``, ``inspect`` and ``validate`` end to end, through the real CLI.

Every check reads what a user would get: the exit code, stdout and stderr, and the written
files. The saved model is reloaded with plain ``keras.models.load_model`` and its kernels
counted; the report's numbers are recomputed from the files and the data, never trusted.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml
from helpers import (
    CNN_KERNELS,
    CONFIG_SECTIONS,
    DENSE_KERNELS,
    NESTED_KERNELS,
    cfg_yaml,
    core_outputs,
    dense_conv_kernels,
    load_model,
    prune_report,
    scaled,
    sha256,
    sparsity,
    synthetic_images,
    val_arrays,
    write_npz,
)

# 90 samples, validation_split 0.1 by default: 9 held out; .npz / .csv arrays are taken
# as they are under data.rescale auto: the rescale used is 1.
DATA_81_9 = {"train_samples": 81, "validation_samples": 9, "task": "sparse", "rescale": 1.0}

# --- helpers -------------------------------------------------------------------------------


def accuracy_and_loss(model: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    probs = np.asarray(model.predict(x, verbose=0), dtype=np.float64)
    picked = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)
    return float(np.mean(np.argmax(probs, axis=-1) == y)), float(-np.mean(np.log(picked)))


@dataclass
class Run:
    """A run of ``prune_cnn``: its report, and the kernels before and after, as saved."""

    report: dict[str, Any]
    model: Path
    target: Path

    @property
    def before(self) -> dict[str, np.ndarray]:
        return dense_conv_kernels(load_model(self.model))

    @property
    def after(self) -> dict[str, np.ndarray]:
        return dense_conv_kernels(load_model(self.target))


@pytest.fixture
def prune_cnn(cli, make_model, image_data, out, tmp_path):
    """``prune_cnn(CONFIG_TEXT, *ARGS) -> Run``: the trained tiny CNN (.h5) pruned on the
    image folders into ``out/pruned.keras``, with CONFIG_TEXT as its config file."""

    def run(text: str, *args: str) -> Run:
        model, target = make_model("cnn", ".h5"), out / "pruned.keras"
        config = cfg_yaml(tmp_path, text)
        report = prune_report(cli, model, "--config", config, "--data", image_data, "-o", target,
                              *args)  # fmt: skip
        return Run(report, model, target)

    return run


# --- formats, model kinds, data kinds -------------------------------------------------------


def test_h5_to_keras_report_numbers_recomputed_from_files(
    cli, make_model, image_data, out, tmp_path
):
    model_path = make_model("cnn", ".h5")
    input_sha = sha256(model_path)
    target = out / "pruned.keras"
    cfg = cfg_yaml(tmp_path, "prune:\n  sparsity: 0.75\nfinetune:\n  batch_size: 16\n")

    report = prune_report(
        cli, model_path, "--config", cfg, "--data", image_data, "-o", target, "--epochs", "1"
    )

    assert core_outputs(out) == [
        "pruned.keras",
        "pruned.report.json",
        "pruned.report.md",
    ]
    # The input is neither modified nor replaced.
    assert sha256(model_path) == input_sha
    assert report["input"] == {"path": str(model_path), "format": "h5", "sha256": input_sha}
    assert report["output"]["format"] == "keras"
    assert Path(report["output"]["path"]) == target.resolve()
    assert report["output"]["sha256"] == sha256(target)
    # The JSON file holds the same report as stdout.
    assert json.loads((out / "pruned.report.json").read_text()) == report
    assert report["schema_version"] == 1
    assert report["data"] == {
        "train_samples": 60,
        "validation_samples": 30,
        "task": "sparse",
        "rescale": pytest.approx(1 / 255),
    }

    saved = load_model(target)
    weights = [np.asarray(w) for w in saved.weights]
    found = dense_conv_kernels(saved)
    after = report["after"]
    assert after["params_total"] == sum(w.size for w in weights) == 2411
    assert after["params_nonzero"] == sum(int(np.count_nonzero(w)) for w in weights)
    assert after["prunable_params"] == sum(CNN_KERNELS.values())
    zeros = sum(k.size - np.count_nonzero(k) for k in found.values())
    assert after["sparsity"] == pytest.approx(zeros / sum(CNN_KERNELS.values()), abs=1e-12)
    assert after["sparsity"] == pytest.approx(0.75, abs=1e-12)

    data = target.read_bytes()
    assert after["size_bytes"] == os.path.getsize(target)
    assert after["size_gzip_bytes"] == len(gzip.compress(data, 6))

    x, y = val_arrays(image_data / "val")
    accuracy, loss = accuracy_and_loss(saved, x, y)
    assert after["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert after["loss"] == pytest.approx(loss, rel=1e-4, abs=1e-5)
    accuracy, loss = accuracy_and_loss(load_model(model_path), x, y)
    before = report["before"]
    assert before["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert before["loss"] == pytest.approx(loss, rel=1e-4, abs=1e-5)
    assert before["sparsity"] == 0.0
    assert before["params_total"] == after["params_total"]
    # Unstructured zeros show in the gzipped size, not in the raw one.
    assert after["size_gzip_bytes"] < before["size_gzip_bytes"]

    rows = {row["path"]: row for row in report["layers"]}
    for path, size in CNN_KERNELS.items():
        assert rows[path]["pruned"] is True
        assert rows[path]["target_sparsity"] == 0.75
        assert rows[path]["sparsity"] == pytest.approx(sparsity(found[path]), abs=1e-12)
        assert abs(sparsity(found[path]) - 0.75) <= 0.005
        assert found[path].size == size
    assert report["finetune"]["epochs"] == 1
    assert report["finetune"]["steps"] == math.ceil(60 / 16)
    timing = report["timing"]
    stages = ("load_s", "prune_s", "finetune_s", "evaluate_s", "measure_s", "save_s")
    assert set(timing) == {*stages, "total_s"}
    assert sum(timing[key] for key in stages) == pytest.approx(timing["total_s"], rel=0.05)
    assert report["gate"] is None

    markdown = (out / "pruned.report.md").read_text()
    assert markdown.startswith("# prunecli report")
    assert str(target.resolve()) in markdown
    assert f"{100 * after['accuracy']:.2f}%" in markdown
    assert "| hidden | Dense | 2,320 | 75.00% | 75.00% |" in markdown


def test_h5_to_h5(cli, make_model, image_data, out):
    model_path = make_model("cnn", ".h5")
    target = out / "pruned.h5"

    report = prune_report(
        cli, model_path, "--data", image_data, "-o", target, "--epochs", "1", "--sparsity", "0.75"
    )

    assert h5py.is_hdf5(target)
    assert report["output"]["format"] == "h5"
    assert report["output"]["sha256"] == sha256(target)
    assert report["after"]["size_bytes"] == os.path.getsize(target)
    assert report["after"]["size_gzip_bytes"] == len(gzip.compress(target.read_bytes(), 6))
    # "before" is the input saved as .h5 too: same layout, so nearly the same raw size.
    assert (
        abs(report["before"]["size_bytes"] - report["after"]["size_bytes"])
        < 0.02 * (report["after"]["size_bytes"])
    )
    for path, kernel in dense_conv_kernels(load_model(target)).items():
        assert sparsity(kernel) == pytest.approx(0.75, abs=0.005), path
    assert (out / "pruned.report.json").exists() and (out / "pruned.report.md").exists()


def test_keras_input_to_keras_output(cli, make_model, npz_data, out):
    model_path = make_model("cnn", ".keras")
    target = out / "pruned.keras"

    report = prune_report(
        cli, model_path, "--set", f"data.train={npz_data}", "-o", target, "--epochs", "1",
        "--sparsity", "0.75",
    )  # fmt: skip

    assert report["input"]["format"] == "keras"
    # 90 samples, validation_split 0.1 by default: 9 held out.
    assert report["data"] == DATA_81_9
    assert report["after"]["accuracy"] is not None
    for path, kernel in dense_conv_kernels(load_model(target)).items():
        assert sparsity(kernel) == pytest.approx(0.75, abs=0.005), path


def test_nested_transfer_learning_model(cli, make_model, image_data, out, tmp_path):
    model_path = make_model("nested", ".keras")
    target = out / "pruned.keras"
    cfg = cfg_yaml(
        tmp_path, "prune:\n  sparsity: 0.75\n  layers:\n    overrides: {'base/.*': 0.5}\n"
    )

    report = prune_report(
        cli, model_path, "--config", cfg, "--data", image_data, "-o", target, "--epochs", "1"
    )

    rows = {row["path"]: row for row in report["layers"]}
    assert rows["base/conv"]["pruned"] and rows["base/conv"]["target_sparsity"] == 0.5
    assert rows["hidden"]["target_sparsity"] == 0.75
    assert rows["base/bn"]["pruned"] is False
    assert "nothing to prune" in rows["base/bn"]["reason"]
    saved = load_model(target)
    assert saved.get_layer("base").__class__.__name__ in ("Sequential", "Functional")
    found = dense_conv_kernels(saved)
    assert set(found) == set(NESTED_KERNELS)
    assert sparsity(found["base/conv"]) == pytest.approx(0.5, abs=0.005)
    assert sparsity(found["hidden"]) == pytest.approx(0.75, abs=0.005)
    assert sparsity(found["out"]) == pytest.approx(0.75, abs=0.005)


def test_csv_data_with_dense_model(cli, make_model, csv_data, out, tmp_path):
    model_path = make_model("dense", ".h5")
    target = out / "pruned.keras"
    cfg = cfg_yaml(tmp_path, f"data:\n  train: {csv_data.name}\n  label_column: label\n")

    report = prune_report(
        cli, model_path, "--config", cfg, "-o", target, "--epochs", "1", "--sparsity", "0.75"
    )

    assert report["config"]["data"]["train"] == str(csv_data)  # relative to the config file
    assert report["data"] == DATA_81_9
    assert report["after"]["accuracy"] is not None
    found = dense_conv_kernels(load_model(target))
    assert set(found) == set(DENSE_KERNELS)
    for path, kernel in found.items():
        assert sparsity(kernel) == pytest.approx(0.75, abs=0.005), path


def test_data_folder_layouts(cli, make_model, image_data, out):
    """``--data DIR``: train/ with val/ or validation/ inside, else DIR is the training set."""
    model_path = make_model("cnn", ".h5", train=False)
    (image_data / "val").rename(image_data / "validation")
    report = prune_report(
        cli, model_path, "--data", image_data, "-o", out / "a.keras", "--epochs", "0"
    )
    assert report["data"]["train_samples"] == 60 and report["data"]["validation_samples"] == 30
    assert report["config"]["data"]["validation"] == str(image_data / "validation")

    report = prune_report(
        cli, model_path, "--data", image_data / "train", "-o", out / "b.keras", "--epochs", "0"
    )
    # No validation folder: validation_split (0.1) of the 60 training images is held out.
    assert report["data"]["train_samples"] == 54 and report["data"]["validation_samples"] == 6
    assert report["config"]["data"]["validation"] is None


# --- scope, selection, edge targets ---------------------------------------------------------


def test_layer_scope_each_saved_layer_within_half_a_point(cli, make_model, image_data, out):
    model_path = make_model("cnn", ".h5")
    target = out / "pruned.keras"

    prune_report(
        cli, model_path, "--data", image_data, "-o", target, "--epochs", "1", "--sparsity", "0.8"
    )

    for path, kernel in dense_conv_kernels(load_model(target)).items():
        zeros = kernel.size - np.count_nonzero(kernel)
        # Exactly round(s * n) zeros: the nearest a layer of n weights can get to s. For the
        # 2,304-weight kernel that is within 0.5 points; a 36-weight one moves in 2.8-point
        # steps, so "within half a step" is the strictest that can hold for it.
        assert zeros == round(0.8 * kernel.size), path
        assert abs(zeros / kernel.size - 0.8) <= max(0.005, 0.5 / kernel.size), path


def test_global_scope_099_keeps_min_layer_density(prune_cnn):
    run = prune_cnn(
        "prune:\n  scope: global\n  sparsity: 0.99\n  min_layer_density: 0.05\n", "--epochs", "1"
    )

    found = run.after
    for path, kernel in found.items():
        kept = np.count_nonzero(kernel)
        assert kept >= math.ceil(0.05 * kernel.size), path
        assert kept / kernel.size >= 0.05, path
    # 0.99 asks for 24 survivors of 2,388; the density floors (2 + 116 + 3) win over it.
    kept = sum(np.count_nonzero(k) for k in found.values())
    assert kept == 2 + 116 + 3
    assert run.report["after"]["sparsity"] == pytest.approx(1 - kept / 2388, abs=1e-12)


def test_global_scope_one_threshold(prune_cnn):
    run = prune_cnn("prune:\n  scope: global\n  sparsity: 0.7\n", "--epochs", "0")

    found = run.after
    zeros = sum(k.size - np.count_nonzero(k) for k in found.values())
    assert zeros == round(0.7 * 2388)
    assert run.report["after"]["sparsity"] == pytest.approx(zeros / 2388, abs=1e-12)
    # One threshold on |w| over all kernels: every kept weight outranks every pruned one.
    original = run.before
    kept = np.concatenate([np.abs(original[p][found[p] != 0]) for p in found])
    cut = np.concatenate([np.abs(original[p][found[p] == 0]) for p in found])
    assert kept.min() >= cut.max()


def test_exclude_and_override_with_epochs_0(prune_cnn):
    run = prune_cnn(
        "prune:\n  sparsity: 0.5\n  layers:\n    exclude: [out]\n    overrides: {hidden: 0.75}\n",
        "--epochs",
        "0",
    )

    original, found = run.before, run.after
    assert sparsity(found["conv"]) == pytest.approx(0.5, abs=1e-12)
    assert sparsity(found["hidden"]) == pytest.approx(0.75, abs=1e-12)
    assert found["out"].tobytes() == original["out"].tobytes()
    rows = {row["path"]: row for row in run.report["layers"]}
    assert rows["out"]["pruned"] is False and rows["out"]["target_sparsity"] is None
    assert "exclude" in rows["out"]["reason"] and "'out'" in rows["out"]["reason"]
    assert rows["hidden"]["target_sparsity"] == 0.75


def test_excluded_layer_trains_but_stays_dense(prune_cnn):
    run = prune_cnn(
        "prune:\n  sparsity: 0.75\n  layers:\n    exclude: [out]\n"
        "finetune:\n  learning_rate: 0.001\n  batch_size: 16\n",
        "--epochs",
        "1",
    )

    original, found = run.before, run.after
    assert not np.array_equal(found["out"], original["out"])  # fine-tuning trained it
    assert np.count_nonzero(found["out"]) == found["out"].size  # and gave it no mask
    assert sparsity(found["hidden"]) == pytest.approx(0.75, abs=1e-12)


def test_include_selects_only_matching_layers(prune_cnn):
    text = "prune:\n  sparsity: 0.5\n  layers:\n    include: ['hid.*']\n"
    run = prune_cnn(text, "--epochs", "0")

    original, found = run.before, run.after
    assert sparsity(found["hidden"]) == pytest.approx(0.5, abs=1e-12)
    for path in ("conv", "out"):
        assert np.array_equal(found[path], original[path]), path
    rows = {row["path"]: row for row in run.report["layers"]}
    assert rows["conv"]["reason"] == "not matched by prune.layers.include"
    assert run.report["after"]["prunable_params"] == 2304


def test_sparsity_zero_epochs_zero_is_bit_identical(cli, make_model, image_data, out):
    model_path = make_model("cnn", ".h5")
    target = out / "pruned.h5"

    report = prune_report(
        cli, model_path, "--data", image_data, "-o", target, "--epochs", "0", "--sparsity", "0"
    )

    original, saved = load_model(model_path), load_model(target)
    for before, after in zip(original.weights, saved.weights, strict=True):
        assert np.asarray(before).tobytes() == np.asarray(after).tobytes(), before.path
    assert report["after"]["accuracy"] == report["before"]["accuracy"]
    assert report["after"]["params_nonzero"] == report["before"]["params_nonzero"]


def test_set_overrides_config(prune_cnn):
    run = prune_cnn("prune:\n  sparsity: 0.9\n", "--set", "prune.sparsity=0.6", "--epochs", "0")

    assert run.report["config"]["prune"]["sparsity"] == 0.6
    for path, kernel in run.after.items():
        assert kernel.size - np.count_nonzero(kernel) == round(0.6 * kernel.size), path


def test_config_omitted_uses_defaults(cli, make_model, image_data):
    model_path = make_model("cnn", ".h5")

    report = prune_report(cli, model_path, "--data", image_data)

    folder = model_path.parent
    default = folder / "cnn.pruned.keras"
    assert core_outputs(folder) == [
        "cnn.h5",
        "cnn.pruned.keras",
        "cnn.pruned.report.json",
        "cnn.pruned.report.md",
    ]
    settings = report["config"]
    assert settings["seed"] == 0
    assert settings["prune"]["sparsity"] == 0.5
    assert settings["prune"]["scope"] == "layer"
    assert settings["prune"]["schedule"]["type"] == "one_shot"
    assert settings["finetune"]["epochs"] == 2
    assert settings["finetune"]["batch_size"] == 32
    assert report["finetune"]["steps"] == 2 * math.ceil(60 / 32)
    for path, kernel in dense_conv_kernels(load_model(default)).items():
        assert sparsity(kernel) == pytest.approx(0.5, abs=1e-12), path


# --- schedules ------------------------------------------------------------------------------


def expected_sparsity(target: float) -> float:
    """What the selected CNN kernels reach at a layer-scope target (round(s*n) zeros each)."""
    return sum(round(target * n) for n in CNN_KERNELS.values()) / sum(CNN_KERNELS.values())


def test_constant_schedule_prunes_at_start_epoch(prune_cnn):
    run = prune_cnn(
        "prune:\n  sparsity: 0.75\n  schedule: {type: constant, start_epoch: 1}\n"
        "finetune:\n  epochs: 2\n  batch_size: 8\n"
    )

    spe = math.ceil(60 / 8)
    updates = run.report["finetune"]["mask_updates"]
    assert [u["step"] for u in updates] == [spe, 2 * spe]  # nothing before start_epoch
    for update in updates:
        assert update["sparsity"] == pytest.approx(expected_sparsity(0.75), abs=1e-12)
    for path, kernel in run.after.items():
        assert sparsity(kernel) == pytest.approx(0.75, abs=1e-12), path


def test_polynomial_schedule_follows_the_curve(prune_cnn):
    run = prune_cnn(
        "prune:\n  sparsity: 0.8\n  schedule:\n    type: polynomial\n    start_epoch: 0\n"
        "    end_epoch: 2\n    initial_sparsity: 0.1\n    power: 3\n    frequency: 3\n"
        "finetune:\n  epochs: 2\n  batch_size: 8\n"
    )

    t0, t1, s_i, s_f = 0, 2 * math.ceil(60 / 8), 0.1, 0.8
    updates = run.report["finetune"]["mask_updates"]
    assert [u["step"] for u in updates] == [0, 3, 6, 9, 12, 15, 16]
    for update in updates:
        t = update["step"]
        curve = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** 3
        assert update["sparsity"] == pytest.approx(expected_sparsity(curve), abs=1e-12), t
        assert update["sparsity"] == pytest.approx(curve, abs=0.005), t
    assert updates[-1]["sparsity"] == pytest.approx(expected_sparsity(0.8), abs=1e-12)
    sparsities = [u["sparsity"] for u in updates]
    assert sparsities == sorted(sparsities)
    for path, kernel in run.after.items():
        assert kernel.size - np.count_nonzero(kernel) == round(0.8 * kernel.size), path


# --- report, streams, gate ------------------------------------------------------------------


def test_json_flag_puts_only_json_on_stdout(cli, make_model, image_data, out):
    model_path = make_model("cnn", ".h5")

    result = cli(
        "prune", model_path, "--data", image_data, "-o", out / "a.keras", "--epochs", "1", "--json"
    )

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)  # the whole of stdout, nothing around it
    assert report["output"]["path"] == str(out / "a.keras")
    assert "epoch 1/1" in result.stderr  # progress goes to stderr
    assert "before / after" not in result.stdout


def test_table_without_json_and_quiet(cli, make_model, image_data, out):
    model_path = make_model("cnn", ".h5")

    result = cli(
        "prune", model_path, "--data", image_data, "-o", out / "a.keras", "--epochs", "1", "--quiet"
    )

    assert result.exit_code == 0, result.stderr
    assert "before / after" in result.stdout
    assert "hidden" in result.stdout
    assert "epoch" not in result.stderr
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)


def test_gate_fails_with_exit_3_and_still_writes(cli, make_model, image_data, out):
    model_path = make_model("cnn", ".h5")
    target = out / "pruned.keras"

    result = cli(
        "prune", model_path, "--data", image_data, "-o", target, "--epochs", "0", "--sparsity",
        "0.95", "--max-accuracy-drop", "0", "--json",
    )  # fmt: skip

    assert result.exit_code == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("prunecli: error")]
    assert len(errors) == 1 and "--max-accuracy-drop" in errors[0]
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    report = json.loads(result.stdout)
    gate = report["gate"]
    assert gate["passed"] is False and gate["max_accuracy_drop"] == 0
    drop = report["before"]["accuracy"] - report["after"]["accuracy"]
    assert gate["accuracy_drop"] == pytest.approx(drop, abs=1e-12) and drop > 0
    assert target.exists() and json.loads((out / "pruned.report.json").read_text()) == report
    assert "FAILED" in (out / "pruned.report.md").read_text()


def test_loose_gate_passes(cli, make_model, image_data, out):
    model_path = make_model("cnn", ".h5")

    result = cli(
        "prune", model_path, "--data", image_data, "-o", out / "p.keras", "--epochs", "0",
        "--sparsity", "0.3", "--max-accuracy-drop", "0.5", "--json",
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    gate = json.loads(result.stdout)["gate"]
    assert gate["passed"] is True and gate["max_accuracy_drop"] == 0.5
    assert gate["accuracy_drop"] <= 0.5


def test_same_seed_is_deterministic(cli, make_model, image_data, out, tmp_path):
    model_path = make_model("cnn", ".h5")
    cfg = cfg_yaml(tmp_path, "seed: 7\nprune:\n  sparsity: 0.6\nfinetune:\n  batch_size: 16\n")
    args = ("--config", cfg, "--data", image_data, "--epochs", "1")
    reports = [
        prune_report(cli, model_path, *args, "-o", out / name)
        for name in ("one.keras", "two.keras")
    ]

    first, second = (
        dense_conv_kernels(load_model(out / "one.keras")),
        dense_conv_kernels(load_model(out / "two.keras")),
    )
    for path in first:
        assert np.array_equal(first[path] == 0, second[path] == 0), path
    for stage in ("before", "after"):
        for key in ("accuracy", "loss"):
            assert reports[0][stage][key] == pytest.approx(reports[1][stage][key], abs=1e-6)
        assert reports[0][stage]["params_nonzero"] == reports[1][stage]["params_nonzero"]
    assert reports[0]["layers"] == reports[1]["layers"]
    assert reports[0]["finetune"] == reports[1]["finetune"]


# --- inspect and validate -------------------------------------------------------------------


def test_inspect_table_and_json(cli, make_model):
    model_path = make_model("nested", ".h5")

    table = cli("inspect", model_path)
    assert table.exit_code == 0, table.stderr
    for text in ("base/conv", "base/bn", "hidden", "out", "Conv2D", "BatchNormalization"):
        assert text in table.stdout

    result = cli("inspect", model_path, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    model = load_model(model_path)
    assert summary["format"] == "h5"
    assert summary["params_total"] == sum(int(np.prod(w.shape)) for w in model.weights)
    rows = {row["path"]: row for row in summary["layers"]}
    assert set(rows) == {"base/conv", "base/bn", "hidden", "out"}
    assert rows["hidden"] == {
        "path": "hidden",
        "type": "Dense",
        "params": 2320,
        "sparsity": 0.0,
        "prunable": True,
        "reason": None,
        "kernels": ["hidden/kernel"],
        "trainable": True,
    }
    assert rows["base/bn"]["prunable"] is False and rows["base/bn"]["reason"]
    assert rows["base/bn"]["params"] == 16


def test_inspect_shows_sparsity_of_pruned_output(cli, make_model, image_data, out):
    model_path = make_model("cnn", ".h5")
    target = out / "pruned.keras"
    prune_report(
        cli, model_path, "--data", image_data, "-o", target, "--epochs", "0", "--sparsity", "0.75"
    )

    result = cli("inspect", target, "--json")

    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["format"] == "keras"
    for row in summary["layers"]:
        assert row["sparsity"] == pytest.approx(0.75, abs=1e-12), row["path"]
    assert summary["params_nonzero"] < 0.3 * summary["params_total"]
    table = cli("inspect", target)
    assert "75.00%" in table.stdout


def test_validate_valid_and_print(cli, tmp_path):
    cfg = cfg_yaml(
        tmp_path, "prune:\n  sparsity: 0.9\n  scope: global\ndata:\n  train: data/train\n"
    )

    result = cli("validate", cfg)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"{cfg}: valid"

    printed = cli("validate", cfg, "--print", "--set", "finetune.epochs=5")
    assert printed.exit_code == 0, printed.stderr
    resolved = yaml.safe_load(printed.stdout)
    assert resolved["prune"]["sparsity"] == 0.9
    assert resolved["prune"]["scope"] == "global"
    assert resolved["finetune"]["epochs"] == 5
    assert resolved["finetune"]["batch_size"] == 32  # a default, printed too
    assert resolved["prune"]["schedule"]["type"] == "one_shot"
    assert resolved["data"]["train"] == str(tmp_path / "data" / "train")
    assert set(resolved) == CONFIG_SECTIONS


def test_data_file_keeps_the_validation_set_the_user_named(cli, make_model, tmp_path, out):
    """``--data train.npz --set data.validation=val.npz``: the validation set is the one
    named (16 samples), not a ``validation_split`` of train (``--data`` used to blank it)."""
    model = make_model("cnn", ".keras", train=False)
    paths = []
    for name, count in (("train", 40), ("val", 16)):
        images, labels = synthetic_images(count, count)
        paths.append(write_npz(tmp_path / f"{name}.npz", scaled(images), labels))
    result = cli("prune", model, "--data", paths[0], "--set", f"data.validation={paths[1]}",
                 "--epochs", "0", "--json", "-o", out / "p.keras")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)["data"]
    assert (data["train_samples"], data["validation_samples"]) == (40, 16)
