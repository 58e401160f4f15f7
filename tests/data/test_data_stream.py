"""Streaming data (issue 5): TFRecord input, lazy image decoding, CSV streaming, tf.data cache.

Everything runs on real files: TFRecord shards written here with ``tf.io.TFRecordWriter``,
PNG folders, CSV files; end-to-end runs go through the ``cli`` fixture.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_images, write_config
from PIL import Image

from prunecli import data
from prunecli.config import Data, TFRecord
from prunecli.errors import DataError

INPUT = (8, 8, 1)


def example(features: dict[str, tuple[str, object]]) -> bytes:
    """A serialized ``tf.train.Example``; each feature is (kind, values)."""
    import tensorflow as tf

    def feature(kind: str, values: object) -> tf.train.Feature:
        if kind == "float":
            return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))
        if kind == "int":
            return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[values]))

    named = {name: feature(kind, values) for name, (kind, values) in features.items()}
    return tf.train.Example(features=tf.train.Features(feature=named)).SerializeToString()


def write_shards(folder: Path, records: list[bytes], shards: int = 2) -> Path:
    """``folder/train-<i>.tfrecord``, the records in contiguous runs: reading the shards in
    sorted order gives them back in order."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(records) // shards)
    for i in range(shards):
        with tf.io.TFRecordWriter(str(folder / f"train-{i}.tfrecord")) as writer:
            for record in records[i * per : (i + 1) * per]:
                writer.write(record)
    return folder / "train-*.tfrecord"


def tabular(count: int = 90) -> tuple[np.ndarray, np.ndarray]:
    """The dense fixture model's task: 6 features, class k has feature k raised by 3."""
    rng = np.random.default_rng(4)
    y = np.arange(count) % 3
    x = rng.normal(size=(count, 6)).astype(np.float32)
    x[np.arange(count), y] += 3.0
    return x, y


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


def tfrecord(pattern: Path, spec: dict, **settings: object) -> Data:
    return Data(train=pattern, tfrecord=TFRecord.model_validate({"features": spec}), **settings)


def run_prune(cli, model: Path, cfg: Path, out: Path, *extra: object) -> dict:
    result = cli("prune", model, "--config", cfg, "-o", out, "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


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


def test_tfrecord_end_to_end_float_features(cli, make_model, tmp_path):
    float_shards(tmp_path)
    cfg = write_config(tmp_path / "cfg.yaml", (
        "data:\n  train: shards/train-*.tfrecord\n  validation_split: 0.2\n"
        "  tfrecord:\n    features:\n      x: {dtype: float32, shape: [6]}\n"
        "      label: {dtype: int64}\n"
    ))  # fmt: skip
    report = run_prune(cli, make_model("dense"), cfg, tmp_path / "out.keras", "--epochs", "1")
    assert (report["data"]["train_samples"], report["data"]["validation_samples"]) == (72, 18)
    assert report["data"]["task"] == "sparse"
    assert report["before"]["accuracy"] > 0.8  # the fixture model learnt this task
    assert report["after"]["accuracy"] is not None
    assert (tmp_path / "out.keras").exists()


def test_tfrecord_end_to_end_png_images(cli, make_model, tmp_path):
    png_shards(tmp_path)
    cfg = write_config(tmp_path / "cfg.yaml", (
        "data:\n  train: pngs/train-*.tfrecord\n  validation_split: 0.2\n"
        "  tfrecord:\n    features:\n      image: {dtype: string, shape: [8, 8, 1]}\n"
        "      label: {dtype: int64}\n"
    ))  # fmt: skip
    report = run_prune(cli, make_model("cnn"), cfg, tmp_path / "out.keras", "--epochs", "1")
    assert (report["data"]["train_samples"], report["data"]["validation_samples"]) == (72, 18)
    # the fixture model was trained on these very images (seed 5): decoded right, it knows them
    assert report["before"]["accuracy"] > 0.8


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


# --- streaming ---------------------------------------------------------------------------


def write_gray(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8), mode="L").save(path)


def gray_folder(root: Path, count: int = 6) -> Path:
    for i in range(count):
        write_gray(root / ("a" if i % 2 == 0 else "b") / f"{i}.png", 10 * i)
    return root


def test_image_folder_is_decoded_only_when_iterated(tmp_path):
    root = gray_folder(tmp_path / "imgs")
    source = data.load(Data(train=root, validation_split=0), INPUT, seed=0).train
    assert not hasattr(source, "x")  # labels only; no array of samples was built
    dataset = source.dataset(4)
    assert int(dataset.cardinality()) == 2  # known without reading a pixel
    assert tuple(dataset.element_spec[0].shape) == (None, 8, 8, 1)
    # a file rewritten after load is seen with its new pixels: nothing was decoded at load
    write_gray(root / "a" / "0.png", 200)
    x, _ = data.materialize(source)
    assert x[0, 0, 0, 0] == pytest.approx(200 / 255)


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("RGB", ".png"),
        ("RGBA", ".png"),
        ("LA", ".png"),
        ("RGB", ".gif"),
        ("RGB", ".jpg"),
        ("RGB", ".bmp"),
    ],
)
def test_color_images_for_a_grayscale_model_match_pillow(tmp_path, mode, suffix):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(8, 8, len(mode)), dtype=np.uint8)
    for name in ("a", "b"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        Image.fromarray(pixels, mode=mode).save(tmp_path / "imgs" / name / f"0{suffix}")
    source = data.load(Data(train=tmp_path / "imgs", validation_split=0), INPUT, seed=0).train
    x, _ = data.materialize(source)
    with Image.open(tmp_path / "imgs" / "a" / f"0{suffix}") as image:
        expected = np.asarray(image.convert("L"), dtype=np.float32)
    # TF's luma weights (0.2989, 0.587, 0.114) vs Pillow's (0.299, 0.587, 0.114): within a level
    np.testing.assert_allclose(x[0, ..., 0] * 255, expected, atol=1.01)


def test_training_order_is_a_seeded_shuffle_new_each_epoch(tmp_path):
    x = np.arange(40, dtype=np.float32)[:, None]
    source = data.from_arrays(x, np.arange(40) % 2)

    def epochs(dataset):
        return [[int(v) for batch, _ in dataset for v in batch.numpy()[:, 0]] for _ in range(2)]

    first, again = epochs(source.dataset(8, seed=3)), epochs(source.dataset(8, seed=3))
    assert first == again  # same seed, same order
    assert first[0] != first[1]  # reshuffled each epoch
    assert sorted(first[0]) == list(range(40))
    labels = [(int(v), int(t)) for batch, ys in source.dataset(8, seed=3) for v, t in
              zip(batch.numpy()[:, 0], ys.numpy(), strict=True)]  # fmt: skip
    assert all(t == v % 2 for v, t in labels)  # labels travel with their samples


def test_csv_stream_gives_the_same_samples_as_reading_it_whole(tmp_path, csv_data):
    source = data.load(Data(train=csv_data, validation_split=0), (6,), seed=0).train
    x, y = data.materialize(source)
    table = np.loadtxt(csv_data, delimiter=",", skiprows=1)
    np.testing.assert_array_equal(x, table[:, :6].astype(np.float32))
    np.testing.assert_array_equal(y, table[:, 6].astype(np.int64))


def test_csv_split_streams_each_part_with_its_labels(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("i,label,twice\r\n" + "".join(f"{i},{i % 2},{2 * i}\r\n" for i in range(30)))
    splits = data.load(Data(train=path, validation_split=0.3), (2,), seed=1)
    train, val = data.materialize(splits.train), data.materialize(splits.validation)
    held = np.sort(np.random.default_rng(1).permutation(30)[:9])
    np.testing.assert_array_equal(val[0][:, 0], held)
    np.testing.assert_array_equal(train[0][:, 0], np.delete(np.arange(30), held))
    for x, y in (train, val):
        np.testing.assert_array_equal(x[:, 1], 2 * x[:, 0])
        np.testing.assert_array_equal(y, x[:, 0].astype(int) % 2)


# --- cache -------------------------------------------------------------------------------


def test_cache_in_memory_gives_the_same_samples(tmp_path):
    root = gray_folder(tmp_path / "imgs")
    plain = data.load(Data(train=root, validation_split=0), INPUT, seed=0).train
    cached = data.load(Data(train=root, validation_split=0, cache=True), INPUT, seed=0).train
    dataset = cached.dataset(4)
    first = np.concatenate([x for x, _ in dataset])
    np.testing.assert_array_equal(first, data.materialize(plain)[0])
    write_gray(root / "a" / "0.png", 255)  # a second epoch of the same dataset: from memory
    np.testing.assert_array_equal(np.concatenate([x for x, _ in dataset]), first)


def test_cache_path_writes_files_and_reads_them_back(tmp_path):
    root = gray_folder(tmp_path / "imgs")
    folder = tmp_path / "cache"
    settings = Data(train=root, validation_split=0.5, cache=folder)
    splits = data.load(settings, INPUT, seed=0)
    before = np.concatenate([x for x, _ in splits.train.dataset(4)])
    assert any(p.name.startswith("train-") for p in folder.iterdir())
    np.concatenate([x for x, _ in splits.validation.dataset(4)])
    assert any(p.name.startswith("validation-") for p in folder.iterdir())
    write_gray(root / "a" / "0.png", 255)  # a new run on the same cache reads the files
    again = data.load(settings, INPUT, seed=0).train
    np.testing.assert_array_equal(np.concatenate([x for x, _ in again.dataset(4)]), before)


def test_cache_path_end_to_end(cli, make_model, image_data, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", "data:\n  cache: tfcache\n")
    args = ("--data", image_data, "--epochs", "2", "--set", "finetune.batch_size=16")
    report = run_prune(cli, make_model("cnn"), cfg, tmp_path / "out.keras", *args)
    assert report["after"]["accuracy"] is not None
    names = {p.name.split("-")[0] for p in (tmp_path / "tfcache").iterdir()}
    assert names == {"train", "validation"}
