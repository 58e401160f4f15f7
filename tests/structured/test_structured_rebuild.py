"""Structured pruning: the rebuilt model computes what the original computes with exactly
the removed channels zeroed, for every coupling pattern the graph knows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import STRUCTURED_BUILDERS, copy_of, hand_plan, randomized, sample, zeroed_at_source

from prunecli.config import LayerSelection, Prune
from prunecli.core.schedules import OneShot
from prunecli.structured import graph, groups, rebuild
from prunecli.structured.pruner import ChannelPruner

FAST = [
    "seq_cnn",
    "residual",
    "concat",
    "transformer",
    "mixed",
    "channelwise",
    "ops_nodes",
    "convnext",
]
ALL = [*FAST, "mobilenet", "resnet50"]


def _every_third(width: int) -> list[int]:
    """Hand-chosen channels: 0, 3, 6, ... (a third of each group; for 4 heads: 0 and 3)."""
    return list(range(0, width, 3))


@pytest.fixture(scope="module")
def models() -> dict:
    import keras

    keras.utils.set_random_seed(0)
    return {name: randomized(STRUCTURED_BUILDERS[name]()) for name in ALL}


@pytest.mark.parametrize("name", ALL)
def test_nothing_removed_gives_the_same_outputs(models, name):
    model = models[name]
    narrow = rebuild.rebuild(model, groups.keep_all(graph.build(model)))
    x = sample(model)
    assert narrow.count_params() == model.count_params()
    np.testing.assert_allclose(narrow(x), model(x), atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_removed_channels_equal_the_original_with_them_zeroed(models, name):
    model = models[name]
    coupling = graph.build(model)
    plan = hand_plan(coupling, _every_third)
    narrow = rebuild.rebuild(model, plan)
    reference = zeroed_at_source(model, plan)
    x = sample(model)
    assert narrow.count_params() < model.count_params()
    # the zeroing matters (else the comparison would prove nothing) ...
    assert np.abs(np.asarray(reference(x)) - np.asarray(model(x))).max() > 1e-3
    # ... and the rebuilt model is exactly the zeroed original
    np.testing.assert_allclose(narrow(x), reference(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ALL)
def test_the_channel_pruners_masks_equal_the_zeroed_original(models, name):
    """What a gradual schedule holds during fine-tuning (the pruner's masks on a copy)
    computes what the original with the plan's channels zeroed by hand computes, and what
    the rebuild writes."""
    model = models[name]
    masked = copy_of(model)
    pruner = ChannelPruner(masked, Prune(granularity="channel", sparsity=0.5), OneShot)
    pruner.update(0)
    reference = zeroed_at_source(model, pruner.plan)
    narrow, _ = pruner.rebuilt(masked)
    x = sample(model)
    assert narrow.count_params() < model.count_params()
    np.testing.assert_allclose(masked(x), reference(x), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(narrow(x), reference(x), atol=1e-4, rtol=1e-4)


def test_widths_shrink_where_expected(models):
    narrow = rebuild.rebuild(
        models["seq_cnn"], hand_plan(graph.build(models["seq_cnn"]), _every_third)
    )
    widths = {layer.name: layer.get_config().get("filters") or layer.get_config().get("units")
              for layer in narrow.layers if hasattr(layer, "kernel")}  # fmt: skip
    # 16 -> 10, 24 -> 16, hidden 16 -> 10; the output layer keeps its 3 units
    assert widths == {"conv1": 10, "conv2": 16, "hidden": 10, "out": 3}
    # Flatten -> Dense: the hidden kernel reads 4*4 positions of the 16 kept channels
    assert narrow.get_layer("hidden").kernel.shape == (4 * 4 * 16, 10)


def test_prelu_and_per_channel_group_norm_are_sliced_channel_by_channel(models):
    model = models["channelwise"]
    coupling = graph.build(model)
    plan = hand_plan(coupling, _every_third)
    narrow = rebuild.rebuild(model, plan)
    for path, use in coupling.uses.items():  # the shapes a plan's counts are made from
        assert rebuild.sliced_shapes(plan, use) == [
            tuple(w.shape) for w in narrow.get_layer(path).weights
        ]
    # every third of 16 channels gone: 10 kept, alphas and GroupNorm entries with them
    assert narrow.get_layer("c1").filters == narrow.get_layer("c2").filters == 10
    assert narrow.get_layer("prelu_shared").alpha.shape == (1, 1, 10)
    assert narrow.get_layer("prelu_full").alpha.shape == (4, 4, 10)
    assert narrow.get_layer("inorm").gamma.shape == (10,)
    assert narrow.get_layer("gn16").groups == 10 and narrow.get_layer("gn16").beta.shape == (10,)
    assert narrow.get_layer("prelu_dense").alpha.shape == (10,)  # d1: 16 -> 10 units
    # gn4 (2 channels per group) freezes c4's channels, with the reason
    (frozen,) = [g for g in coupling.groups() if g.producers == ["c4"]]
    assert "gn4" in frozen.frozen[0] and "normalises channels together" in frozen.frozen[0]
    assert narrow.get_layer("c4").filters == 8 and narrow.get_layer("gn4").groups == 4
    kept = np.setdiff1d(np.arange(16), _every_third(16))
    np.testing.assert_array_equal(
        np.asarray(narrow.get_layer("prelu_full").alpha),
        np.asarray(model.get_layer("prelu_full").alpha)[..., kept],
    )


def test_residual_add_couples_stem_and_branch(models):
    coupled = graph.build(models["residual"]).groups()
    member_sets = [set(g.members) for g in coupled]
    assert any({"stem", "branch_b", "add", "stem_bn", "branch_bn"} <= m for m in member_sets)
    assert not any("branch_a" in m and "stem" in m and "add" not in m for m in member_sets)


def test_concat_offsets_each_branch(models):
    coupling = graph.build(models["concat"])
    plan = hand_plan(coupling, lambda width: [0])  # channel 0 of left and of right
    narrow = rebuild.rebuild(models["concat"], plan)
    assert narrow.get_layer("left").filters == 7 and narrow.get_layer("right").filters == 15
    assert narrow.get_layer("dw").kernel.shape[-2] == 22  # 24 in, channels 0 and 8 gone
    assert narrow.get_layer("mix").kernel.shape[-2] == 22


def test_attention_loses_whole_heads(models):
    model = models["transformer"]
    coupling = graph.build(model)
    plan = hand_plan(coupling, lambda width: [1] if width == 4 else [])
    narrow = rebuild.rebuild(model, plan)
    mha = narrow.get_layer("mha")
    assert mha.num_heads == 3 and mha.get_config()["key_dim"] == 8
    heads = [g for g in coupling.groups() if g.kind == "heads"]
    assert len(heads) == 1 and heads[0].width == 4
    assert narrow.output_shape == model.output_shape


def test_heads_false_freezes_the_heads(models):
    coupled = graph.build(models["transformer"], heads=False).groups()
    (heads,) = [g for g in coupled if g.kind == "heads"]
    assert heads.frozen == ["prune.heads is false"]


@pytest.mark.parametrize("round_to", [1, 8])
def test_round_to_and_the_output_layer(models, round_to):
    model = models["resnet50"]
    plan = groups.plan(graph.build(model), Prune(sparsity=0.6), round_to=round_to)
    narrow = rebuild.rebuild(model, plan)
    counts = [len(kept) for g, kept in zip(plan.groups, plan.kept.values(), strict=True)
              if not g.frozen]  # fmt: skip
    assert all(count % round_to == 0 for count in counts)
    if round_to == 1:  # exact: 40% of each group kept
        assert counts == [round(0.4 * g.width) for g in plan.groups if not g.frozen]
    assert narrow.get_layer("predictions").units == 3  # the output layer keeps its units
    x = sample(model)
    assert narrow(x).shape == model(x).shape


def test_global_scope_keeps_the_floor(models):
    model = models["seq_cnn"]
    prune = Prune(sparsity=0.9, scope="global", min_layer_density=0.25)
    plan = groups.plan(graph.build(model), prune, round_to=1)
    for g in plan.groups:
        if not g.frozen:
            assert len(plan.kept[g.id]) >= int(np.ceil(0.25 * g.width))


def test_excluded_producer_freezes_its_group(models):
    prune = Prune(sparsity=0.5, layers=LayerSelection(exclude=["branch_b"]))
    plan = groups.plan(graph.build(models["residual"]), prune, round_to=1)
    (frozen,) = [g for g in plan.groups if "branch_b" in g.members and "add" in g.members]
    assert "branch_b excluded by prune.layers.exclude 'branch_b'" in frozen.frozen
    assert len(plan.kept[frozen.id]) == frozen.width
    narrow = rebuild.rebuild(models["residual"], plan)
    assert narrow.get_layer("stem").filters == 16  # coupled through the Add: kept whole
    assert narrow.get_layer("branch_a").filters == 8  # its own group still pruned


def _unfollowable():
    import keras

    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    a = layers.Conv2D(8, 3, padding="same", name="a")(inputs)
    b = layers.Lambda(lambda t: t * 2.0, name="double")(a)
    c = layers.Conv2D(8, 3, padding="same", name="c")(b)
    d = layers.Reshape((8, 64), name="mix")(c)  # folds channels into a spatial axis
    e = layers.Conv1D(8, 3, name="e")(d)
    f = layers.Activation("softmax", name="soft")(layers.Dense(8, name="f")(e))
    g = layers.Dense(8, name="g")(f)
    out = layers.Dense(2, name="out")(layers.Flatten(name="flat")(g))
    return keras.Model(inputs, out)


def test_what_the_graph_cannot_follow_is_frozen_with_its_reason():
    model = randomized(_unfollowable())
    plan = groups.plan(graph.build(model), Prune(sparsity=0.5), round_to=1)
    reasons = {member: g.frozen for g in plan.groups for member in g.members
               if g.frozen and g.kind == "channels"}  # fmt: skip
    assert any("Lambda has no channel rule" in r for r in reasons["a"])
    assert any("reshapes" in r and "mixing channels" in r for r in reasons["c"])
    assert any("softmax" in r for r in reasons["f"])
    narrow = rebuild.rebuild(model, plan)
    for name in ("a", "c", "f"):  # frozen groups keep their width
        assert (
            narrow.get_layer(name)
            .get_config()
            .get("filters", narrow.get_layer(name).get_config().get("units"))
            == 8
        )
    assert narrow.get_layer("e").filters == 4 and narrow.get_layer("g").units == 4
    x = sample(model)
    np.testing.assert_allclose(narrow(x), zeroed_at_source(model, plan)(x), atol=1e-4)


def test_a_subclassed_model_is_refused():
    import keras

    from prunecli.errors import ConfigError

    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(4)

        def call(self, x):
            return self.dense(x)

    model = Tiny()
    model(np.zeros((1, 3), np.float32))
    with pytest.raises(ConfigError, match="subclassed model"):
        graph.build(model)


CHILD = """
import json, sys
import keras, numpy as np
found = {"prunecli": "prunecli" in sys.modules}
for path in sys.argv[1:]:
    model = keras.models.load_model(path)
    x = np.load(path + ".x.npy")
    found[path] = {"params": model.count_params(), "y": np.asarray(model(x)).tolist(),
                   "compiled": bool(model.compiled)}
found["prunecli"] = found["prunecli"] or "prunecli" in sys.modules
print(json.dumps(found))
"""


def test_rebuilt_models_reload_in_a_clean_process(models, tmp_path):
    import keras

    expected = {}
    for name in ALL:
        model = models[name]
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        narrow = rebuild.rebuild(model, hand_plan(graph.build(model), _every_third))
        path = tmp_path / f"{name}.keras"
        narrow.save(path)
        x = sample(model)
        np.save(f"{path}.x.npy", x)
        expected[str(path)] = (narrow.count_params(), np.asarray(narrow(x)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *expected], capture_output=True, text=True, env=env,
        timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found.pop("prunecli") is False
    for path, (params, y) in expected.items():
        assert found[path]["params"] == params
        assert found[path]["compiled"]  # the compile config travelled with the model
        np.testing.assert_allclose(found[path]["y"], y, atol=1e-5)


def test_a_model_class_built_functionally_has_a_graph():
    """keras_hub's task models subclass keras.Model but build it from inputs and outputs."""
    import keras

    class Built(keras.Model):
        def __init__(self):
            inputs = keras.Input((4,))
            hidden = keras.layers.Dense(16, name="hidden")(inputs)
            super().__init__(inputs, keras.layers.Dense(2, name="out")(hidden))

    (hidden,) = [g for g in graph.build(Built()).groups() if g.producers == ["hidden"]]
    assert not hidden.frozen and hidden.width == 16
