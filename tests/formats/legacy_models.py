"""Build Keras 2 model files with tf_keras (and tfmot) for tests/formats/test_model_io.py.

Run as ``TF_USE_LEGACY_KERAS=1 python tests/formats/legacy_models.py OUT DATA.npz``, in its own
process: tfmot needs tf_keras as ``tf.keras``, which is set before TensorFlow is imported.
Writes into OUT: ``k2.h5`` + ``k2_sm/`` (a nested base model with Conv2D, BatchNormalization,
MaxPooling2D, Dropout, Dense), ``k2_rnn.h5`` (Embedding, LSTM, GRU), ``k2_plain.h5`` (no
compile config), ``k2_mixed16.h5`` + ``k2_mixed16_sm/`` (mixed_float16
policies), ``k2_lambda.h5`` + ``k2_lambda_sm/``, ``tfmot.h5`` (pruned to 50% with
PolynomialDecay, wrappers not stripped) and ``reference.json``: each model's predictions on
a few samples, tfmot's strip_pruning layer names and its kernels' zero positions.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np
import tf_keras as k


def nested(x: np.ndarray, y: np.ndarray) -> k.Model:
    base = k.Sequential(
        [
            k.layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1), name="conv"),
            k.layers.BatchNormalization(name="bn"),
            k.layers.MaxPooling2D(1, name="pool"),
            k.layers.Flatten(name="flat"),
        ],
        name="base",
    )
    inputs = k.Input((8, 8, 1))
    hidden = k.layers.Dropout(0.1, name="drop")(base(inputs))
    hidden = k.layers.Dense(16, activation="relu", name="hidden")(hidden)
    outputs = k.layers.Dense(3, activation="softmax", name="out")(hidden)
    model = k.Model(inputs, outputs, name="outer")
    model.compile(
        optimizer=k.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    return model


def rnn() -> k.Model:
    model = k.Sequential(
        [
            k.Input((5,)),
            k.layers.Embedding(20, 4, name="emb"),
            k.layers.LSTM(6, return_sequences=True, name="lstm"),
            k.layers.GRU(5, name="gru"),
            k.layers.Dense(3, name="out"),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def tfmot_pruned(x: np.ndarray, y: np.ndarray) -> tuple[k.Model, k.Model]:
    import tensorflow_model_optimization as tfmot

    sparsity = tfmot.sparsity.keras
    model = k.Sequential(
        [
            k.Input((8, 8, 1)),
            k.layers.Conv2D(4, 3, activation="relu", name="conv"),
            k.layers.Flatten(name="flat"),
            k.layers.Dense(16, activation="relu", name="hidden"),
            k.layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    schedule = sparsity.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=8, frequency=1)
    wrapped = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
    wrapped.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    wrapped.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[sparsity.UpdatePruningStep()])
    return wrapped, sparsity.strip_pruning(wrapped)


def main(out: str, data: str) -> None:
    k.utils.set_random_seed(0)
    arrays = np.load(data)
    x, y = arrays["x"], arrays["y"]
    probe = x[:4]
    reference: dict = {}

    model = nested(x, y)
    model.save(f"{out}/k2.h5")
    model.save(f"{out}/k2_sm")
    reference["k2"] = model.predict(probe, verbose=0).tolist()

    recurrent = rnn()
    recurrent.save(f"{out}/k2_rnn.h5")
    tokens = np.arange(10).reshape(2, 5)
    reference["k2_rnn"] = {"x": tokens.tolist(), "y": recurrent.predict(tokens, verbose=0).tolist()}

    plain = k.Sequential(
        [k.Input((6,)), k.layers.Dense(8, name="d1"), k.layers.Dense(3, name="d2")]
    )
    plain.save(f"{out}/k2_plain.h5")

    lam = k.Sequential([k.Input((6,)), k.layers.Lambda(lambda t: t * 2, name="lam")])
    lam.save(f"{out}/k2_lambda.h5")
    lam.save(f"{out}/k2_lambda_sm")

    k.mixed_precision.set_global_policy("mixed_float16")  # float16 compute, float32 weights
    probs = k.layers.Activation("softmax", dtype="float32", name="probs")
    mixed = k.Sequential([k.Input((6,)), k.layers.Dense(8, activation="relu", name="hidden"),
                          k.layers.Dense(3, name="logits"), probs])  # fmt: skip
    k.mixed_precision.set_global_policy("float32")
    mixed.compile("adam", "sparse_categorical_crossentropy")
    mixed.save(f"{out}/k2_mixed16.h5")
    mixed.save(f"{out}/k2_mixed16_sm")
    reference["k2_mixed16"] = mixed.predict(np.eye(6, dtype="float32"), verbose=0).tolist()

    wrapped, stripped = tfmot_pruned(x, y)
    wrapped.save(f"{out}/tfmot.h5")
    reference["tfmot"] = {
        "layers": [layer.name for layer in stripped.layers],
        "zeros": {
            w.name: np.flatnonzero(w.numpy() == 0).tolist()
            for w in stripped.weights
            if "kernel" in w.name
        },
        "predictions": stripped.predict(probe, verbose=0).tolist(),
    }
    with open(f"{out}/reference.json", "w") as handle:
        json.dump(reference, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
