"""Channel scores and counts: which channels a method removes, computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import randomized, sample

from prunecli.config import Prune
from prunecli.core.schedules import OneShot
from prunecli.structured import graph, groups
from prunecli.structured.pruner import ChannelPruner


def _two_convs():
    """conv_a (8 filters) -> BN -> conv_b (8) -> GAP -> Dense(2): two open groups."""
    import keras

    layers = keras.layers
    inputs = keras.Input((6, 6, 2))
    a = layers.BatchNormalization(name="bn")(layers.Conv2D(8, 3, name="conv_a")(inputs))
    b = layers.Conv2D(8, 3, name="conv_b")(layers.ReLU(name="relu")(a))
    out = layers.Dense(2, name="out")(layers.GlobalAveragePooling2D(name="gap")(b))
    return randomized(keras.Model(inputs, out), seed=3)


def _group_of(plan, member):
    (found,) = [g for g in plan.groups if g.members[0] == member and not g.frozen]
    return found


def _scale_filters(model, factors):
    """conv_a's filter k: every weight +-factors[k] (L1 and L2 rank alike); BN gamma the
    reverse order."""
    kernel = model.get_layer("conv_a").kernel
    kernel.assign((np.where(np.asarray(kernel) < 0, -1.0, 1.0) * factors).astype(np.float32))
    model.get_layer("bn").gamma.assign(np.asarray(factors[::-1], np.float32))


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("l1", [4, 5, 6, 7]),
        ("l2", [4, 5, 6, 7]),
        ("magnitude", [4, 5, 6, 7]),
        ("bn_scale", [0, 1, 2, 3]),
    ],
)
def test_magnitude_scores_keep_the_largest_filters(method, expected):
    model = _two_convs()
    factors = np.arange(1, 9, dtype=np.float32)  # filter k has norm k + 1
    _scale_filters(model, factors)
    plan = groups.plan(
        graph.build(model), Prune(granularity="channel", sparsity=0.5, method=method), round_to=1
    )
    assert plan.kept[_group_of(plan, "conv_a").id].tolist() == expected


def test_fpgm_removes_the_filters_nearest_the_others():
    """Filters 0-5 are near-copies of one filter, 6 and 7 stand apart: fpgm cuts copies."""
    model = _two_convs()
    kernel = np.asarray(model.get_layer("conv_a").kernel)
    rng = np.random.default_rng(0)
    base = rng.normal(size=kernel.shape[:-1])
    copies = [base + 0.01 * rng.normal(size=base.shape) for _ in range(6)]
    apart = [rng.normal(size=base.shape) * 3 for _ in range(2)]
    model.get_layer("conv_a").kernel.assign(np.stack(copies + apart, axis=-1).astype(np.float32))
    plan = groups.plan(
        graph.build(model), Prune(granularity="channel", sparsity=0.5, method="fpgm"), round_to=1
    )
    kept = plan.kept[_group_of(plan, "conv_a").id].tolist()
    assert {6, 7} <= set(kept) and len(kept) == 4


def test_taylor_weights_filters_by_their_gradients():
    model = _two_convs()
    coupling = graph.build(model)

    def gradients(kernels):
        found = {key: np.ones(v.shape, np.float32) for key, v in kernels.items()}
        found["conv_a/kernel"] = np.zeros(kernels["conv_a/kernel"].shape, np.float32)
        found["conv_a/kernel"][..., [1, 3, 5, 7]] = 1.0  # only odd filters matter
        return found

    plan = groups.plan(
        coupling,
        Prune(granularity="channel", sparsity=0.5, method="taylor"),
        1,
        gradients=gradients,
    )
    assert plan.kept[_group_of(plan, "conv_a").id].tolist() == [1, 3, 5, 7]


def test_random_is_seeded():
    model = _two_convs()
    coupling = graph.build(model)
    first = groups.plan(
        coupling, Prune(granularity="channel", sparsity=0.5, method="random"), 1, seed=1
    ).kept
    again = groups.plan(
        coupling, Prune(granularity="channel", sparsity=0.5, method="random"), 1, seed=1
    ).kept
    other = groups.plan(
        coupling, Prune(granularity="channel", sparsity=0.5, method="random"), 1, seed=2
    ).kept
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert any(not np.array_equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize(
    ("count", "round_to", "width", "kept"),
    [(30.4, 8, 64, 32), (3, 8, 6, 6), (2, 8, 64, 8), (63.9, 8, 60, 60), (5, 1, 9, 5)],
)
def test_rounding(count, round_to, width, kept):
    assert groups.rounded(count, round_to, width) == kept


def test_masks_during_training_equal_the_rebuilt_model():
    """What a gradual schedule holds during fine-tuning computes what the rebuild writes:
    the reference zeroes each conv's removed filters by hand (kernel columns and bias), and
    cancels BatchNorm's shift for conv_a's (beta and moving mean 0), so they stay 0
    downstream."""
    model = _two_convs()
    original = [np.asarray(w).copy() for w in model.weights]
    prune = Prune(granularity="channel", sparsity=0.5, round_to=1)
    pruner = ChannelPruner(model, prune, OneShot)
    pruner.update(0)
    gone = {
        name: np.setdiff1d(np.arange(8), pruner.plan.kept[_group_of(pruner.plan, name).id])
        for name in ("conv_a", "conv_b")
    }
    assert [len(g) for g in gone.values()] == [4, 4]
    reference = _two_convs()
    for variable, values in zip(reference.weights, original, strict=True):
        layer, name = variable.path.split("/")
        if layer in gone and name in ("kernel", "bias"):
            values[..., gone[layer]] = 0
        if layer == "bn" and name in ("beta", "moving_mean"):
            values[gone["conv_a"]] = 0
        variable.assign(values)
    x = sample(model)
    assert np.abs(np.asarray(reference(x)) - np.asarray(_two_convs()(x))).max() > 1e-3
    np.testing.assert_allclose(model(x), reference(x), atol=1e-5)
    narrow, _ = pruner.rebuilt(model)
    assert narrow.get_layer("conv_a").filters == narrow.get_layer("conv_b").filters == 4
    np.testing.assert_allclose(narrow(x), reference(x), atol=1e-5)


def test_lamp_normalises_each_group():
    np.testing.assert_allclose(groups.lamp(np.array([3.0, 1.0, 2.0])), [1, 1 / 14, 4 / 13])
    np.testing.assert_allclose(groups.lamp(np.array([1.0, 2.0, 2.0])), [1 / 9, 0.5, 0.5])


def test_lamp_under_global_scope_keeps_every_groups_best_channel():
    model = _two_convs()
    coupling = graph.build(model)
    prune = Prune(granularity="channel", sparsity=0.8, scope="global", method="lamp")
    plan = groups.plan(coupling, prune, round_to=1, seed=0)
    for name in ("conv_a", "conv_b"):
        norms = np.linalg.norm(np.asarray(model.get_layer(name).kernel).reshape(-1, 8), axis=0)
        assert int(np.argmax(norms)) in plan.kept[_group_of(plan, name).id]
    assert sum(len(k) for k in plan.kept.values()) < sum(g.width for g in plan.groups)


def test_overrides_set_a_groups_sparsity():
    from prunecli.config import LayerSelection

    layers = LayerSelection(overrides={"conv_b": 0.25})
    prune = Prune(granularity="channel", sparsity=0.5, layers=layers)
    plan = groups.plan(graph.build(_two_convs()), prune, round_to=1)
    assert len(plan.kept[_group_of(plan, "conv_a").id]) == 4
    assert len(plan.kept[_group_of(plan, "conv_b").id]) == 6


def test_a_gradual_schedule_ramps_each_override_by_its_own_schedule():
    """An override (what ``sparsity: auto`` sets per group) rises with the schedule like
    the model-wide target, never jumping to its final width at the first update."""
    from prunecli.config import LayerSelection
    from prunecli.core.schedules import Polynomial

    def ramp(target: float) -> Polynomial:
        return Polynomial(initial=0.0, final=target, begin=0, end=10, frequency=1)

    prune = Prune(
        granularity="channel",
        sparsity=0.25,
        round_to=1,
        layers=LayerSelection(overrides={"conv_a": 0.75}),
    )
    pruner = ChannelPruner(_two_convs(), prune, ramp)

    def removed(step: int) -> int:
        pruner.update(step)
        return 8 - len(pruner.plan.kept[_group_of(pruner.plan, "conv_a").id])

    # 8 channels: s_t = 0.75 (1 - (1 - t/10)^3) -> 0, 1.6, 3.9, 6 of them at t = 0, 1, 3, 10
    assert [removed(step) for step in (0, 1, 3, 10)] == [0, 2, 4, 6]


def test_convnext_blocks_couple_through_grouped_depthwise_and_layer_scale():
    """ConvNeXt's depthwise conv is a ``Conv2D(groups=C)`` and its branch ends in a
    LayerScale: both pass channels through, so the stem, the block's last Dense and the
    residual Add are one open group, and the bottleneck Dense its own."""
    from helpers import convnext

    found = graph.build(convnext()).groups()
    (stream,) = [g for g in found if "stem" in g.producers]
    assert stream.producers == ["stem", "pw2"] and not stream.frozen
    assert {"dw", "ln", "scale", "res", "down/down_ln"} <= set(stream.members)
    (bottleneck,) = [g for g in found if g.producers == ["pw1"]]
    assert bottleneck.width == 32 and not bottleneck.frozen


def test_an_add_of_one_layer_and_a_concatenation_freezes_saying_how_they_split():
    """NASNet adds one conv's 44 channels to a concatenation of two 22-channel convs: the
    graph couples whole sources only, so it freezes them, and the reason says the split."""
    import keras

    layers = keras.layers
    inputs = keras.Input((6, 6, 3))
    whole = layers.Conv2D(16, 1, name="whole")(inputs)
    halves = layers.Concatenate(name="cat")(
        [layers.Conv2D(8, 1, name="left")(inputs), layers.Conv2D(8, 1, name="right")(inputs)]
    )
    added = layers.Add(name="add")([whole, halves])
    model = keras.Model(inputs, layers.Dense(2, name="out")(added))
    found = {p: g for g in graph.build(model).groups() for p in g.producers}
    for producer in ("whole", "left", "right"):
        (reason,) = found[producer].frozen
        assert reason.startswith("read by add: its inputs' channels do not line up one to one")
        assert "16 vs 8+8" in reason


def test_a_user_layer_named_layer_scale_of_another_shape_freezes():
    """Matched by class name, ConvNeXt's rule applies only to its shape: a user's
    ``LayerScale`` with a (1, 1, C) gamma is frozen, not sliced (its rebuild would fail)."""
    import keras

    class LayerScale(keras.layers.Layer):
        def get_config(self):
            return super().get_config() | {"projection_dim": 8}

        def build(self, shape):
            self.gamma = self.add_weight(shape=(1, 1, shape[-1]), name="gamma")

        def call(self, x):
            return x * self.gamma

    inputs = keras.Input((4, 4, 2))
    x = LayerScale(name="scale")(keras.layers.Conv2D(8, 1, name="conv")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    (conv,) = [g for g in graph.build(model).groups() if g.producers == ["conv"]]
    assert conv.frozen == ["read by scale: LayerScale other than ConvNeXt's (projection_dim "
                           "and one gamma per channel)"]  # fmt: skip
