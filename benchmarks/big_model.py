"""One-shot global magnitude pruning of ResNet50 (25.6M parameters): time and peak memory.

Three commands, each in its own fresh process, on the same ``.keras`` file of
``keras.applications.ResNet50(weights=None)`` (built locally, nothing downloaded):

- ``load_save``: the floor: a plain script that loads the model with Keras 3 and saves it
  again (what any tool that writes a pruned copy must at least do);
- ``prunecli``: ``prunecli prune resnet50.keras --epochs 0 --sparsity 0.8 --set
  prune.scope=global -o out.keras --quiet``, the real command line;
- ``tfmot``: tensorflow-model-optimization's one-shot route in tf_keras
  (``TF_USE_LEGACY_KERAS=1``): the same architecture built by ``tf_keras.applications``, the
  same weights set from an ``.npz`` (tf_keras cannot read Keras 3 files, so this stands in
  for its load), ``prune_low_magnitude`` with ``ConstantSparsity(0.8, begin_step=0)``, one
  training step on one random batch (tfmot computes masks only inside a train step),
  ``strip_pruning``, save as ``.h5``. tfmot has no global scope: every layer gets 80%.

Wall time is the whole process (interpreter, TensorFlow import, everything), since that is
what a user waits for; peak RSS is the child's own ``ru_maxrss`` from ``os.wait4``. The
commands alternate within each repetition (the order rotates each repetition) and the
medians are compared. Targets (issue 11): prunecli / load_save time <= 1.3 and memory
<= 1.15; tfmot / prunecli time >= 3.

``prunecli`` runs cold: its cache of measured sizes (``PRUNECLI_CACHE_DIR``) is emptied
before every run, so it deflates both models. ``prunecli_warm`` reruns the same command on
the same file with the cache the cold run left (the input's 'before' figures are then read
by its digest); the targets are judged on the cold run.

Results go to ``benchmarks/results/big_model.json`` (``time_ratio``, ``memory_ratio``,
``tfmot_time_ratio`` = tfmot's time over prunecli's, the medians, every sample, and the
stage timing from prunecli's own report).

    .venv/bin/python benchmarks/big_model.py [--reps 2] [--no-tfmot]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "big_model.json"
SPARSITY = 0.8

# Run as ``python -c`` in a fresh interpreter: argv[1] is the model, argv[2] the output.
LOAD_SAVE = """
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
keras.saving.load_model(sys.argv[1]).save(sys.argv[2])
"""

# argv[1]: the weights .npz, argv[2]: the output .h5, argv[3]: the sparsity (tf_keras,
# TF_USE_LEGACY_KERAS=1).
TFMOT = """
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras

model = tf_keras.applications.ResNet50(weights=None)
stored = np.load(sys.argv[1])
model.set_weights([stored[f"arr_{i}"] for i in range(len(stored.files))])
schedule = tfmot.sparsity.keras.ConstantSparsity(float(sys.argv[3]), begin_step=0, frequency=1)
pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
pruned.compile(tf_keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
x = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
step = tfmot.sparsity.keras.UpdatePruningStep()
pruned.fit(x, np.zeros(1), epochs=1, verbose=0, callbacks=[step])
tfmot.sparsity.keras.strip_pruning(pruned).save(sys.argv[2])
"""

# Builds the input model: argv[1] the .keras file, argv[2] its weights as .npz.
PREPARE = """
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras, numpy as np
keras.utils.set_random_seed(0)
model = keras.applications.ResNet50(weights=None)
model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
model.save(sys.argv[1])
np.savez(sys.argv[2], *model.get_weights())
print(model.count_params())
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2, help="alternating repetitions")
    parser.add_argument("--no-tfmot", action="store_true", help="skip tfmot (the slowest)")
    args = parser.parse_args()
    started, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="prunecli-big-", dir=_scratch()) as folder:
        tmp = Path(folder)
        model, weights = tmp / "resnet50.keras", tmp / "resnet50.weights.npz"
        params = int(_python(PREPARE, [model, weights], tmp / "prepare.log").strip())
        commands = _commands(model, weights, tmp)
        if args.no_tfmot:
            commands.pop("tfmot")
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
        order = list(commands)
        stages: list[dict[str, float]] = []
        for rep in range(args.reps):
            for name in order:
                if name == "prunecli":
                    shutil.rmtree(tmp / "cache", ignore_errors=True)
                sample = _measure(*commands[name], log=tmp / f"{name}.log")
                samples[name].append(sample)
                print(
                    f"  rep {rep} {name:<9} {sample['seconds']:7.1f} s  "
                    f"{sample['peak_rss_mb']:7.0f} MB",
                    flush=True,
                )
                if name == "prunecli":
                    stages.append(json.loads((tmp / "out.report.json").read_text())["timing"])
            order = order[1:] + order[:1]  # rotate who goes first
        input_mb = model.stat().st_size / 2**20
    row = _summarise(samples, stages, params, input_mb)
    _print_table(row)
    total = time.perf_counter() - started
    print(f"{args.reps} reps in {total / 60:.1f} min")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": _machine(),
        "reps": args.reps,
        "seconds": round(total, 1),
        # 1/5/15-minute load averages at start and end: other work on a shared box
        "load_average": {"start": load_before, "end": os.getloadavg()},
        **row,
    }
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


def _scratch() -> str | None:
    """A disk-backed folder when /tmp is a RAM disk would skew memory (``TMPDIR`` wins)."""
    return os.environ.get("TMPDIR")


def _commands(model: Path, weights: Path, tmp: Path) -> dict[str, tuple[list[str], dict]]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": _pythonpath()}
    env["PRUNECLI_CACHE_DIR"] = str(tmp / "cache")
    env.pop("TF_USE_LEGACY_KERAS", None)
    # As installed: byte-compiled like Keras and TensorFlow (pip writes their .pyc), so
    # prunecli's modules are compiled once here, untimed, rather than in every run.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    warm = "import prunecli.pipeline, prunecli.cli, prunecli.analysis.plots"
    subprocess.run([sys.executable, "-c", warm], env=env, check=True, capture_output=True)
    prunecli = [
        sys.executable, "-m", "prunecli", "prune", str(model), "--epochs", "0",
        "--sparsity", str(SPARSITY), "--set", "prune.scope=global",
        "-o", str(tmp / "out.keras"), "--force", "--quiet",
    ]  # fmt: skip
    return {
        "load_save": ([sys.executable, "-c", LOAD_SAVE, str(model), str(tmp / "plain.keras")], env),
        "prunecli": (prunecli, env),
        "prunecli_warm": (prunecli, env),
        "tfmot": (
            [sys.executable, "-c", TFMOT, str(weights), str(tmp / "tfmot.h5"), str(SPARSITY)],
            {**env, "TF_USE_LEGACY_KERAS": "1"},
        ),
    }


def _measure(command: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Wall seconds and peak RSS (MB) of one child process, measured on that child alone."""
    with log.open("w") as sink:
        start = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{command[:4]} failed ({child.returncode}):\n{log.read_text()[-3000:]}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def _python(code: str, args: list[Path], log: Path) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": _pythonpath()}
    env.pop("TF_USE_LEGACY_KERAS", None)
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"preparing the model failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def _pythonpath() -> str:
    """This checkout first, so the children import the prunecli under test."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def _summarise(
    samples: dict[str, list[dict[str, float]]],
    stages: list[dict[str, float]],
    params: int,
    input_mb: float,
) -> dict[str, Any]:
    time_of = {
        name: statistics.median(s["seconds"] for s in runs) for name, runs in samples.items()
    }
    rss_of = {
        name: statistics.median(s["peak_rss_mb"] for s in runs) for name, runs in samples.items()
    }
    row: dict[str, Any] = {
        "model": "keras.applications.ResNet50(weights=None)",
        "params": params,
        "input_mb": round(input_mb, 1),
        "sparsity": SPARSITY,
        "time_ratio": round(time_of["prunecli"] / time_of["load_save"], 3),
        "warm_time_ratio": round(time_of["prunecli_warm"] / time_of["load_save"], 3),
        "memory_ratio": round(rss_of["prunecli"] / rss_of["load_save"], 3),
        "tfmot_time_ratio": None,
        "tfmot_memory_ratio": None,
        "median_seconds": {k: round(v, 2) for k, v in time_of.items()},
        "median_peak_rss_mb": {k: round(v, 1) for k, v in rss_of.items()},
        "prunecli_stages_s": {
            key: round(statistics.median(stage[key] for stage in stages), 3) for key in stages[0]
        },
        "samples": samples,
    }
    stage_sum = sum(v for k, v in row["prunecli_stages_s"].items() if k != "total_s")
    row["stages_sum_over_total"] = round(stage_sum / row["prunecli_stages_s"]["total_s"], 3)
    if "tfmot" in samples:
        row["tfmot_time_ratio"] = round(time_of["tfmot"] / time_of["prunecli"], 3)
        row["tfmot_memory_ratio"] = round(rss_of["tfmot"] / rss_of["prunecli"], 3)
    row["targets"] = {
        "time_ratio <= 1.3": row["time_ratio"] <= 1.3,
        "memory_ratio <= 1.15": row["memory_ratio"] <= 1.15,
        "tfmot_time_ratio >= 3": (row["tfmot_time_ratio"] or 0) >= 3,
        "stages sum to total_s within 5%": abs(row["stages_sum_over_total"] - 1) <= 0.05,
    }
    return row


def _print_table(row: dict[str, Any]) -> None:
    print(f"{'command':<10} {'median s':>9} {'peak RSS MB':>12}")
    print("-" * 33)
    for name, seconds in row["median_seconds"].items():
        print(f"{name:<10} {seconds:>9.1f} {row['median_peak_rss_mb'][name]:>12.0f}")
    print(
        f"prunecli / load_save: time {row['time_ratio']:.3f} (warm cache "
        f"{row['warm_time_ratio']:.3f}), memory {row['memory_ratio']:.3f}; "
        f"tfmot / prunecli time: {row['tfmot_time_ratio']}"
    )
    print(
        "prunecli stages (s): " + ", ".join(f"{k} {v}" for k, v in row["prunecli_stages_s"].items())
    )
    for name, passed in row["targets"].items():
        print(f"target {name}: {'PASS' if passed else 'FAIL'}")


def _machine() -> dict[str, Any]:
    """Platform and versions, read in a child: this process never imports TensorFlow."""
    code = "import json, prunecli.runtime as r; print(json.dumps(r.machine()))"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": _pythonpath()}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
