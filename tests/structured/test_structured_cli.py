"""``prune.granularity: channel`` end to end: the CLI writes a narrower plain Keras model
and a report with FLOPs, latency, speedup, channels per layer and the groups."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from helpers import independent_macs, write_config

CHANNEL = ["--set", "prune.granularity=channel", "--set", "prune.round_to=1"]


def _prune(cli, model, data, tmp_path, *extra):
    out = tmp_path / "pruned.keras"
    result = cli("prune", model, "--data", data, "-o", out, "--json", "--quiet", *CHANNEL, *extra)
    assert result.exit_code == 0, result.stderr
    return out, json.loads(result.stdout)


def test_one_shot_writes_a_narrower_model_and_reports_it(cli, make_model, image_data, tmp_path):
    model = make_model("nested", ".keras")  # base (conv 4 -> BN -> flatten) nested in outer
    out, report = _prune(cli, model, image_data, tmp_path, "--set", "prune.method=l2")
    saved = keras.models.load_model(out)
    base = saved.get_layer("base")
    assert base.get_layer("conv").kernel.shape == (3, 3, 1, 2)  # 4 filters -> 2
    assert base.get_layer("bn").gamma.shape == (2,)
    assert saved.get_layer("hidden").kernel.shape == (6 * 6 * 2, 8)  # Flatten -> Dense rows
    assert saved.get_layer("out").kernel.shape == (8, 3)  # the output keeps its 3 units
    assert saved.compiled  # the compile config stayed
    before, after = report["before"], report["after"]
    assert after["params_total"] == saved.count_params() < before["params_total"]
    assert after["flops"] == independent_macs(saved) < before["flops"]
    assert before["flops"] == independent_macs(keras.models.load_model(model))
    assert before["latency_ms"] > 0 and after["latency_ms"] > 0
    assert report["speedup"] == pytest.approx(before["latency_ms"] / after["latency_ms"], 1e-3)
    assert "tensorflow" in report["latency_backend"]
    rows = {row["path"]: row for row in report["layers"]}
    assert (rows["base/conv"]["channels_before"], rows["base/conv"]["channels_after"]) == (4, 2)
    assert (rows["out"]["channels_before"], rows["out"]["channels_after"]) == (3, 3)
    groups = {g["id"]: g for g in report["groups"]}
    conv_group = groups[rows["base/conv"]["group"]]
    assert {"base/conv", "base/bn", "base/flat", "hidden"} <= set(conv_group["members"])
    assert conv_group["channels"] == 4 and conv_group["channels_after"] == 2
    assert groups[rows["out"]["group"]]["frozen"]
    assert report["finetune"]["mask_updates"][0]["sparsity"] == pytest.approx(0.5)


@pytest.mark.parametrize("schedule", ["polynomial", "iterative"])
def test_gradual_schedules_mask_whole_channels_then_rebuild(
    cli, make_model, image_data, tmp_path, schedule
):
    model = make_model("cnn", ".keras")
    cfg = write_config(
        tmp_path / "cfg.yaml",
        f"""
prune:
  granularity: channel
  round_to: 1
  sparsity: 0.5
  schedule: {{type: {schedule}, start_epoch: 0, end_epoch: 2, frequency: 1, steps: 2}}
finetune: {{epochs: 2, batch_size: 16}}
""",
    )
    out = tmp_path / "pruned.keras"
    result = cli("prune", model, "-c", cfg, "--data", image_data, "-o", out, "--json", "--quiet")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    levels = [update["sparsity"] for update in report["finetune"]["mask_updates"]]
    assert levels[-1] == pytest.approx(0.5) and min(levels) < 0.5  # gradual, then the target
    assert levels == sorted(levels)
    saved = keras.models.load_model(out)
    assert saved.get_layer("conv").filters == 2 and saved.get_layer("hidden").units == 8
    assert report["after"]["flops"] == independent_macs(saved)


def test_unstructured_runs_report_flops_and_latency_too(cli, make_model, image_data, tmp_path):
    model = make_model("cnn", ".keras")
    out = tmp_path / "pruned.keras"
    result = cli("prune", model, "--data", image_data, "-o", out, "--json", "--quiet",
                 "--epochs", "0")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["before"]["flops"] == report["after"]["flops"] == 6 * 6 * 9 * 4 + 144 * 16 + 48
    assert report["speedup"] > 0 and report["groups"] is None


def test_inspect_lists_the_groups(cli, make_model):
    model = make_model("nested", ".keras", train=False)
    shown = cli("inspect", model, "--groups")
    assert shown.exit_code == 0, shown.stderr
    assert "channel groups" in shown.stdout and "model output" in shown.stdout
    found = json.loads(cli("inspect", model, "--json").stdout)
    (conv,) = [g for g in found["groups"] if "base/conv" in g["members"] and g["channels"] == 4]
    assert not conv["frozen"] and conv["reason"] is None
    (out,) = [g for g in found["groups"] if g["members"] == ["out"]]
    assert out["frozen"] and "model output" in out["reason"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["prune.granularity=channel", "prune.method=movement"], "prune.method movement scores"),
        (["prune.method=l2"], "prune.method l2 scores whole channels"),
        (["prune.granularity=channel", "prune.round_to=0"], "prune.round_to"),
        (["prune.granularity=chanel"], "must be unstructured, channel"),
    ],
)
def test_config_errors_exit_2(cli, make_model, sets, message):
    model = make_model("cnn", ".keras", train=False)
    result = cli("prune", model, "--epochs", "0", *[a for s in sets for a in ("--set", s)])
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_validate_knows_the_new_keys(cli, tmp_path):
    cfg = write_config(
        tmp_path / "c.yaml",
        "prune: {granularity: channel, method: fpgm, round_to: 4, heads: false}\n",
    )
    result = cli("validate", cfg, "--print")
    assert result.exit_code == 0, result.stderr
    assert "round_to: 4" in result.stdout and "heads: false" in result.stdout


@keras.saving.register_keras_serializable(package="prunecli_tests")
class _Subclassed(keras.Model):
    """A model Keras keeps no layer graph for (its call is Python code)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.head = keras.layers.Dense(3)

    def call(self, x):
        return self.head(self.hidden(x))


def test_a_subclassed_model_is_refused_with_exit_2(cli, tmp_path):
    model = _Subclassed()
    model(np.zeros((1, 6), np.float32))
    path = tmp_path / "sub.keras"
    model.save(path)
    result = cli("prune", path, "--epochs", "0", "--set", "prune.granularity=channel")
    assert result.exit_code == 2, result.stderr
    assert "subclassed model" in result.stderr and "Traceback" not in result.stderr


def test_a_keras_hub_task_is_refused_for_channels_with_one_line(cli, tmp_path):
    """keras_hub saves a task and its backbone by hyper-parameters (``hidden_dim``), not
    layers: a narrower copy cannot be rebuilt from them, so the run stops before pruning."""
    import real_models

    model = real_models.bert(tmp_path / "bert.keras")
    data = real_models.token_data(tmp_path / "tokens.npz")
    out = tmp_path / "out"
    out.mkdir()
    result = cli("prune", model, "--data", data, "-o", out / "b.keras", "--epochs", "0",
                 "--set", "prune.granularity=channel", "--set", "prune.method=l2")  # fmt: skip
    assert result.exit_code == 2, result.stderr
    assert "keras_hub.BertTextClassifier, whose config holds hyper-parameters" in result.stderr
    assert "Traceback" not in result.stderr and list(out.iterdir()) == []


def test_the_report_warns_what_channel_pruning_keeps_whole_or_only_approximates(cli, tmp_path):
    """A LayerNorm over a prunable group, and a group frozen by a softmax over its channels
    (not the model's own input or output): both said in the report's warnings."""
    from helpers import write_npz

    layers = keras.layers
    inputs = keras.Input((4, 4, 2))
    x = layers.LayerNormalization(name="ln")(layers.Conv2D(16, 3, padding="same", name="a")(inputs))
    x = layers.Activation("softmax", name="attend")(layers.Conv2D(16, 1, name="b")(x))
    outputs = layers.Dense(3, name="out")(layers.GlobalAveragePooling2D(name="gap")(x))
    path = tmp_path / "m.keras"
    keras.Model(inputs, outputs).save(path)
    data = write_npz(tmp_path / "d.npz", np.ones((8, 4, 4, 2), np.float32), np.arange(8) % 3)
    _, report = _prune(cli, path, data, tmp_path, "--epochs", "0")
    (kept,) = [w for w in report["warnings"] if "kept whole" in w]
    assert kept.startswith("1 of 2 channel groups kept whole (16 channels)")
    assert "Activation(softmax) mixes the channels it normalises over" in kept
    (norm,) = [w for w in report["warnings"] if "LayerNormalization" in w]
    assert "ln" in norm and "surviving channels" in norm


def test_a_group_excluded_by_prune_layers_is_in_the_warning(cli, make_model, image_data, tmp_path):
    model = make_model("cnn", ".keras", train=False)
    _, report = _prune(
        cli, model, image_data, tmp_path, "--epochs", "0", "--set", "prune.layers.exclude=[conv]"
    )
    (kept,) = [w for w in report["warnings"] if "kept whole" in w]
    assert "conv excluded by prune.layers.exclude 'conv'" in kept


def test_a_softmax_that_is_the_models_output_is_not_a_warning():
    """MobileNetV3 ends in logits -> Activation(softmax): the logits' group is the output's
    width, kept whole by the model's contract, not a limitation worth a warning."""
    from prunecli.config import Prune
    from prunecli.core.schedules import OneShot
    from prunecli.structured import stage
    from prunecli.structured.pruner import ChannelPruner

    layers = keras.layers
    inputs = keras.Input((4, 4, 2))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(16, 3, name="a")(inputs))
    outputs = layers.Activation("softmax", name="predictions")(layers.Dense(3, name="logits")(x))
    pruner = ChannelPruner(keras.Model(inputs, outputs), Prune(granularity="channel"), OneShot)
    pruner.update(0)
    assert stage.warnings(pruner) == []
