"""formats/compiling.py: ``model.compile`` arguments from hand-written Keras 2 and Keras 3
training configs (the ``training_config`` an ``.h5`` stores), from ``finetune.loss`` /
``finetune.metrics``, and the compile config an output leaves with."""

from __future__ import annotations

import keras
import pytest
from helpers import build_dense

from prunecli.config import Finetune
from prunecli.errors import ConfigError
from prunecli.formats import compiling

# What tf.keras 2.x writes for compile(Adam(0.01), SparseCategoricalCrossentropy(from_logits=
# True), metrics=["accuracy"]): a loss object with "fn" and "reduction": "auto", metrics
# nested per output as MeanMetricWrapper, the optimizer as "Custom>Adam" with Keras 2 keys.
KERAS2 = {
    "loss": {
        "class_name": "SparseCategoricalCrossentropy",
        "config": {"reduction": "auto", "name": "sparse_categorical_crossentropy",
                   "from_logits": True, "ignore_class": None,
                   "fn": "sparse_categorical_crossentropy"},
    },
    "metrics": [[{"class_name": "MeanMetricWrapper",
                  "config": {"name": "accuracy", "dtype": "float32",
                             "fn": "sparse_categorical_accuracy"}}]],
    "weighted_metrics": None,
    "loss_weights": None,
    "optimizer_config": {
        "class_name": "Custom>Adam",
        "config": {"name": "Adam", "learning_rate": 0.01, "decay": 0.0, "beta_1": 0.8,
                   "jit_compile": False, "is_legacy_optimizer": False},
    },
}  # fmt: skip

# What Keras 3 writes for compile(SGD(0.1, momentum=0.9), loss="mse", metrics=["mae"]).
KERAS3 = {
    "loss": "mse",
    "metrics": ["mae"],
    "loss_weights": None,
    "weighted_metrics": None,
    "optimizer_config": {
        "module": "keras.optimizers", "class_name": "SGD", "registered_name": None,
        "config": {"name": "SGD", "learning_rate": 0.1, "momentum": 0.9, "nesterov": False},
    },
}  # fmt: skip


def test_keras2_training_config_becomes_plain_compile_arguments():
    args = compiling.from_training_config(KERAS2)
    assert sorted(args) == ["loss", "metrics", "optimizer"]  # None entries are left out
    assert type(args["optimizer"]) is keras.optimizers.Adam
    assert float(args["optimizer"].learning_rate) == pytest.approx(0.01)
    assert args["optimizer"].beta_1 == 0.8
    assert isinstance(args["loss"], keras.losses.SparseCategoricalCrossentropy)
    assert args["loss"].get_config()["from_logits"] is True
    assert args["metrics"] == ["accuracy"]  # [[wrapper]] -> one output's list of names
    model = build_dense()
    model.compile(**args)  # Keras 3 takes them as they are
    assert model.get_compile_config()["metrics"] == ["accuracy"]


def test_keras3_training_config_keeps_names_and_optimizer_settings():
    args = compiling.from_training_config(KERAS3)
    assert (args["loss"], args["metrics"]) == ("mse", ["mae"])
    assert type(args["optimizer"]) is keras.optimizers.SGD
    assert args["optimizer"].momentum == 0.9


def test_keras2_lr_is_learning_rate_and_unknown_optimizers_fall_back_to_adam():
    old = {"optimizer_config": {"class_name": "RMSprop", "config": {"lr": 0.05, "rho": 0.8}}}
    optimizer = compiling.from_training_config(old)["optimizer"]
    assert type(optimizer) is keras.optimizers.RMSprop
    assert float(optimizer.learning_rate) == pytest.approx(0.05) and optimizer.rho == 0.8
    assert compiling.from_training_config({})["optimizer"] == "adam"
    unknown = {"optimizer_config": {"class_name": "Custom>NotAnOptimizer", "config": {}}}
    assert compiling.from_training_config(unknown)["optimizer"] == "adam"


def test_per_output_losses_metrics_and_weights_keep_their_shape():
    training = {
        "loss": {"a": "mse", "b": {"class_name": "MeanAbsoluteError",
                                   "config": {"reduction": "auto", "name": "mae"}}},
        "metrics": {"a": [{"class_name": "MeanMetricWrapper", "config": {"name": "mae"}}]},
        "loss_weights": {"a": 1.0, "b": 0.5},
    }  # fmt: skip
    args = compiling.from_training_config(training)
    assert args["loss"]["a"] == "mse"
    assert isinstance(args["loss"]["b"], keras.losses.MeanAbsoluteError)
    assert args["metrics"] == {"a": ["mae"]}
    assert args["loss_weights"] == {"a": 1.0, "b": 0.5}


def test_from_names_checks_names_against_keras_and_keeps_them_strings():
    assert compiling.from_names(None, []) == {}
    assert compiling.from_names("mse", ["mae", "accuracy"]) == {
        "loss": "mse",
        "metrics": ["mae", "accuracy"],
    }
    with pytest.raises(ConfigError, match=r"finetune\.loss: unknown Keras loss 'msee'"):
        compiling.from_names("msee", [])
    with pytest.raises(ConfigError, match=r"finetune\.metrics: unknown Keras metric 'nope'"):
        compiling.from_names(None, ["nope"])


def test_training_args_finetune_names_win_over_the_models_then_inferred():
    model = build_dense()
    model.compile(keras.optimizers.SGD(0.1), loss="mse", metrics=["mae"])
    own = model.get_compile_config()
    assert compiling.training_args(own, None, Finetune()) == {
        "loss": "mse", "loss_weights": None, "metrics": ["mae"], "weighted_metrics": None,
    }  # fmt: skip
    overridden = compiling.training_args(own, None, Finetune(loss="mae", metrics=["mse"]))
    assert (overridden["loss"], overridden["metrics"]) == ("mae", ["mse"])
    inferred = {"loss": "binary_crossentropy", "metrics": ["accuracy"]}
    assert compiling.training_args({}, inferred, Finetune()) == inferred  # no own loss


def test_training_args_without_any_loss():
    with pytest.raises(ConfigError, match=r"fine-tuning needs a loss: .* set finetune\.loss"):
        compiling.training_args({}, None, Finetune(epochs=1))
    assert compiling.training_args({}, None, Finetune(epochs=0)) == {}  # nothing to train
    assert compiling.training_args({}, None, Finetune(loss="mse")) == {"loss": "mse"}


def test_saved_compile_is_the_fine_tuning_optimizer_and_task_loss():
    model = build_dense()
    assert compiling.saved_compile(model, {"loss": "mse"}) == {}  # never compiled
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss=lambda y, p: p)  # distillation
    saved = compiling.saved_compile(model, {"loss": "mse", "metrics": ["mae"]})
    assert list(saved) == ["optimizer", "loss", "metrics"]
    assert (saved["loss"], saved["metrics"]) == ("mse", ["mae"])
    assert saved["optimizer"]["class_name"] == "SGD"
    assert saved["optimizer"]["config"]["momentum"] == 0.9
    assert compiling.saved_compile(model, {}) == {}  # no task loss: nothing to save
    restored = build_dense()
    restored.compile(**keras.saving.deserialize_keras_object(saved))  # loadable elsewhere
