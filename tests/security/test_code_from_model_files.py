"""Safe mode: a model file runs no code and reads or writes no file, in every loader.

Each hostile file is real: its payload creates a marker folder, writes a file, or reads a
victim file, and the tests that pass ``--no-safe-mode`` show the payload does run when
the user explicitly trusts the file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import all_bytes, refused, sha256

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def keras2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder of hostile_keras2.py's files, the marker its Lambda would create)."""
    folder = tmp_path_factory.mktemp("keras2")
    marker = folder / "MARKER"
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, str(HERE / "hostile_keras2.py"), str(folder), str(marker)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert not marker.exists()
    return folder, marker


@pytest.mark.parametrize("command", ["inspect", "prune"])
def test_keras2_savedmodel_lambda_hidden_from_root_config_never_runs(
    cli, keras2, tmp_path, command
):
    folder, marker = keras2
    model = folder / "k2_hidden_lambda_sm"
    args = ("-o", tmp_path / "p.keras", "--epochs", "0") if command == "prune" else ()
    refused(cli(command, model, *args), str(model), "refusing in safe mode", "--no-safe-mode")
    assert not marker.exists()
    assert not (tmp_path / "p.keras").exists()


def test_no_safe_mode_is_the_explicit_way_out(cli, keras2):
    """The same file with --no-safe-mode: its code runs (the artifact above is live)."""
    folder, marker = keras2
    cli("inspect", folder / "k2_hidden_lambda_sm", "--no-safe-mode")
    assert marker.exists()
    marker.rmdir()


# --- signature-only SavedModels: every op of every function checked before any call ------


def _module_with(payload: str, folder: Path, victim: Path, marker: Path) -> Path:
    """A tf.Module (6 -> 3 softmax) whose serving_default also runs ``payload``."""
    import tensorflow as tf

    class Hostile(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(np.full((6, 3), 0.1, "f4"), name="dense/kernel")
            self.stash = tf.Variable("", name="stash")

        @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32)])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            if payload == "WriteFile":
                tf.io.write_file(str(marker), "pwned")
            elif payload == "ReadFile":
                self.stash.assign(tf.io.read_file(str(victim)))
            elif payload == "PrintV2":
                tf.print(x, output_stream=f"file://{marker}")
            elif payload == "MatchingFiles":
                self.stash.assign(
                    tf.strings.reduce_join(tf.io.matching_files(f"{victim.parent}/*"))
                )
            elif payload == "EagerPyFunc":
                x = tf.py_function(lambda t: (marker.mkdir(), t)[1], [x], tf.float32)
                x = tf.ensure_shape(x, [None, 6])
            return {"out": tf.nn.softmax(x @ self.w)}

    module = Hostile()
    if payload != "EagerPyFunc":
        module.serve(tf.zeros([1, 6]))  # trace once here; clean up what tracing did
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    for made in (marker,):
        if made.is_dir():
            made.rmdir()
        made.unlink(missing_ok=True)
    return folder


@pytest.mark.parametrize(
    "payload", ["WriteFile", "ReadFile", "PrintV2", "MatchingFiles", "EagerPyFunc"]
)
@pytest.mark.parametrize("command", ["inspect", "prune"])
def test_savedmodel_graph_with_io_or_python_is_refused_before_any_call(
    cli, tmp_path, payload, command
):
    victim = tmp_path / "secret" / "passwd"
    victim.parent.mkdir()
    victim.write_bytes(b"root:SECRET-BYTES-1f2e3d:0:0")
    digest = sha256(victim)
    marker = tmp_path / "MARKER"
    model = _module_with(payload, tmp_path / "hostile", victim, marker)
    out = tmp_path / "out"
    out.mkdir()
    args = ("-o", out / "pruned", "--epochs", "0") if command == "prune" else ()
    line = refused(cli(command, model, *args), str(model), "uses op", "--no-safe-mode")
    assert payload in line
    assert not marker.exists()
    assert list(out.iterdir()) == []
    assert sha256(victim) == digest


def test_plain_savedmodel_still_loads_in_safe_mode(cli, tmp_path):
    """The allowlist refuses I/O, not ordinary graphs: a Keras 3 export passes."""
    import keras

    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(3)]
    )
    model.export(str(tmp_path / "exported"), verbose=False)
    result = cli("inspect", tmp_path / "exported", "--json")
    assert result.exit_code == 0, result.stderr


# --- HDF5: external storage, virtual datasets, external links refused in every .h5 ------


def _kernel_name(handle: h5py.File) -> str:
    found: list[str] = []
    handle.visititems(
        lambda name, item: (
            found.append(name)
            if isinstance(item, h5py.Dataset) and name.endswith("kernel:0") and "d1" in name
            else None
        )
    )
    return found[0]


def _plant(model: Path, victim: Path, kind: str) -> None:
    """Replace the first kernel of ``model`` by one that reads ``victim`` (same shape)."""
    with h5py.File(model, "r+") as handle:
        name = _kernel_name(handle)
        shape, dtype = handle[name].shape, handle[name].dtype
        del handle[name]
        if kind == "external storage":
            handle.create_dataset(
                name, shape, dtype, external=[(str(victim), 0, victim.stat().st_size)]
            )
        elif kind == "virtual dataset":
            with h5py.File(victim.with_suffix(".h5"), "w") as source:
                source["x"] = np.frombuffer(victim.read_bytes(), dtype).reshape(shape)
            layout = h5py.VirtualLayout(shape, dtype)
            layout[:] = h5py.VirtualSource(str(victim.with_suffix(".h5")), "x", shape=shape)
            handle.create_virtual_dataset(name, layout)
        else:
            with h5py.File(victim.with_suffix(".h5"), "w") as source:
                source["x"] = np.frombuffer(victim.read_bytes(), dtype).reshape(shape)
            handle[name] = h5py.ExternalLink(str(victim.with_suffix(".h5")), "x")


@pytest.mark.parametrize("kind", ["external storage", "virtual dataset", "external link"])
def test_h5_reading_another_file_is_refused(cli, keras2, tmp_path, kind):
    """Keras 2's loader reads datasets itself: the victim's bytes would become weights."""
    model = tmp_path / "k2.h5"
    model.write_bytes((keras2[0] / "k2_dense.h5").read_bytes())
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"VICTIM-BYTES" * 16)  # 192 bytes: one 6 x 8 float32 kernel
    _plant(model, victim, kind)
    digest = sha256(victim)
    out = tmp_path / "out"
    out.mkdir()
    for args in (("inspect", model), ("prune", model, "-o", out / "p.keras", "--epochs", "0")):
        refused(cli(*args), str(model), kind.split()[-1])
        refused(cli(*args, "--no-safe-mode"), kind.split()[-1])  # a read, not code: always
    assert list(out.iterdir()) == []
    assert sha256(victim) == digest
    assert b"VICTIM" not in all_bytes(out)


def test_keras_archive_whose_weights_link_another_file_is_refused(cli, make_model, tmp_path):
    import zipfile

    source = make_model("dense", ".keras", train=False)
    victim = tmp_path / "victim.h5"
    with h5py.File(victim, "w") as handle:
        handle["x"] = np.zeros((6, 32), "f4")
    weights = tmp_path / "model.weights.h5"
    with zipfile.ZipFile(source) as archive:
        weights.write_bytes(archive.read("model.weights.h5"))
        members = {name: archive.read(name) for name in archive.namelist()}
    with h5py.File(weights, "r+") as handle:
        handle["planted"] = h5py.ExternalLink(str(victim), "x")
    members["model.weights.h5"] = weights.read_bytes()
    hostile = tmp_path / "hostile.keras"
    with zipfile.ZipFile(hostile, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    refused(cli("inspect", hostile), str(hostile), "external link")
