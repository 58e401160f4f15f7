"""Keras 2 (tf_keras) ``.h5`` files of the keras.applications families whose Keras 2 -> 3
rewrite needs rules of their own, and one tiny model of every construct the bigger
families need (benchmarks/keras2_families.py runs all 18 families).

Each: loaded by prunecli with the same outputs as tf_keras on the same input (1e-5),
pruned end to end (``--epochs 0``), and the saved file reloaded in a process that never
imports prunecli, its kernels counted there.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import real_models
from real_models import kernel_scope, load_elsewhere

pytest.importorskip("tf_keras")

SPARSITY = 0.5
# MobileNetV2: DepthwiseConv2D's ``groups``; MobileNetV3Small: ``/`` names (weights kept)
# and TFOpLambda hard sigmoid; EfficientNetB0: Rescaling/Normalization preprocessing and
# depthwise kernels. The constructs model covers the rest (Xception, RegNet, InceptionResNet,
# ConvNeXt, EfficientNetV2) in a few thousand weights.
FAMILIES = ["MobileNetV2", "MobileNetV3Small", "EfficientNetB0"]
CASES = [*FAMILIES, "constructs"]


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """name -> {x, expected, loaded, report, found}: every case built, loaded, pruned and
    counted (one clean process for all)."""
    from click.testing import CliRunner

    from prunecli.cli.commands import main
    from prunecli.formats import model_io

    root = tmp_path_factory.mktemp("keras2")
    cases: dict[str, dict] = {}
    for name in CASES:
        if name == "constructs":
            path, x, expected = real_models.tf_keras_constructs(root / "constructs.h5")
        else:
            path, x, expected = real_models.tf_keras_application(name, root / f"{name}.h5")
        model, source = model_io.load(path)
        out = root / f"{name}.pruned.keras"
        args = ["prune", path, "-o", out, "--epochs", "0", "--sparsity", SPARSITY]
        result = CliRunner().invoke(main, [*map(str, args), "--json", "--quiet"])
        assert result.exit_code == 0, result.stderr
        cases[name] = {
            "x": x, "expected": expected, "format": source.name, "out": out,
            "loaded": np.asarray(model(x, training=False)),
            "report": json.loads(result.stdout),
        }  # fmt: skip
    found = load_elsewhere([case["out"] for case in cases.values()])
    for case in cases.values():
        case["found"] = found[str(case["out"])]
    return cases


@pytest.mark.parametrize("name", CASES)
def test_keras2_file_loads_with_tf_keras_outputs(families, name):
    case = families[name]
    assert case["format"] == "h5-keras2"
    np.testing.assert_allclose(case["loaded"], case["expected"], atol=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_keras2_file_prunes_and_reloads_with_kernels_on_target(families, name):
    case = families[name]
    report = case["report"]
    total, in_scope, off = kernel_scope(case["found"]["weights"], SPARSITY)
    assert off == 0
    assert in_scope == report["after"]["prunable_params"] > 0
    # (each kernel rounds its count of zeros: a few-thousand-weight model is off by a little)
    assert report["after"]["sparsity"] == pytest.approx(SPARSITY, abs=5e-3)
    if name != "constructs":
        assert in_scope / total >= 0.9


def test_constructs_become_plain_keras_layers(families):
    """The saved model holds only Keras's own classes: loading it needs nothing else."""
    with zipfile.ZipFile(families["constructs"]["out"]) as archive:
        config = json.loads(archive.read("config.json"))
    layers = config["config"]["layers"]
    types = {layer["class_name"] for layer in layers}
    assert {"Rescaling", "Add", "Multiply", "Dropout", "SeparableConv2D"} <= types
    assert not types & {"TFOpLambda", "CustomScaleLayer", "LayerScale", "StochasticDepth"}
    assert {layer["module"] for layer in layers} == {"keras.layers"}
