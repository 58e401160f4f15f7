"""``finetune.gradient_source`` (taylor's |dL/dw|), now one compiled call per batch: the
same sums as an eager GradientTape over the same batches, recomputed here."""

from __future__ import annotations

import numpy as np
from helpers import build_dense

from prunecli.data.source import from_arrays
from prunecli.training import finetune


def test_compiled_gradients_equal_eager_ones():
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = build_dense()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    y = np.arange(50) % 3
    source = from_arrays(x, y)
    kernels = {layer.name: layer.kernel for layer in model.layers}
    gradients = finetune.gradient_source(
        model, source, "sparse_categorical_crossentropy", batches=3, batch_size=16, seed=4
    )
    found = gradients(kernels)  # 16 + 16 + 16 samples: the full batches of a seeded shuffle

    loss = keras.losses.SparseCategoricalCrossentropy()
    expected = {name: np.zeros(k.shape, np.float32) for name, k in kernels.items()}
    for bx, by in source.dataset(16, seed=4, cache=False).take(3):
        with tf.GradientTape() as tape:
            value = keras.ops.mean(loss(by, model(bx, training=False)))
        grads = tape.gradient(value, list(kernels.values()))
        for name, grad in zip(kernels, grads, strict=True):
            expected[name] += np.abs(grad.numpy())
    for name in kernels:
        np.testing.assert_allclose(found[name], expected[name], rtol=1e-5, atol=1e-7)
        assert np.count_nonzero(found[name]) > 0
    again = gradients(kernels)  # a later mask update scores the same batches
    for name in kernels:
        np.testing.assert_array_equal(again[name], found[name])
