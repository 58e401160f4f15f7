"""prunecli (Keras 3) against tensorflow-model-optimization (tfmot, Keras 2), side by side.

The same architecture, initial weights, data, optimizer, batch size, epoch budget and
gradual schedule, pruned both ways at 50 / 80 / 90% sparsity; compared on fine-tune
throughput (steps/s) and on accuracy over the same validation images.

Why each run is its own subprocess: tfmot's ``prune_low_magnitude`` only works with Keras
2 (``tf_keras``, selected by ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported),
which cannot live in the same process as Keras 3. So prunecli gets a subprocess too, and
both workers are built alike: one fresh interpreter, the architecture built from the same
layer list (``ARCHITECTURES``) in its own Keras, the same initial weights set from one
``.npz`` (tf_keras cannot read Keras 3 model files), ``fit`` on the same arrays, epochs
timed by the same kind of callback, accuracy computed by the same numpy function.

- prunecli worker: prunecli's own fine-tune path as ``prunecli prune`` runs it
  (``config.load`` from the dotted keys, ``selection.select``, ``Pruner`` with the
  pipeline's schedule factory, ``finetune.run``): masks are variables, enforced by a
  kernel constraint inside the compiled train step; no wrapper layers.
- tfmot worker: ``prune_low_magnitude`` on the whole model (it wraps every Conv2D / Dense,
  as prunecli selects every Conv2D / Dense kernel at ``scope: layer``), ``UpdatePruningStep``,
  then ``strip_pruning``.

Schedule, both: polynomial from 0 at step 0 to the target at ``END_EPOCH`` (power 3, masks
recomputed every ``FREQUENCY`` steps), held for the last epoch: tfmot
``PolynomialDecay(0, s, begin_step=0, end_step=END_EPOCH * spe, power=3, frequency=10)``
and prunecli ``prune.schedule {type: polynomial, initial_sparsity: 0, start_epoch: 0,
end_epoch: END_EPOCH, power: 3, frequency: 10}``. Adam, learning rate 1e-3.

Models (both on the bundled digits: 1,437 training / 360 validation images):

- ``digits_cnn``: the sample model ``sample_models/digits_cnn.h5`` (56,714 parameters),
  its trained weights as the start;
- ``cnn_1m``: the ~1M-parameter CNN of ``finetune_overhead.py`` (981,450 parameters) on
  the digits padded to 32x32 and repeated to 3 channels, trained dense here first (Keras 3,
  fixed seed, ``DENSE_EPOCHS`` epochs) so that both tools prune a trained model.

Throughput: steps/s of every epoch after the first (tracing, warm-up), the median over all
repetitions; the ratio is prunecli's median over tfmot's (target >= 1.0). The two tools
alternate within each repetition and swap who goes first every repetition. Accuracy: the
mean over repetitions (repetition r uses seed r in both); target: prunecli no more than
0.5 points below tfmot at any sparsity and higher on average. 1 validation image = 0.28
point, so the accuracy targets are decided on a few images; ``--reps`` narrows that.

Results go to ``benchmarks/results/vs_tfmot.json`` (``cases``: model, sparsity,
throughput_ratio, prunecli_accuracy, tfmot_accuracy and the raw samples).

    .venv/bin/python benchmarks/vs_tfmot.py [--reps 2] [--epochs 4] [--models digits_cnn,cnn_1m]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "vs_tfmot.json"
SAMPLE = ROOT / "sample_models" / "digits_cnn.h5"
DIGITS = ROOT / "sample_models" / "digits"

SPARSITIES = (0.5, 0.8, 0.9)
TOOLS = ("prunecli", "tfmot")
# Plain ``fit`` without pruning in each Keras: how much of the throughput ratio is the
# framework itself (Keras 3 vs tf_keras) rather than the pruning.
PLAIN = ("keras3", "tf_keras")
LEARNING_RATE = 1e-3
FREQUENCY = 10
POWER = 3.0
DENSE_EPOCHS = 4  # the 1M CNN's dense training before pruning

# (layer class, keyword arguments): built by both Keras 3 and tf_keras from this one list.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "digits_cnn": {
        "input": (28, 28, 1),
        "batch": 32,
        "layers": [
            ("Conv2D", {"filters": 16, "kernel_size": 3, "activation": "relu", "name": "conv1"}),
            ("MaxPooling2D", {"name": "pool1"}),
            ("Conv2D", {"filters": 32, "kernel_size": 3, "activation": "relu", "name": "conv2"}),
            ("MaxPooling2D", {"name": "pool2"}),
            ("Flatten", {"name": "flatten"}),
            ("Dense", {"units": 64, "activation": "relu", "name": "dense1"}),
            ("Dropout", {"rate": 0.2, "name": "dropout"}),
            ("Dense", {"units": 10, "activation": "softmax", "name": "logits"}),
        ],
    },
    "cnn_1m": {
        "input": (32, 32, 3),
        "batch": 64,
        "layers": [
            ("Conv2D", {"filters": 32, "kernel_size": 3, "activation": "relu"}),
            ("Conv2D", {"filters": 64, "kernel_size": 3, "activation": "relu"}),
            ("MaxPooling2D", {}),
            ("Conv2D", {"filters": 128, "kernel_size": 3, "activation": "relu"}),
            ("MaxPooling2D", {}),
            ("Flatten", {}),
            ("Dense", {"units": 192, "activation": "relu"}),
            ("Dense", {"units": 10, "activation": "softmax"}),
        ],
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2, help="alternating repetitions per case")
    parser.add_argument("--epochs", type=int, default=4, help="fine-tune epochs (1st not timed)")
    parser.add_argument("--models", default=",".join(ARCHITECTURES), help="comma-separated")
    parser.add_argument("--worker", choices=TOOLS + PLAIN, help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        _prepare_here([name.strip() for name in args.models.split(",")], args.prepare)
        return
    if args.worker:
        _work(args.worker, json.loads(args.job.read_text()))
        return
    started, load_before = time.perf_counter(), os.getloadavg()
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    with tempfile.TemporaryDirectory(prefix="prunecli-vs-tfmot-") as folder:
        tmp = Path(folder)
        _prepare(models, tmp)
        rows = []
        for model in models:
            plain = _measure_plain(model, args.reps, args.epochs, tmp)
            rows += [
                _measure(model, sparsity, args.reps, args.epochs, tmp) | plain
                for sparsity in SPARSITIES
            ]
    _print_table(rows)
    checks = _targets(rows)
    for name, passed in checks.items():
        print(f"target {name}: {'PASS' if passed else 'FAIL'}")
    total = time.perf_counter() - started
    print(f"{len(rows)} cases x {args.reps} reps in {total / 60:.1f} min")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": _machine(),
        "budget": {
            "epochs": args.epochs,
            "end_epoch": _end_epoch(args.epochs),
            "learning_rate": LEARNING_RATE,
            "optimizer": "adam",
            "power": POWER,
            "frequency": FREQUENCY,
            "batch_size": {name: ARCHITECTURES[name]["batch"] for name in models},
        },
        "reps": args.reps,
        "seconds": round(total, 1),
        # 1/5/15-minute load averages at start and end: other work on a shared box
        "load_average": {"start": load_before, "end": os.getloadavg()},
        "targets": checks,
        "cases": rows,
    }
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


def _end_epoch(epochs: int) -> int:
    """Sparsity reaches its target one epoch before the end (the last epoch holds it)."""
    return max(1, epochs - 1)


# ----------------------------------------------------------------------------- orchestrator


def _prepare(models: list[str], tmp: Path) -> None:
    """Per model: ``<name>.npz`` (data) and ``<name>.weights.npz`` (initial weights).

    Runs in a child (Keras 3) so that this process never imports TensorFlow: its memory
    and threads stay out of the measured workers' way.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": _pythonpath()}
    env.pop("TF_USE_LEGACY_KERAS", None)
    command = [sys.executable, str(Path(__file__).resolve()), "--models", ",".join(models)]
    subprocess.run([*command, "--prepare", str(tmp)], env=env, check=True)


def _prepare_here(models: list[str], tmp: Path) -> None:
    from prunecli import runtime

    runtime.start(seed=0)
    import keras

    from prunecli import config, data
    from prunecli.formats import model_io

    settings = config.Data(train=DIGITS / "train", validation=DIGITS / "val")
    splits = data.load(settings, (28, 28, 1), seed=0)
    for name in models:
        (x, _), (v, _) = data.materialize(splits.train), data.materialize(splits.validation)
        if name == "cnn_1m":  # 28x28x1 -> 32x32x3: pad by 2 and repeat the channel
            x, v = (np.repeat(np.pad(a, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, -1) for a in (x, v))
        np.savez(tmp / f"{name}.npz", x=x, y=splits.train.y, x_val=v, y_val=splits.validation.y)
        if name == "digits_cnn":
            model, _ = model_io.load(SAMPLE)
        else:
            keras.utils.set_random_seed(0)
            model = build(keras, name)
            model.compile(keras.optimizers.Adam(LEARNING_RATE), "sparse_categorical_crossentropy")
            model.fit(x, splits.train.y, batch_size=64, epochs=DENSE_EPOCHS, verbose=0)
        weights = model.get_weights()
        np.savez(tmp / f"{name}.weights.npz", *weights)
        dense = accuracy(model.predict(v, batch_size=256, verbose=0), splits.validation.y)
        print(f"{name}: {model.count_params():,} parameters, dense accuracy {dense:.4f}")
        (tmp / f"{name}.dense.json").write_text(
            json.dumps({"params": int(model.count_params()), "accuracy": dense})
        )


def _measure_plain(model: str, reps: int, epochs: int, tmp: Path) -> dict[str, Any]:
    """Plain ``fit`` steps/s in Keras 3 and in tf_keras (no pruning), alternating."""
    rates: dict[str, list[float]] = {tool: [] for tool in PLAIN}
    order = list(PLAIN)
    for rep in range(reps):
        for tool in order:
            result = _run_worker(tool, model, 0.0, epochs, rep, tmp)
            rates[tool] += result["steps_per_s"]
            print(
                f"  {model} plain rep {rep} {tool:<8} "
                f"{statistics.median(result['steps_per_s']):7.1f} steps/s",
                flush=True,
            )
        order.reverse()
    medians = {tool: statistics.median(values) for tool, values in rates.items()}
    return {
        "keras3_plain_steps_per_s": round(medians["keras3"], 2),
        "tf_keras_plain_steps_per_s": round(medians["tf_keras"], 2),
        "framework_ratio": round(medians["keras3"] / medians["tf_keras"], 3),
        "plain_samples": {k: [round(v, 2) for v in vals] for k, vals in rates.items()},
    }


def _measure(model: str, sparsity: float, reps: int, epochs: int, tmp: Path) -> dict[str, Any]:
    rates: dict[str, list[float]] = {tool: [] for tool in TOOLS}
    cpu_rates: dict[str, list[float]] = {tool: [] for tool in TOOLS}
    accuracies: dict[str, list[float]] = {tool: [] for tool in TOOLS}
    order = list(TOOLS)
    for rep in range(reps):
        for tool in order:
            result = _run_worker(tool, model, sparsity, epochs, rep, tmp)
            rates[tool] += result["steps_per_s"]
            cpu_rates[tool] += result["steps_per_cpu_s"]
            accuracies[tool].append(result["accuracy"])
            print(
                f"  {model} s={sparsity} rep {rep} {tool:<8} "
                f"{statistics.median(result['steps_per_s']):7.1f} steps/s  "
                f"accuracy {result['accuracy']:.4f}  sparsity {result['sparsity']:.3f}",
                flush=True,
            )
        order.reverse()  # alternate who goes first
    medians = {tool: statistics.median(values) for tool, values in rates.items()}
    cpu = {tool: statistics.median(values) for tool, values in cpu_rates.items()}
    dense = json.loads((tmp / f"{model}.dense.json").read_text())
    return {
        "model": model,
        "params": dense["params"],
        "dense_accuracy": round(dense["accuracy"], 4),
        "sparsity": sparsity,
        "throughput_ratio": round(medians["prunecli"] / medians["tfmot"], 3),
        "prunecli_steps_per_s": round(medians["prunecli"], 2),
        "tfmot_steps_per_s": round(medians["tfmot"], 2),
        # steps per second of process CPU time: steadier than wall-clock on a shared
        # machine (being descheduled costs wall time, not CPU time); informative only
        "cpu_throughput_ratio": round(cpu["prunecli"] / cpu["tfmot"], 3),
        "prunecli_accuracy": round(statistics.mean(accuracies["prunecli"]), 4),
        "tfmot_accuracy": round(statistics.mean(accuracies["tfmot"]), 4),
        "samples": {
            "steps_per_s": {k: [round(v, 2) for v in vals] for k, vals in rates.items()},
            "steps_per_cpu_s": {k: [round(v, 2) for v in vals] for k, vals in cpu_rates.items()},
            "accuracy": {k: [round(v, 4) for v in vals] for k, vals in accuracies.items()},
        },
    }


def _run_worker(
    tool: str, model: str, sparsity: float, epochs: int, seed: int, tmp: Path
) -> dict[str, Any]:
    job = tmp / f"job-{tool}.json"
    out = tmp / f"result-{tool}.json"
    job.write_text(
        json.dumps(
            {
                "model": model,
                "sparsity": sparsity,
                "epochs": epochs,
                "seed": seed,
                "data": str(tmp / f"{model}.npz"),
                "weights": str(tmp / f"{model}.weights.npz"),
                "out": str(out),
            }
        )
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": _pythonpath()}
    if tool in ("tfmot", "tf_keras"):
        env["TF_USE_LEGACY_KERAS"] = "1"
    else:
        env.pop("TF_USE_LEGACY_KERAS", None)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", tool, "--job", str(job)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tool} worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def _pythonpath() -> str:
    """This checkout first, so the workers import the prunecli under test."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


# ----------------------------------------------------------------------------- workers


def build(keras_module: Any, name: str) -> Any:
    """``name``'s architecture in whichever Keras is passed (Keras 3 or tf_keras)."""
    spec = ARCHITECTURES[name]
    layers = [getattr(keras_module.layers, kind)(**kwargs) for kind, kwargs in spec["layers"]]
    return keras_module.Sequential([keras_module.Input(spec["input"]), *layers], name=name)


def accuracy(probabilities: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy: the same numpy code scores both tools."""
    return float(np.mean(np.argmax(probabilities, axis=-1) == y))


def _kernel_sparsity(model: Any) -> float:
    """Zeros over every Conv2D / Dense kernel (what both tools prune)."""
    kernels = [
        np.asarray(layer.kernel)
        for layer in model.layers
        if type(layer).__name__ in ("Conv2D", "Dense")
    ]
    return float(sum(k.size - np.count_nonzero(k) for k in kernels) / sum(k.size for k in kernels))


def _work(tool: str, job: dict[str, Any]) -> None:
    arrays = np.load(job["data"])
    stored = np.load(job["weights"])
    weights = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    runner = {"prunecli": _prunecli, "tfmot": _tfmot, "keras3": _plain, "tf_keras": _plain}[tool]
    timer, model = runner(job, arrays, weights)
    spe = -(-len(arrays["y"]) // ARCHITECTURES[job["model"]]["batch"])
    result = {
        "steps_per_s": [spe / s for s in timer.seconds[1:]],
        "steps_per_cpu_s": [spe / s for s in timer.cpu_seconds[1:]],
        "accuracy": accuracy(
            model.predict(arrays["x_val"], batch_size=256, verbose=0), arrays["y_val"]
        ),
        "sparsity": _kernel_sparsity(model),
    }
    Path(job["out"]).write_text(json.dumps(result))


def _timer(base: type) -> Any:
    """An epoch timer callback subclassing ``base`` (each Keras has its own Callback)."""

    class EpochTimer(base):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self.cpu_seconds: list[float] = []  # process CPU time, all threads

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.start, self.start_cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.seconds.append(time.perf_counter() - self.start)
            self.cpu_seconds.append(time.process_time() - self.start_cpu)

    return EpochTimer()


def _prunecli(
    job: dict[str, Any], arrays: Any, weights: list[np.ndarray]
) -> tuple[list[float], Any]:
    from prunecli import runtime

    runtime.start(seed=job["seed"])
    import keras

    from prunecli import config, data
    from prunecli.core import schedules
    from prunecli.progress import Reporter
    from prunecli.pruning import selection
    from prunecli.pruning.pruner import Pruner
    from prunecli.training import finetune

    spec = ARCHITECTURES[job["model"]]
    cfg = config.load(
        None,
        {
            "seed": job["seed"],
            "prune": {
                "method": "magnitude",
                "scope": "layer",
                "sparsity": job["sparsity"],
                "schedule": {
                    "type": "polynomial",
                    "initial_sparsity": 0.0,
                    "start_epoch": 0,
                    "end_epoch": _end_epoch(job["epochs"]),
                    "power": POWER,
                    "frequency": FREQUENCY,
                },
            },
            "finetune": {
                "epochs": job["epochs"],
                "batch_size": spec["batch"],
                "learning_rate": LEARNING_RATE,
                "optimizer": "adam",
            },
        },
    )
    model = build(keras, job["model"])
    model.set_weights(weights)
    layers = selection.select(model, cfg.prune)
    spe = finetune.steps_per_epoch(len(arrays["y"]), spec["batch"])
    schedule_for = schedules.factory(cfg.prune.schedule, spe, cfg.finetune.epochs)
    pruner = Pruner(layers, cfg.prune, schedule_for, seed=cfg.seed)
    if pruner.updates_at(0):
        pruner.update(0)
    timer = _timer(keras.callbacks.Callback)
    finetune.run(
        model,
        pruner,
        data.from_arrays(arrays["x"], arrays["y"]),
        cfg.finetune,
        {"loss": "sparse_categorical_crossentropy"},
        Reporter(),
        callbacks=[timer],
    )
    return timer, model


def _plain(job: dict[str, Any], arrays: Any, weights: list[np.ndarray]) -> tuple[list[float], Any]:
    """Plain ``fit``, no pruning, in the Keras this process was started with."""
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        import tf_keras as keras_module
    else:
        from prunecli import runtime

        runtime.start(seed=job["seed"])
        import keras as keras_module
    keras_module.utils.set_random_seed(job["seed"])
    spec = ARCHITECTURES[job["model"]]
    model = build(keras_module, job["model"])
    model.set_weights(weights)
    model.compile(keras_module.optimizers.Adam(LEARNING_RATE), "sparse_categorical_crossentropy")
    timer = _timer(keras_module.callbacks.Callback)
    model.fit(
        arrays["x"],
        arrays["y"],
        batch_size=spec["batch"],
        epochs=job["epochs"],
        shuffle=True,
        verbose=0,
        callbacks=[timer],
    )
    return timer, model


def _tfmot(job: dict[str, Any], arrays: Any, weights: list[np.ndarray]) -> tuple[list[float], Any]:
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    tf.get_logger().setLevel("ERROR")
    tf_keras.utils.set_random_seed(job["seed"])
    spec = ARCHITECTURES[job["model"]]
    model = build(tf_keras, job["model"])
    model.set_weights(weights)
    spe = -(-len(arrays["y"]) // spec["batch"])
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=job["sparsity"],
        begin_step=0,
        end_step=_end_epoch(job["epochs"]) * spe,
        power=POWER,
        frequency=FREQUENCY,
    )
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(tf_keras.optimizers.Adam(LEARNING_RATE), "sparse_categorical_crossentropy")
    timer = _timer(tf_keras.callbacks.Callback)
    pruned.fit(
        arrays["x"],
        arrays["y"],
        batch_size=spec["batch"],
        epochs=job["epochs"],
        shuffle=True,
        verbose=0,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), timer],
    )
    return timer, tfmot.sparsity.keras.strip_pruning(pruned)


# ----------------------------------------------------------------------------- report


def _targets(rows: list[dict[str, Any]]) -> dict[str, bool]:
    gaps = [row["prunecli_accuracy"] - row["tfmot_accuracy"] for row in rows]
    return {
        "throughput_ratio >= 1.0 (every case)": all(row["throughput_ratio"] >= 1.0 for row in rows),
        "accuracy >= tfmot - 0.5 pt (every case)": all(gap >= -0.005 for gap in gaps),
        "accuracy above tfmot on average": statistics.mean(gaps) > 0,
    }


def _print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'model':<11} {'params':>8} {'sparsity':>8} {'prunecli st/s':>13} {'tfmot st/s':>10} "
        f"{'ratio':>6} {'CPU ratio':>9} {'K3/tf_keras':>11} {'prunecli acc':>12} "
        f"{'tfmot acc':>9} {'dense acc':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['model']:<11} {row['params']:>8,} {row['sparsity']:>8.2f} "
            f"{row['prunecli_steps_per_s']:>13.1f} {row['tfmot_steps_per_s']:>10.1f} "
            f"{row['throughput_ratio']:>6.3f} {row['cpu_throughput_ratio']:>9.3f} "
            f"{row['framework_ratio']:>11.3f} "
            f"{row['prunecli_accuracy']:>12.4f} "
            f"{row['tfmot_accuracy']:>9.4f} {row['dense_accuracy']:>9.4f}"
        )


def _machine() -> dict[str, Any]:
    """Platform and versions, read without importing TensorFlow into this process."""
    code = "import json, prunecli.runtime as r; print(json.dumps(r.machine()))"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": _pythonpath()}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    machine = json.loads(out.stdout.strip().splitlines()[-1])
    from importlib.metadata import version

    machine["tensorflow_model_optimization"] = version("tensorflow-model-optimization")
    machine["tf_keras"] = version("tf_keras")
    return machine


if __name__ == "__main__":
    main()
