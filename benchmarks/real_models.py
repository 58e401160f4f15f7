"""Real models end to end through the CLI: keras_hub transformers, a user's registered
TransformerBlock, keras.applications families and a tf_keras MobileNet ``.h5``.

Each is built tiny and offline by tests/real_models.py (random weights; the class is written
into the input, so one epoch can learn something), then pruned by ``python -m prunecli
prune`` in its own process, exactly as a user runs it: one-shot magnitude at ``--sparsity``,
``--epochs`` of fine-tuning. The table shows the parameters, the share of them in scope
(``after.prunable_share``), the sparsity reached over that scope, validation accuracy before
and after, and the command's wall time (model build excluded).

    .venv/bin/python benchmarks/real_models.py [--sparsity 0.5] [--epochs 1] [--only bert ...]
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import real_models  # noqa: E402  (tests/real_models.py: the builders the tests use)

TOKENS = ("bert", "distilbert", "user TransformerBlock")


def build(name: str, folder: Path) -> tuple[Path, Path, list[str]]:
    """(model file, data file, extra CLI arguments) for one benchmark row."""
    if name in ("bert", "distilbert"):
        model = getattr(real_models, name)(folder / f"{name}.keras")
        return model, real_models.token_data(folder / "tokens.npz", count=240), []
    if name == "vit":
        data = real_models.image_data(folder / "small.npz", count=240, size=16)
        return real_models.vit(folder / "vit.keras"), data, []
    if name == "user TransformerBlock":
        (folder / "my_layers.py").write_text(real_models.USER_MODULE)
        run([sys.executable, "my_layers.py", "user.keras"], folder)
        data = real_models.token_data(folder / "ids.npz", count=240, names=False)
        return folder / "user.keras", data, ["--import", "my_layers"]
    data = real_models.image_data(folder / "images.npz", count=240)
    if name == "tf_keras MobileNet .h5":
        return real_models.tf_keras_mobilenet(folder / "mobilenet.h5"), data, []
    return real_models.application(name, folder / f"{name}.keras"), data, []


def run(command: list[str], cwd: Path) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env)
    if done.returncode:
        raise SystemExit(f"{command}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> None:
    names = [*TOKENS[:2], "vit", TOKENS[2], *real_models.APPLICATIONS, "tf_keras MobileNet .h5"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=names)
    args = parser.parse_args()
    rows, environment = [], None
    for name in [n for n in names if n in args.only]:
        with tempfile.TemporaryDirectory(prefix="prunecli-real-") as scratch:
            folder = Path(scratch)
            model, data, extra = build(name, folder)
            command = [
                sys.executable, "-m", "prunecli", "prune", str(model), "-o", "out.keras",
                "--sparsity", str(args.sparsity), "--epochs", str(args.epochs),
                "--set", f"data.train={data}", "--set", "data.validation_split=0.25",
                "--set", "finetune.learning_rate=0.001", "--json", "--quiet", *extra,
            ]  # fmt: skip
            start = time.perf_counter()
            report = json.loads(run(command, folder))
            wall = time.perf_counter() - start
        before, after = report["before"], report["after"]
        environment = environment or report["environment"]  # machine and versions
        rows.append({
            "model": name, "params": after["params_total"],
            "share_in_scope": after["prunable_share"], "sparsity": after["sparsity"],
            "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
            "wall_s": round(wall, 1), "loss": report["finetune"]["loss"],
            "warnings": report["warnings"],
        })  # fmt: skip
        print(_line(rows[-1]), flush=True)
    out = HERE / "results" / "real_models.json"
    summary = {"environment": environment, "sparsity": args.sparsity, "epochs": args.epochs,
               "rows": rows}  # fmt: skip
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        "\n| model | parameters | share in scope | sparsity | accuracy before -> after | wall s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(_line(row))


def _line(row: dict) -> str:
    return (
        f"| {row['model']} | {row['params']:,} | {100 * row['share_in_scope']:.1f}% | "
        f"{100 * row['sparsity']:.1f}% | {100 * row['accuracy_before']:.1f}% -> "
        f"{100 * row['accuracy_after']:.1f}% | {row['wall_s']} |"
    )


if __name__ == "__main__":
    main()
