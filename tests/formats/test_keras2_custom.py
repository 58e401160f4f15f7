"""A Keras 2 (tf_keras) file holding the user's own layer, registered with
``tf_keras.utils.register_keras_serializable(package="zoo")``: what prunecli says when the
class is not available, when the user imports the tf_keras class as written (Keras 3
cannot use it), and that a Keras 3 version imported with ``--import`` loads, prunes around
it (reported as not pruned, with the reason) and reloads without prunecli.

Keras 2 writes a registered class's ``class_name`` as ``zoo>Scale`` (no ``registered_name``
key): the message used to name class ``'zoo'``.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import child_env, run_python
from real_models import load_elsewhere

pytest.importorskip("tf_keras")

# The layer as its author wrote it for tf_keras, and the Keras 3 version a user writes.
TF_KERAS_LAYER = """
import tf_keras as k


@k.utils.register_keras_serializable(package="zoo")
class Scale(k.layers.Layer):
    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, shape):
        self.kernel = self.add_weight(name="kernel", shape=(shape[-1], self.units))
        self.gain = self.add_weight(name="gain", shape=(self.units,), initializer="ones")

    def call(self, x):
        return k.backend.dot(x, self.kernel) * self.gain

    def get_config(self):
        return super().get_config() | {"units": self.units}
"""
KERAS3_LAYER = (
    TF_KERAS_LAYER.replace("tf_keras as k", "keras as k")
    .replace("k.utils.register", "k.saving.register")
    .replace("k.backend.dot(x, self.kernel)", "k.ops.matmul(x, self.kernel)")
)
BUILD = """
import sys
import numpy as np
import tf_keras as k
from zoo_scale_tf_keras import Scale

k.utils.set_random_seed(0)
inputs = k.Input((6,))
x = k.layers.Dense(8, activation="relu", name="dense")(inputs)
x = Scale(4, name="scale")(x)
model = k.Model(inputs, k.layers.Dense(3, activation="softmax", name="head")(x))
model.compile("adam", "sparse_categorical_crossentropy")
model.save(sys.argv[1] + "/custom.h5")
model.save(sys.argv[1] + "/custom_sm")
np.save(sys.argv[1] + "/probe.npy", model.predict(np.ones((2, 6), "float32"), verbose=0))
"""
NAMES = ["custom.h5", "custom_sm"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """custom.h5 and custom_sm/ written by tf_keras in its own process, both modules beside."""
    folder = tmp_path_factory.mktemp("keras2_custom")
    (folder / "zoo_scale_tf_keras.py").write_text(TF_KERAS_LAYER)
    (folder / "zoo_scale_keras3.py").write_text(KERAS3_LAYER)
    done = run_python(BUILD, folder, env=child_env(PYTHONPATH=str(folder)), cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


@pytest.fixture
def importable(files: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The two modules importable in this process; they and their registrations removed
    after (the next test imports them afresh)."""
    import keras

    monkeypatch.syspath_prepend(str(files))
    yield files
    keras.saving.get_custom_objects().pop("zoo>Scale", None)
    tf_keras = sys.modules.get("tf_keras")
    if tf_keras is not None:
        tf_keras.saving.get_custom_objects().pop("zoo>Scale", None)
    for name in ("zoo_scale_tf_keras", "zoo_scale_keras3"):
        sys.modules.pop(name, None)


def one_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("name", NAMES)
def test_unknown_keras2_class_is_named_with_its_package(cli, files, name):
    line = one_line(cli("inspect", files / name))
    assert "class 'Scale' (registered by package 'zoo'), which is not known" in line
    assert "--import MODULE" in line and "register_keras_serializable(package='zoo')" in line


@pytest.mark.parametrize("name", NAMES)
def test_the_tf_keras_class_itself_is_refused_saying_keras3_needs_its_own(cli, importable, name):
    line = one_line(cli("inspect", importable / name, "--import", "zoo_scale_tf_keras"))
    assert "registers with tf_keras (Keras 2) only" in line and "Keras 3 version" in line


def test_a_keras3_version_loads_prunes_around_it_and_reloads_elsewhere(cli, importable):
    from prunecli.formats import model_io

    probe = np.load(importable / "probe.npy")
    reports = {}
    for name in NAMES:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, _ = model_io.load(importable / name, imports=("zoo_scale_keras3",))
        # tf_keras's "You are saving your model as an HDF5 file" is about prunecli's own
        # intermediate file, not the user's: it used to reach the console
        assert not [w for w in caught if "HDF5" in str(w.message)]
        np.testing.assert_allclose(model.predict(np.ones((2, 6)), verbose=0), probe, atol=1e-6)
        out = importable / f"{name.split('.')[0]}.pruned.keras"
        done = cli("prune", importable / name, "--import", "zoo_scale_keras3", "--epochs", "0",
                   "-o", out, "--force", "--json", "--quiet")  # fmt: skip
        assert done.exit_code == 0, done.stderr
        reports[str(out)] = json.loads(done.stdout)
    found = load_elsewhere(list(map(Path, reports)), ("zoo_scale_keras3",), cwd=importable)
    for out, report in reports.items():
        rows = {row["path"]: row for row in report["layers"]}
        assert not rows["scale"]["pruned"] and "Scale" in rows["scale"]["reason"]
        assert rows["dense"]["pruned"] and rows["head"]["pruned"]
        weights = {path: (shape, zeros) for path, shape, zeros in found[out]["weights"]}
        assert weights["dense/kernel"] == ([6, 8], 24) and weights["head/kernel"] == ([4, 3], 6)
        assert weights["scale/kernel"][1] == 0  # the custom layer's kernel kept whole
        nonzero = sum(int(np.prod(shape)) - zeros for shape, zeros in weights.values())
        assert report["after"]["params_nonzero"] == nonzero
