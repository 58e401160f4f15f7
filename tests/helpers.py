"""Shared test helpers: tiny real models, real data files, CLI runs and child processes.

One definition each; tests import them with ``from helpers import ...`` (``tests/conftest.py``
puts this folder on ``sys.path``, so that works from every subfolder). Fixtures live in
``tests/conftest.py``. Nothing here imports TensorFlow or Keras at import time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]  # the repository: README, configs, sample_models
SIZE = 8
CLASSES = 3
# ... and the default SIGINT/SIGTERM handlers. A test runner may start
# its workers with SIGINT ignored, an ignored signal stays ignored across exec, and prunecli
# rightly keeps an ignored signal ignored.
# Python for a child process: the ``prunecli`` command on the child's arguments.
PRUNECLI_MAIN = """
import sys
from prunecli.cli.commands import main
main(sys.argv[1:], prog_name="prunecli")
"""
DEFAULT_SIGNALS = """
import os, signal, sys
for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, signal.SIG_DFL)
"""


# --- data ----------------------------------------------------------------------------------


def synthetic_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (count, 8, 8) and labels: class k brightens rows 2k..2k+2 over noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(count) % CLASSES
    x = rng.integers(0, 60, size=(count, SIZE, SIZE)).astype(np.uint8)
    for i, label in enumerate(y):
        x[i, 2 * label : 2 * label + 3, :] = rng.integers(180, 255, size=(3, SIZE))
    return x, y


def scaled(images: np.ndarray) -> np.ndarray:
    """uint8 (count, 8, 8) -> float32 (count, 8, 8, 1) in [0, 1], as the models take them."""
    return (images / 255.0).astype(np.float32)[..., None]


def tabular(count: int = 90) -> tuple[np.ndarray, np.ndarray]:
    """The dense model's task: 6 features, class k has feature k raised by 3."""
    rng = np.random.default_rng(4)
    y = np.arange(count) % CLASSES
    x = rng.normal(size=(count, 6)).astype(np.float32)
    x[np.arange(count), y] += 3.0
    return x, y


def write_png(path: Path, pixels: np.ndarray, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), mode=mode).save(path)
    return path


def write_image_splits(root: Path) -> Path:
    """``root/train/class_<k>/*.png`` (60) and ``root/val/class_<k>/*.png`` (30), 3 classes."""
    for split, count, seed in (("train", 60, 1), ("val", 30, 2)):
        x, y = synthetic_images(count, seed)
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            write_png(root / split / f"class_{label}" / f"{i:03d}.png", image)
    return root


def noise_image_folder(root: Path, classes: int = 3, per_class: int = 4, size: int = 8) -> Path:
    """``root/class_<k>/*.png``: ``classes`` folders of ``per_class`` noise images each."""
    rng = np.random.default_rng(9)
    for label in range(classes):
        for i in range(per_class):
            pixels = rng.integers(0, 255, size=(size, size))
            write_png(root / f"class_{label}" / f"{i:03d}.png", pixels)
    return root


def valued_image_folder(root: Path, classes: dict[str, int], size: int = 8) -> Path:
    """``root/<class>/<i>.png``: image i of a class is filled with the value 10 * i + class idx."""
    for number, (name, count) in enumerate(classes.items()):
        for i in range(count):
            write_png(root / name / f"{i}.png", np.full((size, size), 10 * i + number))
    return root


def val_arrays(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The validation PNGs read independently: sorted class folders, pixels / 255."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    x, y = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).glob("*.png")):
            x.append(np.asarray(Image.open(file).convert("L"), dtype=np.float32) / 255.0)
            y.append(label)
    return np.stack(x)[..., None], np.array(y)


def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, x=x, y=y)
    return path


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def cfg_yaml(folder: Path, text: str) -> Path:
    """``folder/cfg.yaml`` holding ``text``."""
    return write_config(folder / "cfg.yaml", text)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- models --------------------------------------------------------------------------------


def build_cnn(name: str = "tiny_cnn"):
    """Conv2D(4) -> Flatten -> Dense(16) -> Dense(3): 2,411 weights, 2,388 in kernels."""
    import keras

    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(CLASSES, activation="softmax", name="out"),
        ],
        name=name,
    )


def build_nested():
    """Transfer-learning shape: a base model nested inside the outer model."""
    import keras

    base = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Flatten(name="flat"),
        ],
        name="base",
    )
    inputs = keras.Input((SIZE, SIZE, 1))
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(base(inputs))
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="out")(hidden)
    return keras.Model(inputs, outputs, name="outer")


def build_dense(features: int = 6):
    import keras

    return keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(CLASSES, activation="softmax", name="out"),
        ],
        name="tabular",
    )


# The config's top-level sections, as ``validate --print`` and ``config.dump`` write them.
CONFIG_SECTIONS = {"version", "seed", "input", "prune", "finetune", "data", "output", "analyze"}
# Kernel sizes of the models above (layer path -> weights in its kernel).
CNN_KERNELS = {"conv": 36, "hidden": 2304, "out": 48}  # 3*3*1*4, (6*6*4)*16, 16*3
NESTED_KERNELS = {"base/conv": 36, "hidden": 2304, "out": 48}
DENSE_KERNELS = {"hidden": 192, "out": 96}  # 6*32, 32*3

BUILDERS: dict[str, Callable] = {"cnn": build_cnn, "nested": build_nested, "dense": build_dense}


def train_cnn(epochs: int = 5, batch_size: int = 16, seed: int = 0):
    """A compiled tiny CNN trained on ``synthetic_images(90, 5)``: it knows those images."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_cnn()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    images, y = synthetic_images(90, 5)
    model.fit(scaled(images), y, epochs=epochs, batch_size=batch_size, verbose=0)
    return model


def scaled_images(count: int = 48, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """``synthetic_images`` as the models take them: (x float32 (count, 8, 8, 1), y)."""
    x, y = synthetic_images(count, seed)
    return scaled(x), y


def seeded(builder: Callable) -> Any:
    """``builder()`` with Keras's random seed set first: the same weights every time."""
    import keras

    keras.utils.set_random_seed(0)
    return builder()


def load_model(path: Path, compile: bool = True) -> Any:
    """``keras.saving.load_model`` alone: what a user of the saved file gets."""
    import keras

    return keras.saving.load_model(path, compile=compile)


def saved_weights(path: Path) -> list[np.ndarray]:
    """Every weight of a saved model, in the model's order."""
    return [np.asarray(w) for w in load_model(path, compile=False).weights]


def weights_by_path(path: Path) -> dict[str, np.ndarray]:
    """Every weight of a saved model keyed by its Keras variable path (``conv/kernel``)."""
    return {v.path: np.asarray(v) for v in load_model(path, compile=False).weights}


def dense_conv_kernels(model: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Layer path -> kernel of every Dense/Conv2D layer, descending into nested models."""
    found: dict[str, np.ndarray] = {}
    for layer in model.layers:
        if hasattr(layer, "layers"):
            found |= dense_conv_kernels(layer, f"{prefix}{layer.name}/")
        elif type(layer).__name__ in ("Dense", "Conv2D"):
            found[f"{prefix}{layer.name}"] = np.asarray(layer.kernel)
    return found


def sparsity(kernel: np.ndarray) -> float:
    return 1.0 - np.count_nonzero(kernel) / kernel.size


# --- pruning ---------------------------------------------------------------------------------


def make_pruner(model: Any, prune: Any, schedule: Any = None) -> Any:
    """A ``Pruner`` over what ``prune`` (a ``config.Prune``) selects; one-shot by default."""
    from prunecli.core.schedules import OneShot
    from prunecli.pruning import selection
    from prunecli.pruning.pruner import Pruner

    return Pruner(selection.select(model, prune), prune, schedule or OneShot)


def kernels_of(pruner: Any) -> dict[str, np.ndarray]:
    """The pruner's kernels as arrays, keyed like ``pruner.kernels``."""
    return {key: np.array(variable) for key, variable in pruner.kernels.items()}


def mask_checker(pruner: Any) -> Any:
    """A Keras callback: after every train batch, every weight whose mask is 0 must be
    exactly 0.0 (``violations`` lists those that are not; ``masked_counts`` the masks)."""
    import keras

    class MaskChecker(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.batches = 0
            self.violations: list[tuple[int, str, int]] = []
            self.masked_counts: list[dict[str, int]] = []

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.batches += 1
            counts = {}
            for key, variable in pruner.kernels.items():
                masked = np.array(pruner.masks[key]) == 0
                alive = int(np.count_nonzero(np.array(variable)[masked]))
                if alive:
                    self.violations.append((self.batches, key, alive))
                counts[key] = int(masked.sum())
            self.masked_counts.append(counts)

    return MaskChecker()


# --- analysis ----------------------------------------------------------------------------------


def magnitude_mask(kernel: np.ndarray, sparsity: float) -> np.ndarray:
    """Zero the round(s * n) smallest |w|; on equal |w| the later position goes first."""
    flat = np.abs(kernel).ravel()
    order = np.lexsort((-np.arange(flat.size), flat))  # ascending |w|, later index first
    keep = np.ones(flat.size, dtype=np.float32)
    keep[order[: round(sparsity * flat.size)]] = 0.0
    return keep.reshape(kernel.shape)


def evaluate_with(model: Any, masks: dict[str, np.ndarray], x: Any, y: Any) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` with ``masks`` (layer -> kernel mask)."""
    import keras

    saved = {name: model.get_layer(name).kernel.numpy() for name in masks}
    for name, mask in masks.items():
        model.get_layer(name).kernel.assign(saved[name] * mask)
    probabilities = model.predict(x, verbose=0)
    for name, kernel in saved.items():
        model.get_layer(name).kernel.assign(kernel)
    loss = keras.losses.sparse_categorical_crossentropy(y, probabilities)
    return float(np.mean(np.argmax(probabilities, -1) == y)), float(np.mean(loss))


# --- the CLI ---------------------------------------------------------------------------------


def prune_report(cli: Any, *args: Any) -> dict[str, Any]:
    """Run ``prunecli prune ARGS --json`` expecting success; return the parsed report."""
    result = cli("prune", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def prune_quiet(cli: Any, *args: Any) -> dict[str, Any]:
    """``prune_report`` with ``-q``, also asserting that nothing came on stderr."""
    result = cli("prune", *args, "--json", "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


def report_beside(model: Path) -> dict[str, Any]:
    """The JSON report written next to an output model (``<stem>.report.json``)."""
    return json.loads(model.with_name(f"{model.stem}.report.json").read_text())


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def core_outputs(folder: Path) -> list[str]:
    """Sorted names in ``folder`` without the report's plots and HTML page (every report
    has them; tests/analysis/test_analysis_prune.py checks them), so a test can assert exactly the
    model, reports and checkpoints a run left."""
    return sorted(
        p.name for p in folder.iterdir() if not re.search(r"\.report(\.\w+\.png|\.html)$", p.name)
    )


# --- child processes -----------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """This environment, TensorFlow's C++ logs off and output unbuffered, plus ``extra``."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **extra}


def run_python(
    code: str, *args: Any, env: dict[str, str] | None = None, timeout: float = 180, **kwargs: Any
) -> subprocess.CompletedProcess:
    """``python -c CODE ARGS`` in a fresh interpreter; stdout and stderr as text."""
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True, text=True, env=env or child_env(), timeout=timeout, **kwargs,
    )  # fmt: skip


def run_prunecli(
    *args: Any, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    """``python -m prunecli ARGS`` in a fresh interpreter, as a user's shell runs it."""
    return subprocess.run(
        [sys.executable, "-m", "prunecli", *map(str, args)],
        capture_output=True, text=True, env=env or child_env(), timeout=timeout,
    )  # fmt: skip


def start_python(
    code: str, *args: Any, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.Popen:
    """``python -c CODE ARGS`` started in its own session (a signal reaches it alone)."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env or child_env(), start_new_session=True,
        **kwargs,
    )  # fmt: skip


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    """Wait for a started child, assert it succeeded; its stdout."""
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out


def last_json_line(stdout: str) -> Any:
    return json.loads(stdout.strip().splitlines()[-1])


class Lines:
    """A child's stream read line by line by one thread, so a test can wait for a line."""

    def __init__(self, stream: Any) -> None:
        self.queue: queue.Queue = queue.Queue()
        self.seen: list[Any] = []
        self.reader = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.reader.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.queue.put(line)
        self.queue.put(None)

    def parse(self, line: str) -> Any:
        return line

    def until(self, done: Callable[[Any], bool], timeout: float = 120) -> list[Any]:
        """Lines up to and including the first for which ``done`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"the stream ended before the awaited line: {self.seen}")
            self.seen.append(self.parse(line))
            if done(self.seen[-1]):
                return self.seen
        pytest.fail(f"no awaited line within {timeout} s: {self.seen}")

    def rest(self) -> list[Any]:
        """Every line seen, after the stream ended (the child has exited)."""
        self.reader.join(timeout=10)
        while not self.queue.empty() and (line := self.queue.get_nowait()) is not None:
            self.seen.append(self.parse(line))
        return self.seen


class Events(Lines):
    """A child's stderr as JSON events (every line must parse)."""

    def parse(self, line: str) -> Any:
        return json.loads(line)


@contextlib.contextmanager
def reaped(child: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """The child, killed on the way out if it is still running (a failed wait, say)."""
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
