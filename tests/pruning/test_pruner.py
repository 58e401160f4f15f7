"""selection.py and pruner.py on real (tiny) Keras models, fine-tuning included.

The central claim checked here: after every optimizer step every masked weight is exactly
0.0, whatever momentum the optimizer carries, and after ``detach`` the model holds nothing
of prunecli.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from conftest import CLASSES, build_cnn, build_nested, synthetic_images

from prunecli import data
from prunecli.config import Finetune, Prune
from prunecli.core import masking, schedules
from prunecli.core.schedules import OneShot
from prunecli.errors import ConfigError
from prunecli.progress import Reporter
from prunecli.pruning import selection
from prunecli.pruning.pruner import Pruner
from prunecli.training import finetune

# nested model: base/conv 3*3*1*4 = 36, hidden (6*6*4)*16 = 2304, out 16*3 = 48 kernel weights
NESTED_KERNELS = {"base/conv/kernel": 36, "hidden/kernel": 2304, "out/kernel": 48}


def images(count: int = 48, seed: int = 5):
    x, y = synthetic_images(count, seed)
    return (x / 255.0).astype(np.float32)[..., None], y


def seeded(builder):
    keras.utils.set_random_seed(0)
    return builder()


def kernels_of(pruner: Pruner) -> dict[str, np.ndarray]:
    return {key: np.array(variable) for key, variable in pruner.kernels.items()}


class MaskChecker(keras.callbacks.Callback):
    """After every train batch: every weight whose mask is 0 must be exactly 0.0."""

    def __init__(self, pruner: Pruner) -> None:
        super().__init__()
        self.pruner = pruner
        self.batches = 0
        self.violations: list[tuple[int, str, int]] = []
        self.masked_counts: list[dict[str, int]] = []

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        counts = {}
        for key, variable in self.pruner.kernels.items():
            weights = np.array(variable)
            masked = np.array(self.pruner.masks[key]) == 0
            alive = int(np.count_nonzero(weights[masked]))
            if alive:
                self.violations.append((self.batches, key, alive))
            counts[key] = int(masked.sum())
        self.masked_counts.append(counts)


# --- describe / select -------------------------------------------------------------------


def test_describe_walks_into_nested_models():
    infos = selection.describe(seeded(build_nested))
    rows = [(i.path, i.type, i.params, sorted(i.kernels), i.reason) for i in infos]
    assert rows == [
        ("base/conv", "Conv2D", 40, ["kernel"], None),
        (
            "base/bn",
            "BatchNormalization",
            16,
            [],
            "BatchNormalization has nothing to prune (normalisation and scaling are kept)",
        ),
        ("hidden", "Dense", 2320, ["kernel"], None),
        ("out", "Dense", 51, ["kernel"], None),
    ]
    assert all(info.target is None and not info.selected for info in infos)


def test_describe_lists_unsupported_layers_with_a_reason():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,), dtype="int32"),
            keras.layers.Embedding(10, 3, name="embed"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(2, name="out"),
            keras.layers.Reshape((2, 1, 1), name="shape"),
            keras.layers.ConvLSTM1D(2, 1, name="convlstm"),
        ]
    )
    infos = {i.path: i for i in selection.describe(model)}
    assert list(infos) == ["embed", "out", "convlstm"]  # weightless layers are not listed
    assert infos["convlstm"].reason == "ConvLSTM1D is not supported for pruning yet"
    assert infos["convlstm"].kernels == {}
    assert list(infos["embed"].kernels) == ["embeddings"]
    assert infos["embed"].params == 30


def test_describe_separable_conv_has_two_kernels():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            keras.layers.SeparableConv2D(4, 3, name="sep"),
            keras.layers.DepthwiseConv2D(3, name="dw"),
        ]
    )
    infos = {i.path: i for i in selection.describe(model)}
    assert sorted(infos["sep"].kernels) == ["depthwise_kernel", "pointwise_kernel"]
    assert tuple(infos["sep"].kernels["depthwise_kernel"].shape) == (3, 3, 2, 1)
    assert tuple(infos["sep"].kernels["pointwise_kernel"].shape) == (1, 1, 2, 4)
    assert list(infos["dw"].kernels) == ["kernel"]


def test_select_default_takes_every_prunable_kernel():
    infos = {i.path: i for i in selection.select(seeded(build_nested), Prune(sparsity=0.7))}
    assert {p: i.target for p, i in infos.items()} == {
        "base/conv": 0.7,
        "base/bn": None,
        "hidden": 0.7,
        "out": 0.7,
    }
    assert infos["base/bn"].reason.startswith("BatchNormalization has nothing to prune")


def test_select_include_fullmatches_paths():
    prune = Prune(sparsity=0.6, layers={"include": ["base/.*"]})
    infos = {i.path: i for i in selection.select(seeded(build_nested), prune)}
    assert infos["base/conv"].target == 0.6
    assert infos["hidden"].target is None
    assert infos["hidden"].reason == "not matched by prune.layers.include"
    assert infos["out"].reason == "not matched by prune.layers.include"


def test_select_exclude_names_the_pattern():
    prune = Prune(layers={"exclude": ["o.t"]})
    infos = {i.path: i for i in selection.select(seeded(build_nested), prune)}
    assert infos["out"].target is None
    assert infos["out"].reason == "excluded by prune.layers.exclude 'o.t'"
    assert infos["hidden"].selected and infos["base/conv"].selected


def test_exclude_wins_over_include():
    prune = Prune(layers={"include": ["hidden", "out"], "exclude": ["out"]})
    infos = {i.path: i for i in selection.select(seeded(build_nested), prune)}
    assert [p for p, i in infos.items() if i.selected] == ["hidden"]
    assert infos["out"].reason.startswith("excluded by prune.layers.exclude")


def test_overrides_set_per_layer_targets_first_match_wins():
    prune = Prune(
        sparsity=0.5,
        layers={"overrides": {"base/.*": 0.2, "h.*": 0.3, "hidden": 0.9}},
    )
    infos = {i.path: i for i in selection.select(seeded(build_nested), prune)}
    assert infos["base/conv"].target == 0.2
    assert infos["hidden"].target == 0.3  # "h.*" comes first
    assert infos["out"].target == 0.5


def test_override_does_not_select_an_excluded_layer():
    prune = Prune(layers={"exclude": ["out"], "overrides": {"out": 0.9}})
    infos = {i.path: i for i in selection.select(seeded(build_nested), prune)}
    assert infos["out"].target is None


@pytest.mark.parametrize(
    "layers",
    [
        {"include": ["conv"]},  # fullmatch: "conv" is not "base/conv"
        {"exclude": [".*"]},
        {"include": ["base/bn"]},  # selected, but nothing in it to prune
    ],
)
def test_nothing_selected_is_a_config_error_listing_prunable_layers(layers):
    with pytest.raises(ConfigError) as info:
        selection.select(seeded(build_nested), Prune(layers=layers))
    assert str(info.value) == (
        "no layer selected by prune.layers include/exclude; "
        "prunable layers are: base/conv, hidden, out"
    )


def test_kernel_sparsity_measures_the_weights():
    model = seeded(build_cnn)
    info = {i.path: i for i in selection.describe(model)}["out"]
    kernel = np.array(info.kernels["kernel"])
    kernel[:4] = 0.0  # 4 rows of 3 = 12 of 48
    info.kernels["kernel"].assign(kernel)
    assert info.kernel_sparsity() == 12 / 48
    bn = {i.path: i for i in selection.describe(seeded(build_nested))}["base/bn"]
    assert bn.kernel_sparsity() is None


# --- Pruner.update -----------------------------------------------------------------------


def make_pruner(model, prune: Prune, schedule=OneShot) -> Pruner:
    return Pruner(selection.select(model, prune), prune, schedule)


def test_update_layer_scope_exact_counts_and_lowest_magnitudes():
    model = seeded(build_nested)
    prune = Prune(sparsity=0.5, layers={"overrides": {"out": 0.25}})
    pruner = make_pruner(model, prune)
    assert sorted(pruner.kernels) == sorted(NESTED_KERNELS)
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
    total = sum(NESTED_KERNELS.values())  # 2388
    zeros = {key: int(np.sum(np.array(v) == 0)) for key, v in pruner.kernels.items()}
    assert sum(zeros.values()) == round(0.9 * total)  # 2149: the floors (1 + 47 + 1) fit
    kept_min, pruned_max = math.inf, 0.0
    for key, n in NESTED_KERNELS.items():
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
    for key, n in NESTED_KERNELS.items():
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
    checker = MaskChecker(pruner)
    x, y = images()
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
    assert pruner._inner == {}
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
    checker = MaskChecker(pruner)
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


# --- finetune.run: the product's own loop --------------------------------------------------


def test_finetune_run_holds_masks_while_a_polynomial_schedule_raises_them():
    model = seeded(build_cnn)
    prune = Prune(sparsity=0.75)
    x, y = images(48)
    spe = finetune.steps_per_epoch(len(x), 8)  # 6
    assert spe == 6
    schedule_for = lambda final: schedules.build(  # noqa: E731
        "polynomial",
        final,
        schedules.Plan(spe, 2 * spe, start_epoch=0.5, end_epoch=1.5, power=3, frequency=2),
    )
    pruner = Pruner(selection.select(model, prune), prune, schedule_for)
    checker = MaskChecker(pruner)  # runs after finetune's own schedule hook
    settings = Finetune(epochs=2, batch_size=8, learning_rate=0.05, optimizer="sgd", momentum=0.9)
    result = finetune.run(
        model,
        pruner,
        data.from_arrays(x, y),
        settings,
        {"loss": keras.losses.SparseCategoricalCrossentropy()},
        Reporter(),
        callbacks=[checker],
    )
    assert checker.batches == 12
    assert checker.violations == []
    # window steps 3..9, every 2 steps from 3 and at the end: updates before steps 3, 5, 7, 9,
    # then finish() after the last step (12)
    assert [u["step"] for u in result.updates] == [3, 5, 7, 9, 12]
    n = {"conv/kernel": 36, "hidden/kernel": 2304, "out/kernel": 48}
    # step 5: progress 2/6, s = 0.75 - 0.75 * (2/3)**3
    s5 = 0.75 - 0.75 * (2 / 3) ** 3
    assert checker.masked_counts[5] == {k: round(s5 * v) for k, v in n.items()}
    assert checker.masked_counts[-1] == {k: round(0.75 * v) for k, v in n.items()}
    assert result.updates[-1]["sparsity"] == pytest.approx(
        sum(round(0.75 * v) for v in n.values()) / sum(n.values())
    )
    assert (result.epochs, result.steps) == (2, 12)
    for key, variable in pruner.kernels.items():
        assert variable.constraint is None, key
        mask = np.array(pruner.masks[key])
        assert masking.sparsity(mask) == pytest.approx(round(0.75 * n[key]) / n[key])
        np.testing.assert_array_equal(np.array(variable)[mask == 0], 0.0)


@pytest.mark.parametrize(
    ("kind", "spe", "epochs", "every", "setting", "expected"),
    [
        ("one_shot", 48, 2, None, "auto", 24),  # largest divisor of 48 up to 32
        ("one_shot", 45, 2, 10, "auto", 5),  # checkpoints every 10 steps: gcd(45, 10)
        ("polynomial", 45, 3, None, "auto", 5),  # updates every 10 steps from step 0
        ("polynomial", 45, 3, None, 3, 1),  # a cap of 3 that does not divide 5
        ("one_shot", 41, 2, None, "auto", 1),  # a prime epoch: one step a call
    ],
)
def test_steps_per_execution_starts_a_call_at_every_update_checkpoint_and_epoch(
    kind, spe, epochs, every, setting, expected
):
    prune = Prune(sparsity=0.5)
    plan = schedules.Plan(spe, epochs * spe, end_epoch=2, frequency=10)
    pruner = Pruner(
        selection.select(seeded(build_cnn), prune), prune,
        lambda final: schedules.build(kind, final, plan),
    )  # fmt: skip
    steps = finetune.steps_per_execution(setting, spe, epochs * spe, pruner, every)
    assert steps == expected
    assert finetune.steps_per_execution(setting, spe, epochs * spe, pruner, every, True) == 1
    updates = [s for s in range(epochs * spe) if pruner.updates_at(s)]
    assert all(s % steps == 0 for s in [*updates, spe, every or 0])
