"""Data a new user gets wrong, through ``prunecli prune`` as typed: each is exit 2 with one
line naming the file and what to do, never exit 1 from deep inside Keras."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import (
    refused,
    scaled,
    synthetic_images,
    write_config,
    write_image_splits,
    write_npz,
)


def _prune(cli, model: Path, data: Path, out: Path):
    return cli("prune", model, "--data", data, "--epochs", "1", "--quiet", "-o", out / "p.keras")


def test_one_hot_labels_with_too_few_columns(cli, make_model, tmp_path, out):
    """3 output units, labels one-hot over 2 columns: was an unexpected ValueError, exit 1."""
    model = make_model("cnn", ".keras", train=False)
    images, y = synthetic_images(24, 1)
    data = write_npz(tmp_path / "onehot.npz", scaled(images), np.eye(3)[y][:, :2])
    line = refused(_prune(cli, model, data, out), str(data), "2 columns", "3 units")
    assert "one column per unit" in line
    assert list(out.iterdir()) == []


def test_class_ids_in_one_column_are_class_ids(cli, make_model, tmp_path, out):
    """``y`` of shape (N, 1), as ``keras.datasets.cifar10`` gives it: class ids, not
    '1 columns but 3 units' (nor, before that, a regression target)."""
    import json

    model = make_model("cnn", ".keras", train=False)
    images, y = synthetic_images(24, 1)
    data = write_npz(tmp_path / "column.npz", scaled(images), y.reshape(-1, 1).astype(np.uint8))
    result = cli("prune", model, "--data", data, "--epochs", "1", "--json", "-o", out / "p.keras")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["data"]["task"] == "sparse"


def test_empty_class_folder_is_named(cli, make_model, tmp_path, out):
    """An empty class folder used to surface as '4 classes ... but 3 units'."""
    model = make_model("cnn", ".keras", train=False)
    root = write_image_splits(tmp_path / "images")
    (root / "train" / "class_9").mkdir()
    refused(_prune(cli, model, root, out), str(root / "train" / "class_9"), "holds no")
    assert list(out.iterdir()) == []


def test_a_class_without_validation_images_is_fine(cli, make_model, tmp_path, out):
    """A rare class with no validation images: ``val/class_2`` empty (removing it would not
    match train's classes). The class ids stay train's; validation holds the other two."""
    import json
    import shutil

    model = make_model("cnn", ".keras", train=False)
    root = write_image_splits(tmp_path / "images")
    held = len(list((root / "val" / "class_2").iterdir()))
    shutil.rmtree(root / "val" / "class_2")
    (root / "val" / "class_2").mkdir()
    result = cli("prune", model, "--data", root, "--epochs", "0", "--json", "-o", out / "p.keras")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["data"]["validation_samples"] == 30 - held


def test_npz_that_is_not_an_archive(cli, make_model, tmp_path, out):
    """numpy calls any non-zip bytes 'pickled (object) data'; the file is simply not an npz."""
    model = make_model("cnn", ".keras", train=False)
    data = tmp_path / "train.npz"
    data.write_bytes(b"x,y\n1,2\n")
    line = refused(_prune(cli, model, data, out), str(data), "not a zip archive")
    assert "pickle" not in line


def test_data_cache_that_is_a_file_is_a_data_error(cli, make_model, npz_data, out):
    """``data.cache: /dev/null`` (or any file) was exit 1: FileExistsError from mkdir."""
    model = make_model("cnn", ".keras", train=False)
    result = cli(
        "prune", model, "--data", npz_data, "--epochs", "0", "--quiet",
        "-o", out / "p.keras", "--set", "data.cache=/dev/null",
    )  # fmt: skip
    refused(result, "data.cache: /dev/null: file exists", "must be a folder")
    assert list(out.iterdir()) == []


def test_tfrecord_that_is_not_one_names_the_file(cli, make_model, tmp_path, out):
    """Random bytes named ``*.tfrecord``: was "an input disappeared or changed during the
    run: {{function_node ...}} corrupted record ..." without the file's name."""
    model = make_model("dense", ".keras", train=False)
    shard = tmp_path / "shards" / "a.tfrecord"
    shard.parent.mkdir()
    shard.write_bytes(np.random.default_rng(0).bytes(100))
    config = write_config(
        tmp_path / "cfg.yaml",
        f"data:\n  train: {shard.parent}/*.tfrecord\n  tfrecord:\n    features:\n"
        "      x: {dtype: float32, shape: [6]}\n      label: {dtype: int64}\n",
    )
    line = refused(cli("prune", model, "-c", config, "--epochs", "0", "-o", out / "p.keras"),
                   f"{shard}: not a TFRecord file, or damaged (corrupted record")  # fmt: skip
    assert "function_node" not in line and "disappeared" not in line
