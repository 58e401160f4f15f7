"""Fine-tune throughput with masks enforced vs plain ``model.fit``, side by side.

For each model, the same weights, data, optimizer and batch size are trained every way,
alternating so that machine noise hits all alike. ``plain`` is ``model.fit`` on the very
same ``tf.data`` dataset prunecli trains on (``Source.epochs``: same batches, same order),
so masked / plain measures the masks and nothing else; ``plain_numpy`` is ``model.fit`` on
the numpy arrays (Keras's own input path), a second line that shows what prunecli's
pipeline costs or buys. Each repetition trains a few epochs; the first epoch (tracing,
warm-up) is dropped and the rest give steps/s. The table shows the median of each and the
ratios masked / plain (target >= 0.95), for 80% masks and for all-ones masks (the pure cost
of enforcing a mask). Results go to ``benchmarks/results/finetune_overhead.json``.

    .venv/bin/python benchmarks/finetune_overhead.py [--reps 3] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from prunecli import runtime

runtime.start(seed=0)  # quiet TensorFlow start-up, before anything imports Keras

import keras  # noqa: E402
import models  # noqa: E402  (benchmarks/models.py: this folder is on sys.path when run)

from prunecli import config, data  # noqa: E402
from prunecli.core import schedules  # noqa: E402
from prunecli.formats import model_io  # noqa: E402
from prunecli.progress import Reporter  # noqa: E402
from prunecli.pruning import selection  # noqa: E402
from prunecli.pruning.pruner import Pruner  # noqa: E402
from prunecli.training import finetune  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "finetune_overhead.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="alternating repetitions per case")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per repetition (1st dropped)")
    args = parser.parse_args()

    cases = [_sample_case(), _cnn_1m_case()]
    rows = [_measure(case, args.reps, args.epochs) for case in cases]
    _print_table(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"machine": runtime.machine(), "reps": args.reps, "epochs": args.epochs, "cases": rows},
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


def _sample_case() -> dict[str, Any]:
    path = ROOT / "sample_models" / "digits_cnn.h5"
    model, _ = model_io.load(path)
    settings = config.Data(train=ROOT / "sample_models" / "digits" / "train")
    x, y = data.materialize(data.load(settings, tuple(model.input_shape[1:]), seed=0).train)
    return {"name": "sample digits_cnn", "model": model, "x": x, "y": y, "batch": 32}


def _cnn_1m_case() -> dict[str, Any]:
    """A ~1M-parameter CNN on 32x32x3 synthetic data (10 classes)."""
    model = models.cnn_1m()
    rng = np.random.default_rng(0)
    x = rng.random((2048, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, 2048)
    return {"name": "cnn ~1M params", "model": model, "x": x, "y": y, "batch": 64}


def _measure(case: dict[str, Any], reps: int, epochs: int) -> dict[str, Any]:
    weights = case["model"].get_weights()
    rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    order = list(VARIANTS)
    for _ in range(reps):
        for variant in order:
            model = keras.models.clone_model(case["model"])
            model.set_weights(weights)
            timer = _EpochTimer()
            if variant == "plain_numpy":
                model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=_LOSS)
                model.fit(
                    case["x"],
                    case["y"],
                    batch_size=case["batch"],
                    epochs=epochs,
                    shuffle=True,
                    verbose=0,
                    callbacks=[timer],
                )
            elif variant == "plain":
                _plain_fit(model, case, epochs, timer)
            else:
                _masked_fit(model, case, epochs, timer, VARIANTS[variant])
            steps = -(-len(case["y"]) // case["batch"])
            rates[variant] += [steps / seconds for seconds in timer.seconds[1:]]
        order.reverse()  # alternate who goes first: warm caches or a busy neighbour favour none
    medians = {variant: statistics.median(values) for variant, values in rates.items()}
    return {
        "case": case["name"],
        "params": int(case["model"].count_params()),
        "batch_size": case["batch"],
        **{f"{variant}_steps_per_s": round(value, 2) for variant, value in medians.items()},
        "ratio": round(medians["masked"] / medians["plain"], 3),
        "ratio_dense_masks": round(medians["masked_dense"] / medians["plain"], 3),
        "ratio_vs_numpy_fit": round(medians["masked"] / medians["plain_numpy"], 3),
        "pipeline_vs_numpy": round(medians["plain"] / medians["plain_numpy"], 3),
        "samples": {k: [round(v, 2) for v in vals] for k, vals in rates.items()},
    }


# variant -> sparsity of prunecli's masks (None: plain model.fit, on prunecli's tf.data
# dataset or on numpy arrays). "masked_dense" holds all-ones masks: it isolates the cost of
# enforcing masks from any effect of the zeros.
VARIANTS: dict[str, float | None] = {
    "plain": None,
    "plain_numpy": None,
    "masked": 0.8,
    "masked_dense": 0.0,
}


_LOSS = "sparse_categorical_crossentropy"


def _plain_fit(model: Any, case: dict[str, Any], epochs: int, timer: Any) -> None:
    """``model.fit`` on the dataset ``finetune.run`` feeds (seed 0: ``finetune.run``'s
    default), with Keras's defaults otherwise: no masks, nothing else differs."""
    spe = finetune.steps_per_epoch(len(case["y"]), case["batch"])
    batches = data.from_arrays(case["x"], case["y"]).epochs(
        case["batch"], seed=0, first=0, stop=epochs
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=_LOSS)
    model.fit(
        batches, epochs=epochs, steps_per_epoch=spe, shuffle=False, verbose=0, callbacks=[timer]
    )


def _masked_fit(model: Any, case: dict[str, Any], epochs: int, timer: Any, sparsity: float) -> None:
    """prunecli's own fine-tune path: one-shot masks held by the constraint."""
    prune = config.Prune(sparsity=sparsity)
    layers = selection.select(model, prune)
    spe = finetune.steps_per_epoch(len(case["y"]), case["batch"])
    plan = schedules.Plan(spe, spe * epochs)
    pruner = Pruner(layers, prune, lambda s: schedules.build("one_shot", s, plan))
    pruner.update(0)
    # One step per call, as the plain fit runs: this benchmark isolates the masks' own cost.
    settings = config.Finetune(
        epochs=epochs, batch_size=case["batch"], learning_rate=1e-3, steps_per_execution=1
    )
    finetune.run(
        model,
        pruner,
        data.from_arrays(case["x"], case["y"]),
        settings,
        {"loss": _LOSS},
        Reporter(),
        callbacks=[timer],
    )


class _EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def _print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'case':<18} {'params':>9} {'plain steps/s':>14} {'numpy fit':>10} "
        f"{'masked 80%':>11} {'masks all-ones':>15} {'ratio':>6} {'ratio all-ones':>15} "
        f"{'vs numpy fit':>13}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['case']:<18} {row['params']:>9,} {row['plain_steps_per_s']:>14.1f} "
            f"{row['plain_numpy_steps_per_s']:>10.1f} "
            f"{row['masked_steps_per_s']:>11.1f} {row['masked_dense_steps_per_s']:>15.1f} "
            f"{row['ratio']:>6.3f} {row['ratio_dense_masks']:>15.3f} "
            f"{row['ratio_vs_numpy_fit']:>13.3f}"
        )


if __name__ == "__main__":
    main()
