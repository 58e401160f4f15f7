"""Shared fixtures: tiny real Keras models and real dataset folders, made per test.

Models are small (a few thousand weights) so the whole suite stays fast, but they are real
Keras 3 models saved to real files, and the data are real PNG folders, .npz and .csv files
whose classes a model can learn (each class lights up its own patch of the image).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def _size_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own cache of measured sizes: nothing is written to ~/.cache, and
    no test reads figures another one stored (subprocesses inherit the variable)."""
    monkeypatch.setenv("PRUNECLI_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


SIZE = 8
CLASSES = 3


def synthetic_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (count, 8, 8) and labels: class k brightens rows 2k..2k+2 over noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(count) % CLASSES
    x = rng.integers(0, 60, size=(count, SIZE, SIZE)).astype(np.uint8)
    for i, label in enumerate(y):
        x[i, 2 * label : 2 * label + 3, :] = rng.integers(180, 255, size=(3, SIZE))
    return x, y


@pytest.fixture
def image_data(tmp_path: Path) -> Path:
    """``data/train/<class>/*.png`` and ``data/val/<class>/*.png``, 3 classes."""
    root = tmp_path / "data"
    for split, count, seed in (("train", 60, 1), ("val", 30, 2)):
        x, y = synthetic_images(count, seed)
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, mode="L").save(folder / f"{i:03d}.png")
    return root


@pytest.fixture
def npz_data(tmp_path: Path) -> Path:
    x, y = synthetic_images(90, 3)
    path = tmp_path / "data.npz"
    np.savez(path, x=(x / 255.0).astype(np.float32)[..., None], y=y)
    return path


@pytest.fixture
def csv_data(tmp_path: Path) -> Path:
    """A tabular set: 6 numeric features, label in column ``label`` (3 classes)."""
    rng = np.random.default_rng(4)
    path = tmp_path / "data.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*(f"f{i}" for i in range(6)), "label"])
        for i in range(90):
            label = i % CLASSES
            features = rng.normal(size=6)
            features[label] += 3.0
            writer.writerow([*(f"{v:.5f}" for v in features), label])
    return path


def build_cnn(name: str = "tiny_cnn"):
    """Conv2D(4) -> Flatten -> Dense(16) -> Dense(3): 2,411 weights, 2,388 in kernels."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(CLASSES, activation="softmax", name="out"),
        ],
        name=name,
    )
    return model


def build_nested():
    """Transfer-learning shape: a base model nested inside the outer model."""
    import keras

    base = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Flatten(name="flat"),
        ],
        name="base",
    )
    inputs = keras.Input((SIZE, SIZE, 1))
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(base(inputs))
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="out")(hidden)
    return keras.Model(inputs, outputs, name="outer")


def build_dense(features: int = 6):
    import keras

    return keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(CLASSES, activation="softmax", name="out"),
        ],
        name="tabular",
    )


BUILDERS: dict[str, Callable] = {"cnn": build_cnn, "nested": build_nested, "dense": build_dense}


@pytest.fixture
def make_model(tmp_path: Path) -> Callable[..., Path]:
    """``make_model(kind="cnn", suffix=".h5", compiled=True, train=True) -> Path``.

    Trained briefly on the synthetic data (so accuracy means something) unless train=False.
    """

    def make(
        kind: str = "cnn", suffix: str = ".h5", compiled: bool = True, train: bool = True
    ) -> Path:
        import keras

        keras.utils.set_random_seed(0)
        model = BUILDERS[kind]()
        if compiled or train:
            model.compile(
                optimizer=keras.optimizers.Adam(1e-2),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
        if train:
            if kind == "dense":
                rng = np.random.default_rng(4)
                y = np.arange(90) % CLASSES
                x = rng.normal(size=(90, 6)).astype(np.float32)
                x[np.arange(90), y] += 3.0
            else:
                images, y = synthetic_images(90, 5)
                x = (images / 255.0).astype(np.float32)[..., None]
            model.fit(x, y, epochs=5, batch_size=16, verbose=0)
        path = tmp_path / "models" / f"{kind}{suffix}"
        path.parent.mkdir(exist_ok=True)
        if compiled:
            model.save(path)
        else:
            fresh = BUILDERS[kind]()
            fresh.set_weights(model.get_weights())
            fresh.save(path)
        return path

    return make


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Run ``prunecli ARGS`` in-process; the result has exit_code, stdout and stderr apart."""
    from prunecli.cli.commands import main

    def invoke(*args: str | Path) -> Result:
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def val_arrays(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The validation PNGs read independently: sorted class folders, pixels / 255."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    x, y = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).glob("*.png")):
            x.append(np.asarray(Image.open(file).convert("L"), dtype=np.float32) / 255.0)
            y.append(label)
    return np.stack(x)[..., None], np.array(y)


def core_outputs(folder: Path) -> list[str]:
    """Sorted names in ``folder`` without the report's plots and HTML page (every report
    has them; tests/test_analysis_prune.py checks them), so a test can assert exactly the
    model, reports and checkpoints a run left."""
    return sorted(
        p.name for p in folder.iterdir() if not re.search(r"\.report(\.\w+\.png|\.html)$", p.name)
    )
