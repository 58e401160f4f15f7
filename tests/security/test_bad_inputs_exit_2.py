"""Every broken input is exit 2 with one line naming the file, key or value (never exit 1,
never a traceback, never pages of TensorFlow's message), and leaves nothing behind: damaged
archives and HDF5 attributes, absurdly nested JSON/YAML, out-of-range numbers, broken
``.npz``/CSV/TFRecord/PNG files, a full disk and an input deleted mid-run."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import (
    child_refused,
    core_outputs,
    example,
    refused,
    run_child,
    write_config,
    write_shards,
)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _rezip(source: Path, target: Path, change) -> Path:
    """Copy a .keras archive member by member, ``change(info, data)`` -> (info, data)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            info, data = change(info, old.read(info))
            new.writestr(info, data)
    return target


# --- model files -------------------------------------------------------------------------


def _patch_headers(source: Path, target: Path, local: int, central: int, value: int) -> Path:
    """Set a 2-byte field (at ``local``/``central`` bytes into every local / central
    directory header) of a stored-member copy of ``source``: zipfile cannot write such
    archives itself."""
    raw = bytearray(_rezip(source, target, lambda i, d: (i, d)).read_bytes())
    for signature, offset in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
        start = 0
        while (start := raw.find(signature, start)) != -1:
            raw[start + offset : start + offset + 2] = value.to_bytes(2, "little")
            start += 4
    target.write_bytes(bytes(raw))
    return target


def test_encrypted_zip_member(cli, make_model, tmp_path):
    source = make_model("dense", ".keras", train=False)
    bad = _patch_headers(source, tmp_path / "enc.keras", 6, 8, 0x1)  # flag bit 0: encrypted
    refused(cli("inspect", bad), str(bad), "encrypted")


def test_unsupported_zip_compression_method(cli, make_model, tmp_path):
    source = make_model("dense", ".keras", train=False)
    bad = _patch_headers(source, tmp_path / "method.keras", 8, 10, 99)  # 99: AES
    refused(cli("inspect", bad), str(bad), "compression method 99")


def test_config_json_nested_100k_deep(cli, make_model, tmp_path):
    deep = "[" * 100_000 + "]" * 100_000

    def nest(info, data):
        return info, (deep.encode() if info.filename == "config.json" else data)

    bad = _rezip(make_model("dense", ".keras", train=False), tmp_path / "deep.keras", nest)
    for safe in ((), ("--no-safe-mode",)):
        refused(cli("inspect", bad, *safe), str(bad), "nested")


def test_h5_model_config_stored_as_an_int_array(cli, make_model):
    model = make_model("dense", ".h5", train=False)
    with h5py.File(model, "r+") as handle:
        handle.attrs["model_config"] = np.arange(5)
    refused(cli("inspect", model), str(model), "model_config")


# --- configs -----------------------------------------------------------------------------


def test_yaml_nested_20k_deep(cli, tmp_path):
    config = write_config(tmp_path / "deep.yaml", "a: " + "[" * 20_000 + "]" * 20_000 + "\n")
    refused(cli("validate", config), str(config), "nested")


@pytest.mark.parametrize(
    "setting",
    [
        "seed=-1",
        "seed=1099511627776",
        "finetune.batch_size=1099511627776",
        "prune.score_batches=1099511627776",
        "prune.granularity={block: [1, 1099511627776]}",
        "finetune.steps_per_execution=1099511627776",
    ],
)
def test_out_of_range_numbers(cli, tmp_path, setting):
    config = write_config(tmp_path / "cfg.yaml", "")
    refused(cli("validate", config, "--set", setting), setting.split("=")[0])


# --- data ----------------------------------------------------------------------------------


def _prune(cli, model: Path, data: Path, out: Path, *args: str):
    return cli("prune", model, "--set", f"data.train={data}", "-o", out / "p.keras",
               "--epochs", "1", "--quiet", *args)  # fmt: skip


def test_zero_byte_npz(cli, make_model, tmp_path, out):
    data = tmp_path / "empty.npz"
    data.write_bytes(b"")
    refused(_prune(cli, make_model("cnn", ".keras", train=False), data, out), str(data), "empty")
    assert list(out.iterdir()) == []


def test_npz_header_declaring_1e18_elements(cli, make_model, tmp_path, out):
    import io

    header = io.BytesIO()
    shape = (10**9, 10**9)
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    data = tmp_path / "liar.npz"
    with zipfile.ZipFile(data, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + b"\0" * 64)
        archive.writestr("y.npy", header.getvalue() + b"\0" * 64)
    model = make_model("cnn", ".keras", train=False)
    refused(_prune(cli, model, data, out), str(data), "declares shape (1000000000, 1000000000)")


@pytest.mark.parametrize(
    "cell, needle",
    [("1_000", "'1_000'"), ("\u0663", "not a number"), ('"1\n2"', "line break"),
     ("9" * 200_000, "d.csv:5: cannot read csv (field larger than field limit")],
    ids=["underscore", "arabic-digit", "quoted-newline", "200KB-field"],
)  # fmt: skip
def test_csv_cells_python_accepts_and_tensorflow_does_not(
    cli, make_model, tmp_path, out, cell, needle
):
    data = tmp_path / "d.csv"
    rows = [",".join(f"{v:.3f}" for v in row) + f",{i % 3}" for i, row in
            enumerate(np.random.default_rng(0).normal(size=(30, 6)))]  # fmt: skip
    first = rows[3].split(",")
    first[1] = cell
    rows[3] = ",".join(first)
    data.write_text("f0,f1,f2,f3,f4,f5,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    line = refused(_prune(cli, make_model("dense", ".keras", train=False), data, out), str(data))
    assert needle in line and len(line) < 600
    assert list(out.iterdir()) == []


def _float_records(count: int, short_at: int | None = None, nan_label_at: int | None = None):
    records = []
    for i in range(count):
        values = [0.5] * (3 if i == short_at else 6)
        label = float("nan") if i == nan_label_at else float(i % 3)
        records.append(example({"x": ("float", values), "label": ("float", [label])}))
    return records


@pytest.mark.parametrize("fault", ["short feature", "NaN label"])
def test_tfrecord_fault_in_a_later_record(cli, make_model, tmp_path, out, fault):
    kwargs = {"short_at": 50} if fault == "short feature" else {"nan_label_at": 50}
    pattern = write_shards(tmp_path / "shards", _float_records(60, **kwargs))
    config = write_config(
        tmp_path / "cfg.yaml",
        f"data:\n  train: '{pattern}'\n  tfrecord:\n    features:\n"
        "      x: {dtype: float32, shape: [6]}\n      label: {dtype: float32}\n",
    )
    result = cli("prune", make_model("dense", ".keras", train=False), "--config", config,
                 "-o", out / "p.keras", "--epochs", "1", "--quiet")  # fmt: skip
    line = refused(result, "train-1.tfrecord")  # record 50 of 60 is in the second shard
    assert ("label" in line) if fault == "NaN label" else ("x" in line)
    assert list(out.iterdir()) == []


def test_png_with_valid_crcs_and_broken_zlib_data(cli, make_model, image_data, out):
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0)
    broken = zlib.compress(b"\0" * 72)[:-6] + b"garbage!"
    bad = image_data / "train" / "class_1" / "broken.png"
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", broken)
    bad.write_bytes(png + chunk(b"IEND", b""))
    model = make_model("cnn", ".keras", train=False)
    result = cli("prune", model, "--data", image_data, "-o", out / "p.keras", "--epochs", "1")
    refused(result, str(bad), "PNG")
    assert list(out.iterdir()) == []


# --- the environment -------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 12 KiB tmpfs (needs root and mount); skipped where it cannot be made."""
    folder = tmp_path / "full"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(folder)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_disk_full_on_the_output_names_it_and_leaves_nothing(
    cli, make_model, image_data, tiny_disk
):
    model = make_model("cnn", ".keras", train=True)
    result = cli("prune", model, "--data", image_data, "-o", tiny_disk / "p.keras",
                 "--epochs", "0", "--quiet")  # fmt: skip
    refused(result, "no space left on device")
    assert list(tiny_disk.iterdir()) == []


def test_input_deleted_mid_run(cli, make_model, image_data, out, monkeypatch):
    """An image removed after the up-front check, before training reads it."""
    from prunecli.data import images

    verify = images.verify
    victim = sorted((image_data / "train" / "class_0").iterdir())[0]

    def verify_then_delete(path: Path) -> None:
        verify(path)
        if path == victim:
            path.unlink()

    monkeypatch.setattr(images, "verify", verify_then_delete)
    model = make_model("cnn", ".keras", train=False)
    result = cli("prune", model, "--data", image_data, "-o", out / "p.keras", "--epochs", "1")
    refused(result, victim.name)
    assert list(out.iterdir()) == []


def test_signal_after_the_outputs_are_renamed_exits_0(
    cli, make_model, image_data, out, monkeypatch
):
    """The run is complete once its outputs are in place: a SIGTERM then is not a failure."""
    import os
    import signal

    from prunecli import pipeline

    def remove_then_signal(where: Path) -> None:  # runs right after the rename
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(pipeline.checkpoints, "remove", remove_then_signal)
    model = make_model("cnn", ".keras", train=False)
    result = cli("prune", model, "--data", image_data, "-o", out / "p.keras", "--epochs", "0")
    assert result.exit_code == 0, result.stderr
    assert core_outputs(out) == ["p.keras", "p.report.json", "p.report.md"]


def test_image_damaged_inside_fails_mid_epoch_with_exit_2(cli, make_model, image_data, out):
    """A truncated BMP passes Pillow's header check; TensorFlow's decoder refuses it while
    training reads it: still exit 2, one line, nothing written."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 90, np.uint8), "L").save(buffer, format="BMP")
    bad = image_data / "train" / "class_2" / "truncated.bmp"
    bad.write_bytes(buffer.getvalue()[:-20])
    model = make_model("cnn", ".keras", train=False)
    result = cli("prune", model, "--data", image_data, "-o", out / "p.keras", "--epochs", "1")
    refused(result, "could not be decoded", "DecodeImage")
    assert list(out.iterdir()) == []


def test_disk_full_on_the_checkpoint_folder(cli, make_model, image_data, out, tiny_disk):
    model = make_model("cnn", ".keras", train=False)
    result = cli("prune", model, "--data", image_data, "-o", out / "p.keras", "--epochs", "1",
                 "--set", f"finetune.checkpoint_dir={tiny_disk / 'ckpt'}", "--quiet")  # fmt: skip
    refused(result, "no space left on device")
    assert list(out.iterdir()) == []


def test_disk_full_on_the_temp_folder_leaves_nothing_there(make_model, image_data, out, tiny_disk):
    """TMPDIR on a full disk (the "before" size is measured from a save there): exit 2,
    and the run's own temp folder is gone afterwards."""
    model = make_model("cnn", ".keras", train=True)
    result = run_child("prune", model, "--data", image_data, "-o", out / "p.h5", "--epochs", "0",
                       "--quiet", TMPDIR=str(tiny_disk))  # fmt: skip
    child_refused(result, "no space left on device")
    assert list(out.iterdir()) == [] and list(tiny_disk.iterdir()) == []
