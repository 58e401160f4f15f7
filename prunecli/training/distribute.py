"""Batch jobs: which ``tf.distribute`` strategy trains, who writes, and in which precision.

One run is one ``Job``. Under a strategy, every variable the run creates (the loaded
model's, the pruner's masks and schedule state, the optimizer's slots) must be created
inside ``job.strategy.scope()``: ``pipeline.run`` enters the scope before it loads the
model, so they all become mirrored variables, one copy per replica.

Why masks hold on every replica: masks change only in ``Pruner.update``, which runs on the
host between steps (a Keras callback), i.e. in cross-replica context, where ``assign`` on
a ``MirroredVariable`` writes every replica's copy with the same values. Inside the
replicated step the optimizer applies the already all-reduced gradients, then each
replica's mask constraint multiplies its own copy of the kernel by its own copy of the mask
(kernels are ``aggregation="none"``: a replica-local write). The masks are never reduced,
so a zero can never be averaged into a non-zero.

Multi-worker runs use ``MultiWorkerMirroredStrategy`` configured by the standard
``TF_CONFIG`` variable; every worker runs the same command. Only the chief (task type
``chief``, or ``worker`` 0 when the cluster has no chief) checks for existing outputs and
writes the model and the reports; the others write to a temporary folder that is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunecli import compat
from prunecli.errors import ConfigError

FLOAT32 = "float32"


@dataclass(frozen=True)
class Job:
    """The strategy a run trains under, and whether this process writes the outputs."""

    strategy: Any
    name: str  # "default", "mirrored" or "multi_worker"
    is_chief: bool
    precision: str  # the Keras dtype policy name fine-tuning runs in

    @property
    def replicas(self) -> int:
        """Replicas across all workers: the global batch is split this many ways."""
        return int(self.strategy.num_replicas_in_sync)

    def environment(self) -> dict[str, Any]:
        """The report's ``environment`` entries for this job."""
        return {
            "strategy": self.name,
            "replicas": self.replicas,
            "devices": _devices(self.strategy),
            "precision": self.precision,
        }


def _devices(strategy: Any) -> list[str]:
    """The devices this worker trains on (the default strategy: the first GPU, else CPU)."""
    try:
        return list(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy has no device list of its own
        import tensorflow as tf

        found = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return [found[0].name]


def prepare(strategy: str) -> None:
    """Turn on GPU memory growth (several jobs can share one card) and, for
    ``multi_worker``, create the strategy now.

    Both must happen before TensorFlow initialises its devices (``runtime.start`` calls
    this first): memory growth cannot be changed afterwards, and
    ``MultiWorkerMirroredStrategy`` sets up collective ops, which TensorFlow only accepts
    at start-up. ``CUDA_VISIBLE_DEVICES`` is applied by TensorFlow itself and limits what
    is listed here.
    """
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        # Already initialised, or split into virtual devices: keep its own setting.
        with contextlib.suppress(RuntimeError, ValueError):
            tf.config.experimental.set_memory_growth(gpu, True)
    if strategy == "multi_worker" and "multi_worker" not in _MADE:
        _MADE["multi_worker"] = _multi_worker()


# Strategies made at start-up, by ``prepare``: one per process, like TensorFlow's own context.
_MADE: dict[str, tuple[str, Any]] = {}


def start(strategy: str, mixed_precision: bool) -> Job:
    """The ``Job`` for ``finetune.strategy`` and ``finetune.mixed_precision``."""
    name, made = _MADE.get(strategy) or STRATEGIES[strategy]()
    return Job(made, name, _is_chief(made), precision_policy(mixed_precision))


def _gpus() -> int:
    import tensorflow as tf

    return len(tf.config.list_logical_devices("GPU"))


def _default() -> tuple[str, Any]:
    import tensorflow as tf

    return "default", tf.distribute.get_strategy()


def _mirrored() -> tuple[str, Any]:
    import tensorflow as tf

    return "mirrored", tf.distribute.MirroredStrategy()


def _multi_worker() -> tuple[str, Any]:
    """``MultiWorkerMirroredStrategy`` from ``TF_CONFIG`` (no TF_CONFIG: a one-worker job)."""
    import tensorflow as tf

    _check_tf_config()
    try:
        return "multi_worker", tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as exc:  # collectives after start-up: pipeline.run without runtime.start
        raise ConfigError(
            f"finetune.strategy multi_worker: {exc}; start TensorFlow with "
            "runtime.start(strategy='multi_worker') first"
        ) from None


def _check_tf_config() -> None:
    """A malformed ``TF_CONFIG`` named in one line, not TensorFlow's traceback."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return
    try:
        parsed = json.loads(raw)
        task = parsed["task"]
        cluster = parsed["cluster"]
        ok = task["type"] in cluster and 0 <= int(task["index"]) < len(cluster[task["type"]])
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ConfigError(
            'TF_CONFIG: expected JSON {"cluster": {"worker": ["host:port", ...]}, '
            f'"task": {{"type": "worker", "index": N}}}} naming a task in the cluster, got {raw}'
        )


def _auto() -> tuple[str, Any]:
    """Mirrored over the visible GPUs when there are several, the default strategy else."""
    return _mirrored() if _gpus() > 1 else _default()


STRATEGIES: dict[str, Callable[[], tuple[str, Any]]] = {
    "auto": _auto,
    "none": _default,
    "mirrored": _mirrored,
    "multi_worker": _multi_worker,
}


def _is_chief(strategy: Any) -> bool:
    """The standard rule: task type ``chief``, or ``worker`` 0 when there is no chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


@contextlib.contextmanager
def scratch_folder(job: Job) -> Iterator[Path | None]:
    """None on the chief; elsewhere a temporary folder for this worker's outputs.

    A non-chief worker still runs every step, evaluation included (the collective ops need
    every worker), and saves like the chief; its files go to this folder, removed
    afterwards, so exactly one model and one report come out of the job.
    """
    if job.is_chief:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="prunecli-worker-") as folder:
        yield Path(folder)


def precision_policy(mixed: bool) -> str:
    """``mixed_float16`` on GPU (tensor cores), ``mixed_bfloat16`` on CPU, else float32."""
    if not mixed:
        return FLOAT32
    return "mixed_float16" if _gpus() else "mixed_bfloat16"


@contextlib.contextmanager
def precision(model: Any, policy: str) -> Iterator[None]:
    """Fine-tune ``model`` in ``policy``; give every layer its saved policy back afterwards.

    A loaded model keeps the policy each layer was saved with (float32), so setting the
    global policy alone changes nothing: each layer's ``dtype_policy`` is set here. The
    mixed policies keep float32 variables (only the computation is 16-bit), so kernels,
    masks and the mask constraint's ``w * mask`` stay float32 and a masked weight stays an
    exact 0.0. The model itself gets the policy too: under ``mixed_float16`` Keras's compile
    then wraps the optimizer in a ``LossScaleOptimizer``.
    """
    if policy == FLOAT32:
        yield
        return
    import keras

    layers = [model, *_layers(model)]
    saved = [layer.dtype_policy for layer in layers]
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        for layer in layers:
            layer.dtype_policy = policy
        yield
    finally:
        for layer, old in zip(layers, saved, strict=True):
            layer.dtype_policy = old
        keras.mixed_precision.set_dtype_policy(previous)


def _layers(model: Any) -> list[Any]:
    """Every layer, nested models' included, but not the inputs (their dtype is the data's)."""
    import keras

    return [
        layer
        for layer in compat.all_layers(model)
        if not isinstance(layer, keras.layers.InputLayer)
    ]


def adopt(model: Any) -> None:
    """Let Keras build a model's loss and metric state from a distributed batch.

    Keras 3.15's TensorFlow trainer builds that state before ``fit``/``predict`` from the
    first distributed batch averaged over the replicas (``strategy.reduce("MEAN", batch)``):
    that fails when replicas get batches of different sizes (9 samples over 2 replicas)
    and under ``MultiWorkerMirroredStrategy`` always ("cannot convert PerReplica to a
    Tensor"). Only the batch's shapes and dtypes matter for that build, so this model's
    build takes the first replica's own shard instead. An instance attribute: nothing else
    in Keras changes. Nothing to do under the default strategy, where Keras builds when it
    traces the step.
    """
    import tensorflow as tf

    strategy = compat.distribute_strategy(model)
    if strategy is None:
        return

    def symbolic_build(iterator: Any = None, data_batch: Any = None) -> None:
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = _first_shard(strategy, next(batches))
                break
        with strategy.scope():
            compat.symbolic_build(model, data_batch)

    compat.set_symbolic_build(model, symbolic_build)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        model.train_step = _logs_as_vectors(model.train_step)


def _logs_as_vectors(train_step: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Keras 3.15 averages a step's logs across workers with ``reduce("MEAN", v, axis=0)``,
    which has no axis 0 for a scalar loss: each log goes out as a 1-element vector, which
    that reduce turns back into the scalar mean."""
    import tensorflow as tf

    def step(data: Any) -> Any:
        return tf.nest.map_structure(lambda v: tf.reshape(v, [1]), train_step(data))

    return step


def _first_shard(strategy: Any, batch: Any) -> Any:
    """The first local replica's part of a distributed batch (a plain batch as it is)."""
    import tensorflow as tf

    def shard(value: Any) -> Any:
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return tf.nest.map_structure(shard, batch)
