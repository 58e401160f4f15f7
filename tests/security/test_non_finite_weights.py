"""A model file whose weights hold NaN or inf (a diverged run, a damaged export) was
pruned, fine-tuned and saved with the NaN still in it, exit 0 (ReLU hides a NaN kernel
from the loss). ``prune`` and ``analyze`` refuse it with exit 2 naming the weight."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import refused


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("command", ["prune", "analyze"])
def test_model_with_non_finite_weights_is_refused(
    cli, make_model, npz_data, tmp_path, value, command
):
    import keras

    source = make_model("cnn", ".keras", train=False)
    model = keras.models.load_model(source)
    kernel = model.get_layer("conv").kernel
    values = kernel.numpy()
    values[0, 0, 0, :2] = value
    kernel.assign(values)
    hostile = tmp_path / "nan.keras"
    model.save(hostile)
    out = tmp_path / "out"
    out.mkdir()
    target = out / ("p.keras" if command == "prune" else "scan")
    extra = ("--epochs", "1") if command == "prune" else ("--set", "analyze.levels=[0.5]")
    result = cli(command, hostile, "--data", npz_data, "-o", target, "--quiet", *extra)
    refused(result, str(hostile), "conv/kernel", "2 NaN/inf values")
    assert list(out.iterdir()) == []


def test_a_bfloat16_weight_holding_nan_is_found(tmp_path):
    """bfloat16 (ml_dtypes, numpy kind 'V') was skipped as not a float."""
    import keras

    from prunecli.errors import ModelLoadError
    from prunecli.formats import safety

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, dtype="bfloat16")])
    kernel = model.layers[0].kernel
    kernel.assign(keras.ops.full(kernel.shape, float("nan"), dtype="bfloat16"))
    assert np.asarray(kernel.numpy()).dtype.kind == "V"
    with pytest.raises(ModelLoadError, match="holds 12 NaN/inf"):
        safety.finite_weights(model, tmp_path / "m.keras")
