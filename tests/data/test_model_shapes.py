"""Models whose inputs or outputs are not one symbolic tensor each, as users save them:

- a ``Sequential`` saved before it was built (no ``keras.Input``): no input shape, no
  weights; used to be exit 1 (``AttributeError: ... has no defined input shape yet``);
- a registered subclassed ``keras.Model`` built by calling it on a batch: no
  ``model.inputs``/``output_shape``; used to be exit 1 (``'Sub' object has no attribute
  'input_shape'``), now pruned and fine-tuned from its build config's input shape;
- a model with two outputs given one ``y``: used to be exit 1 (``Unknown config as a dict``
  for its dict of losses), now exit 2 naming the outputs; without data it still prunes.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import keras
import numpy as np
import pytest
from helpers import tabular, write_npz
from real_models import load_elsewhere

SUBCLASSED = """
import keras


@keras.saving.register_keras_serializable(package="shapes_under_test")
class TwoDense(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8, activation="relu", name="hidden")
        self.head = keras.layers.Dense(3, activation="softmax", name="head")

    def call(self, x):
        return self.head(self.hidden(x))
"""


def one_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture
def npz(tmp_path):
    x, y = tabular(48)
    return write_npz(tmp_path / "tab.npz", x.astype(np.float32), y % 3)


def test_a_sequential_saved_unbuilt_is_refused_naming_the_file(cli, tmp_path, npz):
    model = keras.Sequential([keras.layers.Dense(4), keras.layers.Dense(3)])
    model.save(tmp_path / "unbuilt.keras")
    line = one_line(cli("prune", tmp_path / "unbuilt.keras", "--data", npz, "--epochs", "0"))
    assert f"{tmp_path / 'unbuilt.keras'}: model" in line and "has no input shape" in line


def test_a_subclassed_model_is_pruned_and_fine_tuned_from_its_build_shape(
    cli, tmp_path, npz, monkeypatch
):
    (tmp_path / "shapes_layers.py").write_text(SUBCLASSED)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = importlib.util.spec_from_file_location("shapes_layers", tmp_path / "shapes_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    keras.utils.set_random_seed(0)
    model = module.TwoDense()
    model(np.zeros((1, 6), np.float32))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.save(tmp_path / "sub.keras")
    out = tmp_path / "sub.pruned.keras"
    done = cli("prune", tmp_path / "sub.keras", "--data", npz, "--epochs", "1", "-o", out,
               "--json", "--quiet", "--import", "shapes_layers")  # fmt: skip
    keras.saving.get_custom_objects().pop("shapes_under_test>TwoDense", None)
    sys.modules.pop("shapes_layers", None)
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["data"]["task"] == "sparse" and report["after"]["accuracy"] is not None
    assert {row["path"] for row in report["layers"] if row["pruned"]} == {"hidden", "head"}
    found = load_elsewhere([out], ("shapes_layers",), cwd=tmp_path)[str(out)]["weights"]
    zeros = {tuple(shape): count for _, shape, count in found if len(shape) == 2}
    assert zeros == {(6, 8): 24, (8, 3): 12}
    nonzero = sum(int(np.prod(shape)) - count for _, shape, count in found)
    assert report["after"]["params_nonzero"] == nonzero


def test_a_two_output_model_with_one_y_is_exit_2_and_prunes_without_data(cli, tmp_path, npz):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, name="hidden")(inputs)
    outputs = {"cls": keras.layers.Dense(3, name="cls")(hidden),
               "reg": keras.layers.Dense(1, name="reg")(hidden)}  # fmt: skip
    model = keras.Model(inputs, outputs)
    model.compile("adam", {"cls": "sparse_categorical_crossentropy", "reg": "mse"})
    model.save(tmp_path / "two.keras")
    line = one_line(cli("prune", tmp_path / "two.keras", "--data", npz, "--epochs", "1"))
    assert "the model has 2 outputs ('cls', 'reg')" in line and "--epochs 0" in line
    done = cli("prune", tmp_path / "two.keras", "--epochs", "0", "-o", tmp_path / "two.p.keras",
               "--json", "--quiet")  # fmt: skip
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["after"]["sparsity"] == pytest.approx(0.5, abs=0.01)
