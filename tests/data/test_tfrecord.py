"""data/tfrecord.py (issue 5): TFRecord shards written here with ``tf.io.TFRecordWriter``,
read back, decoded, split; end-to-end runs go through the ``cli`` fixture."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    example,
    prune_report,
    synthetic_images,
    tabular,
    tfrecord,
    write_config,
    write_shards,
)
from PIL import Image

from prunecli import data
from prunecli.errors import DataError

INPUT = (8, 8, 1)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def float_shards(tmp_path: Path) -> Path:
    x, y = tabular()
    records = [
        example({"x": ("float", row), "label": ("int", [label])})
        for row, label in zip(x, y, strict=True)
    ]
    return write_shards(tmp_path / "shards", records)


def png_shards(tmp_path: Path, count: int = 90) -> Path:
    images, labels = synthetic_images(count, 5)
    records = [
        example({"image": ("bytes", png_bytes(image)), "label": ("int", [label])})
        for image, label in zip(images, labels, strict=True)
    ]
    return write_shards(tmp_path / "pngs", records, shards=3)


FLOAT_SPEC = {"x": {"dtype": "float32", "shape": [6]}, "label": {"dtype": "int64"}}
PNG_SPEC = {"image": {"dtype": "string", "shape": [8, 8, 1]}, "label": {"dtype": "int64"}}


# --- TFRecord ----------------------------------------------------------------------------


def test_tfrecord_float_features_read_back_in_order(tmp_path):
    pattern = float_shards(tmp_path)
    splits = data.load(tfrecord(pattern, FLOAT_SPEC, validation_split=0), (6,), seed=0)
    x, y = data.materialize(splits.train)
    expected_x, expected_y = tabular()
    np.testing.assert_array_equal(x, expected_x)
    np.testing.assert_array_equal(y, expected_y)
    assert y.dtype == np.int64


def test_tfrecord_png_bytes_are_decoded_to_the_shape(tmp_path):
    pattern = png_shards(tmp_path, 12)
    splits = data.load(tfrecord(pattern, PNG_SPEC, validation_split=0), INPUT, seed=0)
    x, y = data.materialize(splits.train)
    images, labels = synthetic_images(12, 5)
    np.testing.assert_allclose(x, images[..., None].astype(np.float32) / 255, atol=1e-7)
    np.testing.assert_array_equal(y, labels)


def test_tfrecord_jpeg_bytes_decode_like_pillow(tmp_path):
    images, labels = synthetic_images(6, 5)
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image, mode="L").save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    records = [
        example({"image": ("bytes", raw), "label": ("int", [label])})
        for raw, label in zip(encoded, labels, strict=True)
    ]
    pattern = write_shards(tmp_path / "jpegs", records, shards=1)
    x, _ = data.materialize(
        data.load(tfrecord(pattern, PNG_SPEC, validation_split=0), INPUT, seed=0).train
    )
    pillow = np.stack([np.asarray(Image.open(io.BytesIO(raw))) for raw in encoded])
    np.testing.assert_allclose(x[..., 0] * 255, pillow, atol=1.01)  # lossy: same decoder


def test_tfrecord_validation_split_is_seeded_and_disjoint(tmp_path):
    pattern = float_shards(tmp_path)
    settings = tfrecord(pattern, FLOAT_SPEC, validation_split=0.2)
    first, again = (data.load(settings, (6,), seed=7) for _ in range(2))
    x, _ = tabular()
    train, val = data.materialize(first.train)[0], data.materialize(first.validation)[0]
    np.testing.assert_array_equal(val, data.materialize(again.validation)[0])
    held = np.sort(np.random.default_rng(7).permutation(90)[:18])
    np.testing.assert_array_equal(val, x[held])
    np.testing.assert_array_equal(train, np.delete(x, held, axis=0))


@pytest.mark.parametrize(
    ("kind", "write", "features"),
    [
        ("dense", float_shards, "x: {dtype: float32, shape: [6]}"),
        ("cnn", png_shards, "image: {dtype: string, shape: [8, 8, 1]}"),
    ],
    ids=["float-features", "png-images"],
)
def test_tfrecord_end_to_end(cli, make_model, tmp_path, kind, write, features):
    pattern = write(tmp_path)
    cfg = write_config(tmp_path / "cfg.yaml", (
        f"data:\n  train: {pattern.relative_to(tmp_path)}\n  validation_split: 0.2\n"
        f"  tfrecord:\n    features:\n      {features}\n      label: {{dtype: int64}}\n"
    ))  # fmt: skip
    target = tmp_path / "out.keras"
    report = prune_report(cli, make_model(kind), "--config", cfg, "-o", target, "--epochs", "1")
    assert (report["data"]["train_samples"], report["data"]["validation_samples"]) == (72, 18)
    assert report["data"]["task"] == "sparse"
    # the fixture models learnt these very samples (the PNGs are its training images, seed
    # 5): decoded right, the model knows them
    assert report["before"]["accuracy"] > 0.8
    assert report["after"]["accuracy"] is not None
    assert target.exists()


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"x": {"dtype": "float32", "shape": [5]}, "label": {"dtype": "int64"}}, "'x'"),
        ({"x": {"dtype": "int64", "shape": [6]}, "label": {"dtype": "int64"}}, "'x'"),
        ({"pixels": {"dtype": "float32", "shape": [6]}, "label": {"dtype": "int64"}}, "'pixels'"),
        ({"x": {"dtype": "float32", "shape": [6]}, "label": {"dtype": "float32"}}, "'label'"),
    ],
)
def test_tfrecord_spec_not_matching_the_files_names_the_feature(tmp_path, spec, named):
    pattern = float_shards(tmp_path)
    with pytest.raises(DataError) as info:
        data.load(tfrecord(pattern, spec), (6,), seed=0)
    message = str(info.value)
    assert "\n" not in message
    assert named in message and "data.tfrecord.features" in message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"x": {"dtype": "float32", "shape": [6]}}, "no label feature 'label'"),
        (
            {
                "x": {"dtype": "float32", "shape": [6]},
                "y": {"dtype": "float32", "shape": [6]},
                "label": {"dtype": "int64"},
            },
            "expected one input feature",
        ),
        (
            {"x": {"dtype": "string", "shape": [6]}, "label": {"dtype": "int64"}},
            "data.tfrecord.features.x: a string (encoded image) feature needs shape",
        ),
        (
            {"x": {"dtype": "float32"}, "label": {"dtype": "int64"}},
            "data.tfrecord.features.x: a float32 feature needs its shape",
        ),
    ],
)
def test_tfrecord_bad_spec_is_one_line(tmp_path, spec, expected):
    pattern = float_shards(tmp_path)
    with pytest.raises(DataError) as info:
        data.load(tfrecord(pattern, spec), (6,), seed=0)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_tfrecord_bad_spec_through_the_cli_exits_2(cli, make_model, tmp_path):
    float_shards(tmp_path)
    cfg = write_config(tmp_path / "cfg.yaml", (
        "data:\n  train: shards/train-*.tfrecord\n"
        "  tfrecord:\n    features:\n      x: {dtype: float32, shape: [7]}\n"
        "      label: {dtype: int64}\n"
    ))  # fmt: skip
    result = cli("prune", make_model("dense", train=False), "--config", cfg,
                 "-o", tmp_path / "out.keras")  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'x'" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out.keras").exists()


def test_tfrecord_glob_matching_nothing(tmp_path):
    with pytest.raises(DataError, match="no TFRecord files match"):
        data.load(tfrecord(tmp_path / "none-*.tfrecord", FLOAT_SPEC), (6,), seed=0)
