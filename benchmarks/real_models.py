"""Real models end to end through the CLI: keras_hub transformers, a user's registered
TransformerBlock, keras.applications families and a tf_keras MobileNet ``.h5``.

Each is built tiny and offline by tests/real_models.py (random weights; the class is written
into the input, so one epoch can learn something), then pruned by ``python -m prunecli
prune`` in its own process, exactly as a user runs it: one-shot magnitude at ``--sparsity``,
``--epochs`` of fine-tuning. Before that each model is trained dense for ``--train-epochs``
on its own rows (another seed than the rows prunecli reads), so "accuracy before" is a
trained model's and "after" shows what pruning cost it. The table shows the parameters, the
share of them in scope
(``after.prunable_share``), the sparsity reached over that scope, validation accuracy before
and after, and the command's wall time (model build excluded).

    .venv/bin/python benchmarks/real_models.py [--sparsity 0.5] [--epochs 3] [--train-epochs 20]
                                               [--only bert ...]
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

# Dense training of a benchmark model in its own process: argv = model, rows, epochs, library.
# keras_hub (and the user's module, found in the working folder) register their classes.
TRAIN = """
import importlib, os, sys
import numpy as np
model_path, rows, epochs, library = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
keras = importlib.import_module(library)
if library == "keras":
    import keras_hub  # noqa: F401
    if os.path.exists("my_layers.py"):
        import my_layers  # noqa: F401
arrays = np.load(rows, allow_pickle=False)
model = keras.models.load_model(model_path)
named = model.input if isinstance(model.input, dict) else {}  # a dict-input model's keys
x = {k: arrays[k] for k in named} if named else arrays["x"]
for layer in model._flatten_layers():
    if isinstance(layer, keras.layers.BatchNormalization):
        layer.momentum = 0.9  # 150 steps: statistics that settle in time for evaluation
# the loss the file was compiled with (keras_hub's from_logits one included), new metrics
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=model.loss, metrics=["accuracy"])
keras.utils.set_random_seed(0)
done = model.fit(x, arrays["y"], batch_size=16, epochs=epochs, verbose=0)
model.save(model_path)
print(round(float(done.history["accuracy"][-1]), 4))
"""


def build(name: str, folder: Path) -> tuple[Path, list[str]]:
    """(model file, extra CLI arguments) for one benchmark row."""
    if name in ("bert", "distilbert"):
        return getattr(real_models, name)(folder / f"{name}.keras"), []
    if name == "vit":
        return real_models.vit(folder / "vit.keras"), []
    if name == "user TransformerBlock":
        (folder / "my_layers.py").write_text(real_models.USER_MODULE)
        run([sys.executable, "my_layers.py", "user.keras"], folder)
        return folder / "user.keras", ["--import", "my_layers"]
    if name == "tf_keras MobileNet .h5":
        return real_models.tf_keras_mobilenet(folder / "mobilenet.h5"), []
    return real_models.application(name, folder / f"{name}.keras"), []


def rows(name: str, folder: Path, seed: int) -> Path:
    """240 rows of the data ``name`` reads, drawn with ``seed``."""
    path = folder / f"rows{seed}.npz"
    if name in TOKENS:
        return real_models.token_data(path, 240, seed, names=name != "user TransformerBlock")
    return real_models.image_data(path, 240, seed, size=16 if name == "vit" else real_models.IMAGE)


def trained(name: str, folder: Path, epochs: int) -> tuple[Path, Path, list[str], float | None]:
    """(model, data file, extra CLI arguments, last training accuracy): the model trained
    dense for ``epochs`` on other rows (seed 1) than the ones prunecli then reads (seed 0)."""
    model, extra = build(name, folder)
    if not epochs:
        return model, rows(name, folder, 0), extra, None
    library = "tf_keras" if model.suffix == ".h5" else "keras"
    command = [sys.executable, "-c", TRAIN, str(model), str(rows(name, folder, 1)), str(epochs)]
    out = run([*command, library], folder)
    return model, rows(name, folder, 0), extra, float(out.strip().splitlines()[-1])


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
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-epochs", type=int, default=20)
    parser.add_argument("--only", nargs="*", default=names)
    args = parser.parse_args()
    rows, environment = [], None
    for name in [n for n in names if n in args.only]:
        with tempfile.TemporaryDirectory(prefix="prunecli-real-") as scratch:
            folder = Path(scratch)
            model, data, extra, fit = trained(name, folder, args.train_epochs)
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
            "wall_s": round(wall, 1), "loss": report["finetune"]["loss"], "train_accuracy": fit,
            "warnings": report["warnings"],
        })  # fmt: skip
        print(_line(rows[-1]), flush=True)
    out = HERE / "results" / "real_models.json"
    summary = {"environment": environment, "sparsity": args.sparsity, "epochs": args.epochs,
               "train_epochs": args.train_epochs, "rows": rows}  # fmt: skip
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
