"""Issue 6's methods end to end: every score x granularity x scope through the real CLI.

Three models: the bundled sample (on a 10-images-per-class subset of its data), a small
functional CNN with residual adds and a BatchNormalization, and an Embedding + LSTM text
classifier. Every check reads the saved file back with plain ``keras.models.load_model`` and
counts its zeros with the kernel table below, written here rather than taken from prunecli,
so a wrong reduction axis or a wrong attribute in prunecli's table fails a test.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers import (
    ROOT,
    last_json_line,
    load_model,
    prune_quiet,
    run_python,
    synthetic_images,
    write_npz,
)

from prunecli import config

SAMPLE = ROOT / "sample_models" / "digits_cnn.h5"
CONFIGS = ROOT / "configs"

# Prunable kernels per layer class: (attribute path, reduction axis; None: no such axis).
# The reduction axis is the one the layer's output sums over: Dense (in, out) and Conv
# (..., in, out) -2; a transposed conv is (..., out, in): -1; MultiHeadAttention's query,
# key and value kernels are (dim, heads, head_dim): -3, its output (heads, head_dim, dim):
# groups along head_dim, -2.
RNN = (("cell.kernel", -2), ("cell.recurrent_kernel", -2))
KERNELS: dict[str, tuple[tuple[str, int | None], ...]] = {
    **dict.fromkeys(("Dense", "Conv1D", "Conv2D", "Conv3D"), (("kernel", -2),)),
    "Conv2DTranspose": (("kernel", -1),),
    "Embedding": (("embeddings", None),),
    **dict.fromkeys(("LSTM", "GRU", "SimpleRNN"), RNN),
    "Bidirectional": tuple(
        (f"{side}.{attr}", axis)
        for side in ("forward_layer", "backward_layer")
        for attr, axis in RNN
    ),
    "MultiHeadAttention": (
        ("query_dense.kernel", -3),
        ("key_dense.kernel", -3),
        ("value_dense.kernel", -3),
        ("output_dense.kernel", -2),
    ),
}
METHODS = ("magnitude", "random", "taylor", "lamp", "movement")
GRANULARITIES = {"unstructured": "unstructured", "2:4": "'2:4'", "1x4": "{block: [1, 4]}"}
SPARSITY = 0.75  # for unstructured and blocks; 2:4 fixes 0.5
FLOOR = 0.02  # prune.min_layer_density's default
GRADUAL = "prune.schedule={type: polynomial, end_epoch: 1, frequency: 2}"


# --- helpers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """A model file, the CLI arguments that give it data, and what 2:4 must leave alone."""

    model: Path
    data: tuple[str, ...]
    nm_skipped: dict[str, str] = field(default_factory=dict)  # layer -> part of the reason


def walk(model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for layer in model.layers:
        if hasattr(layer, "layers") and hasattr(layer, "inputs"):
            yield from walk(layer, f"{prefix}{layer.name}/")
        else:
            yield f"{prefix}{layer.name}", layer


def kernel_variables(model: Any) -> dict[str, tuple[Any, int | None]]:
    """``layer/attr`` -> (variable, reduction axis) for every kernel of the table above."""
    found = {}
    for path, layer in walk(model):
        for attr, axis in KERNELS.get(type(layer).__name__, ()):
            variable = layer
            for part in attr.split("."):
                variable = getattr(variable, part)
            found[f"{path}/{attr}"] = (variable, axis)
    return found


def table_kernels(model: Any) -> dict[str, tuple[np.ndarray, int | None]]:
    """``layer/attr`` -> (kernel values, reduction axis), by the table above."""
    return {key: (np.asarray(v), axis) for key, (v, axis) in kernel_variables(model).items()}


def other_weights(model: Any) -> dict[str, np.ndarray]:
    """Every weight that is not a kernel of the table (biases, normalisation parameters and
    statistics), keyed ``layer/index:name`` (a MultiHeadAttention has four ``bias``)."""
    kernel_ids = {id(v) for v, _ in kernel_variables(model).values()}
    return {
        f"{path}/{index}:{weight.name}": np.asarray(weight)
        for path, layer in walk(model)
        for index, weight in enumerate(layer.weights)
        if id(weight) not in kernel_ids
    }


def zeros(kernel: np.ndarray) -> int:
    return int(kernel.size - np.count_nonzero(kernel))


def nm_counts(kernel: np.ndarray, axis: int, m: int = 4) -> np.ndarray:
    """Non-zeros in each group of ``m`` consecutive weights along ``axis``."""
    moved = np.moveaxis(kernel, axis, -1)
    return np.count_nonzero(moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m), axis=-1)


def block_counts(kernel: np.ndarray, block: tuple[int, int]) -> tuple[int, int]:
    """(zero blocks, all blocks) over the last two axes, at each leading position; asserts
    that every block is either all zero or all non-zero (edge blocks may be smaller)."""
    rows, cols = block
    height, width = kernel.shape[-2:]
    lead = int(np.prod(kernel.shape[:-2], dtype=np.int64))
    zero_blocks = total = 0
    for top in range(0, height, rows):
        for left in range(0, width, cols):
            tile = kernel[..., top : top + rows, left : left + cols].reshape(lead, -1)
            alive = np.count_nonzero(tile, axis=1)
            assert np.all((alive == 0) | (alive == tile.shape[1])), "a block is partly cut"
            zero_blocks += int(np.sum(alive == 0))
            total += lead
    return zero_blocks, total


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["path"]: row for row in report["layers"]}


def masks(path: Path) -> dict[str, np.ndarray]:
    return {key: kernel != 0 for key, (kernel, _) in table_kernels(load_model(path)).items()}


def differs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    assert a.keys() == b.keys()
    return any(not np.array_equal(a[key], b[key]) for key in a)


def npz_args(path: Path) -> tuple[str, ...]:
    """Train on all of ``path``: no validation split, so no evaluation (these tests count
    zeros, not accuracy, and each evaluation costs a traced predict)."""
    return ("--set", f"data.train={path}", "--set", "data.validation_split=0")


def train_and_save(model: Any, x: np.ndarray, y: np.ndarray, path: Path, epochs: int) -> Path:
    import keras

    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    model.save(path)
    return path


# --- the three models (built once per module) ---------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Subject:
    """The bundled sample model on 10 images per class of train and of val (100 + 100)."""
    root = tmp_path_factory.mktemp("digits")
    for split in ("train", "val"):
        for folder in sorted((ROOT / "sample_models" / "digits" / split).iterdir()):
            target = root / split / folder.name
            target.mkdir(parents=True)
            for image in sorted(folder.glob("*.png"))[:10]:
                shutil.copy(image, target / image.name)
    # conv1 sees 1 input channel (grayscale): no group of 4 fits
    return Subject(SAMPLE, ("--data", str(root)), {"conv1": "reduction dimension (1)"})


def build_resnet() -> Any:
    """stem -> [res1 -> bn -> res2] + stem -> [squeeze -> expand] + ... -> pool -> out.

    Conv kernels (3, 3, in, out): stem in=1 and expand in=6 cannot take 2:4; res1, res2,
    squeeze (1x1, 8 -> 6: its 1x4 blocks end in a partial one) and out have 8 inputs.
    """
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 1))
    stem = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    x = layers.Conv2D(8, 3, padding="same", name="res1")(stem)
    x = layers.ReLU()(layers.BatchNormalization(name="bn")(x))
    x = layers.Conv2D(8, 3, padding="same", name="res2")(x)
    x = layers.ReLU()(layers.Add(name="add1")([stem, x]))
    y = layers.Conv2D(6, 1, activation="relu", name="squeeze")(x)
    y = layers.Conv2D(8, 3, padding="same", name="expand")(y)
    x = layers.Add(name="add2")([x, y])
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(3, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs, name="resnet")


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> Subject:
    import keras

    root = tmp_path_factory.mktemp("resnet")
    images, y = synthetic_images(96, 11)
    x = (images / 255.0).astype(np.float32)[..., None]
    keras.utils.set_random_seed(0)
    model = train_and_save(build_resnet(), x, y, root / "resnet.keras", epochs=3)
    data = write_npz(root / "train.npz", x, y)
    skipped = {"stem": "reduction dimension (1)", "expand": "reduction dimension (6)"}
    return Subject(model, npz_args(data), skipped)


def token_data(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of 10 tokens (vocabulary 16): class k holds a few of tokens 4k+1, 4k+2
    among noise tokens (0, 3, 4, 7, 8, 11..15)."""
    rng = np.random.default_rng(seed)
    noise = np.array([0, 3, 4, 7, 8, 11, 12, 13, 14, 15])
    y = np.arange(count) % 3
    x = rng.choice(noise, size=(count, 10))
    for row, label in enumerate(y):
        spots = rng.choice(10, size=3, replace=False)
        x[row, spots] = rng.choice([4 * label + 1, 4 * label + 2], size=3)
    return x.astype(np.int32), y


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Subject:
    """Embedding(16, 8) -> LSTM(8) -> Dense(3): LSTM kernels (8, 32), both 2:4-able."""
    import keras

    root = tmp_path_factory.mktemp("text")
    x, y = token_data(120, 12)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((10,), dtype="int32"),
            keras.layers.Embedding(16, 8, name="embed"),
            keras.layers.LSTM(8, name="lstm"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ],
        name="text",
    )
    path = train_and_save(model, x, y, root / "text.keras", epochs=3)
    data = write_npz(root / "train.npz", x, y)
    # an embedding table is looked up, not summed over: N:M has no axis to group along
    return Subject(path, npz_args(data), {"embed": "needs a reduction axis"})


# --- the matrix ----------------------------------------------------------------------------


def check_layer_scope(found: dict[str, Any], granularity: str) -> None:
    """Every kernel reaches the target on its own (an LSTM's two kernels each)."""
    for key, (kernel, axis) in found.items():
        if granularity == "unstructured":
            assert zeros(kernel) == round(SPARSITY * kernel.size), key
        elif granularity == "2:4":
            assert np.all(nm_counts(kernel, axis) == 2), key
        else:
            dead, total = block_counts(kernel, (1, 4))
            assert dead == round(SPARSITY * total), key


def check_global_scope(found: dict[str, Any], granularity: str) -> None:
    """One budget over all kernels; no kernel below the density floor."""
    if granularity == "unstructured":
        units = {key: (zeros(k), k.size) for key, (k, _) in found.items()}
    else:
        units = {key: block_counts(k, (1, 4)) for key, (k, _) in found.items()}
    dead = sum(d for d, _ in units.values())
    total = sum(n for _, n in units.values())
    assert dead == round(SPARSITY * total)
    for key, (d, n) in units.items():
        assert n - d >= math.ceil(FLOOR * n), key


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("granularity", list(GRANULARITIES))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("subject", ["digits", "resnet", "text"])
def test_every_combination(cli, request, tmp_path, subject, method, granularity, scope):
    """Scope layer on the two small models: one fine-tuning epoch under a polynomial
    schedule (masks rise while training, 2:4 through 1 of 4). To stay fast, the rest prune
    one-shot without fine-tuning, except movement, which always trains (global scope
    under a gradual schedule also runs in the configs tests below)."""
    case: Subject = request.getfixturevalue(subject)
    target = tmp_path / "pruned.keras"
    trains = method == "movement" or (subject != "digits" and scope == "layer")
    epochs = 1 if trains else 0
    args = [
        case.model, *case.data, "-o", target, "--epochs", epochs, "--seed", "0",
        "--set", f"prune.method={method}", "--set", f"prune.scope={scope}",
        "--set", f"prune.granularity={GRANULARITIES[granularity]}",
        "--set", "prune.score_batches=2", "--set", "finetune.batch_size=16",
    ]  # fmt: skip
    if granularity != "2:4":
        args += ["--sparsity", SPARSITY]
    if epochs:
        args += ["--set", GRADUAL]

    if granularity == "2:4" and scope == "global":
        result = cli("prune", *args)
        assert result.exit_code == 2
        assert result.stdout == ""
        assert "prune.scope global" in result.stderr
        assert "prune.granularity '2:4'" in result.stderr
        assert not target.exists()
        return

    report = prune_quiet(cli, *args)
    saved = table_kernels(load_model(target))
    by_path = rows(report)
    skipped = case.nm_skipped if granularity == "2:4" else {}
    pruned = {key: value for key, value in saved.items() if key.split("/")[0] not in skipped}
    for layer, why in skipped.items():
        assert by_path[layer]["pruned"] is False
        assert why in by_path[layer]["reason"]
        assert by_path[layer]["pattern_ok"] is None
        assert all(zeros(k) == 0 for key, (k, _) in saved.items() if key.startswith(layer))
    if scope == "layer":
        check_layer_scope(pruned, granularity)
    else:
        check_global_scope(pruned, granularity)
    for key in pruned:
        row = by_path[key.split("/")[0]]
        assert row["pruned"] is True, key
        assert row["pattern_ok"] is (None if granularity == "unstructured" else True), key
    assert report["config"]["prune"]["method"] == method
    assert report["finetune"]["epochs"] == epochs and report["finetune"]["distill"] is None
    if epochs:  # the polynomial schedule updated the masks during the epoch
        sparsities = [update["sparsity"] for update in report["finetune"]["mask_updates"]]
        assert len(sparsities) > 2
        if granularity == "2:4":  # the pattern rises through the steps it allows: 1 of 4
            assert 0.25 in sparsities and set(sparsities) <= {0.0, 0.25, 0.5}


@pytest.mark.parametrize(
    ("sets", "named"),
    [
        *(
            (("prune.method=movement", f"prune.granularity={value}"),
             ("prune.schedule.type", "'one_shot'"))
            for value in GRANULARITIES.values()
        ),
        (("prune.granularity='2:4'", "prune.sparsity=0.8"),
         ("prune.sparsity (0.8)", "prune.granularity '2:4'")),
        (("prune.granularity=2:4",), ("prune.granularity", 'write N:M in quotes')),
        (("prune.granularity={block: [0, 4]}",), ("prune.granularity", "got [0, 4]")),
    ],
    ids=["movement-one-shot-unstructured", "movement-one-shot-2:4", "movement-one-shot-1x4",
         "2:4-at-0.8", "2:4-unquoted", "block-0x4"],
)  # fmt: skip
def test_invalid_combinations_are_refused_before_loading(cli, tmp_path, sets, named):
    args = [arg for item in sets for arg in ("--set", item)]
    result = cli("prune", tmp_path / "absent.h5", "-o", tmp_path / "out.keras", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("prunecli: error: ")
    assert all(part in result.stderr for part in named), result.stderr
    assert list(tmp_path.iterdir()) == []  # refused before the (absent) model is opened


def test_movement_with_no_fine_tuning_is_refused(cli, tmp_path, digits):
    result = cli(
        "prune", SAMPLE, *digits.data, "-o", tmp_path / "out.keras", "--epochs", "0",
        "--set", "prune.method=movement", "--set", GRADUAL.replace("end_epoch: 1, ", ""),
    )  # fmt: skip
    assert result.exit_code == 2
    assert "finetune.epochs must be > 0" in result.stderr


# --- what tells the methods apart ----------------------------------------------------------


def test_lamp_global_keeps_every_layer_above_the_floor_and_differs_from_magnitude(
    cli, tmp_path, digits
):
    found = {}
    for method in ("lamp", "magnitude"):
        target = tmp_path / f"{method}.keras"
        prune_quiet(
            cli, SAMPLE, *digits.data, "-o", target, "--epochs", "0", "--sparsity", "0.95",
            "--set", f"prune.method={method}", "--set", "prune.scope=global",
        )  # fmt: skip
        found[method] = {key: k != 0 for key, (k, _) in table_kernels(load_model(target)).items()}
    total = sum(m.size for m in found["lamp"].values())
    for method, kept in found.items():
        assert sum(m.size - np.count_nonzero(m) for m in kept.values()) == round(0.95 * total)
        for key, mask in kept.items():
            assert np.count_nonzero(mask) >= math.ceil(FLOOR * mask.size), (method, key)
    assert differs(found["lamp"], found["magnitude"])
    # the point of LAMP: the two small layers (144 and 640 weights, beside dense1's 51,200)
    # keep more of their weights than under one magnitude threshold
    for key in ("conv1/kernel", "logits/kernel"):
        lamp, magnitude = found["lamp"][key], found["magnitude"][key]
        assert np.count_nonzero(lamp) > np.count_nonzero(magnitude), key


def sample_masks(cli: Any, target: Path, digits: Subject, method: str, seed: int = 0) -> Any:
    """The sample pruned to 0.5 per layer by ``method`` without fine-tuning: kernel != 0."""
    prune_quiet(
        cli, SAMPLE, *digits.data, "-o", target, "--epochs", "0", "--seed", seed,
        "--set", f"prune.method={method}",
    )  # fmt: skip
    return masks(target)


def test_random_differs_by_seed_and_repeats_with_one(cli, tmp_path, digits):
    first = sample_masks(cli, tmp_path / "a.keras", digits, "random", seed=0)
    again = sample_masks(cli, tmp_path / "b.keras", digits, "random", seed=0)
    other = sample_masks(cli, tmp_path / "c.keras", digits, "random", seed=1)
    assert not differs(first, again)
    assert differs(first, other)
    assert differs(first, sample_masks(cli, tmp_path / "m.keras", digits, "magnitude"))


def test_taylor_masks_differ_from_magnitude_masks(cli, tmp_path, digits):
    taylor = sample_masks(cli, tmp_path / "t.keras", digits, "taylor")
    magnitude = sample_masks(cli, tmp_path / "m.keras", digits, "magnitude")
    for key in taylor:  # the same count per layer, other weights
        assert np.count_nonzero(taylor[key]) == np.count_nonzero(magnitude[key])
        assert not np.array_equal(taylor[key], magnitude[key]), key


def test_distillation_changes_the_result(cli, tmp_path, digits):
    found = {}
    for name, extra in (("plain", ()), ("distill", ("--set", "finetune.distill={alpha: 0.7}"))):
        target = tmp_path / f"{name}.keras"
        report = prune_quiet(
            cli, SAMPLE, *digits.data, "-o", target, "--epochs", "1", "--seed", "0",
            "--sparsity", "0.8", *extra,
        )  # fmt: skip
        found[name] = (report, table_kernels(load_model(target)))
    assert found["plain"][0]["finetune"]["distill"] is None
    assert found["distill"][0]["finetune"]["distill"] == {"alpha": 0.7, "temperature": 4.0}
    plain, distilled = found["plain"][1], found["distill"][1]
    for key in plain:  # one-shot magnitude: the same masks, trained differently
        np.testing.assert_array_equal(plain[key][0] != 0, distilled[key][0] != 0)
    assert any(not np.allclose(plain[k][0], distilled[k][0]) for k in plain)


def test_iterative_mask_updates_match_the_rounds(cli, tmp_path, digits):
    # 100 images / batch 32 = 4 steps per epoch, 2 epochs = 8 steps; 3 rounds start at
    # steps 0, 8 // 3 = 2 and 16 // 3 = 5, reaching 1 - 0.125 ** (k / 3) = 0.5, 0.75, 0.875
    report = prune_quiet(
        cli, SAMPLE, *digits.data, "-o", tmp_path / "it.keras", "--epochs", "2",
        "--sparsity", "0.875", "--set", "prune.schedule={type: iterative, steps: 3}",
    )  # fmt: skip
    updates = report["finetune"]["mask_updates"]
    assert [u["step"] for u in updates] == [0, 2, 5, 8]
    expected = [0.5, 0.75, 0.875, 0.875]
    assert [u["sparsity"] for u in updates] == pytest.approx(expected, abs=2e-3)
    assert report["finetune"]["steps"] == 8
    saved = table_kernels(load_model(tmp_path / "it.keras"))
    for key, (kernel, _) in saved.items():
        assert zeros(kernel) == round(0.875 * kernel.size), key


# --- layer kinds ---------------------------------------------------------------------------


KINDS = ("Conv1D", "Conv3D", "Conv2DTranspose", "MultiHeadAttention", "GRU", "SimpleRNN",
         "Bidirectional")  # fmt: skip


def build_kind(kind: str) -> tuple[Any, tuple[int, ...]]:
    """A tiny classifier around one layer of ``kind``; returns it and its input shape."""
    import keras
    from keras import layers

    shapes = {"Conv1D": (8, 4), "Conv3D": (4, 4, 4, 4), "Conv2DTranspose": (4, 4, 4),
              "MultiHeadAttention": (6, 8), "GRU": (6, 4), "SimpleRNN": (6, 4),
              "Bidirectional": (6, 4)}  # fmt: skip
    inputs = keras.Input(shapes[kind])
    if kind in ("GRU", "SimpleRNN"):  # kernel (4, 3 * 8 or 8), recurrent kernel (8, ...)
        x = getattr(layers, kind)(8, name="layer")(inputs)
    elif kind == "Bidirectional":  # two LSTMs, four kernels
        x = layers.Bidirectional(layers.LSTM(8), name="layer")(inputs)
    elif kind == "Conv1D":
        x = layers.GlobalAveragePooling1D()(layers.Conv1D(8, 3, name="layer")(inputs))
    elif kind == "Conv3D":
        x = layers.GlobalAveragePooling3D()(layers.Conv3D(8, 2, name="layer")(inputs))
    elif kind == "Conv2DTranspose":
        x = layers.GlobalAveragePooling2D()(layers.Conv2DTranspose(8, 2, name="layer")(inputs))
    else:
        attention = layers.MultiHeadAttention(num_heads=2, key_dim=4, name="layer")
        x = layers.GlobalAveragePooling1D()(attention(inputs, inputs))
    outputs = layers.Dense(3, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs, name=kind.lower()), shapes[kind]


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Subject]:
    import keras

    root = tmp_path_factory.mktemp("kinds")
    found = {}
    for kind in KINDS:
        keras.utils.set_random_seed(0)
        model, shape = build_kind(kind)
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
        path = root / f"{kind}.keras"
        model.save(path)  # untrained: these tests count zeros, not accuracy
        rng = np.random.default_rng(0)
        y = np.arange(48) % 3
        x = rng.normal(size=(48, *shape)).astype(np.float32) + y.reshape(-1, *[1] * len(shape))
        data = write_npz(root / f"{kind}.npz", x, y)
        found[kind] = Subject(path, npz_args(data))
    return found


@pytest.mark.parametrize("granularity", ["unstructured", "2:4"])
@pytest.mark.parametrize("kind", KINDS)
def test_more_layer_kinds_are_pruned_by_default(cli, tmp_path, kinds, kind, granularity):
    """2:4 with a fine-tuning epoch (the pattern held through training), unstructured
    without."""
    case = kinds[kind]
    target = tmp_path / "pruned.keras"
    sets = ["--set", f"prune.granularity={GRANULARITIES[granularity]}"]
    epochs = 1 if granularity == "2:4" else 0
    report = prune_quiet(cli, case.model, *case.data, "-o", target, "--epochs", epochs, *sets)
    row = rows(report)["layer"]
    assert (row["type"], row["pruned"], row["reason"]) == (kind, True, None)
    assert row["target_sparsity"] == 0.5
    saved = load_model(target)
    assert type(saved.get_layer("layer")).__name__ == kind
    layer_kernels = {k: v for k, v in table_kernels(saved).items() if k.startswith("layer/")}
    assert len(layer_kernels) == len(KERNELS[kind])
    for key, (kernel, axis) in layer_kernels.items():
        if granularity == "2:4":
            assert np.all(nm_counts(kernel, axis) == 2), key
            assert row["pattern_ok"] is True
        else:
            assert zeros(kernel) == round(0.5 * kernel.size), key
            assert row["pattern_ok"] is None


# --- what never changes --------------------------------------------------------------------


@pytest.mark.parametrize("subject", ["digits", "resnet", "text"])
def test_biases_normalisation_and_interface_never_change(cli, request, tmp_path, subject):
    case: Subject = request.getfixturevalue(subject)
    target = tmp_path / "pruned.keras"
    prune_quiet(
        cli, case.model, *case.data, "-o", target, "--epochs", "0", "--sparsity", "0.9",
        "--set", "prune.granularity={block: [1, 4]}", "--set", "prune.scope=global",
    )  # fmt: skip
    before, after = load_model(case.model), load_model(target)
    kept, now = other_weights(before), other_weights(after)
    assert now.keys() == kept.keys() and kept
    for path, value in kept.items():
        np.testing.assert_array_equal(now[path], value, err_msg=path)
    assert after.input_shape == before.input_shape
    assert after.output_shape == before.output_shape
    assert [(p, type(layer).__name__) for p, layer in walk(after)] == [
        (p, type(layer).__name__) for p, layer in walk(before)
    ]
    assert sum(zeros(k) for k, _ in table_kernels(after).values()) > 0


def test_a_layer_that_cannot_take_the_pattern_is_listed_and_left_alone(cli, tmp_path, resnet):
    target = tmp_path / "pruned.keras"
    report = prune_quiet(
        cli, resnet.model, *resnet.data, "-o", target, "--epochs", "0",
        "--set", "prune.granularity='2:4'",
    )  # fmt: skip
    by_path = rows(report)
    assert by_path["expand"] == {
        "path": "expand", "type": "Conv2D", "params": 3 * 3 * 6 * 8 + 8,
        "target_sparsity": None, "sparsity": 0.0, "pruned": False,
        "reason": "kernel: 2:4 needs the reduction dimension (6) to be divisible by 4",
        "pattern_ok": None, "kernels": ["expand/kernel"], "trainable": True,
    }  # fmt: skip
    assert by_path["stem"]["reason"].endswith("reduction dimension (1) to be divisible by 4")
    assert by_path["bn"]["pruned"] is False and "nothing to prune" in by_path["bn"]["reason"]
    before, after = table_kernels(load_model(resnet.model)), table_kernels(load_model(target))
    for layer in ("stem", "expand"):
        np.testing.assert_array_equal(after[f"{layer}/kernel"][0], before[f"{layer}/kernel"][0])
    for layer in ("res1", "res2", "squeeze", "out"):
        assert by_path[layer]["pattern_ok"] is True
        assert np.all(nm_counts(*after[f"{layer}/kernel"]) == 2)
    # the report's layer sparsity is the saved kernel's
    assert by_path["res1"]["sparsity"] == 0.5


CHILD = """
import json, sys
import keras, numpy as np
out = {}
for path in sys.argv[1:]:
    model = keras.models.load_model(path)
    out[path] = {"layers": [[l.name, type(l).__name__] for l in model.layers],
                 "zeros": sum(int(np.sum(np.asarray(w) == 0)) for w in model.weights)}
out["prunecli"] = any(m.startswith("prunecli") for m in sys.modules)
print(json.dumps(out))
"""


def test_outputs_load_in_a_process_without_prunecli(cli, tmp_path, text, kinds):
    targets = {
        tmp_path / "text.keras": text,
        tmp_path / "mha.keras": kinds["MultiHeadAttention"],
    }
    for target, case in targets.items():
        prune_quiet(cli, case.model, *case.data, "-o", target, "--epochs", "0",
                    "--set", "prune.granularity='2:4'")  # fmt: skip
    done = run_python(CHILD, *targets, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = last_json_line(done.stdout)
    assert found.pop("prunecli") is False
    for target, case in targets.items():
        original = load_model(case.model)
        child = found[str(target)]
        assert child["layers"] == [[x.name, type(x).__name__] for x in original.layers]
        assert child["zeros"] == sum(zeros(np.asarray(w)) for w in load_model(target).weights)
        assert sum(zeros(k) for k, _ in table_kernels(load_model(target)).values()) > 0


# --- configs/ -----------------------------------------------------------------------------

EXAMPLES = {
    "quickstart.yaml": ("magnitude", "unstructured", "global", "polynomial"),
    "random_baseline.yaml": ("random", "unstructured", "layer", "polynomial"),
    "taylor.yaml": ("taylor", "unstructured", "layer", "one_shot"),
    "lamp_global.yaml": ("lamp", "unstructured", "global", "polynomial"),
    "movement.yaml": ("movement", "unstructured", "layer", "polynomial"),
    "nm_2_4.yaml": ("magnitude", "2:4", "layer", "polynomial"),
    "block_1x4.yaml": ("magnitude", {"block": [1, 4]}, "layer", "polynomial"),
    "iterative.yaml": ("magnitude", "unstructured", "layer", "iterative"),
    "distill.yaml": ("magnitude", "unstructured", "global", "polynomial"),
}


def test_every_example_config_is_listed_here():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXAMPLES)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_config_validates_and_runs(cli, tmp_path, digits, name):
    path = CONFIGS / name
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#"), "each example opens with a comment saying when to choose it"
    checked = cli("validate", path)
    assert (checked.exit_code, checked.stdout) == (0, f"{path}: valid\n")
    cfg = config.load(path)
    method, granularity, scope, schedule = EXAMPLES[name]
    dumped = cfg.prune.model_dump(mode="json")
    assert (dumped["method"], dumped["granularity"], dumped["scope"]) == (
        method, granularity, scope
    )  # fmt: skip
    assert cfg.prune.schedule.type == schedule
    assert cfg.data.train == ROOT / "sample_models" / "digits" / "train"
    assert cfg.data.validation == ROOT / "sample_models" / "digits" / "val"
    assert cfg.output.path.parent == ROOT / "build"
    assert yaml.safe_load(text)["version"] == 1

    target = tmp_path / "out.keras"
    report = prune_quiet(
        cli, SAMPLE, "--config", path, *digits.data, "--set", f"output.path={target}"
    )
    assert Path(report["output"]["path"]) == target and target.exists()
    assert report["data"]["train_samples"] == 100
    saved = table_kernels(load_model(target))
    by_path = rows(report)
    pruned = {k: v for k, v in saved.items() if by_path[k.split("/")[0]]["pruned"]}
    if granularity == "2:4":
        assert by_path["conv1"]["pruned"] is False
        assert all(np.all(nm_counts(k, axis) == 2) for k, axis in pruned.values())
    elif isinstance(granularity, dict):
        for kernel, _ in pruned.values():
            dead, total = block_counts(kernel, (1, 4))
            assert dead == round(cfg.prune.sparsity * total)
    elif scope == "layer":
        for kernel, _ in pruned.values():
            assert zeros(kernel) == round(cfg.prune.sparsity * kernel.size)
    else:
        everything = sum(k.size for k, _ in pruned.values())
        assert sum(zeros(k) for k, _ in pruned.values()) == round(cfg.prune.sparsity * everything)
        for kernel, _ in pruned.values():
            assert np.count_nonzero(kernel) >= math.ceil(cfg.prune.min_layer_density * kernel.size)
    pattern = None if granularity == "unstructured" else True
    assert all(by_path[k.split("/")[0]]["pattern_ok"] is pattern for k in pruned)
    distill = cfg.finetune.distill and cfg.finetune.distill.model_dump()
    assert report["finetune"]["distill"] == distill
    if schedule == "iterative":
        assert len(report["finetune"]["mask_updates"]) == cfg.prune.schedule.steps + 1


def test_distilling_a_model_saved_without_compile_config(cli, make_model, npz_data, tmp_path):
    """The output carries the task's loss, not the distillation closure nobody could load."""
    target = tmp_path / "d.keras"
    prune_quiet(
        cli, make_model("cnn", ".keras", compiled=False, train=False), "-o", target,
        "--set", f"data.train={npz_data}", "--set", "finetune.distill={}", "--epochs", "1",
    )  # fmt: skip
    config = load_model(target).get_compile_config()
    assert config["loss"]["class_name"] == "SparseCategoricalCrossentropy"
