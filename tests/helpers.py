"""Shared test helpers: tiny real models, real data files, CLI runs and child processes.

One definition each; tests import them with ``from helpers import ...`` (``tests/conftest.py``
puts this folder on ``sys.path``, so that works from every subfolder). Fixtures live in
``tests/conftest.py``. Nothing here imports TensorFlow or Keras at import time.

Also: the one-line refusal a bad input must give, running the CLI in a child process whose
peak memory is measured (for resource bombs), and for structured pruning, small models whose
channel coupling is the point, the zeroed-original reference a rebuild must equal, and an
independent MAC count.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]  # the repository: README, configs, sample_models
REPO = ROOT
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


def example(features: dict[str, tuple[str, object]]) -> bytes:
    """A serialized ``tf.train.Example``; each feature is (kind, values)."""
    import tensorflow as tf

    def feature(kind: str, values: object) -> tf.train.Feature:
        if kind == "float":
            return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))
        if kind == "int":
            return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[values]))

    named = {name: feature(kind, values) for name, (kind, values) in features.items()}
    return tf.train.Example(features=tf.train.Features(feature=named)).SerializeToString()


def write_shards(folder: Path, records: list[bytes], shards: int = 2) -> Path:
    """``folder/train-<i>.tfrecord``, the records in contiguous runs: reading the shards in
    sorted order gives them back in order."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(records) // shards)
    for i in range(shards):
        with tf.io.TFRecordWriter(str(folder / f"train-{i}.tfrecord")) as writer:
            for record in records[i * per : (i + 1) * per]:
                writer.write(record)
    return folder / "train-*.tfrecord"


def tfrecord(pattern: Path, spec: dict, **settings: object) -> Any:
    """``config.Data`` reading the TFRecord shards ``pattern`` with feature ``spec``."""
    from prunecli.config import Data, TFRecord

    return Data(train=pattern, tfrecord=TFRecord.model_validate({"features": spec}), **settings)


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
    """A file's digest, or a folder's: every file's relative path and digest, sorted."""
    if path.is_dir():
        lines = sorted(f"{p.relative_to(path)} {sha256(p)}" for p in path.rglob("*") if p.is_file())
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()
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


def build_residual_cnn():
    """Channel coupling in miniature: a residual Add joins stem and branch into one group,
    conv2 (through BatchNorm, pooling and Flatten) is another, wider and cheaper to
    thin; 2,363 weights."""
    import keras

    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, 1))
    stem = layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    stem = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn")(stem))
    branch = layers.Conv2D(8, 3, padding="same", activation="relu", name="branch")(stem)
    joined = layers.Add(name="add")([stem, branch])
    x = layers.Conv2D(16, 3, activation="relu", name="conv2")(joined)
    x = layers.MaxPooling2D(2, name="pool")(layers.BatchNormalization(name="bn2")(x))
    outputs = layers.Dense(CLASSES, activation="softmax", name="out")(layers.Flatten()(x))
    return keras.Model(inputs, outputs, name="residual_cnn")


# The config's top-level sections, as ``validate --print`` and ``config.dump`` write them.
CONFIG_SECTIONS = {"version", "seed", "input", "prune", "finetune", "data", "output", "analyze"}
# Kernel sizes of the models above (layer path -> weights in its kernel).
CNN_KERNELS = {"conv": 36, "hidden": 2304, "out": 48}  # 3*3*1*4, (6*6*4)*16, 16*3
NESTED_KERNELS = {"base/conv": 36, "hidden": 2304, "out": 48}
DENSE_KERNELS = {"hidden": 192, "out": 96}  # 6*32, 32*3

BUILDERS: dict[str, Callable] = {
    "cnn": build_cnn,
    "nested": build_nested,
    "dense": build_dense,
    "residual": build_residual_cnn,
}


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


def run_json_logged(*args: Any, level: str = "0") -> subprocess.CompletedProcess:
    """``prunecli ARGS`` with TensorFlow's native logs at ``level`` (0: all on): in JSON mode
    they must come out as events."""
    return run_prunecli(*args, env=child_env(TF_CPP_MIN_LOG_LEVEL=level))


def parsed_events(stderr: str) -> list[dict]:
    """Every stderr line as a JSON event (raises on any line that is not JSON)."""
    lines = stderr.splitlines()
    assert lines, "nothing on stderr"
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) and isinstance(r.get("event"), str) for r in records)
    assert all(r["elapsed_s"] >= 0 for r in records)
    return records


# The child gets the default signal handlers. With SIGNAL_AT_STEP set, a last callback of
# fine-tuning sends SIGINT during that training step (after the others have looked for a
# waiting signal): the signal is seen before the next step, as a real one at that step.
SIGNAL_AT_STEP_CHILD = (
    DEFAULT_SIGNALS
    + """
at = int(os.environ.get("SIGNAL_AT_STEP", "-1"))
if at >= 0:
    from prunecli import runtime
    runtime.start()
    import keras
    from prunecli.training import finetune

    class SignalAt(keras.callbacks.Callback):
        steps = iter(range(10**9))

        def on_train_batch_begin(self, batch, logs=None):
            if next(self.steps) == at:
                os.kill(os.getpid(), signal.SIGINT)

    run = finetune.run

    def with_signal(*args, callbacks=(), **kwargs):
        return run(*args, callbacks=[*callbacks, SignalAt()], **kwargs)

    finetune.run = with_signal
"""
    + PRUNECLI_MAIN
)


def prune_args(model: Path, data: Path, config: Path, output: Path) -> list[str]:
    return ["prune", str(model), "--set", f"data.train={data}", "-c", str(config), "-o",
            str(output)]  # fmt: skip


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """``prunecli ARGS`` in a child with the default signal handlers (``SIGNAL_AT_STEP``: a
    SIGINT during that training step)."""
    return start_python(SIGNAL_AT_STEP_CHILD, *args, env=child_env(**(env or {})))


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


# --- refusals, measured children, structured pruning ------------------------------------


def refused(result: Any, *needles: str) -> str:
    """The single error line of a run that must exit 2: nothing else on stderr after it, no
    traceback, nothing on stdout; every ``needle`` appears in it."""
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("prunecli: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def all_bytes(folder: Path) -> bytes:
    """Every byte of every file under ``folder`` (to search outputs for foreign bytes)."""
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@dataclass
class Child:
    """A finished ``python -m prunecli`` child: exit code, stderr and peak RSS in MiB."""

    code: int
    stderr: str
    peak_mib: float
    seconds: float


def run_child(
    *args: str | Path, cwd: Path | None = None, timeout: float = 240, **env_vars: str
) -> Child:
    """``prunecli ARGS`` in a fresh process; its peak RSS is the kernel's high-water mark of
    the child's own address space (``VmHWM`` in /proc, polled: getrusage's maxrss would
    include the forking test process's). Killed after ``timeout`` seconds (code -9), so a
    hang fails the test instead of blocking the suite. ``env_vars`` are set in the child."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", **env_vars}
    started = time.monotonic()
    peak_kib = 0
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a chatty child never blocks
        child = subprocess.Popen(
            [sys.executable, "-m", "prunecli", *map(str, args)],
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=errors,
        )  # fmt: skip
        while child.poll() is None:
            peak_kib = max(peak_kib, _high_water_kib(child.pid))
            if time.monotonic() > started + timeout:
                child.kill()
                child.wait()
                break
            time.sleep(0.02)
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    return Child(child.returncode, stderr, peak_kib / 1024, time.monotonic() - started)


def _high_water_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def child_refused(result: Child, *needles: str) -> str:
    """``refused`` for a child process (stderr may hold TensorFlow's native start-up lines
    before the error; the error is the last line, one line)."""
    assert result.code == 2, (result.code, result.stderr[-2000:])
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("prunecli: error: ") and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in last, (needle, last)
    return last


# --- structured pruning -----------------------------------------------------------------


def seq_cnn() -> Any:
    """Sequential: conv-BN-relu twice, pool, Flatten -> Dense (channels-last slicing)."""
    import keras

    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            layers.Conv2D(16, 3, padding="same", name="conv1"),
            layers.BatchNormalization(name="bn1"),
            layers.ReLU(name="relu1"),
            layers.Conv2D(24, 3, padding="same", name="conv2"),
            layers.BatchNormalization(name="bn2"),
            layers.ReLU(name="relu2"),
            layers.MaxPooling2D(2, name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(16, activation="relu", name="hidden"),
            layers.Dense(3, name="out"),
        ],
        name="seq_cnn",
    )


def residual() -> Any:
    """A ResNet-style block: the residual Add couples stem and branch into one group."""
    import keras

    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    stem = layers.ReLU(name="stem_relu")(
        layers.BatchNormalization(name="stem_bn")(
            layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
        )
    )
    branch = layers.Conv2D(16, 3, padding="same", activation="relu", name="branch_a")(stem)
    branch = layers.BatchNormalization(name="branch_bn")(
        layers.Conv2D(16, 3, padding="same", name="branch_b")(branch)
    )
    merged = layers.ReLU(name="merged_relu")(layers.Add(name="add")([stem, branch]))
    pooled = layers.GlobalAveragePooling2D(name="gap")(merged)
    return keras.Model(inputs, layers.Dense(3, name="out")(pooled), name="residual")


def concat() -> Any:
    """Two branches concatenated (offsets), a depthwise conv after, then a 1x1 conv."""
    import keras

    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    left = layers.Conv2D(8, 3, padding="same", name="left")(inputs)
    right = layers.BatchNormalization(name="right_bn")(layers.Conv2D(16, 1, name="right")(inputs))
    joined = layers.Concatenate(name="cat")([left, right])
    joined = layers.DepthwiseConv2D(3, padding="same", name="dw")(joined)
    mixed = layers.Conv2D(16, 1, activation="relu", name="mix")(joined)
    pooled = layers.GlobalMaxPooling2D(name="gmp")(mixed)
    return keras.Model(inputs, layers.Dense(3, name="out")(pooled), name="concat")


def transformer() -> Any:
    """One encoder block: self-attention (4 heads) with residual and LayerNorm, a
    feed-forward pair, pooled into a classifier. The residual stream is the input's."""
    import keras

    layers = keras.layers
    inputs = keras.Input((6, 16))
    attended = layers.MultiHeadAttention(4, 8, name="mha")(inputs, inputs)
    stream = layers.LayerNormalization(name="ln1")(layers.Add(name="res1")([inputs, attended]))
    hidden = layers.Dense(32, activation="relu", name="ff1")(stream)
    stream = layers.Add(name="res2")([stream, layers.Dense(16, name="ff2")(hidden)])
    pooled = layers.GlobalAveragePooling1D(name="gap")(stream)
    return keras.Model(inputs, layers.Dense(3, name="out")(pooled), name="transformer")


def mixed() -> Any:
    """The other rules: separable and transposed convs, padding/cropping/upsampling, a
    squeeze-excite Multiply through Reshape((1, 1, C)), Subtract/Average/Maximum merges."""
    import keras

    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = layers.SeparableConv2D(16, 3, padding="same", name="sep")(inputs)
    x = layers.BatchNormalization(name="sep_bn")(x)
    up = layers.Conv2DTranspose(16, 3, strides=2, padding="same", name="tconv")(x)
    up = layers.Cropping2D(4, name="crop")(layers.ZeroPadding2D(2, name="pad")(up))
    down = layers.UpSampling2D(1, name="up")(layers.AveragePooling2D(2, 2, name="avg")(up))
    squeeze = layers.GlobalAveragePooling2D(name="sq")(down)
    excite = layers.Dense(16, activation="sigmoid", name="excite")(
        layers.Dense(8, activation="relu", name="reduce")(squeeze)
    )
    scaled = layers.Multiply(name="scale")([down, layers.Reshape((1, 1, 16), name="rs")(excite)])
    other = layers.Conv2D(16, 1, name="other")(down)
    merged = layers.Maximum(name="max")(
        [layers.Subtract(name="sub")([scaled, other]), layers.Average(name="mean")([scaled, other])]
    )
    pooled = layers.GlobalMaxPooling2D(name="gmp")(merged)
    return keras.Model(inputs, layers.Dense(3, name="out")(pooled), name="mixed")


def channelwise() -> Any:
    """PReLU (alpha shared over space, full, and after a Flatten) and GroupNormalization
    with one channel per group (``groups=-1`` and ``groups=16`` of 16), each cut channel by
    channel; ``gn4`` (4 groups of 2 channels) normalises channels together and freezes."""
    import keras

    layers = keras.layers
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(16, 3, padding="same", name="c1")(inputs)
    x = layers.PReLU(shared_axes=[1, 2], name="prelu_shared")(x)
    x = layers.GroupNormalization(groups=-1, name="inorm")(layers.Conv2D(16, 3, name="c2")(x))
    x = layers.Conv2D(16, 1, name="c3")(layers.PReLU(name="prelu_full")(x))
    x = layers.Conv2D(8, 1, name="c4")(layers.GroupNormalization(groups=16, name="gn16")(x))
    x = layers.Flatten(name="flat")(layers.GroupNormalization(groups=4, name="gn4")(x))
    x = layers.Dense(16, name="d1")(x)
    x = layers.PReLU(name="prelu_dense")(x)
    return keras.Model(inputs, layers.Dense(3, name="out")(x), name="channelwise")


def ops_nodes() -> Any:
    """Bare ``keras.ops`` nodes between convolutions, as MobileNetV3 writes hard-swish
    (``x * relu6(x + 3) / 6``) and a squeeze-excite gate: operations in the functional
    graph that are not layers and have no weights; the channels pass through them."""
    import keras

    layers = keras.layers
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(16, 3, padding="same", name="c1")(inputs)
    x = x * layers.ReLU(6.0, name="relu6")(x + 3.0) * (1.0 / 6.0)
    gate = layers.Conv2D(16, 1, name="gate")(layers.GlobalAveragePooling2D(keepdims=True)(x))
    x = layers.Conv2D(16, 3, name="c2")(x * keras.ops.sigmoid(gate))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, layers.Dense(3, name="out")(x), name="ops_nodes")


def layer_scale(width: int, name: str) -> Any:
    """keras.applications' ConvNeXt ``LayerScale`` (``x * gamma``, one gamma per channel),
    the class a saved ConvNeXt reloads into, deserialised as ``load_model`` does."""
    import keras

    return keras.saving.deserialize_keras_object(
        {
            "module": "keras.src.applications.convnext",
            "class_name": "LayerScale",
            "config": {"name": name, "init_values": 0.5, "projection_dim": width},
            "registered_name": "LayerScale",
        }
    )


def convnext() -> Any:
    """ConvNeXt's pattern, small: a depthwise conv written as ``Conv2D(groups=C)``, then
    a norm, an inverted Dense bottleneck, LayerScale and the residual Add; the stage's
    downsampling a nested Sequential (norm, strided conv) that saves its InputLayer, as
    keras.applications has. BatchNorm stands in for ConvNeXt's LayerNorm: a LayerNorm over
    fewer channels is the documented approximation, which no equality test can check."""
    import keras

    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    stem = layers.Conv2D(16, 2, strides=2, name="stem")(inputs)
    x = layers.Conv2D(16, 3, padding="same", groups=16, name="dw")(stem)
    x = layers.Dense(32, name="pw1")(layers.BatchNormalization(name="ln")(x))
    x = layers.Dense(16, name="pw2")(layers.Activation("gelu", name="gelu")(x))
    x = layers.Add(name="res")([stem, layer_scale(16, "scale")(x)])
    down = keras.Sequential(
        [
            keras.Input((4, 4, 16)),
            layers.BatchNormalization(name="down_ln"),
            layers.Conv2D(24, 2, strides=2, name="down_conv"),
        ],
        name="down",
    )
    pooled = layers.GlobalAveragePooling2D(name="gap")(down(x))
    return keras.Model(inputs, layers.Dense(3, name="out")(pooled), name="convnext")


def mobilenet() -> Any:
    import keras

    return keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=3, classifier_activation=None
    )


def resnet50() -> Any:
    import keras

    return keras.applications.ResNet50(
        input_shape=(32, 32, 3), weights=None, classes=3, classifier_activation=None
    )


STRUCTURED_BUILDERS: dict[str, Callable[[], Any]] = {
    "seq_cnn": seq_cnn,
    "residual": residual,
    "concat": concat,
    "transformer": transformer,
    "mixed": mixed,
    "channelwise": channelwise,
    "ops_nodes": ops_nodes,
    "convnext": convnext,
    "mobilenet": mobilenet,
    "resnet50": resnet50,
}


def randomized(model: Any, seed: int = 0) -> Any:
    """``model`` with every weight random and BatchNorm statistics away from 0/1, so a
    mistake in slicing a mean, a variance or a shift shows in the outputs."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape, name = variable.shape, variable.path.rsplit("/", 1)[-1]
        if name in ("moving_variance", "gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name in ("moving_mean", "beta", "bias"):
            value = rng.normal(0, 0.2, shape)
        else:
            fan_in = int(np.prod(shape[:-1])) or 1
            value = rng.normal(0, 1 / np.sqrt(fan_in), shape)
        variable.assign(value.astype(np.float32))
    return model


def sample(model: Any, count: int = 2, seed: int = 1) -> np.ndarray:
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(size=(count, *shape)).astype(np.float32)


def copy_of(model: Any) -> Any:
    import keras

    # safe_mode off: a test model's Lambda is already in memory, nothing new runs
    clone = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(model), safe_mode=False
    )
    clone.set_weights(model.get_weights())
    return clone


def zeroed_at_source(model: Any, plan: Any) -> Any:
    """A copy of ``model`` whose removed channels are exactly 0 where they are made and
    stay 0 downstream: producer columns and biases zeroed, BatchNorm's shift for them
    cancelled (beta and moving mean 0), depthwise biases zeroed; a removed head's rows of
    the output projection zeroed. This is the reference a rebuild must equal, computed
    from weights alone, not from the library's masks."""
    from prunecli.pruning.selection import walk

    removed = {source: _removed(plan, source) for source in range(len(plan.graph.sources))}
    clone = copy_of(model)
    for path, layer in walk(clone):
        use = plan.graph.uses.get(path)
        if use is None or not layer.weights:
            continue
        values = {v.path.split("/", 1)[-1] if "/" in v.path else v.path: v for v in layer.weights}
        for key, variable in values.items():
            array = np.asarray(variable).copy()
            _zero(array, key, use, removed, plan)
            variable.assign(array)
    return clone


def _removed(plan: Any, source: int) -> np.ndarray:
    width = plan.graph.sources[source].width
    return np.setdiff1d(np.arange(width), plan.kept_of(source))


def _input_removed(channels: Any, removed: dict[int, np.ndarray]) -> np.ndarray:
    """Positions of a tensor's last axis that hold removed channels (spatial == 1)."""
    found, offset = [], 0
    for segment in channels.segments:
        gone = removed[segment.source]
        inside = gone[(gone >= segment.start) & (gone < segment.stop)]
        found.append(inside - segment.start + offset)
        offset += segment.width
    return np.concatenate(found).astype(int) if found else np.zeros(0, int)


def _zero(array: np.ndarray, key: str, use: Any, removed: dict, plan: Any) -> None:
    kind = type(use.layer).__name__
    name = key.rsplit("/", 1)[-1]
    if use.output is not None and kind != "MultiHeadAttention":
        gone = removed[use.output]
        axis = -2 if kind.endswith("Transpose") and name == "kernel" else -1
        if name in ("kernel", "pointwise_kernel", "bias"):
            np.moveaxis(array, axis if name != "bias" else 0, 0)[gone] = 0
    elif (use.rule, name) in (
        ("norm", "beta"), ("norm", "moving_mean"), ("depthwise", "bias"), ("channelwise", "beta")
    ):  # fmt: skip
        array[_input_removed(use.inputs[0], removed)] = 0
    elif kind == "MultiHeadAttention":
        if key.endswith("attention_output/kernel"):
            array[removed[use.heads]] = 0
            array[..., removed[use.output]] = 0
        if key.endswith("attention_output/bias"):
            array[removed[use.output]] = 0


def hand_plan(graph: Any, pick: Callable[[int], list[int]]) -> Any:
    """A plan removing ``pick(width)`` from every open group (heads included)."""
    from prunecli.structured.groups import Plan

    groups = graph.groups()
    kept = {
        g.id: np.arange(g.width)
        if g.frozen
        else np.setdiff1d(np.arange(g.width), [c for c in pick(g.width) if c < g.width])
        for g in groups
    }
    return Plan(graph, groups, kept)


def independent_macs(model) -> int:
    """MACs by hand from each layer's config and its input/output shapes (public API):
    conv = output positions x kernel height x width x input channels x filters, and so on."""
    total = 0
    for layer in model.layers:
        kind, config = type(layer).__name__, layer.get_config()
        if kind in ("Functional", "Sequential"):
            total += independent_macs(layer)
            continue
        if kind not in ("Conv2D", "DepthwiseConv2D", "Dense", "MultiHeadAttention"):
            continue
        ins = layer.input if isinstance(layer.input, list) else [layer.input]
        c_in, out = ins[0].shape[-1], layer.output.shape
        positions = math.prod(out[1:-1])
        if kind == "Conv2D":
            per_group = c_in // config.get("groups", 1)  # a grouped conv reads C/groups each
            total += positions * math.prod(config["kernel_size"]) * per_group * config["filters"]
        elif kind == "DepthwiseConv2D":
            total += (
                positions * math.prod(config["kernel_size"]) * c_in * config["depth_multiplier"]
            )
        elif kind == "Dense":
            total += positions * c_in * config["units"]
        else:  # attention: 4 projections + QK^T + AV, per head
            heads, dim = config["num_heads"], config["key_dim"]
            t = math.prod(ins[0].shape[1:-1])
            total += 3 * t * c_in * heads * dim + t * heads * dim * out[-1]
            total += heads * t * t * 2 * dim
    return total


def embedded_pngs(page: str) -> list[tuple[int, int]]:
    """Sizes of every ``<img>`` of an HTML page, each of which must be a data URI holding a
    valid PNG (so the page needs no other file); AssertionError otherwise."""
    import base64
    import io

    from PIL import Image

    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sources, "the page shows no image"
    sizes = []
    for source in sources:
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix), source[:60]
        blob = base64.b64decode(source[len(prefix) :], validate=True)
        with Image.open(io.BytesIO(blob)) as image:
            image.verify()
        with Image.open(io.BytesIO(blob)) as image:
            assert image.format == "PNG"
            sizes.append(image.size)
    return sizes


def auto_report(cli: Any, model: Path, data: Path, out: Path, budget: float, *extra: str) -> dict:
    """The JSON report of ``prune --sparsity auto --max-accuracy-drop budget`` (no
    fine-tuning), once checked for what every auto run owes: exit 0, the measured drop
    (before - after accuracy) recorded and within the budget, the gate passed."""
    result = cli(
        "prune", model, "--data", data, "-o", out, "--epochs", "0", "--sparsity", "auto",
        "--max-accuracy-drop", str(budget), "--json", "-q", *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    measured = report["before"]["accuracy"] - report["after"]["accuracy"]
    assert report["auto"]["measured_drop"] == pytest.approx(measured) and measured <= budget
    assert report["gate"]["passed"] and report["gate"]["max_accuracy_drop"] == budget
    return report
