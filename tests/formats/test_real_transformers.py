"""keras_hub transformers, a user's registered layer and multi-input data, end to end.

Tiny BertClassifier / DistilBertClassifier / ViTImageClassifier (built from small configs,
nothing downloaded) are pruned through their composite layers; each saved file is reloaded
in a process that imports keras_hub and never prunecli, and its matrices counted there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import real_models
from real_models import kernel_scope, load_elsewhere

pytest.importorskip("keras_hub")

SPARSITY = 0.5


def prune_json(cli, *args) -> dict:
    result = cli("prune", *args, "--json", "--quiet", "--force")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name -> (model file, data file)."""
    root = tmp_path_factory.mktemp("hub")
    tokens = real_models.token_data(root / "tokens.npz")
    images = root / "images.npz"
    real_models.image_data(images, size=16)
    return {
        "bert": (real_models.bert(root / "bert.keras"), tokens),
        "distilbert": (real_models.distilbert(root / "distilbert.keras"), tokens),
        "vit": (real_models.vit(root / "vit.keras"), images),
    }


def test_keras_hub_classifiers_are_pruned_through_their_composite_layers(cli, hub, tmp_path):
    """One fine-tuning epoch each; >= 90% of the matrices in scope, every one on target."""
    outputs, reports = [], {}
    for name, (model, data) in hub.items():
        out = tmp_path / f"{name}.pruned.keras"
        reports[name] = prune_json(
            cli, model, "-o", out, "--epochs", "1", "--sparsity", SPARSITY,
            "--set", f"data.train={data}", "--set", "finetune.learning_rate=0.001",
        )  # fmt: skip
        outputs.append(out)
    found = load_elsewhere(outputs)
    for name, out in zip(hub, outputs, strict=True):
        report = reports[name]
        total, in_scope, off = kernel_scope(found[str(out)]["weights"], SPARSITY)
        assert off == 0, name
        assert in_scope / total >= 0.9, (name, in_scope, total)
        assert in_scope == report["after"]["prunable_params"], name
        share = report["after"]["prunable_params"] / report["after"]["params_total"]
        assert report["after"]["prunable_share"] == pytest.approx(share)
        assert report["after"]["sparsity"] == pytest.approx(SPARSITY, abs=1e-3)
        # ViT's patch embedding (a conv inside a keras_hub layer) has no MAC counter yet:
        # the report says so instead of a silent null
        uncounted = "flops is null: vi_t_backbone/vit_patching_and_embedding"
        assert [w for w in report["warnings"] if not w.startswith(uncounted)] == [], name
        kernels = [k for row in report["layers"] for k in row["kernels"]]
        assert any(k.endswith("/query/kernel") for k in kernels), name
        kept = {row["type"]: row["reason"] for row in report["layers"] if not row["pruned"]}
        assert "LayerNormalization" in kept
    bert_rows = {row["path"]: row for row in reports["bert"]["layers"]}
    assert "position embeddings are kept" in bert_rows["bert_backbone/position_embedding"]["reason"]
    attention = bert_rows["bert_backbone/transformer_layer_0/self_attention_layer"]
    assert attention["kernels"][0] == (
        "bert_backbone/transformer_layer_0/self_attention_layer/query/kernel"
    )
    assert reports["bert"]["finetune"]["loss"] == "sparse_categorical_crossentropy"
    assert (
        reports["bert"]["data"]["train_samples"] + reports["bert"]["data"]["validation_samples"]
        == 96
    )


def test_selection_regexes_match_kernel_paths_and_inspect_lists_them(cli, hub, tmp_path):
    model, _ = hub["bert"]
    report = prune_json(
        cli, model, "-o", tmp_path / "b.keras", "--epochs", "0",
        "--set", "prune.layers.exclude=['.*/attention_output/kernel', '.*token_embedding']",
        "--set", "prune.layers.overrides={'.*feedforward_intermediate_dense/kernel': 0.8}",
    )  # fmt: skip
    rows = {row["path"]: row for row in report["layers"]}
    attention = rows["bert_backbone/transformer_layer_1/self_attention_layer"]
    assert attention["pruned"] is False and "attention_output" in attention["reason"]
    assert rows["bert_backbone/token_embedding"]["pruned"] is False
    dense = rows["bert_backbone/transformer_layer_0/feedforward_intermediate_dense"]
    assert dense["target_sparsity"] == 0.8 and dense["sparsity"] == pytest.approx(0.8, abs=0.01)
    result = cli("inspect", model, "--json")
    assert result.exit_code == 0, result.stderr
    listed = [k for row in json.loads(result.stdout)["layers"] for k in row["kernels"]]
    assert "bert_backbone/transformer_layer_1/feedforward_output_dense/kernel" in listed


def test_low_coverage_is_warned_with_the_biggest_layers_left_out(cli, hub, tmp_path):
    model, _ = hub["vit"]
    result = cli(
        "prune", model, "-o", tmp_path / "v.keras", "--epochs", "0", "--force",
        "--set", "prune.layers.include=['predictions']",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "1 layers selected, holding 0.9% of the parameters" in result.stderr
    assert "warning: the selected kernels hold only 0.9% of the parameters" in result.stderr
    assert "vi_t_backbone/vit_encoder/transformer_block_1/mha (MultiHeadAttention" in (
        result.stderr
    )


def test_multi_input_mismatches_are_one_line_naming_the_input(cli, hub, tmp_path):
    model, _ = hub["bert"]
    cases = {
        "missing": ({"token_ids": np.ones((8, 8), np.int32)}, "segment_ids"),
        "float": (
            {name: np.ones((8, 8), np.float32) for name in ("token_ids", "segment_ids")}
            | {"padding_mask": np.ones((8, 8), np.int32)},
            "input 'segment_ids' expects int32 of shape (any, any), found float32 of shape (8, 8)",
        ),
        "rank": (
            {name: np.ones((8, 8, 2), np.int32) for name in ("token_ids", "segment_ids")}
            | {"padding_mask": np.ones((8, 8), np.int32)},
            "input 'segment_ids' expects int32",
        ),
    }
    for name, (arrays, message) in cases.items():
        data = tmp_path / f"{name}.npz"
        np.savez(data, y=np.arange(8) % 3, **arrays)
        result = cli("prune", model, "--epochs", "0", "--set", f"data.train={data}", "--force",
                     "-o", tmp_path / "x.keras")  # fmt: skip
        assert result.exit_code == 2, (name, result.stderr)
        assert message in result.stderr, name
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_user_registered_layer_needs_import_and_then_prunes(cli, tmp_path):
    """Built here, then its registration removed (``get_custom_objects`` is Keras's global
    registry), so the refusal is real; pruned with ``--import`` in a fresh process."""
    import keras

    source = tmp_path / "my_layers.py"
    source.write_text(real_models.USER_MODULE)
    spec = importlib.util.spec_from_file_location("user_layers_under_test", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(tmp_path / "user.keras")
    del keras.saving.get_custom_objects()["my_layers>TransformerBlock"]
    data = real_models.token_data(tmp_path / "tokens.npz", names=False)
    refused = cli("prune", tmp_path / "user.keras", "--epochs", "0", "--force")
    assert refused.exit_code == 2, refused.stderr
    assert "'TransformerBlock'" in refused.stderr and "--import MODULE" in refused.stderr
    args = ["-m", "prunecli", "prune", "user.keras", "--set", f"data.train={data}", "--epochs",
            "1", "-o", "out.keras", "--json", "--quiet", "--import", "my_layers"]  # fmt: skip
    done = _run(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    inside = {row["path"]: row["type"] for row in report["layers"] if row["pruned"]}
    assert inside == {
        "embed": "Embedding",
        "block/multi_head_attention": "MultiHeadAttention",
        "block/sequential/dense": "Dense",
        "block/sequential/dense_1": "Dense",
        "out": "Dense",
    }
    found = load_elsewhere([tmp_path / "out.keras"], ("my_layers",), cwd=tmp_path)
    total, in_scope, off = kernel_scope(found[str(tmp_path / "out.keras")]["weights"], SPARSITY)
    assert off == 0 and in_scope / total >= 0.9
    assert report["config"]["input"]["imports"] == ["my_layers"]


def test_keras_hub_file_loads_in_a_process_that_never_imported_keras_hub(hub, tmp_path):
    """prunecli imports the package the file names (``keras_hub>...``), nothing else."""
    model, _ = hub["distilbert"]
    done = _run("-m", "prunecli", "inspect", str(model), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)["layers"]
    assert any(row["type"] == "ReversibleEmbedding" and row["prunable"] for row in rows)


def test_layer_table_looks_up_subclasses_and_reads_einsum_axes():
    import keras
    import keras_hub

    from prunecli.pruning import layers

    assert layers.einsum_axis("abc,cde->abde") == -3  # MHA query: sums over the model dim
    assert layers.einsum_axis("abcd,cde->abe") == -2  # MHA output: heads, then head_dim
    assert layers.einsum_axis("ab,bc->ac") == -2
    dense = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 4))
    assert layers.lookup(dense) == (("kernel", -2),)
    tied = keras_hub.layers.ReversibleEmbedding(10, 4)
    assert layers.lookup(tied) == layers.TABLE["ReversibleEmbedding"]

    class MyDense(keras.layers.Dense):  # a user's subclass is still a Dense
        pass

    assert layers.lookup(MyDense(3)) == layers.TABLE["Dense"]
    positions = keras.layers.Embedding(16, 4, name="position_embedding")
    assert isinstance(layers.lookup(positions), layers.Kept)
    assert layers.lookup(keras.layers.Layer()) is None
