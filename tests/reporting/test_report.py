"""reporting/report.py: the report assembled by ``build``, its numbers and its two views.

Every expected number is counted by hand in the comment beside it; the kernels are numpy
arrays (``LayerInfo`` reads them with ``np.asarray``), so no TensorFlow runs here.
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
from rich.console import Console

from prunecli import __version__, config
from prunecli.core.granularity import Pattern
from prunecli.pruning.selection import LayerInfo
from prunecli.reporting import report

# hidden: 4x2 kernel with 3 zeros; out: 2x2 kernel with 1 zero; bn: a layer left alone.
HIDDEN = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [4.0, 5.0]])
OUT = np.array([[0.0, 1.0], [2.0, 3.0]])
BIAS = np.array([0.0, 1.0])


def layers() -> list[LayerInfo]:
    return [
        LayerInfo("hidden", "Dense", 10, {"kernel": HIDDEN}, {"kernel": -2}, target=0.5),
        LayerInfo("out", "Dense", 6, {"kernel": OUT}, {"kernel": -2}, target=0.25),
        LayerInfo("bn", "BatchNormalization", 4, reason="nothing to prune"),
    ]


def stats(**values: object) -> dict[str, object]:
    base = dict.fromkeys(
        ("params_total", "params_nonzero", "sparsity", "size_bytes", "size_gzip_bytes")
    )
    return base | {"accuracy": None, "loss": None} | values


def built(**changes: object) -> dict:
    parts = {
        "config": config.load(None),
        "environment": {"strategy": "default"},
        "input": {"path": "m.h5", "format": "h5", "sha256": "a"},
        "output": {"path": "p.keras", "format": "keras", "sha256": "b"},
        "exports": [],
        "before": stats(params_total=2000, params_nonzero=2000, sparsity=0.0, accuracy=0.9,
                        loss=0.25, size_bytes=512, size_gzip_bytes=400),
        "after": stats(params_total=2000, params_nonzero=500, sparsity=0.75, accuracy=0.85,
                       loss=0.5, size_bytes=3 * 1024**2, size_gzip_bytes=1536),
        "layers": report.layer_rows(layers(), Pattern()),
        "finetune": {"epochs": 0},
        "data": {"train_samples": 1},
        "timing": {"total_s": 1.0},
        "gate": None,
    }  # fmt: skip
    return report.build(**(parts | changes))


def test_build_keeps_the_documented_key_order_and_passes_parts_through():
    found = built(gate={"max_accuracy_drop": 0.1, "accuracy_drop": 0.05, "passed": True})
    assert list(found) == [
        "schema_version", "prunecli_version", "environment", "config", "input", "output",
        "exports", "before", "after", "speedup", "latency_backend", "layers", "groups",
        "finetune", "data", "timing", "gate", "warnings",
    ]  # fmt: skip
    assert (found["speedup"], found["latency_backend"], found["groups"]) == (None, None, None)
    assert found["warnings"] == []  # a list even when no stage warned
    assert found["schema_version"] == report.SCHEMA_VERSION == 1
    assert found["prunecli_version"] == __version__
    assert found["config"]["prune"]["sparsity"] == config.load(None).prune.sparsity
    assert found["input"] == {"path": "m.h5", "format": "h5", "sha256": "a"}
    assert found["gate"]["passed"] is True
    assert report.to_json(found).endswith("}\n")


def test_model_stats_counts_every_weight_and_the_selected_kernels_only():
    model = SimpleNamespace(weights=[HIDDEN, BIAS, OUT, np.zeros(4)])
    found = report.model_stats(model, layers())
    # weights: 8 + 2 + 4 + 4 = 18; non-zero: 5 + 1 + 3 + 0 = 9
    # selected kernels: hidden (8) + out (4) = 12 weights (12 / 18 of all), 3 + 1 = 4 zeros
    assert found == {
        "params_total": 18,
        "params_nonzero": 9,
        "prunable_params": 12,
        "prunable_share": 12 / 18,
        "sparsity": 4 / 12,
    }
    nothing = [LayerInfo("bn", "BatchNormalization", 4)]
    assert report.model_stats(model, nothing)["sparsity"] == 0.0  # no kernel: 0, not nan


def test_layer_rows_one_per_layer_with_its_kernel_sparsity():
    rows = report.layer_rows(layers(), Pattern())
    assert list(rows[0]) == [
        "path", "type", "params", "target_sparsity", "sparsity", "pruned", "reason",
        "pattern_ok", "kernels", "trainable",
    ]  # fmt: skip
    assert [r["kernels"] for r in rows] == [["hidden/kernel"], ["out/kernel"], []]
    assert {r["trainable"] for r in rows} == {True}
    assert [(r["path"], r["target_sparsity"], r["sparsity"], r["pruned"]) for r in rows] == [
        ("hidden", 0.5, 3 / 8, True),
        ("out", 0.25, 1 / 4, True),
        ("bn", None, None, False),
    ]
    assert rows[2]["reason"] == "nothing to prune"
    assert {r["pattern_ok"] for r in rows} == {None}  # unstructured: nothing to check


def test_layer_rows_check_the_pattern_on_selected_kernels():
    # 1:2 along the reduction axis (-2, down each column): hidden's columns are (1, 0 | 3, 4)
    # and (0, 2 | 0, 5): groups (3, 4) keep two, so hidden fails; out's (0, 2), (1, 3) fail.
    rows = report.layer_rows(layers(), Pattern("nm", n=1, m=2))
    assert [r["pattern_ok"] for r in rows] == [False, False, None]
    kept = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 5.0]])
    good = LayerInfo("hidden", "Dense", 10, {"kernel": kept}, {"kernel": -2}, target=0.5)
    assert report.layer_rows([good], Pattern("nm", n=1, m=2))[0]["pattern_ok"] is True


def test_markdown_rows_are_computed_from_the_report():
    text = report.to_markdown(built())
    lines = text.splitlines()
    assert lines[0] == "# prunecli report: m.h5"
    assert lines[2] == "Output: `p.keras` (keras)"
    assert "| parameters | 2,000 | 2,000 | 1.00x |" in lines
    assert "| non-zero parameters | 2,000 | 500 | 0.25x |" in lines
    assert "| sparsity (selected kernels) | 0.00% | 75.00% | +75.00 pt |" in lines
    assert "| size on disk | 512 B | 3.00 MiB | 6144.00x |" in lines
    assert "| size gzipped | 400 B | 1.5 KiB | 3.84x |" in lines
    assert "| accuracy | 90.00% | 85.00% | -5.00 pt |" in lines
    assert "| loss | 0.2500 | 0.5000 | +0.2500 |" in lines
    assert "| hidden | Dense | 10 | 50.00% | 37.50% |  |" in lines
    assert "| bn | BatchNormalization | 4 | n/a | n/a | nothing to prune |" in lines
    assert "Gate" not in text and "artifact" not in text


def test_markdown_gate_exports_and_global_scope_notes():
    cfg = config.load(None, {"prune.scope": "global"})
    export = {"path": "p.tflite", "format": "tflite", "size_bytes": 2048, "size_gzip_bytes": 100,
              "accuracy": 0.8, "latency_ms": 1.5, "note": "float kernels",
              "before": {"size_bytes": 4096, "size_gzip_bytes": None, "accuracy": None,
                         "latency_ms": 2.0}}  # fmt: skip
    gate = {"max_accuracy_drop": 0.01, "accuracy_drop": 0.05, "passed": False}
    lines = report.to_markdown(built(config=cfg, exports=[export], gate=gate)).splitlines()
    assert "| hidden | Dense | 10 | 50.00% | 37.50% | global threshold |" in lines
    assert "| artifact | size | gzipped | accuracy | latency ms (batch 1) |" in lines
    assert (
        "| p.tflite (tflite) | 4.0 KiB → 2.0 KiB | n/a → 100 B | n/a → 80.00% | 2.0000 → 1.5000 |"
    ) in lines
    assert "note (tflite): float kernels" in lines
    assert "Gate: accuracy drop 5.00% (max 1.00%): FAILED" in lines


def test_render_prints_the_same_rows_as_tables():
    stream = io.StringIO()
    report.render(built(), Console(file=stream, width=200, color_system=None))
    text = stream.getvalue()
    assert "prunecli: before / after" in text and "layers" in text
    assert "deployed" not in text  # no exports, no third table
    for cells in (("non-zero parameters", "2,000", "500", "0.25x"),
                  ("hidden", "Dense", "50.00%", "37.50%")):  # fmt: skip
        (line,) = [line for line in text.splitlines() if cells[0] in line]
        positions = [line.index(cell) for cell in cells]
        assert positions == sorted(positions), line
