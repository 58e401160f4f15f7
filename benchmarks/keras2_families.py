"""Keras 2 files of every keras.applications family: built by tf_keras, loaded by prunecli.

For each family of ``tests/real_models.py``'s ``KERAS2_FAMILIES`` (random weights, the
smallest input the builder allows, ``alpha`` small where there is one, 3 classes, logits
out, BatchNorm statistics randomised): the tf_keras model is saved as ``.h5``, loaded by
prunecli's loader (the Keras 2 -> 3 config rewrite, ``prunecli/formats/legacy.py``), its
outputs compared with tf_keras's on the same input (max abs difference, and relative to
the largest logit), then pruned one-shot to 50% by ``python -m prunecli prune --epochs 0``
in its own process. A family that fails keeps its one-line reason in the table.

    .venv/bin/python benchmarks/keras2_families.py [--only VGG16 ...] [--sparsity 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))

import real_models  # noqa: E402  (tests/real_models.py: the builders the tests use)


def check(name: str, folder: Path, sparsity: float) -> dict[str, Any]:
    """One table row: load, compare, prune."""
    from prunecli.formats import model_io

    path, x, expected = real_models.tf_keras_application(name, folder / f"{name}.h5")
    row: dict[str, Any] = {"family": name, "input": list(x.shape[1:])}
    start = time.perf_counter()
    try:
        model, source = model_io.load(path)
    except Exception as exc:  # the table says why, the next family runs
        return row | {"loaded": False, "error": str(exc).splitlines()[0][:300]}
    row |= {"loaded": True, "format": source.name, "load_s": round(time.perf_counter() - start, 2)}
    got = np.asarray(model(x, training=False))
    diff = float(np.max(np.abs(got - expected)))
    row |= {
        "params": int(model.count_params()),
        "max_abs_diff": diff,
        "relative_diff": diff / max(float(np.max(np.abs(expected))), 1e-12),
    }
    return row | prune(path, folder, sparsity)


def prune(path: Path, folder: Path, sparsity: float) -> dict[str, Any]:
    out = folder / "pruned.keras"
    command = [
        sys.executable, "-m", "prunecli", "prune", str(path), "-o", str(out), "--epochs", "0",
        "--sparsity", str(sparsity), "--json", "--quiet", "--force",
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(HERE.parent)}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=folder)
    wall = round(time.perf_counter() - start, 1)
    if done.returncode:
        tail = (done.stderr.strip().splitlines() or [""])[-1][:300]
        return {"prune_exit": done.returncode, "prune_s": wall, "error": tail}
    report = json.loads(done.stdout)
    return {
        "prune_exit": 0,
        "prune_s": wall,
        "share_in_scope": report["after"]["prunable_share"],
        "sparsity": report["after"]["sparsity"],
    }


def main() -> None:
    names = list(real_models.KERAS2_FAMILIES)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=names)
    parser.add_argument("--sparsity", type=float, default=0.5)
    args = parser.parse_args()
    rows = []
    for name in [n for n in names if n in args.only]:
        with tempfile.TemporaryDirectory(prefix="prunecli-k2-") as scratch:
            rows.append(check(name, Path(scratch), args.sparsity))
        print(_line(rows[-1]), flush=True)
    import tensorflow as tf
    import tf_keras

    out = HERE / "results" / "keras2_families.json"
    summary = {
        "tf_keras": tf_keras.__version__, "tensorflow": tf.__version__,
        "sparsity": args.sparsity, "rows": rows,
    }  # fmt: skip
    if set(args.only) == set(names):
        out.write_text(json.dumps(summary, indent=2) + "\n")
    print("\n| family | input | params | loads | max abs diff (relative) | pruned 50% | s |")
    print("|---|---|---:|---|---:|---|---:|")
    for row in rows:
        print(_line(row))


def _line(row: dict[str, Any]) -> str:
    side = row["input"][0]
    if not row["loaded"]:
        return f"| {row['family']} | {side}x{side} | | no: {row['error']} | | | |"
    pruned = (
        f"{100 * row['sparsity']:.1f}% of {100 * row['share_in_scope']:.1f}% in scope"
        if row["prune_exit"] == 0
        else f"exit {row['prune_exit']}: {row['error']}"
    )
    return (
        f"| {row['family']} | {side}x{side} | {row['params']:,} | yes | "
        f"{row['max_abs_diff']:.2e} ({row['relative_diff']:.1e}) | {pruned} | "
        f"{row['load_s'] + row['prune_s']:.1f} |"
    )


if __name__ == "__main__":
    main()
