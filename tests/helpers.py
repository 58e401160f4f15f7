"""Helpers shared by test files (fixtures live in conftest.py): the one-line refusal a bad
input must give, file digests, and running the CLI in a child process whose peak memory is
measured (for resource bombs); and for structured pruning, small models whose channel
coupling is the point (residual adds, concatenations, Flatten into Dense, attention),
the zeroed-original reference a rebuild must equal, and an independent MAC count."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent


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


def sha256(path: Path) -> str:
    """A file's digest, or a folder's: every file's relative path and digest, sorted."""
    if path.is_dir():
        lines = sorted(f"{p.relative_to(path)} {sha256(p)}" for p in path.rglob("*") if p.is_file())
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


BUILDERS: dict[str, Callable[[], Any]] = {
    "seq_cnn": seq_cnn,
    "residual": residual,
    "concat": concat,
    "transformer": transformer,
    "mixed": mixed,
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
    elif (use.rule, name) in (("norm", "beta"), ("norm", "moving_mean"), ("depthwise", "bias")):
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
            total += positions * math.prod(config["kernel_size"]) * c_in * config["filters"]
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
