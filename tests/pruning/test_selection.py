"""pruning/selection.py: the prunable-layer table walked on real (tiny) Keras models, and
which kernels ``prune.layers`` selects."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import (
    build_cnn,
    build_nested,
    seeded,
)

from prunecli.config import Prune
from prunecli.errors import ConfigError
from prunecli.pruning import selection

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


class _ScaleOnlyRMSNorm(keras.layers.Layer):
    """A norm layer of its own class, as keras_hub's LlamaLayerNorm, QwenLayerNorm,
    T5LayerNorm or a user's RMSNorm are: one scale vector, no Keras base to look up."""

    def build(self, shape):
        self.scale = self.add_weight(name="scale", shape=(shape[-1],), initializer="ones")

    def call(self, x):
        rms = keras.ops.rsqrt(keras.ops.mean(x * x, axis=-1, keepdims=True) + 1e-6)
        return x * rms * self.scale


class _AddNorm(keras.layers.Layer):
    """A composite whose name ends in Norm but holds a Dense: walked into, the Dense pruned."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.proj = keras.layers.Dense(4, name="proj")
        self.norm = keras.layers.LayerNormalization(name="ln")

    def call(self, x):
        return self.norm(x + self.proj(x))


def test_norm_layers_of_unknown_classes_are_kept_as_normalisation_not_unsupported():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = _ScaleOnlyRMSNorm(name="rms")(inputs)
    x = _AddNorm(name="addnorm")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    infos = {i.path: i for i in selection.describe(model)}
    assert infos["rms"].reason == (
        "_ScaleOnlyRMSNorm has nothing to prune (normalisation and scaling are kept)"
    )
    assert infos["rms"].kernels == {} and infos["rms"].params == 4
    assert list(infos["addnorm/proj"].kernels) == ["kernel"]
    assert "addnorm" not in infos  # no weights of its own


def test_keras_hub_llama_layer_norm_is_normalisation():
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=20, num_layers=1, num_query_heads=2, num_key_value_heads=1,
        hidden_dim=8, intermediate_dim=16, name="llama_backbone",
    )  # fmt: skip
    infos = selection.describe(backbone)
    norms = [i for i in infos if i.type == "LlamaLayerNorm"]
    assert len(norms) == 3
    assert all(i.reason and "normalisation and scaling are kept" in i.reason for i in norms)
    assert not [i for i in infos if i.reason and "not supported" in i.reason]


class _Patches(keras.layers.Layer):
    """A ViT/DeiT-style embedding: a Dense projection plus its own class token and learned
    positions (keras_hub's ``DeiTEmbeddings``, ``ViTPatchingAndEmbedding``)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.project = keras.layers.Dense(4, name="project")

    def build(self, shape):
        self.project.build(shape)
        self.class_token = self.add_weight(name="class_token", shape=(1, 1, 4))
        self.position_embedding = self.add_weight(name="position_embedding", shape=(4, 4))

    def call(self, x):
        tokens = self.project(x)
        batch = keras.ops.shape(x)[0]
        token = keras.ops.broadcast_to(self.class_token, (batch, 1, 4))
        return keras.ops.concatenate([token, tokens], axis=1) + self.position_embedding


def test_own_class_tokens_and_positions_are_kept_with_that_reason():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3, 5))
    x = keras.layers.Flatten()(_Patches(name="patches")(inputs))
    infos = {i.path: i for i in selection.describe(keras.Model(inputs, keras.layers.Dense(2)(x)))}
    assert list(infos["patches/project"].kernels) == ["kernel"]
    assert infos["patches"].params == 20 and infos["patches"].kernels == {}
    assert infos["patches"].reason == (
        "_Patches's own weights class_token, position_embedding are kept: class tokens and "
        "position embeddings are used by every sample"
    )
