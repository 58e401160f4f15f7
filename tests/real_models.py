"""Real models nobody on this team wrote, built tiny and offline, for
tests/formats/test_real_transformers.py, tests/formats/test_real_applications.py and
benchmarks/real_models.py.

keras_hub models come from small configs (no preset, nothing downloaded); keras.applications
models from ``weights=None`` at 32x32. Each comes with data it can learn a little from: the
class is written into the input (the first token id, or a bright image quadrant), so a
before/after accuracy means something after a single epoch.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

CLASSES = 3
SEQUENCE = 8
VOCABULARY = 100
IMAGE = 32

# A user's own layer, as in the Keras tutorial "Text classification with Transformer",
# registered so that a saved model names it ``my_layers>TransformerBlock``.
USER_MODULE = """
import keras


@keras.saving.register_keras_serializable(package="my_layers")
class TransformerBlock(keras.layers.Layer):
    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim, self.num_heads, self.ff_dim, self.rate = embed_dim, num_heads, ff_dim, rate
        self.att = keras.layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = keras.Sequential(
            [keras.layers.Dense(ff_dim, activation="relu"), keras.layers.Dense(embed_dim)]
        )
        self.layernorm1 = keras.layers.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = keras.layers.LayerNormalization(epsilon=1e-6)
        self.dropout1 = keras.layers.Dropout(rate)
        self.dropout2 = keras.layers.Dropout(rate)

    def call(self, inputs, training=False):
        attn_output = self.dropout1(self.att(inputs, inputs), training=training)
        out1 = self.layernorm1(inputs + attn_output)
        ffn_output = self.dropout2(self.ffn(out1), training=training)
        return self.layernorm2(out1 + ffn_output)

    def get_config(self):
        return super().get_config() | {
            "embed_dim": self.embed_dim, "num_heads": self.num_heads,
            "ff_dim": self.ff_dim, "rate": self.rate,
        }


def build(path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(100, 16, name="embed")(inputs)
    x = TransformerBlock(16, 2, 32, name="block")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs, name="user_transformer")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.save(path)


if __name__ == "__main__":
    import sys

    build(sys.argv[1])
"""


def token_data(path: Path, count: int = 96, seed: int = 0, names: bool = True) -> Path:
    """``token_ids``/``segment_ids``/``padding_mask`` (int32, (count, 8)) and ``y``; the
    first token names the class. ``names`` False: one array ``x`` (a single-input model)."""
    rng = np.random.default_rng(seed)
    y = np.arange(count) % CLASSES
    tokens = rng.integers(CLASSES + 1, VOCABULARY, size=(count, SEQUENCE)).astype(np.int32)
    tokens[:, 0] = y + 1
    if not names:
        np.savez(path, x=tokens, y=y)
        return path
    ones = np.ones_like(tokens)
    np.savez(path, token_ids=tokens, segment_ids=0 * ones, padding_mask=ones, y=y)
    return path


def image_data(path: Path, count: int = 48, seed: int = 0, size: int = IMAGE) -> Path:
    """0..255 float RGB images (count, size, size, 3) and ``y``: class k brightens quadrant k."""
    rng = np.random.default_rng(seed)
    y = np.arange(count) % CLASSES
    x = rng.uniform(0, 80, size=(count, size, size, 3)).astype(np.float32)
    half = size // 2
    for i, label in enumerate(y):
        row, col = divmod(int(label), 2)
        x[i, row * half : (row + 1) * half, col * half : (col + 1) * half] += 160
    np.savez(path, x=x, y=y)
    return path


def text_classifier(path: Path, family: str) -> Path:
    """keras_hub's ``<family>Classifier`` on a tiny ``<family>Backbone``, saved to ``path``."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = getattr(keras_hub.models, f"{family}Backbone")(
        vocabulary_size=VOCABULARY, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=16, name=_snake(f"{family}Backbone"),
    )  # fmt: skip
    classifier = getattr(keras_hub.models, f"{family}Classifier")
    classifier(backbone, CLASSES, preprocessor=None).save(path)
    return path


def _snake(name: str) -> str:
    """The name Keras gives a first instance of class ``name`` (``BertBackbone`` ->
    ``bert_backbone``), given explicitly: a second model built in the same process would
    otherwise be ``bert_backbone_1``, and the tests read layer paths."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def bert(path: Path) -> Path:
    return text_classifier(path, "Bert")


def distilbert(path: Path) -> Path:
    return text_classifier(path, "DistilBert")


def vit(path: Path) -> Path:
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=16,
        mlp_dim=32, name="vi_t_backbone",
    )  # fmt: skip
    keras_hub.models.ViTImageClassifier(backbone, CLASSES, preprocessor=None).save(path)
    return path


APPLICATIONS = {
    "MobileNetV2": {"alpha": 0.35},
    "MobileNetV3Small": {"alpha": 0.75, "minimalistic": True},
    "EfficientNetB0": {},
    "DenseNet121": {},
}


def application(name: str, path: Path) -> Path:
    """A keras.applications model, random weights, 32x32 RGB in, 3 classes out, compiled."""
    import keras

    keras.utils.set_random_seed(0)
    build = getattr(keras.applications, name)
    model = build(
        weights=None, input_shape=(IMAGE, IMAGE, 3), classes=CLASSES, **APPLICATIONS[name]
    )
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.save(path)
    return path


def tf_keras_mobilenet(path: Path) -> Path:
    """MobileNet (alpha 0.25) saved by tf_keras as a Keras 2 ``.h5`` (DepthwiseConv2D with
    Keras 2's ``groups``), compiled."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.applications.MobileNet(
        alpha=0.25, weights=None, input_shape=(IMAGE, IMAGE, 3), classes=CLASSES
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.save(path)
    return path


# Every keras.applications family as tf_keras builds it: (keyword arguments, smallest input
# side the builder allows); benchmarks/keras2_families.py runs them all,
# tests/formats/test_keras2_families.py those whose Keras 2 -> 3 rewrite needs its own rules.
KERAS2_FAMILIES: dict[str, tuple[dict, int]] = {
    "Xception": ({}, 71),
    "VGG16": ({}, 32),
    "VGG19": ({}, 32),
    "ResNet50": ({}, 32),
    "ResNet50V2": ({}, 32),
    "InceptionV3": ({}, 75),
    "InceptionResNetV2": ({}, 75),
    "MobileNet": ({"alpha": 0.25}, 32),
    "MobileNetV2": ({"alpha": 0.35}, 32),
    "MobileNetV3Small": ({"alpha": 0.75}, 32),
    "MobileNetV3Large": ({"alpha": 0.75, "minimalistic": True}, 32),
    "DenseNet121": ({}, 32),
    "NASNetMobile": ({}, 32),
    "EfficientNetB0": ({}, 32),
    "EfficientNetV2B0": ({}, 32),
    "ConvNeXtTiny": ({}, 32),
    "RegNetX002": ({}, 32),
    "RegNetY002": ({}, 32),
}


def tf_keras_application(
    name: str, path: Path, seed: int = 0
) -> tuple[Path, np.ndarray, np.ndarray]:
    """(``.h5`` saved by tf_keras, an input batch, tf_keras's logits on it) for one family of
    ``KERAS2_FAMILIES``: random weights, 3 classes, no softmax (logits tell a wrong rewrite
    apart better than near-uniform probabilities), and BatchNormalization statistics and
    scales randomised, so weights copied in the wrong order would show."""
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    kwargs, side = KERAS2_FAMILIES[name]
    model = getattr(tf_keras.applications, name)(
        weights=None, input_shape=(side, side, 3), classes=CLASSES,
        classifier_activation=None, **kwargs,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        leaf = weight.name.rsplit("/", 1)[-1].split(":")[0]
        if leaf in ("gamma", "moving_variance"):
            weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(np.float32))
        elif leaf in ("beta", "moving_mean"):
            weight.assign(rng.normal(0, 0.1, weight.shape).astype(np.float32))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.save(path)
    x = rng.uniform(0, 255, (2, side, side, 3)).astype(np.float32)
    return path, x, np.asarray(model(x, training=False))


def tf_keras_constructs(path: Path, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """``tf_keras_application``'s triple for a 16x16 model made of what the bigger families
    need rewritten, in a few thousand weights: Xception's / NASNet's SeparableConv2D,
    MobileNetV3's ``/`` names and TFOpLambda ``x + 3``, ``x * (1/6)``, RegNet's TFOpLambda
    ``a * b`` and ``a + b``, InceptionResNetV2's CustomScaleLayer, ConvNeXt's LayerScale
    and StochasticDepth, EfficientNetV2's TensorFlow-module initializer (the family classes
    are tf_keras's own, from its application modules: ``tf_keras.src``, as tf_keras exports
    none of them; benchmarks/keras2_families.py builds the whole families)."""
    import tensorflow as tf
    import tf_keras
    from tf_keras.src.applications.convnext import LayerScale, StochasticDepth
    from tf_keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    layers = tf_keras.layers
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input((16, 16, 3))
    x = layers.SeparableConv2D(8, 3, padding="same", name="sep")(inputs)
    x = layers.BatchNormalization(name="block/bn")(x)
    hard = layers.ReLU(6.0, name="block/relu")(x + 3.0) * (1.0 / 6.0)  # TFOpLambda x2
    branch = layers.Conv2D(8, 1, name="block/conv")(hard)
    x = CustomScaleLayer(0.17)([x, branch])
    squeeze = layers.Conv2D(8, 1, activation="sigmoid", name="excite")(
        layers.GlobalAveragePooling2D(keepdims=True)(x)
    )
    x = squeeze * x + x  # TFOpLambda with tensor operands
    x = LayerScale(0.5, 8, name="scale")(x)
    x = StochasticDepth(0.1, name="drop_path")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(CLASSES, bias_initializer=tf.constant_initializer(0.0), name="out")(x)
    model = tf_keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    model.get_layer("scale").gamma.assign(rng.uniform(0.5, 1.5, 8).astype(np.float32))
    for weight in model.get_layer("block/bn").weights[1:]:
        weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(np.float32))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.save(path)
    x = rng.uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    return path, x, np.asarray(model(x, training=False))


# Run in a fresh interpreter: loads each file with plain Keras (keras_hub and the user's
# modules imported, never prunecli) and lists every weight with its zeros.
CHILD = """
import json, sys, importlib, importlib.util
import keras
if importlib.util.find_spec("keras_hub"):
    import keras_hub  # noqa: F401
paths, modules = sys.argv[1].split(","), [m for m in sys.argv[2].split(",") if m]
for name in modules:
    importlib.import_module(name)
out = {}
for path in paths:
    model = keras.saving.load_model(path)
    out[path] = {
        "weights": [[w.path, list(w.shape), int((keras.ops.convert_to_numpy(w) == 0).sum())]
                    for w in model.weights],
        "frozen": sorted(layer.name for layer in model._flatten_layers() if not layer.trainable),
    }
out["prunecli"] = any(m.startswith("prunecli") for m in sys.modules)
print(json.dumps(out))
"""


def load_elsewhere(
    paths: list[Path], modules: tuple[str, ...] = (), cwd: Path | None = None
) -> dict:
    """What a process that never imports prunecli finds in each saved file."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(cwd or "")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, ",".join(map(str, paths)), ",".join(modules)],
        capture_output=True, text=True, env=env, timeout=300, cwd=cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found.pop("prunecli") is False
    return found


def kernel_scope(weights: list[list], target: float) -> tuple[int, int, int]:
    """(params of all matrices, params of those at ``target``, matrices off target).

    A matrix is any weight of rank >= 2 (kernels, embedding tables, position tables, class
    tokens, EinsumDense's (heads, dim) biases): what a user would count as "the weights".
    One counts as pruned when at least half its target is zeros; it is on target when its
    zeros are ``round(target * size)`` (one off allowed for rounding).
    """
    matrices = [(int(np.prod(shape)), zeros) for _, shape, zeros in weights if len(shape) >= 2]
    pruned = [(size, zeros) for size, zeros in matrices if zeros >= 0.5 * target * size]
    off = sum(abs(zeros - round(target * size)) > 1 for size, zeros in pruned)
    return sum(s for s, _ in matrices), sum(s for s, _ in pruned), off
