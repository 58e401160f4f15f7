"""``prunecli analyze`` on a model with a user's registered layer: ``--import MODULE`` (and
``input.imports``) must work as for ``prune`` and ``inspect``; analyze had neither, so the
refusal's own advice ("pass --import MODULE") was a dead end."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import child_env, run_prunecli, run_python, write_config, write_npz

USER_MODULE = '''
import keras

@keras.saving.register_keras_serializable(package="hux_layers")
class ScaledDense(keras.layers.Dense):
    """A Dense layer only this module knows."""
'''

BUILD = """
import sys, keras, hux_layers
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((6,)), hux_layers.ScaledDense(16, activation="relu"),
                          keras.layers.Dense(3, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
model.save(sys.argv[1])
"""


@pytest.mark.parametrize("how", ["flag", "config"])
def test_analyze_imports_the_users_module(tmp_path, how):
    (tmp_path / "hux_layers.py").write_text(USER_MODULE)
    env = child_env(PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    model = tmp_path / "user.keras"
    built = run_python(BUILD, model, env=env)
    assert built.returncode == 0, built.stderr
    rng = np.random.default_rng(0)
    data = write_npz(tmp_path / "d.npz", rng.normal(size=(30, 6)).astype("float32"),
                     np.arange(30) % 3)  # fmt: skip
    cfg = write_config(
        tmp_path / "cfg.yaml",
        "analyze: {levels: [0.5]}\n"
        + ("input: {imports: [hux_layers]}\n" if how == "config" else ""),
    )
    extra = ["--import", "hux_layers"] if how == "flag" else []
    result = run_prunecli("analyze", model, "-c", cfg, "--data", data, "-o", tmp_path / "scan",
                          "--json", "--quiet", *extra, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    written = json.loads((tmp_path / "scan" / "sensitivity.json").read_text())
    assert {key: written[key] for key in document} == document
    assert document["most_sensitive"] in ("scaled_dense", "dense")


def test_analyze_takes_the_task_from_the_training_labels(cli, make_model, tmp_path):
    """30 samples, 3 classes: the 3 held out happen to be one class. analyze inferred the
    task from them and refused "d.npz: only one class in the labels"; prune ran fine."""
    model = make_model("dense", ".keras", train=False)
    rng = np.random.default_rng(0)
    data = write_npz(tmp_path / "d.npz", rng.normal(size=(30, 6)).astype("float32"),
                     np.arange(30) % 3)  # fmt: skip
    result = cli("analyze", model, "--data", data, "-o", tmp_path / "scan", "--quiet",
                 "--set", "analyze.levels=[0.5]")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "scan" / "sensitivity.json").is_file()
