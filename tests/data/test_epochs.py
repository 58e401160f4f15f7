"""``Source.epochs``: built in constant time whatever ``finetune.epochs`` is, and each
epoch's batches exactly those of a pipeline built for that epoch alone (so resumed and
mirrored runs stay bit-exact). The expected batches are rebuilt here independently."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from helpers import synthetic_images

from prunecli import data
from prunecli.config import Data
from prunecli.data.source import SHUFFLE_BUFFER


def _batches(dataset, count: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    taken = dataset if count is None else dataset.take(count)
    return [(np.asarray(x), np.asarray(y)) for x, y in taken]


def _assert_same(found, expected) -> None:
    assert len(found) == len(expected)
    for (x, y), (ex, ey) in zip(found, expected, strict=True):
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)


def _npz(tmp_path: Path) -> Path:
    images, y = synthetic_images(21, 3)
    path = tmp_path / "d.npz"
    np.savez(path, x=(images / 255.0).astype(np.float32)[..., None], y=y)
    return path


def test_random_access_epochs_are_the_seeded_permutations(tmp_path: Path) -> None:
    path = _npz(tmp_path)
    source = data.load(Data(train=path, validation_split=0), (8, 8, 1), seed=0).train
    arrays = np.load(path)
    x, y = arrays["x"], arrays["y"]
    expected = []
    for epoch in (2, 3, 4):  # each epoch: numpy's permutation seeded by (seed, epoch)
        order = np.random.default_rng([5, epoch]).permutation(len(y))
        expected += [(x[order[i : i + 4]], y[order[i : i + 4]]) for i in range(0, len(y), 4)]
    found = _batches(source.epochs(4, seed=5, first=2, stop=5, skip=2))
    _assert_same(found, expected[2:])  # skip drops batches of the first epoch only


@pytest.mark.parametrize("global_seed", [None, 0, 3])
def test_buffered_epochs_shuffle_with_each_epochs_seed(csv_data: Path, global_seed) -> None:
    """Also under a global seed (runtime.start sets one; 0 is prunecli's default)."""
    import tensorflow as tf

    tf.random.set_seed(global_seed)
    try:
        _check_buffered(csv_data)
    finally:
        tf.random.set_seed(None)


def _check_buffered(csv_data: Path) -> None:
    source = data.load(Data(train=csv_data, validation_split=0), (6,), seed=0).train
    base = source.dataset(1, cache=False).unbatch()  # file order
    expected = []
    for epoch in (0, 1, 2):
        mixed = int(np.random.default_rng([7, epoch]).integers(2**31 - 1))
        shuffled = base.shuffle(min(len(source), SHUFFLE_BUFFER), seed=mixed,
                                reshuffle_each_iteration=False)  # fmt: skip
        expected += _batches(shuffled.batch(16))
    _assert_same(_batches(source.epochs(16, seed=7, first=0, stop=3)), expected)


@pytest.mark.parametrize("cache", [False, True])
def test_set_up_does_not_grow_with_the_epochs(tmp_path: Path, cache: bool) -> None:
    """20,000 epochs build one pipeline, not 20,000 (the keys are read once), and its
    first epochs are those of a two-epoch run."""
    path = _npz(tmp_path)
    settings = Data(train=path, validation_split=0, cache=cache)
    source = data.load(settings, (8, 8, 1), seed=0).train
    calls: list[int] = []

    def counted(rows: np.ndarray):
        calls.append(len(rows))
        return source.keys(rows)

    watched = dataclasses.replace(source, keys=counted)
    many = watched.epochs(4, seed=0, first=0, stop=20_000)
    assert calls == [len(source)]
    few = source.epochs(4, seed=0, first=0, stop=2)
    _assert_same(_batches(many, 12), _batches(few, 12))


def test_sigterm_during_set_up_of_a_long_run_stops_it(make_model, npz_data, tmp_path: Path):
    """2,000 epochs: SIGTERM right after loading stops the run with exit 130 and no model
    written (the old set-up built 2,000 pipelines first and ignored SIGTERM for minutes)."""
    import signal

    from helpers import Events, prune_args, start, write_config

    model = make_model("cnn", ".h5")
    config = write_config(tmp_path / "long.yaml", "finetune:\n  epochs: 2000\n  batch_size: 2\n")
    output = tmp_path / "out" / "p.keras"
    output.parent.mkdir()
    child = start([*prune_args(model, npz_data, config, output), "--log-format", "json"])
    events = Events(child.stderr)
    events.until(lambda event: event["event"] == "loaded")
    child.send_signal(signal.SIGTERM)
    code = child.wait(timeout=120)
    seen = events.until(lambda event: event["event"] == "error")
    assert (code, seen[-1]["exit_code"]) == (130, 130), seen[-3:]  # the events say why
    assert not output.exists()
