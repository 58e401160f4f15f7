"""data.py: image folders, .npz and .csv -> streamed sources, and every DataError's message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import synthetic_images, valued_image_folder, write_png

from prunecli import data
from prunecli.config import Data
from prunecli.errors import DataError

INPUT = (8, 8, 1)


def xs(source: data.Source) -> np.ndarray:
    """The samples a source streams, gathered (the data in these tests is tiny)."""
    return data.materialize(source)[0]


def load_splits(train=None, input_shape=INPUT, seed=0, **settings):
    return data.load(Data(train=train, **settings), input_shape, seed)


def data_error(*args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_splits(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- image folders -----------------------------------------------------------------------


def test_image_folder_to_arrays(image_data):
    splits = data.load(
        Data(train=image_data / "train", validation=image_data / "val"), INPUT, seed=0
    )
    train, val = splits.train, splits.validation
    assert xs(train).shape == (60, 8, 8, 1)
    assert xs(val).shape == (30, 8, 8, 1)
    assert xs(train).dtype == np.float32
    assert train.classes == val.classes == ("class_0", "class_1", "class_2")
    assert train.y.dtype == np.int64
    # files are read class by class, each folder in sorted file-name order
    np.testing.assert_array_equal(train.y, np.repeat([0, 1, 2], 20))
    # conftest wrote image i into class_{i % 3} as f"{i:03d}.png": class_0 holds 0, 3, 6, ...
    images, labels = synthetic_images(60, 1)
    order = np.concatenate([np.flatnonzero(labels == k) for k in range(3)])
    expected = images[order].astype(np.float32)[..., None] * np.float32(1 / 255)
    np.testing.assert_allclose(xs(train), expected, rtol=0, atol=1e-7)
    assert xs(train).min() >= 0.0 and xs(train).max() <= 1.0


def test_class_ids_follow_sorted_folder_names(tmp_path):
    root = valued_image_folder(tmp_path / "imgs", {"zebra": 1, "apple": 2, "mango": 1})
    arrays = load_splits(root, validation_split=0).train
    assert arrays.classes == ("apple", "mango", "zebra")
    np.testing.assert_array_equal(arrays.y, [0, 0, 1, 2])
    # pixel value 10 * i + (index of the class in the order written: zebra 0, apple 1, mango 2)
    np.testing.assert_allclose(xs(arrays)[:, 0, 0, 0] * 255, [1, 11, 2, 0], atol=1e-4)


def test_non_image_files_and_hidden_folders_are_ignored(tmp_path):
    root = valued_image_folder(tmp_path / "imgs", {"a": 2, "b": 2})
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "b" / "UPPER.PNG").write_bytes((root / "b" / "0.png").read_bytes())
    write_png(root / ".cache" / "x.png", np.zeros((8, 8)))
    arrays = load_splits(root, validation_split=0).train
    assert arrays.classes == ("a", "b")
    np.testing.assert_array_equal(arrays.y, [0, 0, 1, 1, 1])


@pytest.mark.parametrize(("rescale", "scale"), [(None, 1 / 255), (1.0, 1.0), (0.5, 0.5)])
def test_rescale_multiplies_pixels(tmp_path, rescale, scale):
    root = tmp_path / "imgs"
    write_png(root / "a" / "0.png", np.full((8, 8), 200))
    write_png(root / "b" / "0.png", np.full((8, 8), 51))
    arrays = load_splits(root, validation_split=0, rescale=rescale).train
    np.testing.assert_allclose(xs(arrays)[:, 0, 0, 0], [200 * scale, 51 * scale], rtol=1e-6)


def test_rgb_images_for_a_three_channel_model(tmp_path):
    root = tmp_path / "imgs"
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 255, 102, 0
    write_png(root / "a" / "0.png", pixels, mode="RGB")
    write_png(root / "b" / "0.png", np.full((8, 8), 255))  # grayscale file, converted to RGB
    arrays = load_splits(root, input_shape=(8, 8, 3), validation_split=0).train
    assert xs(arrays).shape == (2, 8, 8, 3)
    np.testing.assert_allclose(xs(arrays)[0, 3, 3], [1.0, 0.4, 0.0], atol=1e-6)
    np.testing.assert_allclose(xs(arrays)[1, 3, 3], [1.0, 1.0, 1.0], atol=1e-6)


def test_images_are_resized_to_image_size(tmp_path):
    root = valued_image_folder(tmp_path / "imgs", {"a": 1, "b": 1}, size=12)
    arrays = load_splits(root, input_shape=(4, 6, 1), validation_split=0, image_size=(4, 6)).train
    assert xs(arrays).shape == (2, 4, 6, 1)
    # uniform images stay uniform through a bilinear resize
    np.testing.assert_allclose(xs(arrays)[1] * 255, np.ones((4, 6, 1)), atol=1e-4)


def test_image_size_from_the_model_input(tmp_path):
    root = valued_image_folder(tmp_path / "imgs", {"a": 1, "b": 1}, size=12)
    assert xs(load_splits(root, input_shape=(5, 7, 1), validation_split=0).train).shape == (
        2,
        5,
        7,
        1,
    )


def test_image_size_unknown_asks_for_data_image_size(tmp_path):
    root = valued_image_folder(tmp_path / "imgs", {"a": 1, "b": 1})
    message = data_error(root, input_shape=(None, None, 1))
    assert "data.image_size" in message


# --- split_dir ---------------------------------------------------------------------------


def test_split_dir_train_and_val(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    assert data.split_dir(tmp_path) == (tmp_path / "train", tmp_path / "val")


def test_split_dir_train_and_validation(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "validation").mkdir()
    assert data.split_dir(tmp_path) == (tmp_path / "train", tmp_path / "validation")


def test_split_dir_val_preferred_over_validation(tmp_path):
    for name in ("train", "val", "validation"):
        (tmp_path / name).mkdir()
    assert data.split_dir(tmp_path) == (tmp_path / "train", tmp_path / "val")


def test_split_dir_plain_dir_is_the_training_set(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    (tmp_path / "val").mkdir()  # val without train: still a plain dir of classes
    assert data.split_dir(tmp_path) == (tmp_path, None)


def test_split_dir_train_without_val(tmp_path):
    (tmp_path / "train").mkdir()
    assert data.split_dir(tmp_path) == (tmp_path / "train", None)


def test_split_dir_missing(tmp_path):
    with pytest.raises(DataError, match="data folder not found") as info:
        data.split_dir(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)


def test_split_dir_on_a_file_is_the_training_set(tmp_path):
    path = tmp_path / "data.npz"
    path.write_bytes(b"")
    assert data.split_dir(path) == (path, None)


# --- validation_split --------------------------------------------------------------------


def indexed_npz(path: Path, count: int = 20) -> Path:
    """x[i] = [i] so that a split can be traced back to the original sample indices."""
    np.savez(path, x=np.arange(count, dtype=np.float32)[:, None], y=np.arange(count) % 2)
    return path


def test_validation_split_is_deterministic_by_seed(tmp_path):
    path = indexed_npz(tmp_path / "d.npz")
    first = load_splits(path, input_shape=(1,), seed=3, validation_split=0.25)
    again = load_splits(path, input_shape=(1,), seed=3, validation_split=0.25)
    train, val = xs(first.train)[:, 0], xs(first.validation)[:, 0]
    assert len(val) == 5 and len(train) == 15  # round(0.25 * 20)
    np.testing.assert_array_equal(train, xs(again.train)[:, 0])
    np.testing.assert_array_equal(val, xs(again.validation)[:, 0])
    # disjoint, complete, each part in the original order, labels still aligned
    assert sorted([*train, *val]) == list(range(20))
    assert list(train) == sorted(train) and list(val) == sorted(val)
    np.testing.assert_array_equal(first.train.y, train.astype(int) % 2)
    np.testing.assert_array_equal(first.validation.y, val.astype(int) % 2)
    # the held-out part is the seed's permutation's head
    expected = np.sort(np.random.default_rng(3).permutation(20)[:5])
    np.testing.assert_array_equal(val, expected)


def test_validation_split_changes_with_the_seed(tmp_path):
    path = indexed_npz(tmp_path / "d.npz", 50)
    held = {
        tuple(
            xs(load_splits(path, input_shape=(1,), seed=s, validation_split=0.2).validation)[:, 0]
        )
        for s in range(4)
    }
    assert len(held) > 1


def test_validation_split_zero_means_no_validation(tmp_path):
    path = indexed_npz(tmp_path / "d.npz")
    splits = load_splits(path, input_shape=(1,), validation_split=0)
    assert splits.validation is None
    assert len(splits.train.y) == 20


def test_explicit_validation_wins_over_the_split(image_data):
    splits = data.load(
        Data(train=image_data / "train", validation=image_data / "val", validation_split=0.5),
        INPUT,
        seed=0,
    )
    assert (len(splits.train.y), len(splits.validation.y)) == (60, 30)


def test_validation_only(image_data):
    splits = data.load(Data(validation=image_data / "val"), INPUT, seed=0)
    assert splits.train is None
    assert len(splits.validation.y) == 30


def test_too_few_samples_to_hold_out(tmp_path):
    path = indexed_npz(tmp_path / "d.npz", 1)
    message = data_error(path, input_shape=(1,), validation_split=0.5)
    assert message.startswith(f"{path}: too few samples (1)")


def test_validation_classes_must_match_train(tmp_path):
    train = valued_image_folder(tmp_path / "train", {"a": 1, "b": 1})
    val = valued_image_folder(tmp_path / "val", {"a": 1, "c": 1})
    with pytest.raises(DataError) as info:
        data.load(Data(train=train, validation=val), INPUT, seed=0)
    message = str(info.value)
    assert str(val) in message and "['a', 'c']" in message and "['a', 'b']" in message


# --- npz ---------------------------------------------------------------------------------


def test_npz_reader(npz_data):
    arrays = load_splits(npz_data, validation_split=0).train
    assert xs(arrays).shape == (90, 8, 8, 1)
    assert xs(arrays).dtype == np.float32
    assert arrays.y.dtype == np.int64
    _, labels = synthetic_images(90, 3)
    np.testing.assert_array_equal(arrays.y, labels)
    assert arrays.classes == ()


def test_npz_whole_float_labels_become_class_ids_others_stay_float(tmp_path):
    np.savez(tmp_path / "c.npz", x=np.zeros((3, 2)), y=np.array([0.0, 2.0, 1.0]))
    arrays = load_splits(tmp_path / "c.npz", input_shape=(2,), validation_split=0).train
    assert arrays.y.dtype == np.int64
    np.testing.assert_array_equal(arrays.y, [0, 2, 1])
    np.savez(tmp_path / "r.npz", x=np.zeros((3, 2)), y=np.array([0.5, 2.0, 1.25]))
    arrays = load_splits(tmp_path / "r.npz", input_shape=(2,), validation_split=0).train
    assert arrays.y.dtype == np.float32
    np.testing.assert_array_equal(arrays.y, [0.5, 2.0, 1.25])


@pytest.mark.parametrize(
    ("arrays", "missing", "found"),
    [
        ({"x": np.zeros((2, 2))}, "y", "x"),
        ({"features": np.zeros((2, 2)), "y": np.zeros(2)}, "x", "features, y"),
        ({"a": np.zeros(2), "b": np.zeros(2)}, "x, y", "a, b"),
    ],
)
def test_npz_without_x_or_y(tmp_path, arrays, missing, found):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    message = data_error(path, input_shape=(2,))
    assert message == (
        f"{path}: missing array(s) {missing}; expected arrays named x and y (found: {found})"
    )


def test_npz_length_mismatch(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 2)), y=np.zeros(3))
    assert data_error(path, input_shape=(2,)) == f"{path}: x has 4 samples but y has 3"


def test_npz_that_is_not_an_archive(tmp_path):
    path = tmp_path / "d.npz"
    path.write_bytes(b"this is not a zip archive at all")
    message = data_error(path, input_shape=(2,))
    assert message.startswith(f"{path}: not a readable .npz")


def test_npz_with_object_arrays_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.array([{"a": 1}] * 3, dtype=object), y=np.arange(3))
    assert data_error(path, input_shape=(2,)).startswith(f"{path}: not a readable .npz")


def test_npy_file_named_npz_is_a_data_error(tmp_path):
    path = tmp_path / "d.npz"
    with path.open("wb") as handle:
        np.save(handle, np.zeros((3, 2)))
    assert str(path) in data_error(path, input_shape=(2,))


@pytest.mark.parametrize(
    "arrays",
    [
        {"x": np.zeros((3, 2)), "y": np.array(["cat", "dog", "cat"])},
        {"x": np.array([["a", "b"]] * 3), "y": np.arange(3)},
    ],
)
def test_npz_with_string_arrays_is_a_data_error(tmp_path, arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    assert str(path) in data_error(path, input_shape=(2,))


# --- csv ---------------------------------------------------------------------------------


def test_csv_reader(csv_data):
    arrays = load_splits(csv_data, input_shape=(6,), validation_split=0).train
    assert xs(arrays).shape == (90, 6)
    assert xs(arrays).dtype == np.float32
    np.testing.assert_array_equal(arrays.y, np.arange(90) % 3)
    assert arrays.y.dtype == np.int64


def test_csv_label_column_anywhere_and_named_by_config(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a, target ,b\n1.5,1,-2\n3,0,4e-1\n", encoding="utf-8")
    arrays = load_splits(path, input_shape=(2,), validation_split=0, label_column="target").train
    np.testing.assert_array_equal(xs(arrays), np.array([[1.5, -2.0], [3.0, 0.4]], np.float32))
    np.testing.assert_array_equal(arrays.y, [1, 0])


def test_csv_float_labels_are_regression_targets(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,label\n1,0.5\n2,1.5\n", encoding="utf-8")
    arrays = load_splits(path, input_shape=(1,), validation_split=0).train
    assert arrays.y.dtype == np.float32
    np.testing.assert_array_equal(arrays.y, [0.5, 1.5])


@pytest.mark.parametrize(
    ("text", "features", "expected"),
    [
        ("a,b,class\n1,2,0\n", 2,
         ": no label column 'label' (columns: a, b, class); set data.label_column"),
        ("f0,f1,label\n1,2,0\n3,abc,1\n", 2, ":3: column 'f1' is not a number: 'abc'"),
        ("f0,label\n1,0\n2,1\n3,cat\n", 1, ":4: column 'label' is not a number: 'cat'"),
        ("f0,f1,label\n1,,0\n", 2, ":2: column 'f1' is not a number: ''"),
        ("f0,f1,label\n1,2,0\n1,2\n", 2, ":3: expected 3 cells, got 2"),
        ("f0,label\n", 1, ": expected a header row and at least one data row"),
    ],
    ids=["without-label-column", "non-numeric-cell", "non-numeric-label", "empty-cell",
         "ragged-row", "header-only"],
)  # fmt: skip
def test_csv_error_names_the_file_line_and_column(tmp_path, text, features, expected):
    path = tmp_path / "d.csv"
    path.write_text(text, encoding="utf-8")
    assert data_error(path, input_shape=(features,)) == f"{path}{expected}"


# --- DataError for folders and files -----------------------------------------------------


def test_missing_data(tmp_path):
    path = tmp_path / "nope"
    assert data_error(path) == f"{path}: data not found"


def test_unsupported_file(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("1,2,3")
    message = data_error(path)
    assert message.startswith(f"{path}: unsupported data")
    assert ".npz" in message and ".csv" in message


def test_empty_dir(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    message = data_error(root)
    assert message.startswith(f"{root}: no images found; expected class sub-folders")
    assert "png" in message


def test_class_folders_without_images(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "b" / "readme.txt").write_text("x")
    assert data_error(root).startswith(f"{root}: no images found")


def test_one_class_only(tmp_path):
    root = valued_image_folder(tmp_path / "imgs", {"cats": 3})
    message = data_error(root)
    assert message == f"{root}: only one class (cats); classification needs at least 2"


def test_undecodable_image_names_the_file(tmp_path):
    root = valued_image_folder(tmp_path / "imgs", {"a": 2, "b": 2})
    bad = root / "b" / "1.png"
    bad.write_bytes(np.random.default_rng(0).bytes(200))
    message = data_error(root)
    assert message.startswith(f"{bad}: cannot decode image")


def test_truncated_image_names_the_file(tmp_path):
    root = valued_image_folder(tmp_path / "imgs", {"a": 2, "b": 2})
    bad = root / "a" / "0.png"
    bad.write_bytes(bad.read_bytes()[:40])
    assert data_error(root).startswith(f"{bad}: cannot decode image")


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((8, 8, 1), "(any, 6)"),
        ((4,), "(8, 8, 1)"),
    ],
)
def test_shape_not_matching_the_input(tmp_path, shape, expected):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((3, *shape)), y=np.arange(3))
    input_shape = (None, 6) if expected == "(any, 6)" else INPUT
    message = data_error(path, input_shape=input_shape)
    assert message == f"{path}: samples have shape {shape} but the model expects {expected}"


def test_csv_width_not_matching_the_input(csv_data):
    message = data_error(csv_data, input_shape=(5,))
    assert message == f"{csv_data}: samples have shape (6,) but the model expects (5)"


def test_none_dimension_accepts_any_size(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((3, 7, 6)), y=np.arange(3))
    arrays = load_splits(path, input_shape=(None, 6), validation_split=0).train
    assert xs(arrays).shape == (3, 7, 6)
