"""``taylor`` against ``magnitude`` on the sample: run time of the same prune, both ways.

``prunecli prune sample_models/digits_cnn.h5 --config configs/taylor.yaml`` (16 batches of
gradients, one-shot 80%, 3 epochs of fine-tuning), once with ``prune.method=taylor`` and
once with ``magnitude``, each in a fresh process, alternating, ``--reps`` times. Compared:
the process's wall time and the report's ``total_s`` (medians; issue 11 target: taylor <=
1.3x magnitude) and ``prune_s`` (where the gradients are taken).

    .venv/bin/python benchmarks/taylor.py [--reps 3] [--epochs 3]
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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "taylor.json"
METHODS = ("magnitude", "taylor")
TARGET = 1.3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.pathsep.join(filter(None, paths)),
    }
    runs: dict[str, list[dict[str, float]]] = {method: [] for method in METHODS}
    order = list(METHODS)
    with tempfile.TemporaryDirectory(prefix="prunecli-taylor-") as folder:
        for _ in range(args.reps):
            for method in order:
                runs[method].append(_run(method, args.epochs, Path(folder), env))
                print(
                    f"  {method:<9} " + ", ".join(f"{k} {v}" for k, v in runs[method][-1].items())
                )
            order.reverse()
    medians = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
    ratios = {
        k: round(medians["taylor"][k] / medians["magnitude"][k], 3) for k in medians["taylor"]
    }
    print(f"{'':<10} {'wall s':>8} {'total_s':>8} {'prune_s':>8}")
    for method, row in medians.items():
        print(f"{method:<10} {row['wall_s']:>8.2f} {row['total_s']:>8.2f} {row['prune_s']:>8.2f}")
    print(f"taylor / magnitude: wall {ratios['wall_s']}, total_s {ratios['total_s']}")
    verdict = "PASS" if ratios["total_s"] <= TARGET else "FAIL"
    print(f"target total_s ratio <= {TARGET}: {verdict}")
    payload = {"reps": args.reps, "epochs": args.epochs, "medians": medians, "ratios": ratios,
               "samples": runs, "load": os.getloadavg()}  # fmt: skip
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


def _run(method: str, epochs: int, tmp: Path, env: dict[str, str]) -> dict[str, float]:
    out, report = tmp / f"{method}.keras", tmp / f"{method}.report.json"
    command = [
        sys.executable, "-m", "prunecli", "prune", str(ROOT / "sample_models" / "digits_cnn.h5"),
        "--config", str(ROOT / "configs" / "taylor.yaml"), "--set", f"prune.method={method}",
        "--epochs", str(epochs), "-o", str(out), "--report", str(report), "--force", "--quiet",
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    timing = json.loads(report.read_text())["timing"]
    return {"wall_s": round(wall, 2), "total_s": timing["total_s"], "prune_s": timing["prune_s"]}


if __name__ == "__main__":
    main()
