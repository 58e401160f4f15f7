"""Models the benchmarks share, built the same way in every script."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def cnn_1m() -> Any:
    """A ~1M-parameter (980,106) CNN for 32x32x3 inputs and 10 classes, seeded."""
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(128, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(192, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ],
        name="cnn_1m",
    )


def residual_cnn() -> Any:
    """The ResNet-style sample model (124,906 parameters, 28x28x1 digits, 10 classes): a
    stride-2 stem, two residual blocks joined by ``Add``, a Dense head on the flattened
    7x7x32 features. Untrained; ``methods.py`` and ``structured.py`` train it."""
    import keras

    layers = keras.layers
    inputs = keras.Input((28, 28, 1))
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="stem")(inputs)
    y = layers.Conv2D(16, 3, padding="same", activation="relu", name="block1_conv1")(x)
    y = layers.Conv2D(16, 3, padding="same", name="block1_conv2")(y)
    x = layers.ReLU(name="block1_out")(layers.Add(name="block1_add")([x, y]))
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Conv2D(32, 1, name="block2_proj")(x)
    y = layers.Conv2D(32, 3, padding="same", activation="relu", name="block2_conv1")(x)
    y = layers.Conv2D(32, 3, padding="same", name="block2_conv2")(y)
    x = layers.ReLU(name="block2_out")(layers.Add(name="block2_add")([x, y]))
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="dense")(x)
    outputs = layers.Dense(10, activation="softmax", name="logits")(x)
    return keras.Model(inputs, outputs, name="residual_cnn")


def train_residual_cnn(path: Path, train: Path, epochs: int = 20) -> Path:
    """``residual_cnn`` trained with fixed seeds on the digits training images ``train``
    exactly as prunecli reads them (pixels / 255; Adam, cosine decay from 2e-3, batch 32),
    saved to ``path``."""
    import keras

    keras.utils.set_random_seed(0)
    return train_on_digits(residual_cnn(), path, train, epochs)


def train_on_digits(model: Any, path: Path, train: Path, epochs: int) -> Path:
    """``model`` trained on the digits images ``train`` as prunecli reads them at the
    model's input shape (pixels / 255; Adam, cosine decay from 2e-3, batch 32), saved to
    ``path``: one recipe for every benchmark's trained baseline."""
    import keras

    from prunecli import config, data

    shape = tuple(model.inputs[0].shape[1:])
    splits = data.load(config.Data(train=train, validation_split=0), shape, seed=0)
    steps = epochs * -(-len(splits.train.y) // 32)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    x, y = data.materialize(splits.train)  # the digits set is small: train from arrays
    model.fit(x, y, batch_size=32, epochs=epochs, shuffle=True, verbose=0)
    model.save(path)
    print(
        f"trained {model.name} at {shape} ({model.count_params():,} parameters, {epochs} "
        f"epochs) in {time.perf_counter() - start:.1f}s",
        flush=True,
    )
    return path


def channel_pruned(model: Any, sparsity: float, round_to: int = 8) -> Any:
    """``model`` with ``sparsity`` of each group's channels removed (``method: l2``,
    ``scope: layer``), rebuilt narrow by prunecli's own graph, plan and rebuild."""
    from prunecli import config
    from prunecli.structured import graph, groups, rebuild

    plan = groups.plan(graph.build(model), config.Prune(sparsity=sparsity), round_to=round_to)
    return rebuild.rebuild(model, plan)


def tflite_runner(model: Any, path: Path, threads: int) -> Any:
    """``model`` converted dense (float32) to LiteRT by prunecli's exporter, written to
    ``path``: a call running one batch-1 random sample through the XNNPack delegate."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from prunecli.config import TFLite
    from prunecli.formats import exporting, model_io

    keras_input = model_io.INPUT_FORMATS["keras"]  # a model in memory: exported as .keras
    flat, _ = exporting.convert_tflite(model, keras_input, TFLite(sparse=False), None, path)
    interpreter = Interpreter(model_content=flat, num_threads=threads)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    sample = np.random.default_rng(0).random(source["shape"]).astype(np.float32)

    def run() -> None:
        interpreter.set_tensor(source["index"], sample)
        interpreter.invoke()

    return run
