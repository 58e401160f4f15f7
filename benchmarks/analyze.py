"""Sensitivity scan cost, and what ``sparsity: auto`` buys over a uniform sparsity.

Scan: the sample model (4 layers x 10 levels) and MobileNetV2 (alpha 0.35, weights=None,
labels = its own unpruned predictions on 32 random images, so accuracy means agreement
with the unpruned model). ``seconds`` is the whole scan (masks, assignments, evaluations);
``eval_seconds`` is one evaluation pass times the number of evaluations, measured as that
many plain passes (same evaluator, weights unchanged) right before and right after the
scan, averaged; ``overhead`` = seconds / eval_seconds - 1 (target <= 0.20). The sample
runs 5 such rounds and the median round is kept (MobileNetV2: one round, ~3 minutes). The
evaluator is traced once before timing (a one-off cost, printed apart).

Auto: the sample at D = 1 point, no fine-tuning (``--epochs 0``: the allocation alone):
``prunecli prune --sparsity auto`` against the highest uniform sparsity (layer scope,
every layer the same) whose measured drop is within D, found by bisection to 1/128 with
real prune runs. Both drops are measured by the runs' own before/after accuracy. With
``--finetune`` the same comparison also runs with the quickstart fine-tune (3 epochs,
polynomial schedule), printed only.

Channel auto (key ``channel_auto``): the ResNet-style sample (``models.residual_cnn``,
trained as ``benchmarks/structured.py`` trains it: 20 epochs on the digits) at D = 1
point, ``granularity: channel`` (l2 scores, layer scope, ``round_to`` 8), no fine-tuning:
``sparsity: auto`` against the highest uniform channel fraction within D (bisection to
1/128, real prune runs). The figure compared is the share of FLOPs (MACs) removed, from
each run's before/after ``flops``. The same again with ``round_to`` 1 (key
``channel_auto_round_to_1``): with 8, a 16-channel group can only keep 8 or 16.
``--channel-only`` runs just these rows and updates those keys of ``analyze.json`` (the
other keys are kept).

    .venv/bin/python benchmarks/analyze.py [--finetune] [--channel-only]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from prunecli import runtime

runtime.start(seed=0)  # quiet TensorFlow start-up, before anything imports Keras

import keras  # noqa: E402

from prunecli import config, data, pipeline  # noqa: E402
from prunecli.analysis import context, scan  # noqa: E402
from prunecli.formats import model_io  # noqa: E402
from prunecli.progress import Reporter  # noqa: E402
from prunecli.pruning import selection  # noqa: E402
from prunecli.reporting import evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_models" / "digits_cnn.h5"
DIGITS = ROOT / "sample_models" / "digits"
RESULTS = ROOT / "benchmarks" / "results" / "analyze.json"
BUDGET = 0.01


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finetune", action="store_true", help="also compare with fine-tuning")
    parser.add_argument("--channel-only", action="store_true", help="only the channel row")
    args = parser.parse_args()
    print(f"machine: {runtime.machine()}")
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if not args.channel_only:
        scans = [_timed_scan(*_sample(), reps=5), _timed_scan(*_mobilenet(), reps=1)]
        _print_scans(scans)
        auto = _auto_vs_uniform(epochs=0)
        _print_auto("no fine-tuning", auto)
        if args.finetune:
            _print_auto("quickstart fine-tune", _auto_vs_uniform(epochs=3))
        results |= {"scan": scans, "auto": auto}
    results |= _channel_rows()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


def _settings(**overrides: Any) -> config.Config:
    return config.load(
        None,
        {"data.train": str(DIGITS / "train"), "data.validation": str(DIGITS / "val"), **overrides},
    )


def _sample() -> tuple[str, context.Scope, list[float]]:
    model, source = model_io.load(SAMPLE)
    cfg = _settings()
    scope = context.prepare(model, source, cfg, Reporter())
    return "sample digits_cnn", scope, list(cfg.analyze.levels)


def _mobilenet() -> tuple[str, context.Scope, list[float]]:
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(alpha=0.35, weights=None, classes=10)
    x = np.random.default_rng(0).random((32, 224, 224, 3), dtype=np.float32)
    y = np.argmax(model.predict(x, verbose=0), axis=-1)
    cfg = config.load(None, {})
    layers = selection.select(model, cfg.prune)
    splits = data.Splits(None, data.from_arrays(x, y, name="validation"))
    loss = keras.losses.SparseCategoricalCrossentropy()
    scope = context.build(model, layers, cfg, splits, evaluate.Task("sparse"), loss)
    return "MobileNetV2 alpha=0.35", scope, list(cfg.analyze.levels)


def _timed_scan(name: str, scope: context.Scope, levels: list[float], reps: int) -> dict[str, Any]:
    """``reps`` rounds of (plain passes, scan, plain passes); the round with the median
    overhead is reported (a second-long scan on a shared machine is at the mercy of
    whatever else runs in that second)."""
    started = time.perf_counter()
    scope.evaluator()  # trace the forward pass (and its last, shorter batch) once
    trace = time.perf_counter() - started
    count = 1 + len(scope.masker.layers) * len(levels) + 2 * len(levels)
    rounds = []
    for _ in range(reps):
        before = _passes(scope, count)
        result = scan.scan(scope.masker, scope.evaluator, levels)
        assert result.evaluations == count
        eval_seconds = (before + _passes(scope, count)) / 2
        rounds.append((result.seconds / eval_seconds - 1, result.seconds, eval_seconds))
    overhead, seconds, eval_seconds = sorted(rounds)[len(rounds) // 2]
    print(
        f"{name}: {len(scope.masker.layers)} layers x {len(levels)} levels, "
        f"trace {trace:.2f} s (not counted), overheads of {reps} rounds: "
        + ", ".join(f"{100 * r[0]:.1f}%" for r in rounds)
    )
    return {
        "model": name,
        "points": count,
        "seconds": round(seconds, 4),
        "eval_seconds": round(eval_seconds, 4),
        "overhead": round(overhead, 4),
    }


def _passes(scope: context.Scope, count: int) -> float:
    """Seconds of ``count`` plain evaluation passes (weights unchanged): one pass times the
    number of points, measured as a loop so machine noise averages as it does in the scan."""
    began = time.perf_counter()
    for _ in range(count):
        scope.evaluator()
    return time.perf_counter() - began


def _prune(sparsity: float | str, epochs: int, folder: Path) -> dict[str, Any]:
    """One real prune run of the sample (layer scope); its report."""
    overrides: dict[str, Any] = {
        "prune.scope": "layer",
        "prune.sparsity": sparsity,
        "finetune.epochs": epochs,
        "output.path": str(folder / f"m{time.perf_counter_ns()}.keras"),
        "output.html": False,
    }
    if sparsity == "auto":
        overrides["prune.max_accuracy_drop"] = BUDGET
    path = ROOT / "configs" / "quickstart.yaml"
    cfg = config.load(path, overrides)
    return pipeline.run(pipeline.Request(SAMPLE, cfg, force=True), Reporter())


def _drop(report: dict[str, Any]) -> float:
    return report["before"]["accuracy"] - report["after"]["accuracy"]


def _auto_vs_uniform(epochs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        auto = _prune("auto", epochs, folder)
        low, high, low_drop = 0.0, 1.0, 0.0
        while high - low > 1 / 128:
            middle = (low + high) / 2
            drop = _drop(_prune(middle, epochs, folder))
            if drop <= BUDGET + 1e-12:
                low, low_drop = middle, drop
            else:
                high = middle
    return {
        "max_accuracy_drop": BUDGET,
        "auto_sparsity": round(auto["after"]["sparsity"], 4),
        "auto_drop": round(_drop(auto), 4),
        "uniform_sparsity": round(low, 4),
        "uniform_drop": round(low_drop, 4),
    }


def _channel_prune(
    path: Path, sparsity: float | str, folder: Path, round_to: int
) -> dict[str, Any]:
    """One channel prune of the trained residual sample, no fine-tuning; its report."""
    overrides: dict[str, Any] = {
        "prune.granularity": "channel",
        "prune.round_to": round_to,
        "prune.method": "l2",
        "prune.scope": "layer",
        "prune.sparsity": sparsity,
        "finetune.epochs": 0,
        "data.train": str(DIGITS / "train"),
        "data.validation": str(DIGITS / "val"),
        "output.path": str(folder / f"c{time.perf_counter_ns()}.keras"),
        "output.html": False,
    }
    if sparsity == "auto":
        overrides["prune.max_accuracy_drop"] = BUDGET
    cfg = config.load(None, overrides)
    keras.utils.set_random_seed(cfg.seed)
    return pipeline.run(pipeline.Request(path, cfg, force=True), Reporter())


def _flops_removed(report: dict[str, Any]) -> float:
    return 1 - report["after"]["flops"] / report["before"]["flops"]


def _channel_auto_vs_uniform(path: Path, folder: Path, round_to: int) -> dict[str, Any]:
    """Auto against the highest uniform channel fraction within D (see the docstring)."""
    started = time.perf_counter()
    auto = _channel_prune(path, "auto", folder, round_to)
    auto_seconds = time.perf_counter() - started
    low, high, best = 0.0, 1.0, None
    while high - low > 1 / 128:
        middle = (low + high) / 2
        report = _channel_prune(path, middle, folder, round_to)
        if _drop(report) <= BUDGET + 1e-12:
            low, best = middle, report
        else:
            high = middle
    section = auto["auto"]
    return {
        "model": "residual_cnn (trained 20 epochs, as benchmarks/structured.py)",
        "max_accuracy_drop": BUDGET,
        "round_to": round_to,
        "auto_allocation": section["allocation"],
        "auto_channels_kept": {g["group"]: g["channels_kept"] for g in section["groups"]},
        "auto_channel_sparsity": round(section["sparsity"], 4),
        "auto_flops_removed": round(_flops_removed(auto), 4),
        "auto_drop": round(_drop(auto), 4),
        "auto_seconds": round(auto_seconds, 1),
        "uniform_channel_sparsity": round(low, 4),
        "uniform_flops_removed": round(_flops_removed(best), 4) if best else 0.0,
        "uniform_drop": round(_drop(best), 4) if best else 0.0,
    }


def _channel_rows() -> dict[str, Any]:
    """``channel_auto`` (round_to 8, the default) and ``channel_auto_round_to_1``."""
    import models  # benchmarks/models.py: this folder is on sys.path when run

    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        path = models.train_residual_cnn(folder / "residual_cnn.keras", DIGITS / "train")
        for key, round_to in (("channel_auto", 8), ("channel_auto_round_to_1", 1)):
            rows[key] = _channel_auto_vs_uniform(path, folder, round_to)
            _print_channel(rows[key])
    return rows


def _print_channel(row: dict[str, Any]) -> None:
    print(
        f"channel auto vs uniform at D = {100 * row['max_accuracy_drop']:.0f} point "
        f"(residual_cnn, round_to {row['round_to']}, no fine-tuning): auto removes "
        f"{100 * row['auto_flops_removed']:.1f}% of FLOPs "
        f"(channels {100 * row['auto_channel_sparsity']:.1f}%, drop "
        f"{100 * row['auto_drop']:.2f} pt, {row['auto_seconds']:.1f} s), uniform "
        f"{100 * row['uniform_flops_removed']:.1f}% (channels "
        f"{100 * row['uniform_channel_sparsity']:.1f}%, drop {100 * row['uniform_drop']:.2f} pt)"
    )


def _print_scans(rows: list[dict[str, Any]]) -> None:
    print(f"{'model':<24}{'points':>8}{'seconds':>10}{'eval s':>10}{'overhead':>10}")
    for row in rows:
        print(
            f"{row['model']:<24}{row['points']:>8}{row['seconds']:>10.3f}"
            f"{row['eval_seconds']:>10.3f}{100 * row['overhead']:>9.1f}%"
        )
    print(
        "target overhead <= 20%:",
        "holds" if all(r["overhead"] <= 0.2 for r in rows) else "does NOT hold",
    )


def _print_auto(label: str, row: dict[str, Any]) -> None:
    print(
        f"auto vs uniform at D = {100 * row['max_accuracy_drop']:.0f} point ({label}): "
        f"auto {100 * row['auto_sparsity']:.1f}% (drop {100 * row['auto_drop']:.2f} pt), "
        f"uniform {100 * row['uniform_sparsity']:.1f}% (drop {100 * row['uniform_drop']:.2f} pt); "
        "target auto >= uniform + 5 pt: "
        + ("holds" if row["auto_sparsity"] >= row["uniform_sparsity"] + 0.05 else "does NOT hold")
    )


if __name__ == "__main__":
    main()
