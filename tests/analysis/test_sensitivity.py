"""``prunecli analyze``: every scan point checked against an independent prune-and-evaluate.

The model is a real tiny CNN saved to disk, the data real PNG folders; the expected points
are recomputed here with numpy masks (|w|, the lowest ``round(s * n)`` zeroed) and a plain
``model.predict``, not with prunecli's masking or evaluation code.
"""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
from helpers import (
    embedded_pngs,
    evaluate_with,
    magnitude_mask,
    parsed_events,
    run_json_logged,
    val_arrays,
    write_config,
)
from PIL import Image

LEVELS = [0.25, 0.5, 0.9]


@pytest.fixture
def scanned(cli, make_model, image_data, tmp_path):
    model_path = make_model("cnn", ".h5")
    cfg = write_config(tmp_path / "cfg.yaml", f"analyze:\n  levels: {LEVELS}\n")
    out = tmp_path / "scan"
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    result = cli("analyze", model_path, "-c", cfg, "--data", image_data, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert hashlib.sha256(model_path.read_bytes()).hexdigest() == digest  # input only read
    return model_path, out, json.loads(result.stdout)


def test_each_point_equals_an_independent_prune_and_evaluate(scanned, image_data):
    import keras

    model_path, _, document = scanned
    model = keras.models.load_model(model_path)
    x, y = val_arrays(image_data / "val")
    layers = ["conv", "hidden", "out"]
    assert [row["layer"] for row in document["layers"]] == layers
    kernels = {name: model.get_layer(name).kernel.numpy() for name in layers}
    expected_base = evaluate_with(model, {}, x, y)
    assert document["baseline"]["accuracy"] == expected_base[0]
    assert document["baseline"]["loss"] == pytest.approx(expected_base[1], rel=1e-5)
    rows = {(p["layer"], p["sparsity"]): p for p in document["points"]}
    assert len(rows) == len(document["points"]) == 3 * len(LEVELS) + 2 * len(LEVELS)
    for level in LEVELS:
        alone = {name: {name: magnitude_mask(kernels[name], level)} for name in layers}
        together = {name: magnitude_mask(kernels[name], level) for name in layers}
        for row_name, masks in [*alone.items(), ("<model:layer>", together)]:
            accuracy, loss = evaluate_with(model, masks, x, y)
            point = rows[(row_name, level)]
            assert point["accuracy"] == accuracy, (row_name, level)
            assert point["loss"] == pytest.approx(loss, rel=1e-5), (row_name, level)
            assert point["params"] == sum(kernels[name].size for name in masks)
    # global scope: the 90% point really is 90% of all kernel weights gone, and worse
    assert rows[("<model:global>", 0.9)]["accuracy"] <= document["baseline"]["accuracy"]
    worst = max(document["layers"], key=lambda row: row["sensitivity"])
    assert document["most_sensitive"] == worst["layer"]


def test_weights_are_bit_identical_after_the_scan(make_model, image_data):

    from prunecli import config
    from prunecli.analysis import context, scan
    from prunecli.formats import model_io
    from prunecli.progress import Reporter

    model, source = model_io.load(make_model("cnn", ".h5"))
    before = [w.numpy().tobytes() for w in model.weights]
    settings = config.load(
        None,
        {
            "data.train": str(image_data / "train"),
            "data.validation": str(image_data / "val"),
            "analyze.levels": [0.5, 0.95],
            "prune.method": "lamp",
        },
    )
    scope = context.prepare(model, source, settings, Reporter())
    result = scan.scan(scope.masker, scope.evaluator, settings.analyze.levels)
    assert result.evaluations == 1 + 3 * 2 + 2 * 2 == scope.evaluator.calls
    assert [w.numpy().tobytes() for w in model.weights] == before
    # and they really were pruned in between: the 95% global point is far worse
    assert result.curve("<model:global>")[-1].accuracy < result.baseline.accuracy


def test_csv_json_png_and_html_agree(scanned):
    from prunecli.analysis import plots

    _, out, document = scanned
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["sensitivity.json", "sensitivity.csv", "sensitivity.png", "model.png", "sensitivity.html"]
    )
    stored = json.loads((out / "sensitivity.json").read_text())
    assert stored.pop("prunecli_version") and stored.pop("schema_version") == 1
    assert stored == document
    with (out / "sensitivity.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [list(row) for row in rows[:1]] == [["layer", "params", "sparsity", "accuracy", "loss"]]
    parsed = [
        {
            "layer": row["layer"],
            "params": int(row["params"]),
            "sparsity": float(row["sparsity"]),
            "accuracy": float(row["accuracy"]),
            "loss": float(row["loss"]),
        }
        for row in rows
    ]
    assert parsed == document["points"]
    for name in ("sensitivity.png", "model.png"):
        with Image.open(out / name) as image:
            image.verify()
        with Image.open(out / name) as image:
            assert (image.format, image.size) == ("PNG", plots.PIXELS)
            assert len(set(image.convert("L").getdata())) > 10  # something was drawn
    # the page is self-contained: moved alone to an empty folder, its images still show
    alone = out.parent / "alone"
    alone.mkdir()
    page = (out / "sensitivity.html").replace(alone / "page.html").read_text()
    assert embedded_pngs(page) == [plots.PIXELS, plots.PIXELS]
    assert page.count("<tr>") == len(document["points"]) + 1  # the table, header included


def test_existing_outputs_need_force_and_bad_input_is_one_line(
    cli, make_model, image_data, tmp_path
):
    model_path = make_model("cnn", ".h5")
    out = tmp_path / "scan"
    out.mkdir()
    (out / "sensitivity.csv").write_text("mine\n")
    cfg = write_config(tmp_path / "cfg.yaml", "analyze:\n  levels: [0.5]\n")
    refused = cli("analyze", model_path, "-c", cfg, "--data", image_data, "-o", out)
    assert refused.exit_code == 2
    where = out / "sensitivity.csv"
    assert (
        refused.stderr
        == f"prunecli: error: {where}: already exists; pass --force to overwrite it\n"
    )
    assert (out / "sensitivity.csv").read_text() == "mine\n"
    no_data = cli("analyze", model_path, "-c", cfg, "-o", tmp_path / "other")
    assert no_data.exit_code == 2 and "set data.validation" in no_data.stderr
    assert len(no_data.stderr.splitlines()) == 1
    bad = write_config(tmp_path / "bad.yaml", "analyze:\n  levels: [0.5, 1.0]\n")
    invalid = cli("analyze", model_path, "-c", bad)
    assert invalid.exit_code == 2
    assert "analyze.levels: every level must be >= 0 and < 1, got 1.0" in invalid.stderr
    foreign = cli("analyze", model_path, "-c", cfg, "--data", image_data, "-o", out, "--force")
    assert foreign.exit_code == 2  # --force replaces only prunecli's own table
    assert "is not a prunecli sensitivity table" in foreign.stderr
    assert (out / "sensitivity.csv").read_text() == "mine\n"
    (out / "sensitivity.csv").unlink()
    first = cli("analyze", model_path, "-c", cfg, "--data", image_data, "-o", out)
    assert first.exit_code == 0, first.stderr
    forced = cli("analyze", model_path, "-c", cfg, "--data", image_data, "-o", out, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert (out / "sensitivity.csv").read_text().startswith("layer,params,")
    assert "scan 0/" in forced.stderr and "points: done" in forced.stderr  # plain lines


def test_knapsack_finds_the_brute_force_optimum():
    """On random curves, the allocation removes as many weights as the best of every
    combination of levels whose summed drop (in samples) fits the budget."""
    import itertools

    from prunecli.analysis import allocate, scan

    rng = np.random.default_rng(0)
    levels = [0.3, 0.6, 0.9]
    for trial in range(20):
        params = {f"l{i}": int(rng.integers(10, 1000)) for i in range(4)}
        lost = {name: np.sort(rng.integers(0, 6, len(levels))) for name in params}
        samples, budget = 100, int(rng.integers(0, 8))
        points = [
            scan.Point(name, params[name], level, 1.0 - lost[name][j] / samples, 0.0)
            for name in params
            for j, level in enumerate(levels)
        ]
        result = scan.Result(scan.Point("", 0, 0.0, 1.0, 0.0), points)
        found = allocate.knapsack(result, params, samples, budget)
        options = [[(0.0, 0), *zip(levels, lost[n], strict=True)] for n in params]
        best = max(
            sum(level * params[n] for n, (level, _) in zip(params, pick, strict=True))
            for pick in itertools.product(*options)
            if sum(int(cost) for _, cost in pick) <= budget
        )
        removed = sum(level * params[n] for n, level in found.targets.items())
        assert removed == pytest.approx(best), trial
        assert found.predicted_drop * samples <= budget + 1e-9


def test_json_log_format_gives_one_scan_event_per_layer(make_model, image_data, tmp_path):
    # a real process: JSON mode owns descriptor 2
    cfg = write_config(tmp_path / "cfg.yaml", "analyze:\n  levels: [0.5]\n  samples: 12\n")
    done = run_json_logged(
        "analyze", make_model(), "-c", cfg, "--data", image_data, "-o", tmp_path / "scan",
        "--log-format", "json", level="3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stream = parsed_events(done.stderr)
    scans = [(e["done"], e["total"], e["layer"]) for e in stream if e["event"] == "scan"]
    assert scans == [
        (0, 5, "conv"), (1, 5, "hidden"), (2, 5, "out"), (3, 5, "<model:layer>"),
        (4, 5, "<model:global>"), (5, 5, ""),
    ]  # fmt: skip
    assert [e["event"] for e in stream][-1] == "wrote"
    document = json.loads((tmp_path / "scan" / "sensitivity.json").read_text())
    assert document["samples"] == 12
