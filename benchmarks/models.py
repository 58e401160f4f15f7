"""Models the benchmarks share, built the same way in every script."""

from __future__ import annotations

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
