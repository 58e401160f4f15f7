"""Tiny files that would cost huge memory or never end: each is refused before the cost,
in a child process whose peak RSS is measured (``os.wait4``), with exit 2 and one line.

The limits are far below what each bomb would take if it went off (gigabytes), and far
above what the refusal itself costs (importing TensorFlow is most of it).
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import child_refused, refused, run_child, write_config

TF_RSS_MIB = 1500  # a child that loads TensorFlow and refuses: well under this
PLAIN_RSS_MIB = 250  # a child that never imports TensorFlow (validate)


def _deflated_member(archive: zipfile.ZipFile, name: str, head: bytes, fill: bytes, size: int):
    """A member of ``size`` bytes (``head`` then ``fill`` repeated), written in chunks: the
    test never holds the expanded bytes."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with archive.open(info, "w", force_zip64=True) as member:
        member.write(head)
        chunk = fill * (2**20 // len(fill))
        left = size - len(head)
        while left > 0:
            member.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)


def _recompress(source: Path, target: Path, replace: dict[str, tuple[bytes, bytes, int]]):
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for name in old.namelist():
            if name in replace:
                _deflated_member(new, name, *replace[name])
            else:
                new.writestr(name, old.read(name))


def test_keras_archive_config_zip_bomb(make_model, tmp_path):
    """config.json expanding to 300 MB of a JSON list (a list of 150M ints: > 5 GB)."""
    source = make_model("dense", ".keras", train=False)
    bomb = tmp_path / "bomb.keras"
    _recompress(source, bomb, {"config.json": (b"[", b"0,", 300 * 2**20)})
    assert bomb.stat().st_size < 2 * 2**20
    result = run_child("inspect", bomb)
    child_refused(result, str(bomb), "config.json", "declares")
    assert result.peak_mib < TF_RSS_MIB


def _huge_kernel(handle: h5py.File, name: str) -> None:
    """Replace dataset ``name`` by a 2.1 GB float32 one that stores no bytes at all."""
    del handle[name]
    handle.create_dataset(name, shape=(24_000, 24_000), dtype="f4", chunks=(1000, 1000))


def test_h5_kernel_declaring_gigabytes_in_a_tiny_file(make_model, tmp_path):
    model = make_model("dense", ".h5", train=False)
    with h5py.File(model, "r+") as handle:
        names: list[str] = []
        handle.visititems(lambda n, o: names.append(n) if n.endswith("kernel") else None)
        _huge_kernel(handle, names[0])
    assert model.stat().st_size < 200_000
    result = run_child("inspect", model)
    child_refused(result, str(model), "declares shape (24000, 24000)")
    assert result.peak_mib < TF_RSS_MIB


def test_keras_archive_weights_declaring_gigabytes(make_model, tmp_path):
    source = make_model("dense", ".keras", train=False)
    weights = tmp_path / "model.weights.h5"
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    weights.write_bytes(members["model.weights.h5"])
    with h5py.File(weights, "r+") as handle:
        names: list[str] = []
        handle.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        _huge_kernel(handle, names[0])
    members["model.weights.h5"] = weights.read_bytes()
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    result = run_child("inspect", bomb)
    child_refused(result, str(bomb), "declares shape")
    assert result.peak_mib < TF_RSS_MIB


def _npy_header(shape: tuple[int, ...]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


def test_npz_zip_bomb(make_model, tmp_path):
    model = make_model("dense", ".keras", train=False)
    bomb = tmp_path / "bomb.npz"
    size = 512 * 2**20
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        header = _npy_header(((size - 128) // 24, 6))
        _deflated_member(archive, "x.npy", header, b"\0", size)
        archive.writestr("y.npy", _npy_header((1,)) + b"\0" * 4)
    assert bomb.stat().st_size < 2 * 2**20
    result = run_child("prune", model, "--set", f"data.train={bomb}", "-o", tmp_path / "p.keras")
    child_refused(result, str(bomb), "zip bomb")
    assert result.peak_mib < TF_RSS_MIB
    assert not (tmp_path / "p.keras").exists()


def test_yaml_alias_bomb_in_validate(tmp_path):
    """A 400-byte billion-laughs config: > 3 GB if expanded; the message stays short."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines = ["x:", *(f"  {line}" for line in lines), "prune: {layers: {include: *i}}"]
    config = write_config(tmp_path / "bomb.yaml", "\n".join(lines) + "\n")
    assert config.stat().st_size < 600
    result = run_child("validate", config)
    line = child_refused(result, str(config), "aliases")
    assert len(line) < 300
    assert result.peak_mib < PLAIN_RSS_MIB


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_data_path_that_never_ends_or_blocks(make_model, tmp_path, kind):
    model = make_model("dense", ".keras", train=False)
    data = tmp_path / "train.csv"
    if kind == "dev-zero":
        data.symlink_to("/dev/zero")
    else:
        os.mkfifo(data)
    result = run_child("prune", model, "--set", f"data.train={data}", "-o", tmp_path / "p.keras",
                       timeout=120)  # fmt: skip
    child_refused(result, str(data), "not a regular file")
    assert result.peak_mib < TF_RSS_MIB


def _png(width: int, height: int, pixels: bytes) -> bytes:
    """A grayscale PNG with the given IHDR size and IDAT payload; every CRC right."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [9000, 30_000])  # our budget; Pillow's own bomb error
def test_image_declaring_a_huge_pixel_count(cli, make_model, image_data, tmp_path, side):
    model = make_model("cnn", ".keras", train=False)
    bomb = image_data / "train" / "class_0" / "bomb.png"
    bomb.write_bytes(_png(side, side, zlib.compress(b"\0" * 1000)))
    result = cli("prune", model, "--data", image_data, "-o", tmp_path / "p.keras", "--epochs", "0")
    refused(result, str(bomb), "pixels")
    assert not (tmp_path / "p.keras").exists()


@pytest.mark.parametrize(
    "setting",
    [
        "finetune.epochs=1000000",
        "prune.schedule.steps=1.0e+20",
        "prune.schedule.frequency=1.0e+20",
        "finetune.batch_size=100000000",
        "prune.score_batches=1000000000",
        "finetune.checkpoint_steps=1.0e+20",
        "data.image_size=[100000,100000]",
        "prune.granularity={block: [1, 1000000]}",
    ],
)
def test_config_numbers_have_upper_bounds(tmp_path, setting):
    config = write_config(tmp_path / "cfg.yaml", "")
    result = run_child("validate", config, "--set", setting, timeout=60)
    child_refused(result, setting.split("=")[0])
    assert result.seconds < 30 and result.peak_mib < PLAIN_RSS_MIB


def test_tfrecord_feature_shape_has_an_upper_bound(tmp_path):
    config = write_config(
        tmp_path / "cfg.yaml",
        "data:\n  tfrecord:\n    features:\n      x: {dtype: float32, shape: [65536, 65536]}\n"
        "      label: {dtype: int64}\n",
    )
    child_refused(run_child("validate", config, timeout=60), "shape")
