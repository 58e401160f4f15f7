"""Outputs never replace what they should not: every output path is distinct from every
other and from every input (model, data, config file), none lies inside an input folder,
a symlink at an output path is refused (never followed), and ``--force`` replaces only a
file of the kind being written. Each refusal is exit 2 naming both paths, and every
victim keeps its sha256."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import refused, sha256, write_config


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _prune(cli, model: Path, *args: str | Path):
    return cli("prune", model, "--epochs", "0", "--quiet", *args)


def test_report_equal_to_model_is_refused(cli, make_model, out):
    model = make_model("dense", ".keras", train=False)
    target = out / "p.keras"
    for force in ((), ("--force",)):
        refused(_prune(cli, model, "-o", target, "--report", target, *force), str(target))
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("force", [(), ("--force",)], ids=["plain", "force"])
def test_report_onto_training_data_or_config_is_refused(cli, make_model, csv_data, tmp_path, force):
    """A config whose output.report points at the training data (or at itself)."""
    model = make_model("dense", ".keras", train=False)
    for victim_key in ("data", "config"):
        config = tmp_path / "cfg.yaml"
        victim = csv_data if victim_key == "data" else config
        write_config(
            config,
            f"data: {{train: {csv_data}}}\noutput: {{path: {tmp_path / 'p.keras'}, "
            f"report: {victim}}}\n",
        )
        before = {path: sha256(path) for path in (csv_data, config)}
        line = refused(_prune(cli, model, "--config", config, *force), str(victim))
        assert "input" in line
        assert {path: sha256(path) for path in (csv_data, config)} == before
    assert not (tmp_path / "p.keras").exists()


def test_output_onto_another_input_is_refused(cli, make_model, npz_data, out):
    model = make_model("cnn", ".keras", train=False)
    digest = sha256(npz_data)
    line = refused(
        _prune(cli, model, "--set", f"data.train={npz_data}", "-o", out / "p.keras",
               "--report", npz_data, "--force"),
        str(npz_data),
    )  # fmt: skip
    assert "input" in line
    assert sha256(npz_data) == digest and list(out.iterdir()) == []


@pytest.mark.parametrize("which", ["model", "report"])
def test_symlink_at_an_output_path_is_refused_never_followed(cli, make_model, out, tmp_path, which):
    model = make_model("dense", ".keras", train=False)
    victim = tmp_path / "elsewhere.keras"
    victim.write_bytes(model.read_bytes())  # a real model: --force would accept its kind
    digest = sha256(victim)
    link = out / ("p.keras" if which == "model" else "p.report.json")
    link.symlink_to(victim)
    for force in ((), ("--force",)):
        refused(_prune(cli, model, "-o", out / "p.keras", *force), str(link), "symbolic link")
    assert sha256(victim) == digest
    assert sorted(p.name for p in out.iterdir()) == [link.name]


def test_symlinked_checkpoint_folder_is_refused(cli, make_model, npz_data, out, tmp_path):
    model = make_model("cnn", ".keras", train=False)
    victim = tmp_path / "precious"
    victim.mkdir()
    (out / "p.ckpt").symlink_to(victim)
    result = cli("prune", model, "--set", f"data.train={npz_data}", "-o", out / "p.keras",
                 "--epochs", "1", "--quiet", "--force")  # fmt: skip
    refused(result, "p.ckpt", "symbolic link")
    assert list(victim.iterdir()) == []


def test_output_inside_the_input_savedmodel_folder_is_refused(cli, tmp_path):
    import keras

    keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)]).export(
        str(tmp_path / "exported"), verbose=False
    )
    model = tmp_path / "exported"
    digest = sha256(model)
    for target in (model / "pruned", model / "variables" / "pruned.tflite"):
        refused(_prune(cli, model, "-o", target), str(target), str(model), "inside the input")
    assert sha256(model) == digest


def test_output_inside_the_image_data_folder_is_refused(cli, make_model, image_data):
    model = make_model("cnn", ".keras", train=False)
    digest = sha256(image_data)
    target = image_data / "train" / "p.keras"
    refused(_prune(cli, model, "--data", image_data, "-o", target), str(target), "inside")
    assert sha256(image_data) == digest


def test_force_replaces_only_its_own_kind(cli, make_model, out):
    """--force over a foreign file is refused (its bytes kept); over prunecli's own previous
    outputs it replaces them."""
    model = make_model("dense", ".keras", train=False)
    target = out / "p.keras"
    report = out / "p.report.json"
    for path, foreign, what in (
        (target, b"my thesis, not a model", "Keras archive"),
        (report, b'{"not": "a prunecli report"}', "prunecli JSON report"),
        (out / "p.report.sparsity.png", b"\x89PNG\r\n\x1a\n a holiday photo", "prunecli plot"),
        (out / "p.report.html", b"<!DOCTYPE html><p>my page</p>", "prunecli HTML page"),
    ):
        path.write_bytes(foreign)
        refused(_prune(cli, model, "-o", target, "--force"), str(path), what)
        assert path.read_bytes() == foreign
        path.unlink()
    assert _prune(cli, model, "-o", target).exit_code == 0
    again = _prune(cli, model, "-o", target, "--force")
    assert again.exit_code == 0, again.stderr
    assert json.loads(report.read_text())["output"]["path"] == str(target)


def test_force_never_replaces_an_hdf5_data_file_at_a_model_path(cli, make_model, out):
    """An .h5 of the user's own arrays is HDF5, but not a Keras file: kept."""
    import h5py
    import numpy as np

    model = make_model("dense", ".keras", train=False)
    target = out / "p.h5"
    with h5py.File(target, "w") as handle:
        handle["measurements"] = np.arange(10.0)
    digest = sha256(target)
    refused(_prune(cli, model, "-o", target, "--force"), str(target), "HDF5 model")
    assert sha256(target) == digest
