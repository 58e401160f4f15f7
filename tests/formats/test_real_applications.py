"""keras.applications families (Keras 3, random weights, 32x32) and a tf_keras-saved
MobileNet ``.h5``: loaded, pruned end to end, saved, and counted in a clean process.

``--epochs 0``: the point here is loading, selection (depthwise and pointwise kernels at
every depth) and the saved kernels; fine-tuning is the same for every Keras model and is
run on the transformers (tests/formats/test_real_transformers.py) and in benchmarks/real_models.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import real_models
from real_models import kernel_scope, load_elsewhere

SPARSITY = 0.6
FAMILIES = list(real_models.APPLICATIONS)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, dict]]:
    """name -> (report, what a clean process finds in the saved file): every family and
    the tf_keras MobileNet pruned without data (``--epochs 0``), counted in one process."""
    from click.testing import CliRunner

    from prunecli.cli.commands import main

    root = tmp_path_factory.mktemp("apps")
    models = {name: real_models.application(name, root / f"{name}.keras") for name in FAMILIES}
    models["tf_keras MobileNet"] = real_models.tf_keras_mobilenet(root / "mobilenet.h5")
    reports, outputs = {}, {}
    for name, model in models.items():
        outputs[name] = root / f"{name.replace(' ', '_')}.pruned.keras"
        args = ["prune", model, "-o", outputs[name], "--epochs", "0", "--sparsity", SPARSITY]
        result = CliRunner().invoke(main, [*map(str, args), "--json", "--quiet"])
        assert result.exit_code == 0, result.stderr
        reports[name] = json.loads(result.stdout)
    found = load_elsewhere(list(outputs.values()))
    return {name: (reports[name], found[str(outputs[name])]) for name in models}


@pytest.mark.parametrize("name", [*FAMILIES, "tf_keras MobileNet"])
def test_applications_prune_and_reload(pruned, name):
    report, found = pruned[name]
    total, in_scope, off = kernel_scope(found["weights"], SPARSITY)
    assert off == 0
    assert in_scope == report["after"]["prunable_params"]
    assert in_scope / total >= 0.9  # conv, depthwise and dense kernels at any depth
    assert report["after"]["sparsity"] == pytest.approx(SPARSITY, abs=1e-3)
    assert report["warnings"] == []
    types = {row["type"] for row in report["layers"] if row["pruned"]}
    assert "Conv2D" in types
    if name != "DenseNet121":
        assert "DepthwiseConv2D" in types
    # MobileNetV3 and EfficientNet scale their own pixels: data.rescale auto gives 1
    own = name in ("MobileNetV3Small", "EfficientNetB0")
    assert report["data"]["rescale"] == (1.0 if own else pytest.approx(1 / 255))
    expected_format = "h5-keras2" if name.startswith("tf_keras") else "keras"
    assert report["input"]["format"] == expected_format


def test_tf_keras_mobilenet_h5_rebuilds_with_the_same_predictions(tmp_path):
    """Keras 2's DepthwiseConv2D config (``groups``) rebuilt: same outputs as tf_keras."""
    import tf_keras

    from prunecli.formats import model_io

    path = real_models.tf_keras_mobilenet(tmp_path / "mobilenet.h5")
    x = np.random.default_rng(0).uniform(0, 1, (4, real_models.IMAGE, real_models.IMAGE, 3))
    rebuilt, source = model_io.load(path)
    assert source.name == "h5-keras2"
    expected = tf_keras.models.load_model(path).predict(x, verbose=0)
    np.testing.assert_allclose(np.asarray(rebuilt.predict(x, verbose=0)), expected, atol=1e-5)


def test_keras2_rewrite_covers_depthwise_separable_and_slashed_names():
    """The config rewrite alone (pure): what MobileNets, Xception and MobileNetV3 need."""
    from prunecli.formats import legacy

    config = {
        "class_name": "Functional",
        "config": {
            "layers": [
                {"class_name": "DepthwiseConv2D", "name": "dw",
                 "config": {"name": "dw", "groups": 1, "kernel_size": [3, 3]},
                 "inbound_nodes": []},
                {"class_name": "SeparableConv2D", "name": "sep",
                 "config": {"name": "sep", "groups": 1, "filters": 4}, "inbound_nodes": []},
                {"class_name": "BatchNormalization", "name": "a/bn",
                 "config": {"name": "a/bn", "axis": [3]},
                 "inbound_nodes": [[["dw", 0, 0, {}]]]},
            ],
            "input_layers": [], "output_layers": [["a/bn", 0, 0]],
        },
    }  # fmt: skip
    renames: dict[str, str] = {}
    layers = legacy.to_keras3(config, renames)["config"]["layers"]
    assert "groups" not in layers[0]["config"] and "groups" not in layers[1]["config"]
    assert layers[2]["config"] == {"name": "a_bn", "axis": 3}
    assert renames == {"a/bn": "a_bn"}
