"""Streaming data (issue 5): lazy image decoding, CSV streaming, the tf.data cache.

Everything runs on real files (PNG folders, CSV files); end-to-end runs go through the
``cli`` fixture. TFRecord input is in ``test_tfrecord.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import prune_report, write_config, write_png
from PIL import Image

from prunecli import data
from prunecli.config import Data

INPUT = (8, 8, 1)


# --- streaming ---------------------------------------------------------------------------


def gray_folder(root: Path, count: int = 6) -> Path:
    for i in range(count):
        write_png(root / ("a" if i % 2 == 0 else "b") / f"{i}.png", np.full((8, 8), 10 * i))
    return root


def test_image_folder_is_decoded_only_when_iterated(tmp_path):
    root = gray_folder(tmp_path / "imgs")
    source = data.load(Data(train=root, validation_split=0), INPUT, seed=0).train
    assert not hasattr(source, "x")  # labels only; no array of samples was built
    dataset = source.dataset(4)
    assert int(dataset.cardinality()) == 2  # known without reading a pixel
    assert tuple(dataset.element_spec[0].shape) == (None, 8, 8, 1)
    # a file rewritten after load is seen with its new pixels: nothing was decoded at load
    write_png(root / "a" / "0.png", np.full((8, 8), 200))
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
    write_png(
        root / "a" / "0.png", np.full((8, 8), 255)
    )  # a second epoch of the same dataset: from memory
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
    write_png(
        root / "a" / "0.png", np.full((8, 8), 255)
    )  # a new run on the same cache reads the files
    again = data.load(settings, INPUT, seed=0).train
    np.testing.assert_array_equal(np.concatenate([x for x, _ in again.dataset(4)]), before)


def test_cache_path_end_to_end(cli, make_model, image_data, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", "data:\n  cache: tfcache\n")
    args = ("--data", image_data, "--epochs", "2", "--set", "finetune.batch_size=16")
    report = prune_report(
        cli, make_model("cnn"), "--config", cfg, "-o", tmp_path / "out.keras", *args
    )
    assert report["after"]["accuracy"] is not None
    names = {p.name.split("-")[0] for p in (tmp_path / "tfcache").iterdir()}
    assert names == {"train", "validation"}
