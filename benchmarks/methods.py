"""Pruning methods side by side: method x sparsity -> accuracy after the same fine-tune budget.

Two models, both on the bundled digits data (``sample_models/digits/{train,val}``, 1,437 /
360 images; accuracy is measured by prunecli on the 360 validation images):

- ``digits_cnn``: the sample model ``sample_models/digits_cnn.h5`` (Sequential, 56,714
  parameters);
- ``residual_cnn``: a small functional CNN (stride-2 stem, two residual blocks joined by
  ``Add``, a Dense head on the flattened 7x7x32 features; 124,906 parameters), trained here
  with fixed seeds on the training images, saved as ``.keras`` to a temporary folder and
  pruned from there like the sample. (A global-average-pooling head instead leaves 26,602
  parameters and every method falls to chance beyond 0.8: nothing left to compare.)

Every case is one call of prunecli's own pipeline (``pipeline.run``, what ``prunecli prune``
runs), with a config built by ``config.load`` from dotted overrides and its outputs written
to a temporary folder. Before each case the random generators are re-seeded with the
config's seed, as a fresh ``prunecli prune`` process would be, so that every method sees the
same shuffling and dropout draws; TensorFlow op determinism is on, so a rerun on the same
machine reproduces every number (the residual CNN's training included).

Cases: ``magnitude``, ``random``, ``taylor``, ``lamp`` and ``movement`` scores, unstructured,
at ``scope: layer`` and ``scope: global``, sparsity 0.5 / 0.8 / 0.9 / 0.95, without
distillation; with distillation ``{alpha: 0.5, temperature: 4.0}``, at each sparsity, the
best undistilled (method, scope) pair plus global ``magnitude`` and global ``lamp`` (the
pairs targets (b) and (c) compare); extras, without distillation: ``magnitude`` with
``"2:4"`` (at its fixed sparsity 0.5, layer scope, the only scope N:M allows; the sample's
``conv1`` has one input channel, so prunecli skips it with the reason in the report) and
with ``{block: [1, 4]}`` (global scope, 0.5 and 0.9). ``--quick`` runs the sample model
only, at 0.9 and 0.95, for magnitude, lamp and movement, one seed (about a minute); the full
run takes about 10-12 minutes on 2 CPU cores.

The fine-tune budget is identical for every case: Adam, learning rate 1e-3, batch 32,
``EPOCHS`` epochs, and the same gradual schedule for every method: ``polynomial`` (Zhu &
Gupta, power 3, masks recomputed every 10 steps) from sparsity 0 at ``START_EPOCH`` to the
target at ``END_EPOCH``, then held for the last epoch. Why gradual for every method rather
than ``one_shot`` for the methods that allow it: ``movement`` needs a gradual schedule (its
score is only known after some training), and one schedule for all keeps the number of
training steps, the number of steps spent at the final mask and the learning rate exactly
the same for every score, so that only the score differs. A gradual schedule is also the
better one for magnitude-type scores at high sparsity (Zhu & Gupta 2017), so no method is
handicapped by it. The first epoch is a dense warm-up (``START_EPOCH`` 1): the
gradient-based scores (``movement`` in particular, which needs training statistics) get
an epoch of statistics before the first weight is cut, as in Sanh et al. (2020). The budget
was chosen once for all methods, never per method.

Targets (issue 6), checked and printed at the end:

(a) at 0.9 the best case on the sample model is within 1 point of its dense accuracy;
(b) global ``lamp`` beats global ``magnitude`` at 0.95 (no distillation);
(c) distillation beats no distillation at 0.95: the best distilled case against the best
    undistilled one, and pair by pair (same method and scope).

(b) and (c) are decided on differences of a few validation images (1 image = 0.28 point),
so the cases they compare are repeated with ``--seeds`` seeds (default 3: the seed changes
the shuffling, dropout and taylor's batches) and compared on their mean; the binomial
standard error of an accuracy near 96% on 360 images is about 1 point.

Results go to ``benchmarks/results/methods.json``: ``dense_accuracy`` (model -> accuracy),
``cases`` (model, method, granularity, scope, sparsity, distill, accuracy, plus loss, seed,
sparsity reached and seconds), the budget, the target checks and the machine.

    .venv/bin/python benchmarks/methods.py [--quick] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunecli import runtime

# Op determinism (below) makes tf.data log a harmless C++ error line at every fit; level 3
# keeps TensorFlow's native logs to fatal ones (a value set by the user wins).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
runtime.start(seed=0)  # quiet TensorFlow start-up, before anything imports Keras

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.experimental.enable_op_determinism()  # a rerun gives the same numbers

import models  # noqa: E402  (benchmarks/models.py: this folder is on sys.path when run)

from prunecli import config, pipeline  # noqa: E402
from prunecli.progress import Reporter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "methods.json"
SAMPLE = ROOT / "sample_models" / "digits_cnn.h5"
TRAIN = ROOT / "sample_models" / "digits" / "train"
VALIDATION = ROOT / "sample_models" / "digits" / "val"

METHODS = ("magnitude", "random", "taylor", "lamp", "movement")
SCOPES = ("layer", "global")
SPARSITIES = (0.5, 0.8, 0.9, 0.95)
DISTILL = {"alpha": 0.5, "temperature": 4.0}

# The fine-tune budget: the same for every case.
EPOCHS = 4
START_EPOCH = 1
END_EPOCH = 3
LEARNING_RATE = 1e-3
BATCH_SIZE = 32
FREQUENCY = 10

RESIDUAL_EPOCHS = 20  # training of the residual CNN (Adam, cosine decay from 2e-3)

# Where the targets are checked; those cases are repeated with extra seeds.
TARGET_SPARSITY = 0.95
SEEDED = (("magnitude", "global"), ("lamp", "global"))


@dataclass(frozen=True)
class Case:
    model: str
    method: str
    scope: str
    sparsity: float
    distill: bool = False
    granularity: Any = "unstructured"
    seed: int = 0

    @property
    def granularity_name(self) -> str:
        if isinstance(self.granularity, dict):
            return "block " + "x".join(str(side) for side in self.granularity["block"])
        return str(self.granularity)

    @property
    def row(self) -> str:
        """The table row this case belongs to (the columns are sparsities)."""
        name = f"{self.method:<9} {self.scope:<6}"
        if self.granularity != "unstructured":
            name += f" {self.granularity_name}"
        return name + (" +distill" if self.distill else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: sample model, 0.9 and 0.95, fewer cases"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        help="seeds for the cases targets (b) and (c) compare (default 3, --quick 1)",
    )
    args = parser.parse_args()
    seeds = max(1, args.seeds if args.seeds is not None else (1 if args.quick else 3))
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    dense: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="prunecli-methods-") as folder:
        tmp = Path(folder)
        inputs = {"digits_cnn": SAMPLE}
        if not args.quick:
            inputs["residual_cnn"] = models.train_residual_cnn(
                tmp / "residual_cnn.keras", TRAIN, RESIDUAL_EPOCHS
            )
        for name, path in inputs.items():
            runner = _Runner(name, path, tmp / name, results, dense)
            _run_model(runner, quick=args.quick, seeds=seeds)
            _print_table(name, dense[name], [r for r in results if r["model"] == name])
    checks = _targets(results, dense)
    _print_targets(checks)
    total = time.perf_counter() - started
    print(f"\n{len(results)} cases in {total / 60:.1f} min")
    if args.quick:
        print("--quick: smoke run, results not written")
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": runtime.machine(),
        "budget": _budget(),
        "seconds": round(total, 1),
        "dense_accuracy": dense,
        "targets": checks,
        "cases": results,
    }
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


def _run_model(runner: _Runner, quick: bool, seeds: int) -> None:
    """Every case of one model; which ones get distilled depends on the undistilled results."""
    sparsities = (0.9, TARGET_SPARSITY) if quick else SPARSITIES
    methods = ("magnitude", "lamp", "movement") if quick else METHODS
    for sparsity in sparsities:
        plain = [
            runner.run(Case(runner.model, method, scope, sparsity))
            for method in methods
            for scope in SCOPES
        ]
        # Distilled: the best undistilled case, and global magnitude and lamp (the cases
        # targets (b) and (c) compare), each once.
        best = max(plain, key=_score)
        picked = [(best["method"], best["scope"]), *SEEDED]
        for method, scope in dict.fromkeys(picked):
            runner.run(Case(runner.model, method, scope, sparsity, distill=True))
    if not quick:
        runner.run(Case(runner.model, "magnitude", "layer", 0.5, granularity="2:4"))
        for sparsity in (0.5, 0.9):
            block = {"block": [1, 4]}
            runner.run(Case(runner.model, "magnitude", "global", sparsity, granularity=block))
    for seed in range(1, seeds):
        for method, scope in SEEDED:
            for distill in (False, True):
                runner.run(Case(runner.model, method, scope, TARGET_SPARSITY, distill, seed=seed))


class _Runner:
    """Runs cases of one model through ``pipeline.run`` and collects their rows."""

    def __init__(
        self,
        model: str,
        path: Path,
        folder: Path,
        results: list[dict[str, Any]],
        dense: dict[str, float],
    ) -> None:
        self.model, self.path, self.folder = model, path, folder
        self.results, self.dense = results, dense
        folder.mkdir(parents=True, exist_ok=True)

    def run(self, case: Case) -> dict[str, Any]:
        number = sum(1 for r in self.results if r["model"] == self.model)
        overrides = {
            "seed": case.seed,
            "prune.method": case.method,
            "prune.granularity": case.granularity,
            "prune.scope": case.scope,
            "prune.sparsity": case.sparsity,
            "prune.schedule.type": "polynomial",
            "prune.schedule.start_epoch": START_EPOCH,
            "prune.schedule.end_epoch": END_EPOCH,
            "prune.schedule.frequency": FREQUENCY,
            "finetune.epochs": EPOCHS,
            "finetune.batch_size": BATCH_SIZE,
            "finetune.learning_rate": LEARNING_RATE,
            "finetune.optimizer": "adam",
            "finetune.distill": DISTILL if case.distill else None,
            "data.train": str(TRAIN),
            "data.validation": str(VALIDATION),
            "output.path": str(self.folder / f"case{number:03d}.keras"),
        }
        settings = config.load(None, overrides)
        # As in a fresh `prunecli prune` process: every case starts from the same RNG state.
        keras.utils.set_random_seed(settings.seed)
        start = time.perf_counter()
        report = pipeline.run(pipeline.Request(self.path, settings, force=True), Reporter())
        seconds = time.perf_counter() - start
        self.dense.setdefault(self.model, report["before"]["accuracy"])
        row = {
            "model": case.model,
            "method": case.method,
            "granularity": case.granularity_name,
            "scope": case.scope,
            "sparsity": case.sparsity,
            "distill": case.distill,
            "accuracy": report["after"]["accuracy"],
            "loss": round(report["after"]["loss"], 5),
            "seed": case.seed,
            "sparsity_reached": round(report["after"]["sparsity"], 4),
            "seconds": round(seconds, 2),
            "row": case.row,
        }
        self.results.append(row)
        print(
            f"  {case.model:<12} {case.row:<34} {case.sparsity:>4}  seed {case.seed}  "
            f"acc {row['accuracy']:.4f}  {seconds:5.1f}s",
            flush=True,
        )
        return row


def _score(row: dict[str, Any]) -> tuple[float, float]:
    """Best = highest accuracy, then lowest loss."""
    return row["accuracy"], -row["loss"]


def _print_table(model: str, dense: float, rows: list[dict[str, Any]]) -> None:
    cells: dict[str, dict[float, float]] = {}
    for row in rows:
        if row["seed"] == 0:
            cells.setdefault(row["row"], {})[row["sparsity"]] = row["accuracy"]
    width = max(len(name) for name in cells)
    header = f"{'method    scope  [granularity] [+distill]':<{width}}" + "".join(
        f"{s:>9}" for s in SPARSITIES
    )
    print(f"\n{model}: validation accuracy (%) after pruning; dense {100 * dense:.2f}%")
    print(header)
    print("-" * len(header))
    for name in sorted(cells, key=_row_order):
        values = "".join(
            f"{100 * cells[name][s]:>9.2f}" if s in cells[name] else f"{'-':>9}" for s in SPARSITIES
        )
        print(f"{name:<{width}}{values}")


def _row_order(name: str) -> tuple[int, bool, str]:
    method = name.split()[0]
    return METHODS.index(method), "distill" in name, name


def _mean(rows: Iterable[dict[str, Any]]) -> float | None:
    values = [row["accuracy"] for row in rows]
    return statistics.fmean(values) if values else None


def _targets(results: list[dict[str, Any]], dense: dict[str, float]) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    sample = [r for r in results if r["model"] == "digits_cnn" and r["seed"] == 0]
    at_09 = [r for r in sample if r["sparsity"] == 0.9]
    if at_09:
        best = max(at_09, key=_score)
        checks["a_best_at_0.9_within_1pt_of_dense"] = {
            "model": "digits_cnn",
            "dense": dense["digits_cnn"],
            "best": best["accuracy"],
            "best_case": _label(best),
            "holds": best["accuracy"] >= dense["digits_cnn"] - 0.01,
        }
    for model in dense:
        at = [r for r in results if r["model"] == model and r["sparsity"] == TARGET_SPARSITY]
        pick = lambda method, distill, rows=at: [  # noqa: E731
            r
            for r in rows
            if r["method"] == method
            and r["scope"] == "global"
            and r["granularity"] == "unstructured"
            and r["distill"] is distill
        ]
        lamp, magnitude = pick("lamp", False), pick("magnitude", False)
        checks[f"b_{model}_global_lamp_beats_global_magnitude_at_0.95"] = {
            "lamp": _mean(lamp),
            "magnitude": _mean(magnitude),
            "seeds": len(lamp),
            "lamp_wins_per_seed": _wins(lamp, magnitude),
            "holds": _mean(lamp) > _mean(magnitude),
        }
        first = [r for r in at if r["seed"] == 0 and r["granularity"] == "unstructured"]
        with_kd = [r for r in first if r["distill"]]
        without = [r for r in first if not r["distill"]]
        pairs = []
        for kd in with_kd:
            twin = next(
                r for r in without if (r["method"], r["scope"]) == (kd["method"], kd["scope"])
            )
            pairs.append(kd["accuracy"] - twin["accuracy"])
        seeded = {
            f"{method}/{scope}": {
                "distill": _mean(pick(method, True)),
                "plain": _mean(pick(method, False)),
            }
            for method, scope in SEEDED
        }
        best_kd, best_plain = max(with_kd, key=_score), max(without, key=_score)
        checks[f"c_{model}_distill_beats_no_distill_at_0.95"] = {
            "best_distilled": best_kd["accuracy"],
            "best_distilled_case": _label(best_kd),
            "best_undistilled": best_plain["accuracy"],
            "best_undistilled_case": _label(best_plain),
            "pairs_distill_wins": sum(d > 0 for d in pairs),
            "pairs_ties": sum(d == 0 for d in pairs),
            "pairs": len(pairs),
            "pairs_mean_gain": statistics.fmean(pairs),
            "seed_means": seeded,
            "holds": best_kd["accuracy"] > best_plain["accuracy"],
        }
    return checks


def _label(row: dict[str, Any]) -> str:
    return " ".join(row["row"].split())


def _wins(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> str:
    by_seed = {r["seed"]: r["accuracy"] for r in second}
    wins = sum(r["accuracy"] > by_seed[r["seed"]] for r in first if r["seed"] in by_seed)
    return f"{wins}/{len(first)}"


def _print_targets(checks: dict[str, Any]) -> None:
    print("\nTargets")
    for name, check in checks.items():
        verdict = "HOLDS" if check["holds"] else "FAILS"
        if name.startswith("a_"):
            detail = (
                f"best {100 * check['best']:.2f}% ({check['best_case']}) vs dense "
                f"{100 * check['dense']:.2f}% - 1 pt"
            )
        elif name.startswith("b_"):
            detail = (
                f"lamp {100 * check['lamp']:.2f}% vs magnitude {100 * check['magnitude']:.2f}% "
                f"(mean of {check['seeds']} seeds; lamp ahead in {check['lamp_wins_per_seed']})"
            )
        else:
            seeds = ", ".join(
                f"{key} {100 * v['distill']:.2f} vs {100 * v['plain']:.2f}"
                for key, v in check["seed_means"].items()
            )
            detail = (
                f"best distilled {100 * check['best_distilled']:.2f}% "
                f"({check['best_distilled_case']}) vs best undistilled "
                f"{100 * check['best_undistilled']:.2f}% ({check['best_undistilled_case']}); "
                f"pairs: distill ahead {check['pairs_distill_wins']}/{check['pairs']} "
                f"(ties {check['pairs_ties']}, mean {100 * check['pairs_mean_gain']:+.2f} pt); "
                f"seed means with vs without: {seeds}"
            )
        print(f"  {verdict}  {name}: {detail}")


def _budget() -> dict[str, Any]:
    return {
        "optimizer": "adam",
        "learning_rate": LEARNING_RATE,
        "batch_size": BATCH_SIZE,
        "epochs": EPOCHS,
        "schedule": {
            "type": "polynomial",
            "start_epoch": START_EPOCH,
            "end_epoch": END_EPOCH,
            "initial_sparsity": 0.0,
            "power": 3.0,
            "frequency": FREQUENCY,
        },
        "distill": DISTILL,
        "residual_cnn_training_epochs": RESIDUAL_EPOCHS,
    }


if __name__ == "__main__":
    main()
