"""Non-finite values never reach a saved model: NaN/inf in the data is a DataError naming
the file, a non-finite config number is a config error, and fine-tuning whose loss becomes
NaN/inf stops with exit 2 naming the step, with nothing written (no checkpoint either)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import refused, synthetic_images, write_config


@pytest.fixture
def out(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("where", ["x", "y"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_in_npz_is_a_data_error(cli, make_model, tmp_path, out, where, value):
    model = make_model("cnn", ".keras", train=False)
    x, y = synthetic_images(30, 1)
    x = (x / 255.0).astype(np.float32)[..., None]
    y = y.astype(np.float32)
    (x if where == "x" else y)[7] = value
    data = tmp_path / "bad.npz"
    np.savez(data, x=x, y=y)
    result = cli("prune", model, "--set", f"data.train={data}", "-o", out / "p.keras", "--quiet")
    refused(result, str(data), where, str(value))
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("cell", ["nan", "inf", "-Infinity"])
def test_nan_or_inf_in_csv_is_a_data_error(cli, make_model, csv_data, out, cell):
    model = make_model("dense", ".keras", train=False)
    lines = csv_data.read_text().splitlines()
    cells = lines[5].split(",")
    cells[2] = cell
    lines[5] = ",".join(cells)
    csv_data.write_text("\n".join(lines) + "\n")
    result = cli("prune", model, "--set", f"data.train={csv_data}", "-o", out / "p.keras")
    refused(result, f"{csv_data}:6", "f2", cell)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "key", ["finetune.learning_rate", "prune.sparsity", "data.rescale", "prune.schedule.power"]
)
@pytest.mark.parametrize("value", [".inf", ".nan"])
def test_non_finite_config_numbers_are_refused(cli, tmp_path, key, value):
    section, leaf = key.rsplit(".", 1)
    config = write_config(tmp_path / "cfg.yaml", _nested(section.split("."), f"{leaf}: {value}"))
    refused(cli("validate", config), key, "finite")


def _nested(parts: list[str], leaf: str) -> str:
    text, indent = "", ""
    for part in parts:
        text += f"{indent}{part}:\n"
        indent += "  "
    return text + indent + leaf + "\n"


def test_diverging_fine_tuning_stops_naming_the_step_and_writes_nothing(cli, tmp_path, out):
    """SGD at the largest allowed learning rate on large-valued regression data: the loss
    overflows to inf, then NaN, in the first epoch."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    path = tmp_path / "reg.keras"
    model.save(path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32) * 1e4
    data = tmp_path / "reg.npz"
    np.savez(data, x=x, y=x.sum(axis=1) + 0.5)
    config = write_config(
        tmp_path / "cfg.yaml",
        f"data: {{train: {data}, validation_split: 0}}\n"
        "finetune: {epochs: 3, optimizer: sgd, learning_rate: 10.0, batch_size: 16}\n"
        f"output: {{path: {out / 'p.keras'}}}\n",
    )
    line = refused(cli("prune", path, "--config", config, "--quiet"), "diverged", "step")
    assert "learning_rate" in line and "epoch 1" in line
    assert list(out.iterdir()) == []
