"""One split of the data (``Source``): labels in memory, samples streamed by ``tf.data``.

Every reader (``images``, ``tabular``, ``tfrecord``) returns a ``Source``; each epoch's
order is a function of ``(seed, epoch)`` alone, so a resumed or distributed run sees the
batches of an uninterrupted one-device run. TensorFlow is imported lazily.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from prunecli.errors import DataError, os_message

# Streamed sources (csv, tfrecord) cannot be read out of order: they shuffle through a
# buffer of decoded samples this long (file lists and in-memory arrays shuffle whole).
SHUFFLE_BUFFER = 4096


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class Source:
    """One split of the data: labels in memory, samples decoded on demand by ``tf.data``.

    ``keys(rows)`` gives one cheap element per sample of ``rows`` (sorted indices into the
    whole file), in order: a file name (images), a CSV line, a serialized Example, or the
    sample itself (npz); ``decode`` turns a key into the model's input. When keys are
    cheap to hold (``random_access``), training shuffles the keys and decodes after, so
    a sorted class folder is shuffled whole at the cost of a list of file names.
    """

    name: str  # "train" / "validation": the cache file prefix
    y: np.ndarray
    shape: tuple[int, ...]
    classes: tuple[str, ...] = ()
    cache: bool | Path = False
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    keys: Callable[[np.ndarray], Any] | None = None
    decode: Callable[[Any], Any] | None = None
    random_access: bool = True
    rescale: float | None = None  # the factor applied to the samples (None: not recorded)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, positions: np.ndarray, name: str) -> Source:
        """The samples at ``positions`` (sorted indices into this source), in order."""
        return replace(self, name=name, y=self.y[positions], rows=self.rows[positions])

    def dataset(
        self,
        batch_size: int,
        *,
        targets: np.ndarray | None = None,
        seed: int | None = None,
        cache: bool = True,
    ) -> Any:
        """Batches of ``(x, target)``; ``targets`` (one row per sample, default the labels)
        travel with their samples through the shuffle. ``seed`` None keeps file order
        (prediction); otherwise a seeded shuffle, new each epoch. ``cache`` False skips
        ``data.cache`` (a partly read cache is thrown away, so a few batches skip it)."""
        import tensorflow as tf

        autotune = tf.data.AUTOTUNE
        rows, targets = self.rows, self.y if targets is None else targets
        cached = cache and self.cache is not False
        if seed is not None and self.random_access and cached:
            # a cache fixes the order it was written in: shuffle the (cheap) keys once,
            # so a sorted class folder is not cached class by class
            order = np.random.default_rng(seed).permutation(len(self))
            rows, targets = rows[order], targets[order]
        labels = tf.data.Dataset.from_tensor_slices(targets)
        keys = self.keys(rows)
        if seed is not None and self.random_access and not cached:
            pairs = tf.data.Dataset.zip(keys, labels).shuffle(
                len(self), seed=seed, reshuffle_each_iteration=True
            )
            samples = pairs.map(
                lambda key, target: (self.decode(key), target), num_parallel_calls=autotune
            )
        else:
            features = keys.map(self.decode, num_parallel_calls=autotune)
            if cached:
                features = features.cache(self._cache_file(rows))
            samples = tf.data.Dataset.zip(features, labels)
            if seed is not None:
                buffer = len(self) if self.cache is True else min(len(self), SHUFFLE_BUFFER)
                samples = samples.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        # the count is known from the labels; telling tf.data lets Keras size its epochs
        samples = samples.apply(tf.data.experimental.assert_cardinality(len(self)))
        return samples.batch(batch_size).prefetch(autotune)

    def epochs(
        self,
        batch_size: int,
        *,
        seed: int,
        first: int,
        stop: int,
        skip: int = 0,
        targets: np.ndarray | None = None,
    ) -> Any:
        """Training batches of epochs ``first`` .. ``stop - 1``, back to back; ``skip`` drops
        that many batches of the first (a resume mid-epoch).

        Each epoch's order is fixed by ``(seed, epoch)`` alone, never by a shuffle's hidden
        iteration state: a resumed run, or one under a distribution strategy (which rebuilds
        the input pipeline), sees exactly the batches an uninterrupted one-device run sees.
        Built in constant time whatever ``stop - first`` is (2,000 epochs used to build
        and concatenate 2,000 pipelines before the first step): one pipeline over the epoch
        numbers, each epoch's order computed by numpy when tf.data reaches that epoch.
        """
        import tensorflow as tf

        targets = self.y if targets is None else targets
        cached = self.cache is not False
        if self.random_access and not cached:  # a fresh permutation of the keys each epoch
            keys = tf.data.experimental.get_single_element(
                self.keys(self.rows).batch(max(len(self), 1))
            )  # every key in row order, gathered by each epoch's permutation
            labels = tf.constant(targets)

            def epoch(number: Any) -> Any:
                order = tf.numpy_function(
                    lambda n: _rng(seed, int(n)).permutation(len(self)), [number], tf.int64
                )
                positions = tf.data.Dataset.from_tensor_slices(tf.reshape(order, [len(self)]))
                return positions.map(
                    lambda i: (self.decode(_gather(keys, i)), tf.gather(labels, i)),
                    num_parallel_calls=tf.data.AUTOTUNE,
                )

        else:  # decoded (and cached) once; each epoch shuffles through a seeded buffer
            order = np.random.default_rng(seed).permutation(len(self))
            if not self.random_access:
                order = np.arange(len(self))
            base = self._samples(self.rows[order], targets[order], cached=cached)
            buffer = len(self) if self.cache is True else min(len(self), SHUFFLE_BUFFER)

            def epoch(number: Any) -> Any:
                mixed = tf.numpy_function(
                    lambda n: np.int64(_rng(seed, int(n)).integers(2**31 - 1)), [number], tf.int64
                )
                return _seeded_shuffle(base, buffer, tf.reshape(mixed, []))

        joined = tf.data.Dataset.range(first, stop).flat_map(
            lambda number: epoch(number).batch(batch_size)
        )
        return joined.skip(skip).prefetch(tf.data.AUTOTUNE)  # skip < one epoch's batches

    def _samples(self, rows: np.ndarray, targets: np.ndarray, cached: bool) -> Any:
        """Unbatched ``(x, target)`` of ``rows`` in that order, decoded in parallel."""
        import tensorflow as tf

        features = self.keys(rows).map(self.decode, num_parallel_calls=tf.data.AUTOTUNE)
        if cached:
            features = features.cache(self._cache_file(rows))
        return tf.data.Dataset.zip(features, tf.data.Dataset.from_tensor_slices(targets))

    def _cache_file(self, rows: np.ndarray) -> str:
        """Memory ("") or ``<data.cache>/<split>-<digest of the rows, in order>``: tf.data
        reuses any complete cache of that name, so another split or order gets its own."""
        if self.cache is True:
            return ""
        folder = Path(self.cache)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file there (data.cache: /dev/null), no permission
            raise DataError(
                f"data.cache: {os_message(exc, folder)}; it must be a folder, or a path where "
                "one can be made"
            ) from None
        digest = hashlib.sha1(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()
        return str(folder / f"{self.name}-{digest[:12]}")


def _seeded_shuffle(base: Any, buffer: int, seed: Any) -> Any:
    """``base.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)`` for a seed that is
    a tensor (each epoch's, inside tf.data): the same order as the Python int gives.

    TensorFlow 2.21's seed helper compares ``(global seed, seed) == (0, 0)`` in Python, which
    a symbolic seed cannot answer when the global seed is 0 (``tf.random.set_seed(0)``,
    prunecli's default): that case, and only it, builds the same shuffle op with the pair
    the helper would give, ``(0, seed)`` (``(0, 2**31 - 1)`` for seed 0), from public ops.
    """
    import tensorflow as tf

    try:
        return base.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
    except (TypeError, tf.errors.OperatorNotAllowedInGraphError):
        pass
    specs = tf.nest.flatten(base.element_spec)
    variant = tf.raw_ops.ShuffleDatasetV3(
        input_dataset=tf.data.experimental.to_variant(base),
        buffer_size=tf.constant(buffer, tf.int64),
        seed=tf.constant(0, tf.int64),
        seed2=tf.where(seed == 0, tf.constant(2**31 - 1, tf.int64), seed),
        seed_generator=tf.raw_ops.DummySeedGenerator(),
        output_types=[spec.dtype for spec in specs],
        output_shapes=[spec.shape for spec in specs],
        reshuffle_each_iteration=False,
    )
    return tf.data.experimental.from_variant(variant, base.element_spec)


def _rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of one epoch's order: a function of (seed, epoch) alone."""
    return np.random.default_rng([seed % 2**32, epoch])


@dataclass(frozen=True)
class Splits:
    train: Source | None
    validation: Source | None


def from_arrays(
    x: np.ndarray | dict[str, np.ndarray],
    y: np.ndarray,
    classes: tuple[str, ...] = (),
    name: str = "train",
    dtype: str | None = None,
) -> Source:
    """A source over arrays already in memory (a ``.npz``; tests and benchmarks).

    ``x`` is one array (cast to ``dtype``, float32 by default) or, for a multi-input model,
    a dict of arrays by input name, each kept in its own dtype; samples are then dicts.
    """
    if isinstance(x, dict):
        arrays = {key: np.asarray(value) for key, value in x.items()}
        shape: tuple[int, ...] = ()
    else:
        arrays = np.asarray(x, dtype=dtype or np.float32)
        shape = tuple(arrays.shape[1:])

    def keys(rows: np.ndarray) -> Any:
        import tensorflow as tf

        if isinstance(arrays, dict):
            return tf.data.Dataset.from_tensor_slices({k: v[rows] for k, v in arrays.items()})
        return tf.data.Dataset.from_tensor_slices(arrays[rows])

    return Source(
        name, np.asarray(y), shape, classes, rows=np.arange(len(y)),
        keys=keys, decode=_identity,
    )  # fmt: skip


def materialize(source: Source) -> tuple[np.ndarray, np.ndarray]:
    """All samples and labels as arrays, in order: only for data known to be small."""
    batches = [x for x, _ in source.dataset(256, cache=False)]
    if batches and isinstance(batches[0], dict):  # a multi-input model's samples
        return {
            k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]
        }, source.y
    arrays = [np.asarray(x) for x in batches]
    x = np.concatenate(arrays) if arrays else np.zeros((0, *source.shape), np.float32)
    return x, source.y


def numpy_batch(x: Any) -> np.ndarray | dict[str, np.ndarray]:
    """A batch from ``Source.dataset`` as numpy: one array, or (a multi-input model's)
    a dict of arrays by input name, each in its own dtype."""
    if isinstance(x, dict):
        return {name: np.asarray(values) for name, values in x.items()}
    return np.asarray(x)


def head(batch: np.ndarray | dict[str, np.ndarray], count: int = 1) -> Any:
    """The first ``count`` samples of a numpy batch (of every input of a dict batch)."""
    if isinstance(batch, dict):
        return {name: values[:count] for name, values in batch.items()}
    return batch[:count]


def _identity(value: Any) -> Any:
    return value


def pick_rows(records: Any, rows: np.ndarray, total: int) -> Any:
    """The records at ``rows`` (sorted), in order, by enumerate + filter: streamed files
    cannot seek, so a split reads the file and keeps its own rows."""
    import tensorflow as tf

    if len(rows) == total:
        return records
    keep = np.zeros(total, dtype=bool)
    keep[rows] = True
    wanted = tf.constant(keep)
    return (
        records.enumerate()
        .filter(lambda index, _: tf.gather(wanted, index))
        .map(lambda _, record: record)
    )


def labels_of(y: np.ndarray) -> np.ndarray:
    """Whole-number labels become int64 class ids; anything else stays float (regression).
    One column of whole numbers, ``(N, 1)`` as ``keras.datasets.cifar10`` gives its labels,
    is one class id per sample: ``(N,)``."""
    y = np.asarray(y)
    if y.dtype.kind in "iub" or (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        ids = y.astype(np.int64)
        return ids.reshape(-1) if ids.ndim == 2 and ids.shape[1] == 1 else ids
    return y.astype(np.float32)


def _gather(keys: Any, position: Any) -> Any:
    """Row ``position`` of every key tensor: one tensor, or a dict of them (one per model
    input of a multi-input model)."""
    import tensorflow as tf

    return tf.nest.map_structure(lambda key: tf.gather(key, position), keys)
