"""An explicit ``data.rescale`` is applied to ``.npz`` and ``.csv`` data (float inputs),
refused in one line where it cannot apply (integer inputs only), and the report's
``data.rescale`` is the factor the samples were actually read with (1 under ``auto``:
arrays are taken as they are).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import build_dense, refused, seeded, tabular, write_npz

from prunecli import data
from prunecli.config import Data
from prunecli.data import inputs

SCALE = 4.0  # the files hold the features times 4; rescale 0.25 undoes it


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A dense classifier trained on the features as they are, and its validation rows."""
    import keras

    root = tmp_path_factory.mktemp("rescale")
    x, y = tabular(150)
    model = seeded(build_dense)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x[:90], y[:90], epochs=5, batch_size=16, verbose=0)
    model.save(root / "dense.keras")
    write_npz(root / "train.npz", SCALE * x[:90], y[:90])
    write_npz(root / "val.npz", SCALE * x[90:], y[90:])
    scored = {}  # (accuracy, loss) recomputed here, on the validation rows: as given, rescaled
    for factor in (1.0, SCALE):
        p = model.predict(factor * x[90:], verbose=0)
        loss = keras.losses.sparse_categorical_crossentropy(y[90:], p)
        scored[factor] = (float(np.mean(np.argmax(p, -1) == y[90:])), float(np.mean(loss)))
    return {"root": root, "model": model, "x": x, "y": y, "scored": scored}


def _report(cli, setup: dict, *extra: str) -> dict:
    root = setup["root"]
    result = cli(
        "prune", root / "dense.keras", "-o", root / "out.keras", "--epochs", "0",
        "--set", f"data.train={root / 'train.npz'}", "--set", f"data.validation={root / 'val.npz'}",
        "--json", "--quiet", "--force", *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_npz_rescale_is_applied_and_reported(cli, setup):
    auto = _report(cli, setup)
    undone = _report(cli, setup, "--set", f"data.rescale={1 / SCALE}")
    assert auto["data"]["rescale"] == 1.0  # auto leaves arrays as they are
    assert undone["data"]["rescale"] == pytest.approx(1 / SCALE)
    for report, factor in ((auto, SCALE), (undone, 1.0)):
        accuracy, loss = setup["scored"][factor]
        assert report["before"]["accuracy"] == pytest.approx(accuracy)
        assert report["before"]["loss"] == pytest.approx(loss, rel=1e-4)
    # the rescale mattered: the two runs saw different inputs (here 0.10 vs 0.05 loss)
    assert setup["scored"][1.0][1] != pytest.approx(setup["scored"][SCALE][1], rel=0.3)


def _samples(path: Path, settings: Data, model) -> np.ndarray:
    splits = data.load(settings, inputs.signature(model), seed=0)
    return data.materialize(splits.train)[0]


def test_npz_and_csv_samples_are_multiplied_by_the_rescale(setup):
    root, x, y = setup["root"], setup["x"][:90], setup["y"][:90]
    with (root / "train.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*(f"f{i}" for i in range(6)), "label"])
        writer.writerows(
            [*map(float, SCALE * row), int(label)] for row, label in zip(x, y, strict=True)
        )
    for name in ("train.npz", "train.csv"):
        settings = Data(train=root / name, validation_split=0, rescale=1 / SCALE)
        np.testing.assert_allclose(_samples(root, settings, setup["model"]), x, rtol=1e-5)
        auto = Data(train=root / name, validation_split=0)
        np.testing.assert_allclose(_samples(root, auto, setup["model"]), SCALE * x, rtol=1e-5)


def test_rescale_of_integer_only_inputs_is_refused_in_one_line(cli, tmp_path):
    import keras

    model = keras.Sequential(
        [keras.Input((5,), dtype="int32"), keras.layers.Embedding(20, 4),
         keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")]
    )  # fmt: skip
    model.save(tmp_path / "ids.keras")
    ids = np.random.default_rng(0).integers(0, 20, (30, 5)).astype(np.int32)
    write_npz(tmp_path / "ids.npz", ids, np.arange(30) % 3)
    result = cli(
        "prune", tmp_path / "ids.keras", "--epochs", "0", "--set",
        f"data.train={tmp_path / 'ids.npz'}", "--set", "data.rescale=0.5",
    )  # fmt: skip
    assert result.exit_code == 2
    refused(result, "data.rescale 0.5 cannot apply", "integers, which are never scaled")
