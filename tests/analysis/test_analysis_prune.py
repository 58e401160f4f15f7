"""``sparsity: auto``, ``--sweep`` and the plots and HTML every prune report gains.

Auto runs on the bundled sample (the issue's acceptance case): the measured drop is
within the budget and the sparsity, counted in the saved file's kernels, beats the best
uniform sparsity that meets the same budget, found here by an independent numpy
prune-and-evaluate over a grid.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    ROOT,
    auto_report,
    embedded_pngs,
    evaluate_with,
    magnitude_mask,
    val_arrays,
    write_config,
)
from PIL import Image

SAMPLE = ROOT / "sample_models" / "digits_cnn.h5"
DIGITS = ROOT / "sample_models" / "digits"
LAYERS = ("conv1", "conv2", "dense1", "logits")


def kernel_sparsity(path: Path, layers: tuple[str, ...]) -> float:
    import keras

    model = keras.models.load_model(path)
    kernels = [model.get_layer(name).kernel.numpy() for name in layers]
    return sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)


def test_auto_on_the_sample_meets_the_budget_and_beats_uniform(cli, tmp_path):
    import keras

    out = tmp_path / "auto.keras"
    budget = 0.01
    report = auto_report(cli, SAMPLE, DIGITS, out, budget)
    auto = report["auto"]
    assert set(auto["allocation"]) == set(LAYERS)
    # independently: each layer's saved sparsity is its allocation
    model = keras.models.load_model(out)
    for name, level in auto["allocation"].items():
        kernel = model.get_layer(name).kernel.numpy()
        assert np.sum(kernel == 0) == round(level * kernel.size), name
    reached = kernel_sparsity(out, LAYERS)
    assert reached == pytest.approx(report["after"]["sparsity"])
    # the best uniform level (grid of 0.05) that meets the budget, measured here
    original = keras.models.load_model(SAMPLE)
    x, y = val_arrays(DIGITS / "val")
    base, _ = evaluate_with(original, {}, x, y)
    kernels = {name: original.get_layer(name).kernel.numpy() for name in LAYERS}
    uniform = max(
        level
        for level in np.arange(0.0, 1.0, 0.05)
        if base
        - evaluate_with(original, {n: magnitude_mask(k, level) for n, k in kernels.items()}, x, y)[
            0
        ]
        <= budget
    )
    assert reached > uniform + 0.05, (reached, uniform)
    assert auto["uniform_within_budget"]["sparsity"] < reached
    assert auto["uniform"]["sparsity"] == pytest.approx(auto["sparsity"])
    assert auto["uniform"]["scan_drop"] > budget  # the same total, spread evenly, fails
    markdown = out.with_name("auto.report.md").read_text()
    assert "## sparsity: auto" in markdown and "| dense1 |" in markdown
    assert sorted(_images_in(out.with_name("auto.report.md"))) == [
        "auto.report.sensitivity.png", "auto.report.sparsity.png",
    ]  # fmt: skip
    assert auto["scan"]["most_sensitive"] in LAYERS and len(auto["scan"]["points"]) == 60


def test_auto_needs_a_budget_and_refuses_global_scope(cli, tmp_path):
    no_budget = cli(
        "prune", SAMPLE, "--data", DIGITS, "--sparsity", "auto", "-o", tmp_path / "a.keras"
    )
    assert no_budget.exit_code == 2
    assert "prune.sparsity auto needs an accuracy budget" in no_budget.stderr
    scoped = cli(
        "prune", SAMPLE, "--sparsity", "auto", "--max-accuracy-drop", "0.01",
        "--set", "prune.scope=global", "-o", tmp_path / "a.keras",
    )  # fmt: skip
    assert scoped.exit_code == 2 and "prune.scope global" in scoped.stderr
    assert not list(tmp_path.iterdir())


def _images_in(markdown: Path) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown.read_text())


def test_every_report_gains_plots_and_an_html_page(cli, make_model, image_data, tmp_path):
    from prunecli.analysis import plots

    out = tmp_path / "out"
    out.mkdir()
    cfg = write_config(
        tmp_path / "cfg.yaml",
        "prune:\n  sparsity: 0.75\n  schedule: {type: polynomial, end_epoch: 2, frequency: 2}\n"
        "finetune:\n  epochs: 2\n  batch_size: 16\n",
    )
    result = cli(
        "prune",
        make_model(),
        "-c",
        cfg,
        "--data",
        image_data,
        "-o",
        out / "p.keras",
        "--json",
        "-q",
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [row["epoch"] for row in report["finetune"]["loss_history"]] == [1, 2]
    assert sorted(p.name for p in out.iterdir()) == [
        "p.keras", "p.report.html", "p.report.json", "p.report.loss.png", "p.report.md",
        "p.report.schedule.png", "p.report.sparsity.png",
    ]  # fmt: skip
    referenced = _images_in(out / "p.report.md")
    assert sorted(referenced) == [
        "p.report.loss.png",
        "p.report.schedule.png",
        "p.report.sparsity.png",
    ]
    for name in referenced:
        with Image.open(out / name) as image:
            assert (image.format, image.size) == ("PNG", plots.PIXELS)
    page = (out / "p.report.html").read_text()
    assert embedded_pngs(page) == [plots.PIXELS] * len(referenced)  # no file needed
    assert not re.search(r'src="(?!data:)', page)
    # no fine-tuning, no HTML: only the sparsity bars
    bare = tmp_path / "bare"
    bare.mkdir()
    again = cli(
        "prune", make_model(), "--data", image_data, "-o", bare / "p.keras", "--epochs", "0",
        "--set", "output.html=false", "-q",
    )  # fmt: skip
    assert again.exit_code == 0, again.stderr
    assert sorted(p.name for p in bare.iterdir()) == [
        "p.keras", "p.report.json", "p.report.md", "p.report.sparsity.png",
    ]  # fmt: skip


RELOAD = """
import json, sys
import keras, numpy as np
found = {}
for path in sys.argv[1:]:
    model = keras.models.load_model(path)
    kernels = [w.numpy() for w in model.weights if w.path.endswith("kernel")]
    found[path] = sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
print(json.dumps({"sparsity": found, "prunecli": "prunecli" in sys.modules}))
"""


def test_sweep_writes_one_model_per_target_and_a_combined_report(
    cli, make_model, image_data, tmp_path
):
    out = tmp_path / "out"
    out.mkdir()
    result = cli(
        "prune", make_model(), "--data", image_data, "-o", out / "p.keras", "--epochs", "1",
        "--sweep", "0.5,0.8", "--json", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    combined = json.loads(result.stdout)
    assert sorted(p.name for p in out.iterdir() if ".sweep." in p.name) == [
        "p.sweep.html", "p.sweep.json", "p.sweep.md", "p.sweep.png",
    ]  # fmt: skip
    models = [out / "p.s50.keras", out / "p.s80.keras"]
    assert all(path.is_file() for path in models)
    assert all((out / f"p.s{tag}.report.json").is_file() for tag in (50, 80))
    assert json.loads((out / "p.sweep.json").read_text()) == combined
    done = subprocess.run(
        [sys.executable, "-c", RELOAD, *map(str, models)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    reloaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert reloaded["prunecli"] is False
    for row, path in zip(combined["runs"], models, strict=True):
        assert row["output"] == str(path)
        assert row["measured_sparsity"] == pytest.approx(reloaded["sparsity"][str(path)])
        assert row["measured_sparsity"] == pytest.approx(row["sparsity"], abs=1e-3)
    assert "p.sweep.png" in (out / "p.sweep.md").read_text()
    with Image.open(out / "p.sweep.png") as image:
        assert image.format == "PNG"
        assert embedded_pngs((out / "p.sweep.html").read_text()) == [image.size]


@pytest.mark.parametrize(
    ("builder", "suffix", "extra"),
    [
        ("cnn", ".h5", ()),
        ("residual", ".keras", ("--set", "prune.granularity=channel", "--set", "prune.round_to=2")),
    ],
    ids=["weights", "channels"],
)
def test_auto_gate_fails_with_exit_3_when_fine_tuning_loses_more_than_the_budget(
    cli, make_model, image_data, tmp_path, builder, suffix, extra
):
    """Budget 0: the allocation keeps only free levels; a wild learning rate then costs
    accuracy (under channels: the rebuilt, narrower model is fine-tuned into a worse one),
    and the gate (the same D) fails after the outputs are written."""
    out = tmp_path / "p.keras"
    result = cli(
        "prune", make_model(builder, suffix), "--data", image_data, "-o", out, "--epochs", "1",
        "--sparsity", "auto", "--max-accuracy-drop", "0", "--json", "-q",
        "--set", "finetune.learning_rate=1.0", *extra,
    )  # fmt: skip
    assert result.exit_code == 3, result.stderr
    report = json.loads(result.stdout)
    drop = report["before"]["accuracy"] - report["after"]["accuracy"]
    assert report["auto"]["scan_drop"] <= 0 and report["auto"]["measured_drop"] == drop > 0
    assert report["gate"] == {"max_accuracy_drop": 0.0, "accuracy_drop": drop, "passed": False}
    assert "more than --max-accuracy-drop 0.00 (outputs were written)" in result.stderr
    assert out.is_file() and out.with_name("p.report.json").is_file()
    if extra:
        assert report["after"]["flops"] < report["before"]["flops"]  # channels really went
