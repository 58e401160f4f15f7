"""pruning/pruner.py on real (tiny) Keras models: updates, schedules, masks through training.

The central claim checked here: after every optimizer step every masked weight is exactly
0.0, whatever momentum the optimizer carries, and after ``detach`` the model holds nothing
of prunecli.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from helpers import (
    CLASSES,
    NESTED_KERNELS,
    build_cnn,
    build_nested,
    kernels_of,
    make_pruner,
    mask_checker,
    scaled_images,
    seeded,
)

from prunecli.config import Prune
from prunecli.core import schedules

# the pruner's kernel keys: "<layer path>/kernel"
KERNELS = {f"{path}/kernel": size for path, size in NESTED_KERNELS.items()}


# --- Pruner.update -----------------------------------------------------------------------


def test_update_layer_scope_exact_counts_and_lowest_magnitudes():
    model = seeded(build_nested)
    prune = Prune(sparsity=0.5, layers={"overrides": {"out": 0.25}})
    pruner = make_pruner(model, prune)
    assert sorted(pruner.kernels) == sorted(KERNELS)
    before = kernels_of(pruner)
    returned = pruner.update(0)
    after = kernels_of(pruner)
    expected_zeros = {"base/conv/kernel": 18, "hidden/kernel": 1152, "out/kernel": 12}
    for key, zeros in expected_zeros.items():
        mask = np.array(pruner.masks[key])
        assert int(np.sum(after[key] == 0)) == zeros, key
        assert int(np.sum(mask == 0)) == zeros, key
        np.testing.assert_array_equal(after[key][mask == 0], 0.0)
        # kept weights are untouched, and they are the largest magnitudes
        np.testing.assert_array_equal(after[key][mask == 1], before[key][mask == 1])
        assert np.abs(before[key][mask == 0]).max() <= np.abs(before[key][mask == 1]).min()
    assert returned == pytest.approx((18 + 1152 + 12) / (36 + 2304 + 48))
    assert pruner.sparsity() == returned


def test_update_does_not_touch_unselected_layers():
    model = seeded(build_nested)
    pruner = make_pruner(model, Prune(sparsity=0.8, layers={"exclude": ["out"]}))
    out = model.get_layer("out")
    bn = model.get_layer("base").get_layer("bn")
    out_before, bn_before = out.get_weights(), bn.get_weights()
    pruner.update(0)
    assert "out/kernel" not in pruner.kernels
    for old, new in zip(out_before + bn_before, out.get_weights() + bn.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    # biases of pruned layers stay dense
    assert np.count_nonzero(model.get_layer("hidden").bias.numpy() == 0) == 16  # zero init


def test_update_global_scope_one_threshold_with_floor():
    model = seeded(build_nested)
    prune = Prune(sparsity=0.9, scope="global", min_layer_density=0.02)
    pruner = make_pruner(model, prune)
    before = kernels_of(pruner)
    pruner.update(0)
    total = sum(KERNELS.values())  # 2388
    zeros = {key: int(np.sum(np.array(v) == 0)) for key, v in pruner.kernels.items()}
    assert sum(zeros.values()) == round(0.9 * total)  # 2149: the floors (1 + 47 + 1) fit
    kept_min, pruned_max = math.inf, 0.0
    for key, n in KERNELS.items():
        mask = np.array(pruner.masks[key])
        assert n - zeros[key] >= math.ceil(0.02 * n), key
        if mask.sum() > math.ceil(0.02 * n):  # above its floor: kept by the global threshold
            kept_min = min(kept_min, np.abs(before[key][mask == 1]).min())
        pruned_max = max(pruned_max, np.abs(before[key][mask == 0]).max())
    assert pruned_max <= kept_min


def test_update_global_099_leaves_every_layer_its_floor():
    model = seeded(build_nested)
    pruner = make_pruner(model, Prune(sparsity=0.99, scope="global", min_layer_density=0.05))
    pruner.update(0)
    for key, n in KERNELS.items():
        nonzero = int(np.count_nonzero(np.array(pruner.kernels[key])))
        assert nonzero >= math.ceil(0.05 * n), key
        assert nonzero / n >= 0.05


def test_update_twice_is_stable():
    model = seeded(build_cnn)
    pruner = make_pruner(model, Prune(sparsity=0.6))
    pruner.update(0)
    first = {key: np.array(m) for key, m in pruner.masks.items()}
    pruner.update(0)
    for key, mask in pruner.masks.items():
        np.testing.assert_array_equal(np.array(mask), first[key])


def test_masks_are_arrays_until_attach_then_the_same_values_as_variables():
    # one-shot without fine-tuning never makes a mask variable; attach makes them, in
    # kernel order (checkpoints store them in that order), holding the masks computed so far
    model = seeded(build_cnn)
    pruner = make_pruner(model, Prune(sparsity=0.6))
    sparsity = pruner.finish()
    assert all(isinstance(m, np.ndarray) for m in pruner.masks.values())
    computed = {key: m.copy() for key, m in pruner.masks.items()}
    zeros = sum(int(np.sum(np.array(v) == 0)) for v in pruner.kernels.values())
    assert sparsity == pytest.approx(zeros / sum(m.size for m in computed.values()))
    pruner.attach()
    try:
        assert list(pruner.masks) == list(pruner.kernels)
        for key, mask in pruner.masks.items():
            assert isinstance(mask, keras.Variable) and not mask.trainable
            np.testing.assert_array_equal(np.array(mask), computed[key])
        variable = pruner.masks[next(iter(pruner.masks))]
        pruner.update(1)  # targets unchanged: nothing recomputed, the variable kept
        assert pruner.masks[next(iter(pruner.masks))] is variable
    finally:
        pruner.detach()


def test_attach_before_any_update_masks_nothing():
    model = seeded(build_cnn)
    pruner = make_pruner(model, Prune(sparsity=0.6))
    before = kernels_of(pruner)
    pruner.attach()
    pruner.detach()
    assert all(np.array(m).min() == 1.0 for m in pruner.masks.values())
    for key, values in kernels_of(pruner).items():
        np.testing.assert_array_equal(values, before[key])


def test_polynomial_masks_grow_with_the_schedule():
    model = seeded(build_cnn)
    pruner = make_pruner(
        model,
        Prune(sparsity=0.8),
        lambda final: schedules.Polynomial(0.0, final, begin=0, end=10, power=3, frequency=5),
    )
    assert pruner.update(0) == 0.0
    # step 5: 0.8 - 0.8 * 0.5**3 = 0.7 of each kernel
    pruner.update(5)
    for key, variable in pruner.kernels.items():
        n = int(np.prod(variable.shape))
        assert int(np.sum(np.array(variable) == 0)) == round(0.7 * n), key
    pruner.finish()
    for key, variable in pruner.kernels.items():
        n = int(np.prod(variable.shape))
        assert int(np.sum(np.array(variable) == 0)) == round(0.8 * n), key


def test_constant_schedule_prunes_at_begin_only():
    model = seeded(build_cnn)
    pruner = make_pruner(model, Prune(sparsity=0.5), lambda final: schedules.Constant(final, 4))
    assert [t for t in range(10) if pruner.updates_at(t)] == [4]
    assert pruner.update(3) == 0.0  # before begin: every mask is all ones
    assert all(np.array(m).min() == 1.0 for m in pruner.masks.values())
    assert pruner.update(4) == pytest.approx(round(0.5 * 36 + 0.5 * 2304 + 0.5 * 48) / 2388)


# --- masks hold through fine-tuning ------------------------------------------------------


def fit_with_masks(optimizer, attach: bool, prune: Prune | None = None, epochs: int = 2):
    """One-shot prune a tiny CNN, then model.fit with a MaskChecker after every batch."""
    model = seeded(build_cnn)
    prune = prune or Prune(sparsity=0.8)
    pruner = make_pruner(model, prune)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    pruner.update(0)
    pruned = kernels_of(pruner)
    checker = mask_checker(pruner)
    x, y = scaled_images()
    if attach:
        pruner.attach()
    try:
        model.fit(x, y, batch_size=8, epochs=epochs, callbacks=[checker], shuffle=False, verbose=0)
    finally:
        if attach:
            pruner.detach()
    return model, pruner, checker, pruned


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.Adam(0.05),
        lambda: keras.optimizers.SGD(0.5, momentum=0.9),
    ],
    ids=["adam", "sgd-momentum"],
)
def test_masked_weights_stay_exactly_zero_after_every_step(optimizer):
    _, pruner, checker, pruned = fit_with_masks(optimizer(), attach=True)
    assert checker.batches == 2 * math.ceil(48 / 8)
    assert checker.violations == []
    for key, variable in pruner.kernels.items():
        weights = np.array(variable)
        mask = np.array(pruner.masks[key])
        assert int(np.sum(weights == 0)) == round(0.8 * mask.size), key
        # not vacuous: the kept weights did train
        assert not np.array_equal(weights[mask == 1], pruned[key][mask == 1]), key


def test_without_the_constraint_momentum_revives_masked_weights():
    """Control: the checker does catch revived weights, so the test above can fail."""
    _, _, checker, _ = fit_with_masks(keras.optimizers.Adam(0.05), attach=False, epochs=1)
    assert checker.violations
    assert checker.violations[0][0] == 1  # from the very first step


def test_excluded_layer_has_no_mask_and_trains():
    model, pruner, checker, _ = fit_with_masks(
        keras.optimizers.SGD(0.5, momentum=0.9),
        attach=True,
        prune=Prune(sparsity=0.8, layers={"exclude": ["out"]}),
        epochs=1,
    )
    assert checker.violations == []
    assert "out/kernel" not in pruner.kernels
    out = model.get_layer("out").kernel
    assert out.constraint is None
    assert int(np.count_nonzero(np.array(out))) == CLASSES * 16
    fresh = seeded(build_cnn).get_layer("out").kernel
    assert not np.array_equal(np.array(out), np.array(fresh))  # it trained


def test_detach_leaves_no_constraint_and_the_model_saves_plain(tmp_path):
    model, pruner, _, _ = fit_with_masks(keras.optimizers.Adam(0.01), attach=True, epochs=1)
    for layer in ("conv", "hidden", "out"):
        assert model.get_layer(layer).kernel.constraint is None
    # detach forgot what it gave back: a second one leaves a constraint set since alone
    later = keras.constraints.NonNeg()
    model.get_layer("out").kernel.constraint = later
    pruner.detach()
    assert model.get_layer("out").kernel.constraint is later
    model.get_layer("out").kernel.constraint = None
    path = tmp_path / "plain.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    for layer in ("conv", "hidden", "out"):
        original = np.array(model.get_layer(layer).kernel)
        np.testing.assert_array_equal(np.array(reloaded.get_layer(layer).kernel), original)
        assert reloaded.get_layer(layer).kernel_constraint is None


def test_user_constraint_is_kept_applied_and_restored():
    keras.utils.set_random_seed(0)
    max_norm = keras.constraints.MaxNorm(0.5, axis=0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, kernel_constraint=max_norm, name="hidden"),
            keras.layers.Dense(CLASSES, activation="softmax", name="out"),
        ]
    )
    kernel = model.get_layer("hidden").kernel
    assert kernel.constraint is max_norm
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = np.arange(64) % CLASSES
    prune = Prune(sparsity=0.5)
    pruner = make_pruner(model, prune)
    pruner.update(0)
    # the initial kernel breaks the norm cap: only the optimizer step's constraint fixes it
    assert np.linalg.norm(np.array(kernel), axis=0).max() > 0.5

    norms: list[np.ndarray] = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: norms.append(
            np.linalg.norm(np.array(kernel), axis=0)
        )
    )
    checker = mask_checker(pruner)
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="sparse_categorical_crossentropy")
    pruner.attach()
    assert kernel.constraint is not max_norm  # wrapped while fine-tuning
    try:
        model.fit(x, y, batch_size=8, epochs=2, callbacks=[checker, record], verbose=0)
    finally:
        pruner.detach()
    assert checker.violations == []
    assert len(norms) == 16
    assert max(n.max() for n in norms) <= 0.5 + 1e-5  # MaxNorm applied after every step
    assert norms[-1].max() > 0.45  # and it was binding, not trivially met
    assert kernel.constraint is max_norm  # the very same object back
    assert model.get_layer("out").kernel.constraint is None
    assert int(np.sum(np.array(kernel) == 0)) == 24
