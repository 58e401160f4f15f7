"""evaluate.py: which task the labels and the model's output make, and accuracy by hand."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

from prunecli import data as data_module
from prunecli.errors import DataError
from prunecli.reporting import evaluate
from prunecli.reporting.evaluate import Task


def dense_model(units: int, activation: str | None):
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(units, activation=activation)])


def labels(y, classes=()) -> data_module.Source:
    y = np.asarray(y)
    return data_module.from_arrays(np.zeros((len(y), 4), dtype=np.float32), y, tuple(classes))


SOURCE = Path("data/train")


# --- infer_task --------------------------------------------------------------------------


def test_sparse_task_from_integer_labels_and_softmax():
    task = evaluate.infer_task(dense_model(3, "softmax"), labels([0, 1, 2, 1]), SOURCE)
    assert task == Task("sparse", from_logits=False)


def test_sparse_task_from_logits_when_the_output_is_linear():
    task = evaluate.infer_task(dense_model(3, None), labels([0, 1, 2]), SOURCE)
    assert task == Task("sparse", from_logits=True)


def test_sparse_task_with_class_folders_matching_units():
    y = labels([0, 0, 1, 2], classes=("a", "b", "c"))
    assert evaluate.infer_task(dense_model(3, "softmax"), y, SOURCE).kind == "sparse"


def test_sparse_task_allows_labels_that_miss_some_classes():
    # a small validation set may hold only 2 of 5 classes
    assert evaluate.infer_task(dense_model(5, "softmax"), labels([1, 3, 3]), None).kind == "sparse"


def test_binary_task_from_one_sigmoid_unit():
    task = evaluate.infer_task(dense_model(1, "sigmoid"), labels([0, 1, 1, 0]), SOURCE)
    assert task == Task("binary", from_logits=False)


def test_binary_task_from_one_linear_unit_is_logits():
    task = evaluate.infer_task(dense_model(1, None), labels([1, 0]), SOURCE)
    assert task == Task("binary", from_logits=True)


def test_activation_layer_softmax_is_probabilities():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3), keras.layers.Activation("softmax")]
    )
    assert evaluate.infer_task(model, labels([0, 1, 2]), SOURCE) == Task("sparse", False)


def test_softmax_layer_is_probabilities():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Softmax()])
    assert evaluate.infer_task(model, labels([0, 1, 2]), SOURCE) == Task("sparse", False)


@pytest.mark.parametrize(
    "y",
    [
        np.array([0.5, 1.25, 3.0], dtype=np.float32),
        np.array([[0, 1], [1, 0], [1, 1]]),  # 2-d labels: not class ids
    ],
)
def test_regression_when_labels_are_not_class_ids(y):
    assert evaluate.infer_task(dense_model(2, None), labels(y), SOURCE).kind == "regression"


def test_regression_for_a_single_output_with_many_integer_values():
    y = labels([3, 7, 10, 42])
    assert evaluate.infer_task(dense_model(1, None), y, SOURCE).kind == "regression"


def test_class_count_not_matching_output_units():
    y = labels([0, 1, 0, 1], classes=("cat", "dog"))
    with pytest.raises(DataError) as info:
        evaluate.infer_task(dense_model(3, "softmax"), y, SOURCE)
    assert str(info.value) == (f"{SOURCE}: 2 classes (cat, dog) but the model's output has 3 units")


def test_three_class_folders_for_a_one_unit_model_is_a_mismatch():
    y = labels([0, 1, 2, 0], classes=("a", "b", "c"))
    with pytest.raises(DataError, match="3 classes"):
        evaluate.infer_task(dense_model(1, "sigmoid"), y, SOURCE)


@pytest.mark.parametrize(("y", "low", "high"), [([0, 1, 3], 0, 3), ([-1, 0, 2], -1, 2)])
def test_label_out_of_range(y, low, high):
    with pytest.raises(DataError) as info:
        evaluate.infer_task(dense_model(3, "softmax"), labels(y), SOURCE)
    assert str(info.value) == (
        f"{SOURCE}: labels range {low}..{high} but the model's output has 3 units (class ids 0..2)"
    )


@pytest.mark.parametrize("units", [1, 3])
def test_one_class_only(units):
    with pytest.raises(DataError) as info:
        evaluate.infer_task(dense_model(units, "softmax"), labels([2, 2, 2]), SOURCE)
    assert str(info.value) == (
        f"{SOURCE}: only one class in the labels; classification needs at least 2"
    )


def test_error_without_source_has_no_prefix():
    with pytest.raises(DataError) as info:
        evaluate.infer_task(dense_model(3, "softmax"), labels([1, 1]), None)
    assert str(info.value).startswith("only one class")


def test_compile_args_follow_the_task():
    sparse = Task("sparse", from_logits=True).compile_args()
    assert isinstance(sparse["loss"], keras.losses.SparseCategoricalCrossentropy)
    assert sparse["loss"].get_config()["from_logits"] is True
    assert sparse["metrics"] == ["accuracy"]
    binary = Task("binary").compile_args()
    assert isinstance(binary["loss"], keras.losses.BinaryCrossentropy)
    assert binary["loss"].get_config()["from_logits"] is False
    regression = Task("regression").compile_args()
    assert isinstance(regression["loss"], keras.losses.MeanSquaredError)
    assert regression["metrics"] == []


# --- accuracy ----------------------------------------------------------------------------


def test_sparse_accuracy_by_hand():
    predictions = np.array(
        [
            [0.1, 0.7, 0.2],  # -> 1, label 1: right
            [0.5, 0.3, 0.2],  # -> 0, label 0: right
            [0.2, 0.2, 0.6],  # -> 2, label 1: wrong
            [0.3, 0.4, 0.3],  # -> 1, label 1: right
        ]
    )
    assert evaluate.accuracy(predictions, np.array([1, 0, 1, 1]), Task("sparse")) == 0.75


def test_sparse_accuracy_ties_take_the_first_class():
    predictions = np.array([[0.4, 0.4, 0.2], [0.3, 0.3, 0.3]])
    assert evaluate.accuracy(predictions, np.array([0, 1]), Task("sparse")) == 0.5


def test_binary_accuracy_with_probabilities_threshold_half():
    predictions = np.array([[0.2], [0.6], [0.5], [0.9]])  # 0.5 is not > 0.5: class 0
    y = np.array([0, 1, 1, 0])
    assert evaluate.accuracy(predictions, y, Task("binary")) == 0.5


def test_binary_accuracy_with_logits_threshold_zero():
    predictions = np.array([[-1.0], [0.5], [0.0], [2.0], [0.3]])
    y = np.array([0, 1, 0, 1, 0])
    assert evaluate.accuracy(predictions, y, Task("binary", from_logits=True)) == 0.8


def test_regression_has_no_accuracy():
    assert evaluate.accuracy(np.zeros((3, 1)), np.zeros(3), Task("regression")) is None


def test_evaluate_computes_accuracy_and_mean_loss_from_predictions():
    # zero kernel, bias (0, ln 2, 0): every prediction is softmax = (1/4, 1/2, 1/4)
    model = dense_model(3, "softmax")
    layer = model.layers[-1]
    layer.set_weights([np.zeros((4, 3), np.float32), np.array([0, math.log(2), 0], np.float32)])
    data = data_module.from_arrays(np.ones((4, 4), np.float32), np.array([1, 1, 0, 2]))
    accuracy, loss = evaluate.evaluate(
        model, data, Task("sparse"), keras.losses.SparseCategoricalCrossentropy()
    )
    assert accuracy == 0.5  # argmax is class 1 for all; two labels are 1
    # mean of -ln(1/2), -ln(1/2), -ln(1/4), -ln(1/4) = 1.5 ln 2
    assert loss == pytest.approx(1.5 * math.log(2), rel=1e-5)


def _feature_map_model():
    """A backbone without its classifier top (keras.applications' include_top=False):
    one 2x2x4 feature map per sample, not one row of class scores."""
    inputs = keras.Input((4, 4, 1))
    return keras.Model(inputs, keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs))


def test_class_labels_for_a_feature_map_output_are_refused():
    y = np.array([0, 1, 2, 1])
    source = data_module.from_arrays(np.zeros((4, 4, 4, 1), dtype=np.float32), y, ())
    with pytest.raises(DataError, match=r"one label per sample.*\(None, 2, 2, 4\)"):
        evaluate.infer_task(_feature_map_model(), source, SOURCE)


def test_the_cli_refuses_class_labels_for_a_headless_model_with_one_line(cli, tmp_path):
    """It crashed inside the loss (exit 1): 'Argument output must have rank target.ndim - 1'."""
    from helpers import refused, write_npz

    path = tmp_path / "backbone.keras"
    _feature_map_model().save(path)
    data = write_npz(tmp_path / "d.npz", np.ones((8, 4, 4, 1), np.float32), np.arange(8) % 3)
    result = cli("prune", path, "--data", data, "-o", tmp_path / "p.keras", "--quiet")
    refused(result, "one label per sample", "include_top")
