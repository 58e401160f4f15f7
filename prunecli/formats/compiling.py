"""Compile arguments: from a file's stored training config, or from ``finetune.loss``.

Keras 3's own reader of an ``.h5`` compile config (``training_config``) fails on files that
are perfectly good: Keras 2 stores a loss object with ``"fn"`` and ``"reduction": "auto"``
(Keras 3 knows neither), metrics as ``MeanMetricWrapper`` lists nested per output, and the
optimizer as ``"Custom>Adam"``; Keras 3.15 even fails on its own ``.h5`` compiled with
``loss="mse", metrics=["mae"]`` ("Could not deserialize 'keras.metrics.mse'"). This module
turns either form into plain ``model.compile`` arguments, e.g.::

    {"loss": {"class_name": "SparseCategoricalCrossentropy",
              "config": {"reduction": "auto", "from_logits": true, "fn": "..."}},
     "metrics": [[{"class_name": "MeanMetricWrapper", "config": {"name": "accuracy"}}]],
     "optimizer_config": {"class_name": "Custom>Adam", "config": {"learning_rate": 0.01}}}
    -> {"optimizer": Adam(learning_rate=0.01),
        "loss": SparseCategoricalCrossentropy(from_logits=True), "metrics": ["accuracy"]}

TensorFlow/Keras are imported inside the functions: config validation never pays for them.
"""

from __future__ import annotations

import inspect
from typing import Any

from prunecli.config import Finetune
from prunecli.errors import ConfigError

# Keras 2 config keys Keras 3 no longer accepts (they carried no information we need).
_LEGACY_LOSS_KEYS = ("fn", "reduction")
_LEGACY_OPTIMIZER_KEYS = {"lr": "learning_rate"}


def from_training_config(training: dict[str, Any]) -> dict[str, Any]:
    """``model.compile`` kwargs from an ``.h5`` file's ``training_config`` (Keras 2 or 3)."""
    args: dict[str, Any] = {"optimizer": _optimizer(training.get("optimizer_config"))}
    if training.get("loss") is not None:
        args["loss"] = _nested(training["loss"], _loss)
    for key in ("metrics", "weighted_metrics"):
        if training.get(key):
            args[key] = _flatten_single(_nested(training[key], _metric))
    if training.get("loss_weights") is not None:
        args["loss_weights"] = training["loss_weights"]
    return args


def from_names(loss: str | None, metrics: list[str]) -> dict[str, Any]:
    """``finetune.loss`` / ``finetune.metrics`` checked against Keras's registries.

    Returns ``{}`` when neither is set. Names stay strings, so the compile config saved with
    the output model is the one the user wrote.
    """
    import keras

    args: dict[str, Any] = {}
    if loss is not None:
        try:
            keras.losses.get(loss)
        except (ValueError, TypeError):
            raise ConfigError(
                f"finetune.loss: unknown Keras loss {loss!r} (e.g. mse, mae, "
                "sparse_categorical_crossentropy, binary_crossentropy)"
            ) from None
        args["loss"] = loss
    for name in metrics:
        if name in ("accuracy", "acc", "crossentropy", "ce"):
            continue  # resolved by Keras from the loss and output shape at compile time
        try:
            keras.metrics.get(name)
        except (ValueError, TypeError):
            raise ConfigError(
                f"finetune.metrics: unknown Keras metric {name!r} (e.g. accuracy, mae, mse)"
            ) from None
    if metrics:
        args["metrics"] = list(metrics)
    return args


def training_args(
    user_compile: dict[str, Any], inferred: dict[str, Any] | None, finetune: Finetune
) -> dict[str, Any]:
    """Loss and metrics to fine-tune and evaluate with: ``finetune.loss``/``metrics`` when
    set, else the model's own (``user_compile``), else ``inferred`` from the data."""
    import keras

    explicit = from_names(finetune.loss, finetune.metrics)
    if user_compile.get("loss"):
        config = keras.saving.deserialize_keras_object(user_compile)
        found = {
            key: config.get(key) for key in ("loss", "loss_weights", "metrics", "weighted_metrics")
        }
    elif inferred is not None:
        found = inferred
    elif finetune.epochs > 0 and "loss" not in explicit:
        raise ConfigError(
            "fine-tuning needs a loss: the model was saved without a compile config; "
            "set finetune.loss (e.g. mse, sparse_categorical_crossentropy)"
        )
    else:
        found = {}
    return found | explicit


def saved_compile(model: Any, compile_args: dict[str, Any]) -> dict[str, Any]:
    """The compile config an input saved without one leaves with: fine-tuning's optimizer
    settings and the task's loss and metrics, never the distillation loss (a closure no
    other program could load). Empty when nothing was fine-tuned."""
    import keras

    if not getattr(model, "compiled", False) or not compile_args.get("loss"):
        return {}
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # no loss scale
    return {
        key: keras.saving.serialize_keras_object(value)
        for key, value in (
            ("optimizer", optimizer),
            ("loss", compile_args["loss"]),
            ("metrics", compile_args.get("metrics")),
        )
    }


def _optimizer(config: dict[str, Any] | None) -> Any:
    """The stored optimizer, its Keras 2-only settings dropped; Adam when none was stored."""
    import keras

    if not config:
        return "adam"
    name = str(config.get("class_name", "adam")).removeprefix("Custom>")
    try:
        cls = type(keras.optimizers.get(name.lower() if "." not in name else name))
    except ValueError:
        return "adam"
    settings = {
        _LEGACY_OPTIMIZER_KEYS.get(key, key): value
        for key, value in (config.get("config") or {}).items()
    }
    accepted = set(inspect.signature(cls.__init__).parameters) | set(
        inspect.signature(keras.optimizers.Optimizer.__init__).parameters
    )
    settings = {key: value for key, value in settings.items() if key in accepted}
    settings.pop("name", None)  # a fresh optimizer; the stored name would clash on reuse
    return cls(**settings)


def _nested(node: Any, leaf: Any) -> Any:
    """Apply ``leaf`` to every entry of a per-output list or dict of losses/metrics."""
    if isinstance(node, list):
        return [_nested(item, leaf) for item in node]
    if isinstance(node, dict) and "class_name" not in node:
        return {key: _nested(value, leaf) for key, value in node.items()}
    return leaf(node)


def _flatten_single(metrics: Any) -> Any:
    """Keras 2 writes a single output's metrics as ``[[m1, m2]]``; Keras 3 wants ``[m1, m2]``."""
    if isinstance(metrics, list) and len(metrics) == 1 and isinstance(metrics[0], list):
        return metrics[0]
    return metrics


def _loss(node: Any) -> Any:
    import keras

    if not isinstance(node, dict):
        return node
    config = {k: v for k, v in (node.get("config") or {}).items() if k not in _LEGACY_LOSS_KEYS}
    return keras.losses.deserialize({**node, "config": config})


def _metric(node: Any) -> Any:
    """A metric by name where one exists (``MeanMetricWrapper`` is how Keras 2 stores one)."""
    import keras

    if not isinstance(node, dict):
        return node
    config = node.get("config") or {}
    if node.get("class_name") == "MeanMetricWrapper":
        return config.get("name") or config.get("fn")
    try:
        return keras.metrics.deserialize(
            {**node, "config": {k: v for k, v in config.items() if k != "fn"}}
        )
    except (ValueError, TypeError):
        return config.get("name") or config.get("fn")


def portable_loss(loss: Any) -> Any:
    """``loss`` with every short alias spelled out, so each file prunecli writes loads back.

    Keras 3.15 writes ``loss="mse"`` into an ``.h5``'s ``training_config`` as is, and its own
    reader then looks the alias up among the metrics and fails ("Could not deserialize
    'keras.metrics.mse'"); the full function name reads in every format. Per-output lists
    and dicts are spelled out entry by entry; objects and unknown names pass unchanged.

    Example: ``portable_loss({"head": "mse", "aux": "mae"})`` ->
    ``{"head": "mean_squared_error", "aux": "mean_absolute_error"}``.
    """
    import keras

    def spelled(node: Any) -> Any:
        if not isinstance(node, str):
            return node
        try:
            name = getattr(keras.losses.get(node), "__name__", node)
        except (ValueError, TypeError):
            return node
        return name if name != node and keras.losses.get(name) is not None else node

    return _nested(loss, spelled)
