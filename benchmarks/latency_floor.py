"""Where the sample model's batch-1 time goes: every TensorFlow CPU form, side by side.

Issue 13's target, >= 1.8x Keras batch-1 speedup at 50% channels on the ResNet-style
sample model (``models.residual_cnn``), is not met (``structured.py``: 1.54x, with 3.9x
fewer MACs). This script measures why, on the dense model and its 50%-channel rebuild
(``models.channel_pruned``: l2, layer scope, round_to 8), one thread:

- **forms**: the same looped batch-1 inference (``latency.looped``: back-to-back runs in
  one compiled ``tf.while_loop``, per inference) compiled as the plain graph, the plain
  graph run by TensorFlow's single-threaded executor (no inter-op scheduling), and XLA;
  LiteRT (XNNPack) beside them. Dense and pruned alternate, ``ROUNDS`` rounds, medians of
  process CPU time. Settings fixed when TensorFlow starts run in child processes of this
  script: oneDNN off (``TF_ENABLE_ONEDNN_OPTS=0``), XLA's Eigen kernels single-threaded,
  XLA's XNNPACK and oneDNN library fusions requested (``XLA_FLAGS``).
- **calls**: one call per inference the ways a caller would make it (a ``tf.function``
  given a numpy batch, a concrete function given a ``tf.constant``, the same with XLA, an
  identity function): what the framework costs around the model.
- **floor**: the loop around a model that only flattens its input, the harness's cost.
- **per layer**: the XLA loop cut after each layer (a model from the input to that
  layer's output); the difference to the previous cut is that layer's cost, beside its MACs
  (``prunecli.reporting.flops`` of the cut, differenced the same way).

Writes ``benchmarks/results/latency_floor.json``.

    .venv/bin/python benchmarks/latency_floor.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

VARIANTS = {  # child processes: settings TensorFlow reads once, at start-up
    "oneDNN off": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "XLA Eigen single-threaded": {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"},
    "XLA XNNPACK fusions": {
        "XLA_FLAGS": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY"
        " --xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce"
    },
    "XLA oneDNN fusions": {"XLA_FLAGS": "--xla_cpu_experimental_onednn_fusion_type=dot,eltwise"},
}
LOOP = 100  # inferences per timed call
RUNS = 20


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds")
    parser.add_argument("--child", help="internal: time the forms only, print JSON")
    parser.add_argument("--results", type=Path, help="where the JSON goes (default: results/)")
    return parser.parse_args()


ARGS = _arguments()  # before TensorFlow starts: its thread pools are fixed at start-up
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402
import models  # noqa: E402  (benchmarks/models.py: this folder is on sys.path when run)
import numpy as np  # noqa: E402
from tensorflow.python.eager import context  # noqa: E402  (the executor type: no public API)

from prunecli import runtime  # noqa: E402
from prunecli.reporting import flops, latency  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "latency_floor.json"
SINGLE = "SINGLE_THREADED_EXECUTOR"

Run = Callable[[], Any]


def _form(model: Any, jit: bool, executor: str | None = None) -> Run:
    """One timed call: ``LOOP`` inferences of ``model`` in one compiled loop."""
    feed = [tf.constant(np.random.default_rng(0).random((1, 28, 28, 1)).astype(np.float32))]
    with context.function_executor_type(executor):
        run = latency.looped(model, feed, jit=jit)

    def call() -> None:
        with context.function_executor_type(executor):
            run(LOOP)

    return call


def _per_inference_us(call: Run) -> float:
    return latency.timed(call, runs=RUNS, budget_s=5.0)[1] * 1000 / LOOP


def _paired(calls: dict[str, Run], rounds: int) -> dict[str, float]:
    """Median per-inference CPU microseconds of each call, the calls alternating."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name].append(_per_inference_us(call))
    return {name: round(statistics.median(values), 2) for name, values in times.items()}


def _forms(dense: Any, narrow: Any, rounds: int) -> dict[str, dict[str, float]]:
    """{form: {"dense", "pruned", "speedup"}} for the forms this process can compile."""
    shapes = {"graph": (False, None), "graph, single-threaded executor": (False, SINGLE),
              "XLA": (True, None)}  # fmt: skip
    table = {}
    for name, (jit, executor) in shapes.items():
        got = _paired({"dense": _form(dense, jit, executor),
                       "pruned": _form(narrow, jit, executor)}, rounds)  # fmt: skip
        table[name] = got | {"speedup": round(got["dense"] / got["pruned"], 3)}
    return table


def _lite(dense: Any, narrow: Any, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="prunecli-floor-") as folder:
        runs = {kind: models.tflite_runner(model, Path(folder) / f"{kind}.tflite", threads=1)
                for kind, model in (("dense", dense), ("pruned", narrow))}  # fmt: skip
        looped = {kind: _repeat(run) for kind, run in runs.items()}
        got = _paired(looped, rounds)
    return got | {"speedup": round(got["dense"] / got["pruned"], 3)}


def _repeat(run: Run) -> Run:
    def call() -> None:
        for _ in range(LOOP):
            run()

    return call


def _calls(dense: Any, narrow: Any, rounds: int) -> dict[str, dict[str, float]]:
    """CPU microseconds per call of the ways a caller runs one batch-1 inference: the
    framework around the model that the compiled loop leaves out."""
    feed = tf.constant(np.random.default_rng(0).random((1, 28, 28, 1)).astype(np.float32))
    found: dict[str, dict[str, float]] = {}
    for name, jit, numpy in (("tf.function, numpy batch", False, True),
                             ("concrete function, tf.constant", False, False),
                             ("concrete function, XLA, tf.constant", True, False)):  # fmt: skip
        calls = {kind: _repeat(_one_call(model, feed, jit, numpy))
                 for kind, model in (("dense", dense), ("pruned", narrow))}  # fmt: skip
        found[name] = _paired(calls, rounds)
    identity = tf.function(lambda x: x + 1).get_concrete_function(feed)
    alone = _paired({"dense": _repeat(lambda: np.asarray(identity(feed)))}, rounds)["dense"]
    return found | {"identity function (x + 1)": {"dense": alone, "pruned": alone}}


def _one_call(model: Any, feed: Any, jit: bool, numpy: bool) -> Run:
    """One inference per call: the ``tf.function`` given a numpy batch, or its concrete
    function given the ``tf.constant`` (the model is closed over, not an argument: an
    argument would be flattened at every call)."""
    function = tf.function(lambda x: model(x, training=False), jit_compile=jit)
    concrete = function.get_concrete_function(tf.TensorSpec(feed.shape, feed.dtype))
    batch = feed.numpy()
    if numpy:
        return lambda: np.asarray(function(batch))
    return lambda: np.asarray(concrete(feed))


def _floor(rounds: int) -> dict[str, float]:
    """Per-inference cost of the loop itself, around a model that only flattens."""
    inputs = keras.Input((28, 28, 1))
    empty = keras.Model(inputs, keras.layers.Flatten()(inputs))
    return _paired({"graph": _form(empty, False), "XLA": _form(empty, True)}, rounds)


def _layers(model: Any) -> list[dict[str, Any]]:
    """Each layer's own cost in the XLA loop and its MACs, by cutting the model after it."""
    rows, previous_us, previous_macs = [], 0.0, 0
    for layer in model.layers[1:]:
        cut = keras.Model(model.inputs, layer.output)
        us = min(_per_inference_us(_form(cut, True)) for _ in range(3))
        macs = flops.count(cut) or 0
        rows.append({"layer": layer.name, "shape": list(layer.output.shape[1:]),
                     "macs": macs - previous_macs, "us": round(us - previous_us, 2),
                     "cumulative_us": round(us, 2)})  # fmt: skip
        previous_us, previous_macs = us, macs
    return rows


def _children(rounds: int) -> dict[str, Any]:
    """The forms again in a child process per start-up setting (``VARIANTS``), with XLA's
    compiled HLO dumped: ``library_calls`` counts the XNNPACK / oneDNN calls in it (0: the
    flag changed nothing that runs)."""
    found = {}
    for name, env in VARIANTS.items():
        with tempfile.TemporaryDirectory(prefix="prunecli-hlo-") as dump:
            flags = f"{env.get('XLA_FLAGS', '')} --xla_dump_to={dump} --xla_dump_hlo_as_text"
            command = [sys.executable, __file__, "--child", name, "--rounds", str(rounds)]
            done = subprocess.run(command, env=os.environ | env | {"XLA_FLAGS": flags},
                                  capture_output=True, text=True)  # fmt: skip
            lines = done.stdout.strip().splitlines()
            ok = done.returncode == 0 and lines
            modules, calls = _library_calls(Path(dump))
            found[name] = {"env": env, "hlo_modules": modules, "library_calls": calls} | (
                json.loads(lines[-1]) if ok else {"error": done.stderr.strip()[-300:]}
            )
    return found


def _library_calls(dump: Path) -> tuple[int, int]:
    """(optimised HLO modules XLA dumped, XNNPACK / oneDNN fusions and custom calls in them)."""
    texts = [p.read_text() for p in dump.glob("*cpu_after_optimizations.txt")]
    return len(texts), sum(len(re.findall(r"xnn|onednn|custom-call", t, re.I)) for t in texts)


def main() -> None:
    keras.utils.set_random_seed(0)
    dense = models.residual_cnn()
    narrow = models.channel_pruned(dense, 0.5)
    if ARGS.child:
        print(json.dumps(_forms(dense, narrow, ARGS.rounds)))
        return
    payload = {
        "machine": runtime.machine(),
        "model": {"dense": {"params": dense.count_params(), "macs": flops.count(dense)},
                  "pruned": {"params": narrow.count_params(), "macs": flops.count(narrow)}},
        "unit": "process CPU microseconds per batch-1 inference, 1 thread",
        "forms": _forms(dense, narrow, ARGS.rounds) | {"LiteRT (XNNPack)": _lite(
            dense, narrow, ARGS.rounds)},
        "variants": _children(ARGS.rounds),
        "calls": _calls(dense, narrow, ARGS.rounds),
        "floor": _floor(ARGS.rounds),
        "layers": {"dense": _layers(dense), "pruned": _layers(narrow)},
    }  # fmt: skip
    _print(payload)
    results = ARGS.results or RESULTS
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {results}")


def _print(payload: dict[str, Any]) -> None:
    """The Markdown tables the README quotes."""
    print("\n| form | dense us | pruned us | speedup |\n|---|---|---|---|")
    rows = dict(payload["forms"])
    for variant, found in payload["variants"].items():
        forms = {k: v for k, v in found.items() if isinstance(v, dict) and "dense" in v}
        calls = f"{found['library_calls']} library calls in {found['hlo_modules']} XLA modules"
        rows |= {f"{form}, {variant} ({calls})": v for form, v in forms.items()}
    for name, row in rows.items():
        cells = [row.get(k, "n/a") for k in ("dense", "pruned", "speedup")]
        print(f"| {name} | " + " | ".join(str(c) for c in cells) + " |")
    print("\n| one call | dense us | pruned us |\n|---|---|---|")
    for name, row in payload["calls"].items():
        print(f"| {name} | {row['dense']} | {row['pruned']} |")
    floor = payload["floor"]
    print(f"\nloop floor (a flatten-only model): graph {floor['graph']} us, XLA {floor['XLA']} us")
    print("\n| layer | output dense -> pruned | MACs dense -> pruned | XLA us dense -> pruned |")
    print("|---|---|---|---|")
    for a, b in zip(payload["layers"]["dense"], payload["layers"]["pruned"], strict=True):
        print(f"| {a['layer']} | {a['shape']} -> {b['shape']} | {a['macs']:,} -> "
              f"{b['macs']:,} | {a['us']} -> {b['us']} |")  # fmt: skip


if __name__ == "__main__":
    main()
