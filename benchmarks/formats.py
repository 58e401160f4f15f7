"""What pruning buys in each deployed form: .keras gzip size, TFLite size (dense vs sparse
storage, float32 vs int8), TFLite accuracy and batch-1 latency, at 0/50/80/90% sparsity.

Each model is pruned one-shot by magnitude with prunecli's own Pruner, then fine-tuned
with the masks held (``--epochs``, default 2; 0 shows one-shot accuracy without recovery).
Every TFLite file is made by ``exporting.convert_tflite`` (so sparse + int8, which XNNPack
cannot run with TF 2.21, comes back dense: the ``fallback`` column) and measured by running
it in LiteRT.

``floor`` is the physical minimum for the weights in the sparse TFLite file: non-zero
kernel values x bytes per value, plus CSR index overhead over the innermost (input) axis of
TFLite's ``(out, [kh, kw,] in)`` layout (one index per non-zero and one row pointer per
row, each in the smallest unsigned type that fits), or the kernel dense
where that is smaller, plus every other parameter dense. ``/floor`` shows how close
TFLite's storage gets to it; the file also holds the graph, so just above 1 is ideal.

    .venv/bin/python benchmarks/formats.py [--sparsities 0 0.5 0.8 0.9] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from prunecli import runtime

runtime.start(seed=0)  # quiet TensorFlow start-up, before anything imports Keras

import keras  # noqa: E402
import models  # noqa: E402  (benchmarks/models.py: this folder is on sys.path when run)

from prunecli import config, data  # noqa: E402
from prunecli.core import schedules  # noqa: E402
from prunecli.formats import exporting, model_io  # noqa: E402
from prunecli.progress import Reporter  # noqa: E402
from prunecli.pruning import selection  # noqa: E402
from prunecli.pruning.pruner import Pruner  # noqa: E402
from prunecli.reporting import measure  # noqa: E402
from prunecli.training import finetune  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "formats.json"
# (label, sparse storage, quantize)
VARIANTS = (
    ("dense f32", False, "none"),
    ("sparse f32", True, "none"),
    ("dense int8", False, "int8"),
    ("sparse int8", True, "int8"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.5, 0.8, 0.9])
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning after the prune")
    args = parser.parse_args()
    rows = [
        _measure(case, sparsity, args.epochs)
        for case in (_sample_case(), _cnn_1m_case())
        for sparsity in args.sparsities
    ]
    _print_table(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": runtime.machine(), "cases": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


def _sample_case() -> dict[str, Any]:
    path = ROOT / "sample_models" / "digits_cnn.h5"
    model, _ = model_io.load(path)
    root = ROOT / "sample_models" / "digits"
    settings = config.Data(train=root / "train", validation=root / "val")
    splits = data.load(settings, tuple(model.input_shape[1:]), seed=0)
    return {"name": "digits_cnn", "model": model, "train": splits.train, "val": splits.validation}


def _cnn_1m_case() -> dict[str, Any]:
    """The ~1M-parameter CNN of finetune_overhead.py, trained one epoch on learnable
    synthetic 32x32x3 data (class k brightens its own 8-row band), so accuracy means
    something."""
    model = models.cnn_1m()
    train, val = _bands(2048, 1), _bands(512, 2)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(*data.materialize(train), batch_size=64, epochs=1, verbose=0)
    return {"name": "cnn_1m", "model": model, "train": train, "val": val}


def _bands(count: int, seed: int) -> data.Source:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, count)
    x = rng.random((count, 32, 32, 3), dtype=np.float32) * 0.5
    for i, label in enumerate(y):
        x[i, 3 * label : 3 * label + 3] += 0.5
    return data.from_arrays(x, y)


def _prune(source: Any, sparsity: float, train: Any, epochs: int) -> tuple[Any, list[Any]]:
    """One-shot magnitude masks, then ``epochs`` of fine-tuning with them held; the model
    comes back uncompiled (no optimizer state in the sizes)."""
    model = keras.models.clone_model(source)
    model.set_weights(source.get_weights())
    prune = config.Prune(sparsity=sparsity)
    settings = config.Finetune(epochs=epochs, batch_size=32, learning_rate=1e-3)
    spe = finetune.steps_per_epoch(len(train), settings.batch_size)
    plan = schedules.Plan(spe, spe * epochs)
    pruner = Pruner(
        selection.select(model, prune), prune, lambda s: schedules.build("one_shot", s, plan)
    )
    if epochs == 0:
        pruner.finish()
    else:
        pruner.update(0)
        loss = {"loss": "sparse_categorical_crossentropy"}
        finetune.run(model, pruner, train, settings, loss, Reporter())
    clean = keras.models.clone_model(model)
    clean.set_weights(model.get_weights())
    return clean, selection.select(clean, prune)


def _measure(case: dict[str, Any], sparsity: float, epochs: int) -> dict[str, Any]:
    from prunecli.reporting import evaluate

    model, layers = _prune(case["model"], sparsity, case["train"], epochs)
    task = evaluate.Task("sparse")
    val = case["val"]
    with tempfile.TemporaryDirectory(prefix="prunecli-bench-") as folder:
        kept = Path(folder) / "m.keras"
        model_io.save(model, kept)
        keras_size, keras_gzip = measure.sizes(kept)
        val_x, val_y = data.materialize(val)
        keras_accuracy = evaluate.accuracy(model.predict(val_x, verbose=0), val_y, task)
        variants = {}
        for label, sparse, quantize in VARIANTS:
            settings = config.TFLite(sparse=sparse, quantize=quantize)
            flat, note = exporting.convert_tflite(
                model, settings, data.materialize(case["train"])[0][:100], kept
            )
            path = Path(folder) / f"{label.replace(' ', '_')}.tflite"
            path.write_bytes(flat)
            measured = measure.artifact("tflite", path, val, task)
            variants[label] = measured | {"fallback": note is not None}
    kernels = [np.asarray(v) for info in layers if info.selected for v in info.kernels.values()]
    return {
        "case": case["name"],
        "params": int(model.count_params()),
        "sparsity": sparsity,
        "finetune_epochs": epochs,
        "keras_size_bytes": keras_size,
        "keras_gzip_bytes": keras_gzip,
        "keras_accuracy": keras_accuracy,
        "tflite": variants,
        "floor_f32_bytes": _floor(model, kernels, 4),
        "floor_int8_bytes": _floor(model, kernels, 1),
    }


def _floor(model: Any, kernels: list[np.ndarray], value_bytes: int) -> int:
    """Non-zero kernel values + CSR indices, or the kernel dense if smaller; the rest dense."""
    total = 0
    for kernel in kernels:
        # TFLite's layout (out, [kh, kw,] in), CSR over the innermost (input) axis
        matrix = np.moveaxis(kernel, -1, 0).reshape(-1, kernel.shape[-2])
        nonzero = int(np.count_nonzero(matrix))
        column_bytes = _index_bytes(matrix.shape[1])
        row_bytes = _index_bytes(nonzero + 1)
        csr = nonzero * (value_bytes + column_bytes) + (matrix.shape[0] + 1) * row_bytes
        total += min(csr, matrix.size * value_bytes)  # dense when indices cost more
    others = int(model.count_params()) - sum(k.size for k in kernels)
    return total + others * value_bytes


def _index_bytes(limit: int) -> int:
    return 1 if limit <= 1 << 8 else 2 if limit <= 1 << 16 else 4


def _print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'case':<11} {'sparsity':>8} {'.keras gz':>10} {'tfl dense':>10} {'tfl sparse':>10} "
        f"{'/floor':>6} {'int8 dense':>10} {'int8 sparse':>11} {'/floor':>6} "
        f"{'acc keras':>9} {'acc sp32':>8} {'acc int8':>8} {'ms dense':>8} {'ms sparse':>9} "
        f"{'ms int8':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        t = row["tflite"]
        sparse_int8 = t["sparse int8"]
        print(
            f"{row['case']:<11} {row['sparsity']:>8.0%} {row['keras_gzip_bytes']:>10,} "
            f"{t['dense f32']['size_bytes']:>10,} {t['sparse f32']['size_bytes']:>10,} "
            f"{t['sparse f32']['size_bytes'] / row['floor_f32_bytes']:>6.2f} "
            f"{t['dense int8']['size_bytes']:>10,} "
            f"{sparse_int8['size_bytes']:>10,}{'*' if sparse_int8['fallback'] else ' '} "
            f"{sparse_int8['size_bytes'] / row['floor_int8_bytes']:>6.2f} "
            f"{row['keras_accuracy']:>9.3f} {t['sparse f32']['accuracy']:>8.3f} "
            f"{t['dense int8']['accuracy']:>8.3f} {t['dense f32']['latency_ms']:>8.3f} "
            f"{t['sparse f32']['latency_ms']:>9.3f} {t['dense int8']['latency_ms']:>7.3f}"
        )
    print("* sparse int8 does not run in XNNPack (TF 2.21): written dense instead")


if __name__ == "__main__":
    main()
