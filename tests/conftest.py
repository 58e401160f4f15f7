"""Shared fixtures: tiny real Keras models and real dataset folders, made per test.

Helpers (builders, data writers, CLI and child-process runners) are in ``helpers.py``.

Models are small (a few thousand weights) so the whole suite stays fast, but they are real
Keras 3 models saved to real files, and the data are real PNG folders, .npz and .csv files
whose classes a model can learn (each class lights up its own patch of the image).
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

# ``from helpers import ...`` works from every test folder, in any import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import (
    BUILDERS,
    CLASSES,
    scaled,
    synthetic_images,
    tabular,
    write_image_splits,
    write_npz,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def _size_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own cache of measured sizes: nothing is written to ~/.cache, and
    no test reads figures another one stored (subprocesses inherit the variable)."""
    monkeypatch.setenv("PRUNECLI_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def image_data(tmp_path: Path) -> Path:
    """``data/train/<class>/*.png`` and ``data/val/<class>/*.png``, 3 classes."""
    return write_image_splits(tmp_path / "data")


@pytest.fixture
def npz_data(tmp_path: Path) -> Path:
    x, y = synthetic_images(90, 3)
    path = tmp_path / "data.npz"
    return write_npz(path, scaled(x), y)


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
                x, y = tabular(90)
            else:
                images, y = synthetic_images(90, 5)
                x = scaled(images)
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


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An empty ``tmp_path/out`` folder for a run's outputs (tests check what is left in it)."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder
