"""``prunecli analyze`` under ``prune.granularity: channel``: a row per coupled group.

Every group point is checked against an independent prune-and-evaluate: the channels to
remove are recomputed here with numpy (L2 norms of each producer's filters, normalised by
their mean and averaged over the group's producers, the lowest ``width - kept`` removed,
``kept`` rounded to ``round_to``), the narrower model is built by ``structured.rebuild``
from those channels and evaluated with a plain ``model.predict``; its parameter count and
MACs give the removed parameters and FLOPs the scan must report.
"""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
from helpers import (
    STRUCTURED_BUILDERS,
    auto_report,
    embedded_pngs,
    randomized,
    run_python,
    sample,
    val_arrays,
    write_config,
)

LEVELS = [0.25, 0.5, 0.75]
ROUND_TO = 2
GROUPS = {"stem+branch": ("stem", "branch"), "conv2": ("conv2",)}


@pytest.fixture
def scanned(cli, make_model, image_data, tmp_path):
    model_path = make_model("residual", ".keras")
    cfg = write_config(
        tmp_path / "cfg.yaml",
        f"prune:\n  granularity: channel\n  method: l2\n  round_to: {ROUND_TO}\n"
        f"analyze:\n  levels: {LEVELS}\n",
    )
    out = tmp_path / "scan"
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    result = cli("analyze", model_path, "-c", cfg, "--data", image_data, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert hashlib.sha256(model_path.read_bytes()).hexdigest() == digest
    return model_path, out, json.loads(result.stdout), result.stderr


def kept_channels(model, producers: tuple[str, ...], level: float) -> np.ndarray:
    """The channels a group keeps at ``level``, recomputed from the kernels alone."""
    norms = []
    for name in producers:
        kernel = model.get_layer(name).kernel.numpy()
        per_channel = np.sqrt((kernel.reshape(-1, kernel.shape[-1]) ** 2).sum(axis=0))
        norms.append(per_channel / per_channel.mean())
    score = np.mean(norms, axis=0)
    width = score.size
    keep = int(min(width, max(ROUND_TO, ROUND_TO * round(width * (1 - level) / ROUND_TO))))
    return np.sort(np.argsort(-score, kind="stable")[:keep])


def rebuilt_with(model, kept: dict[str, np.ndarray]):
    """``structured.rebuild``'s narrower model keeping ``kept`` (group name -> channels)."""
    from prunecli.structured import graph, groups, rebuild

    coupling = graph.build(model)
    found = coupling.groups()
    by_name = {"+".join(g.producers): g for g in found}
    keep = {g.id: np.arange(g.width) for g in found}
    for name, channels in kept.items():
        keep[by_name[name].id] = channels
    return rebuild.rebuild(model, groups.Plan(coupling, found, keep))


def evaluated(model, x, y) -> tuple[float, float]:
    import keras

    probabilities = model.predict(x, verbose=0)
    loss = keras.losses.sparse_categorical_crossentropy(y, probabilities)
    return float(np.mean(np.argmax(probabilities, -1) == y)), float(np.mean(loss))


def test_each_group_point_equals_the_rebuilt_model(scanned, image_data):
    import keras

    from prunecli.reporting import flops

    model_path, _, document, _ = scanned
    model = keras.models.load_model(model_path)
    x, y = val_arrays(image_data / "val")
    assert [row["layer"] for row in document["layers"]] == list(GROUPS)
    assert [g["producers"] for g in document["groups"]] == [list(p) for p in GROUPS.values()]
    base_macs = flops.count(model)
    assert document["flops"] == base_macs
    rows = {(p["layer"], p["sparsity"]): p for p in document["points"]}
    assert len(rows) == len(document["points"]) == (2 + 2) * len(LEVELS)
    for level in LEVELS:
        kept = {name: kept_channels(model, p, level) for name, p in GROUPS.items()}
        cases = [(name, {name: kept[name]}) for name in GROUPS] + [("<model:layer>", kept)]
        for row_name, keep in cases:
            narrow = rebuilt_with(model, keep)
            accuracy, loss = evaluated(narrow, x, y)
            point = rows[(row_name, level)]
            assert point["accuracy"] == accuracy, (row_name, level)
            assert point["loss"] == pytest.approx(loss, rel=1e-5, abs=1e-6), (row_name, level)
            removed = sum(model.get_layer(GROUPS[n][0]).filters - len(k) for n, k in keep.items())
            assert point["channels_removed"] == removed
            assert point["params_removed"] == model.count_params() - narrow.count_params()
            assert point["flops_removed"] == base_macs - flops.count(narrow)
    assert rows[("stem+branch", 0.75)]["channels_removed"] == 6  # 8 * 0.25 = 2 kept
    assert rows[("conv2", 0.5)]["channels_removed"] == 8  # 16 * 0.5 = 8 kept
    # the global rows prune something, and the scan really changed accuracy somewhere
    assert rows[("<model:global>", 0.75)]["channels_removed"] > 0
    assert any(p["accuracy"] != document["baseline"]["accuracy"] for p in document["points"])


def test_group_outputs_agree_and_the_page_stands_alone(scanned):
    from prunecli.analysis import plots

    _, out, document, stderr = scanned
    with (out / "sensitivity.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    columns = ["layer", "params", "sparsity", "accuracy", "loss", "group", "channels",
               "channels_removed", "params_removed", "flops_removed"]  # fmt: skip
    assert list(table[0]) == columns
    for row, point in zip(table, document["points"], strict=True):
        assert row["layer"] == point["layer"]
        assert float(row["accuracy"]) == point["accuracy"]
        assert int(row["flops_removed"]) == point["flops_removed"]
        assert row["group"] == ("" if point["group"] is None else str(point["group"]))
    stored = json.loads((out / "sensitivity.json").read_text())
    assert {k: v for k, v in stored.items() if k in document} == document
    page = (out / "sensitivity.html").read_text()
    assert embedded_pngs(page) == [plots.PIXELS, plots.PIXELS]
    assert "Most sensitive group" in page
    # progress: not a terminal, so one plain line per group (and per model row), then done
    lines = [line for line in stderr.splitlines() if line.startswith("scan ")]
    assert lines == [
        "scan 0/12 points: stem+branch", "scan 3/12 points: conv2",
        "scan 6/12 points: <model:layer>", "scan 9/12 points: <model:global>",
        "scan 12/12 points: done",
    ]  # fmt: skip
    assert "scanning 2 channel groups x 3 levels" in stderr


def test_weights_are_bit_identical_after_a_group_scan(make_model, image_data):
    from prunecli import config
    from prunecli.analysis import context, scan
    from prunecli.formats import model_io
    from prunecli.progress import Reporter

    model, source = model_io.load(make_model("residual", ".keras"))
    before = [w.numpy().tobytes() for w in model.weights]
    settings = config.load(
        None,
        {
            "data.validation": str(image_data / "val"),
            "analyze.levels": [0.5, 0.9],
            "prune.granularity": "channel",
            "prune.method": "fpgm",
            "prune.round_to": 2,  # the default 8 would leave these 8- and 6-wide groups whole
        },
    )
    scope = context.prepare(model, source, settings, Reporter())
    seen: list[tuple[int, int, str]] = []
    result = scan.scan(
        scope.masker, scope.evaluator, settings.analyze.levels, lambda *a: seen.append(a)
    )
    assert result.evaluations == 1 + 2 * 2 + 2 * 2 == scope.evaluator.calls
    assert [w.numpy().tobytes() for w in model.weights] == before
    assert seen[0] == (0, 8, "stem+branch") and seen[-1] == (8, 8, "")
    assert result.curve("<model:layer>")[-1].flops_removed > 0


def test_a_layer_normalised_group_is_evaluated_on_the_rebuilt_model():
    """LayerNormalization counts a zeroed channel in its statistics: the scan evaluates
    those points on the rebuilt model, so they still equal it."""
    import keras

    from prunecli.analysis import channels, scan
    from prunecli.config import Prune
    from prunecli.reporting import evaluate

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    hidden = keras.layers.LayerNormalization(name="ln")(keras.layers.Dense(8, name="d1")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(hidden))
    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    y = np.arange(40) % 3
    prune = Prune(granularity="channel", method="l1", round_to=1)
    masker = channels.GroupMasker(model, prune)
    evaluator = scan.Evaluator(
        model, x, y, evaluate.Task("sparse"), "sparse_categorical_crossentropy"
    )
    assert masker.inexact  # the d1 group feeds the LayerNorm
    result = scan.scan(masker, evaluator, [0.5])
    kept = np.sort(np.argsort(-np.abs(model.get_layer("d1").kernel.numpy()).sum(0))[:4])
    narrow = rebuilt_with(model, {"d1": kept})
    accuracy, loss = evaluated(narrow, x, y)
    point = result.curve("d1")[0]
    assert point.accuracy == accuracy and point.loss == pytest.approx(loss, rel=1e-5)


RELOAD = """
import json, sys
import keras
model = keras.models.load_model(sys.argv[1])
print(json.dumps({"filters": {n: model.get_layer(n).filters for n in ("stem", "branch", "conv2")},
                  "prunecli": "prunecli" in sys.modules}))
"""


def test_channel_auto_meets_the_budget_and_removes_more_flops_than_uniform(
    cli, make_model, image_data, tmp_path
):
    """The best uniform channel fraction within the same budget is found here on a grid
    of 1/32, each candidate rebuilt from independently chosen channels and evaluated."""
    import keras

    from prunecli.reporting import flops

    model_path, out, budget = make_model("residual", ".keras"), tmp_path / "auto.keras", 0.05
    report = auto_report(
        cli, model_path, image_data, out, budget,
        "--set", "prune.granularity=channel", "--set", "prune.method=l2",
        "--set", f"prune.round_to={ROUND_TO}",
    )  # fmt: skip
    auto = report["auto"]
    assert set(auto["allocation"]) == set(GROUPS)
    reached = 1 - report["after"]["flops"] / report["before"]["flops"]
    assert auto["flops_removed"] == pytest.approx(reached)  # predicted from shapes = rebuilt
    # the saved file (read by plain Keras, no prunecli) has the allocated widths
    done = run_python(RELOAD, out)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads(done.stdout.strip().splitlines()[-1])
    model = keras.models.load_model(model_path)
    for name, producers in GROUPS.items():
        kept = len(kept_channels(model, producers, auto["allocation"][name]))
        assert all(saved["filters"][p] == kept for p in producers), name
    assert saved["prunecli"] is False
    x, y = val_arrays(image_data / "val")
    base, base_macs = evaluated(model, x, y)[0], flops.count(model)
    uniform, seen = 0.0, set()
    for fraction in np.arange(0, 1, 1 / 32):
        keep = {name: kept_channels(model, p, fraction) for name, p in GROUPS.items()}
        if (key := tuple(len(k) for k in keep.values())) in seen:
            continue  # rounding gave the same widths as a fraction already tried
        seen.add(key)
        narrow = rebuilt_with(model, keep)
        if base - evaluated(narrow, x, y)[0] <= budget + 1e-12:
            uniform = max(uniform, 1 - flops.count(narrow) / base_macs)
    assert reached > uniform, (reached, uniform)
    assert auto["uniform_within_budget"]["flops_removed"] <= uniform + 1e-9
    markdown = out.with_name("auto.report.md").read_text()
    assert "FLOPs removed" in markdown
    stem = auto["allocation"]["stem+branch"]
    kept = len(kept_channels(model, GROUPS["stem+branch"], stem))
    assert f"| stem+branch | {100 * stem:.1f}% | {kept} of 8 |" in markdown


@pytest.mark.parametrize(
    "name", ["seq_cnn", "concat", "transformer", "mixed", "convnext", "ops_nodes"]
)
def test_zeroing_equals_the_rebuild_for_every_coupling_pattern(name):
    """Every point of a scan (groups, whole model, global) on the structured test models
    (Flatten, Concatenate, depthwise, attention heads, separable and transposed convs,
    merges): accuracy, loss, parameters and MACs equal those of ``structured.rebuild``'s
    model for the same channels; the weights come back bit for bit."""
    import keras

    from prunecli.analysis import channels, scan
    from prunecli.config import Prune
    from prunecli.reporting import evaluate, flops
    from prunecli.structured import rebuild

    keras.utils.set_random_seed(0)
    model = randomized(STRUCTURED_BUILDERS[name]())
    x = sample(model, count=48)
    y = np.argmax(model.predict(x, verbose=0), -1)  # accuracy = agreement with the original
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    evaluator = scan.Evaluator(model, x, y, evaluate.Task("sparse"), loss)
    masker = channels.GroupMasker(model, Prune(granularity="channel", method="l2", round_to=1))
    before = [w.numpy().tobytes() for w in model.weights]
    base_macs = flops.count(model)
    for targets, point_of in _plans(masker, [0.5]):
        point_of()  # sets the plan
        narrow = rebuild.rebuild(model, masker.plan)
        accuracy, got_loss = masker.evaluate(evaluator)
        point = masker.point("<model:layer>", 0.0, accuracy, got_loss)
        expected = evaluator.on(narrow)()
        assert accuracy == expected[0], targets
        assert got_loss == pytest.approx(expected[1], rel=1e-4, abs=1e-5), targets
        assert point.params_removed == model.count_params() - narrow.count_params(), targets
        assert point.flops_removed == base_macs - flops.count(narrow), targets
    masker.restore()
    assert [w.numpy().tobytes() for w in model.weights] == before


def _plans(masker, levels):
    """(what, how to apply it) for each group alone, all groups, and global, per level."""
    for level in levels:
        for group in masker.layers:
            yield (group, level), lambda g=group, lv=level: masker.apply({g: lv})
        yield ("all", level), lambda lv=level: masker.apply(dict.fromkeys(masker.layers, lv))
        yield ("global", level), lambda lv=level: masker.apply_global(lv)
