"""Fine-tuning with the masks held: ``model.fit`` with a mask constraint and a schedule hook.

The mask multiply runs inside Keras's compiled train step (see ``pruner``), so the only
Python work per step is one integer comparison in ``_ScheduleHook``: masks are recomputed
(in numpy) only at the schedule's update steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from prunecli.config import Distill, Finetune
from prunecli.data import Source
from prunecli.progress import Reporter
from prunecli.pruning.pruner import Pruner

if TYPE_CHECKING:
    from prunecli.training.checkpoints import Tracker

OPTIMIZERS: dict[str, Callable[[Finetune], keras.optimizers.Optimizer]] = {
    "adam": lambda ft: keras.optimizers.Adam(ft.learning_rate),
    "sgd": lambda ft: keras.optimizers.SGD(ft.learning_rate, momentum=ft.momentum),
    "rmsprop": lambda ft: keras.optimizers.RMSprop(ft.learning_rate),
}


@dataclass
class Result:
    """What fine-tuning did: steps run and the sparsity after each mask update."""

    epochs: int = 0
    steps: int = 0
    updates: list[dict[str, float]] = field(default_factory=list)  # [{step, sparsity}]


def steps_per_epoch(samples: int, batch_size: int) -> int:
    return max(1, math.ceil(samples / batch_size))


def run(
    model: Any,
    pruner: Pruner,
    train: Source,
    settings: Finetune,
    compile_args: dict[str, Any],
    reporter: Reporter,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    teacher: Teacher | None = None,
    seed: int = 0,
    checkpoint: Tracker | None = None,
) -> Result:
    """Train ``model`` in place with masks enforced; end with every mask at its target.

    ``compile_args`` holds the loss to train with (the model's own, or one inferred from
    the data; metrics are dropped: prunecli measures the model itself afterwards).
    ``reporter`` hears of each epoch (and each step, when it wants them). ``callbacks`` are
    passed on to ``model.fit`` (benchmarks time epochs with one). ``teacher`` turns on
    distillation (``settings.distill``). ``train`` is streamed: each epoch's order fixed by
    ``seed`` and the epoch, batched and prefetched by ``tf.data``. ``checkpoint`` saves
    preemption-safe checkpoints and resumes from one (``checkpoints.Tracker.fit`` then runs
    ``model.fit``).
    """
    spe = steps_per_epoch(len(train), settings.batch_size)
    result = Result(epochs=settings.epochs, steps=settings.epochs * spe)
    targets = _compile(model, pruner, train, settings, compile_args, teacher, result.steps,
                       checkpoint.every if checkpoint is not None else None)  # fmt: skip
    hook = _ScheduleHook(pruner, spe, result)
    hooks: list[keras.callbacks.Callback] = [hook, *callbacks]
    hooks.append((_StepReport if reporter.per_step else _EpochReport)(reporter, hook))
    pruner.attach()
    try:
        if checkpoint is not None:
            checkpoint.fit(model, train, targets, settings, hooks, hook)
        else:
            model.fit(
                train.epochs(
                    settings.batch_size, seed=seed, first=0, stop=settings.epochs, targets=targets
                ),
                epochs=settings.epochs,
                steps_per_epoch=spe,
                shuffle=False,  # the dataset orders each epoch itself, by (seed, epoch)
                callbacks=hooks,
                verbose=0,
            )
    finally:
        pruner.detach()
        reporter.end_steps()  # an interrupted fit never reaches on_train_end
    result.updates.append({"step": result.steps, "sparsity": pruner.finish()})
    return result


def _compile(
    model: Any,
    pruner: Pruner,
    train: Source,
    settings: Finetune,
    compile_args: dict[str, Any],
    teacher: Teacher | None,
    steps: int,
    checkpoint_every: int | None,
) -> np.ndarray | None:
    """Compile for fine-tuning; returns the distillation targets (labels beside the
    teacher's outputs) when distilling, else None."""
    import tensorflow as tf

    loss, targets = compile_args["loss"], None
    if teacher is not None and settings.distill is not None:
        loss = _distillation_loss(keras.losses.get(loss), settings.distill, train.y, teacher)
        targets = np.concatenate([_as_rows(train.y), teacher.outputs.astype(np.float32)], axis=1)
    model.compile(
        optimizer=OPTIMIZERS[settings.optimizer](settings),
        loss=loss,
        jit_compile=settings.jit_compile,
        steps_per_execution=steps_per_execution(
            settings.steps_per_execution, steps_per_epoch(len(train), settings.batch_size),
            steps, pruner, checkpoint_every, distributed=tf.distribute.has_strategy(),
        ),
    )  # fmt: skip
    return targets


AUTO_STEPS_PER_EXECUTION = 32


def steps_per_execution(
    setting: int | str,
    spe: int,
    total: int,
    pruner: Pruner,
    every: int | None,
    distributed: bool = False,
) -> int:
    """Optimizer steps per call into Keras's compiled train function.

    Several steps per call amortise Keras's per-step Python work (on the sample model 5
    steps a call ran 1.5x the steps/s of 1, 15 ran 1.8x); but callbacks run only between
    calls, so every step where the masks change, a checkpoint is due or an epoch ends must
    start one: the result divides all of them. ``auto`` takes the largest such count up to
    32, an integer caps it. Under a distribution strategy it is 1: Keras 3.15's multi-step
    train function fails there (seen with MirroredStrategy over two devices).
    """
    if distributed:
        return 1
    cap = AUTO_STEPS_PER_EXECUTION if setting == "auto" else int(setting)
    aligned = math.gcd(spe, every or 0, *(s for s in range(1, total) if pruner.updates_at(s)))
    return max(d for d in range(1, min(cap, aligned) + 1) if aligned % d == 0)


@dataclass(frozen=True)
class Teacher:
    """The unpruned model's outputs on the training samples, in the source's order.

    The teacher is frozen and sees each sample exactly as the student does (no
    augmentation), so its outputs are computed once before pruning rather than at every
    step: the same loss at a fraction of the cost. They are small (one row of class scores
    per sample, like the labels) and travel beside the labels through the shuffle.
    """

    outputs: np.ndarray
    from_logits: bool


def _as_rows(y: np.ndarray) -> np.ndarray:
    return y.reshape(len(y), -1).astype(np.float32)


def _distillation_loss(task_loss: Any, distill: Distill, y: np.ndarray, teacher: Teacher) -> Any:
    """(1 - a) * task + a * T^2 * KL(softmax(t / T) || softmax(s / T)) (Hinton et al. 2015).

    The targets carry the labels and the teacher's outputs side by side: ``[labels |
    teacher]``, so Keras's own compiled step trains with it. Probabilities are turned into
    logits by their log (softmax is shift-invariant, so log p works as logits).
    """
    width, alpha, temperature = _as_rows(y).shape[1], distill.alpha, distill.temperature
    ops = keras.ops

    def logits(values: Any) -> Any:
        # log(p + tiny), not log(clip(p)): a clip has zero gradient below its floor, which
        # would stop the student learning from classes it already rates near zero.
        return values if teacher.from_logits else ops.log(values + 1e-30)

    def loss(targets: Any, predictions: Any) -> Any:
        labels = targets[:, 0] if width == 1 else targets[:, :width]
        task = ops.mean(task_loss(labels, predictions))
        soft_teacher = ops.softmax(logits(targets[:, width:]) / temperature, axis=-1)
        log_student = ops.log_softmax(logits(predictions) / temperature, axis=-1)
        log_teacher = ops.log(ops.clip(soft_teacher, 1e-12, 1.0))
        kl = ops.sum(soft_teacher * (log_teacher - log_student), axis=-1)
        return (1.0 - alpha) * task + alpha * temperature**2 * ops.mean(kl)

    return loss


def gradient_source(
    model: Any, samples: Source, loss: Any, batches: int, batch_size: int, seed: int
) -> Callable[[dict[str, Any]], dict[str, np.ndarray]]:
    """For taylor scores: a function giving each kernel's sum over ``batches`` batches of
    |dL/dw|, on a seeded shuffle of the training data (class folders are sorted: the first
    batches alone would hold one class), with the model's current (masked) weights. The
    batches are drawn once, on first use, so every mask update scores the same samples."""

    loss_fn = keras.losses.get(loss)
    picked: list[tuple[Any, Any]] = []
    compiled: dict[tuple[str, ...], Any] = {}

    def gradients(kernels: dict[str, Any]) -> dict[str, np.ndarray]:
        if not picked:
            picked.extend(samples.dataset(batch_size, seed=seed, cache=False).take(batches))
        keys = tuple(kernels)
        if keys not in compiled:  # traced once per kernel set (twice: a short last batch)
            compiled[keys] = _abs_gradients(model, loss_fn, [kernels[k] for k in keys])
        sums = [np.zeros(kernels[key].shape, dtype=np.float32) for key in keys]
        for x, y in picked:
            for total, grad in zip(sums, compiled[keys](x, y), strict=True):
                total += grad.numpy()
        return dict(zip(keys, sums, strict=True))

    return gradients


def _abs_gradients(model: Any, loss_fn: Any, variables: list[Any]) -> Any:
    """A compiled ``(x, y) -> [|dL/dw| for w in variables]`` (zeros where the loss does not
    depend on w): one graph call per batch instead of eager ops per layer, which ran taylor
    at about twice magnitude's time."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(x: Any, y: Any) -> list[Any]:
        with tf.GradientTape() as tape:
            value = keras.ops.mean(loss_fn(y, model(x, training=False)))
        grads = tape.gradient(value, variables)
        return [
            tf.abs(g) if g is not None else tf.zeros_like(v)
            for g, v in zip(grads, variables, strict=True)
        ]

    return step


class _ScheduleHook(keras.callbacks.Callback):
    """Recompute masks before the steps the schedule names (step 0 is the prune phase's)."""

    def __init__(self, pruner: Pruner, spe: int, result: Result) -> None:
        super().__init__()
        self.pruner, self.spe, self.result = pruner, spe, result
        self.epoch = 0
        self.current = pruner.sparsity()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        step = self.epoch * self.spe + batch
        if step > 0 and self.pruner.updates_at(step):
            self.current = self.pruner.update(step)
            self.result.updates.append({"step": step, "sparsity": self.current})


class _EpochReport(keras.callbacks.Callback):
    """Each epoch's end to the reporter: epoch, global step, loss, metrics, sparsity."""

    def __init__(self, reporter: Reporter, hook: _ScheduleHook) -> None:
        super().__init__()
        self.reporter, self.hook = reporter, hook

    def on_train_begin(self, logs: dict | None = None) -> None:
        total = self.params["epochs"] * self.params["steps"]
        self.reporter.start_steps(total, self.hook.current)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.label = f"{epoch + 1}/{self.params['epochs']}"

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        loss = logs.pop("loss", float("nan"))
        self.reporter.epoch(
            epoch + 1, self.params["epochs"], (epoch + 1) * self.hook.spe, float(loss),
            metrics={key: float(value) for key, value in logs.items()},
            sparsity=self.hook.current,
        )  # fmt: skip

    def on_train_end(self, logs: dict | None = None) -> None:
        self.reporter.end_steps()


class _StepReport(_EpochReport):
    """Also every step (a progress bar). A separate class: a callback that defines
    ``on_train_batch_end`` turns off Keras's asynchronous batch-end dispatch."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", float("nan")))
        self.reporter.step(self.label, loss, self.hook.current)
